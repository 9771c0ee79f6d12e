"""`jobwarden jobs ...`: expectations per job, the same functions as `/api/jobs/...`.

  jobs set JOB [--every DURATION | --cron "EXPR" [--timezone TZ]] [--grace DURATION]
               [--failure-threshold N] [--failure-rate RATE] [--regression-factor F]
               [--max-runtime DURATION] [--min-runtime DURATION]
  jobs unset JOB | list | show JOB | pause JOB | resume JOB
  jobs maintenance JOB --until ISO-TIME

Bad flags exit 64 naming the flag, with nothing written.
"""

import argparse
import json
import sys
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from jobwarden import exitcodes
from jobwarden.cli.database import open_database
from jobwarden.cli.parser import Commands
from jobwarden.config import Settings
from jobwarden.durations import format_duration
from jobwarden.monitoring import expectations
from jobwarden.monitoring.expectations import ExpectationChange, InvalidExpectation
from jobwarden.monitoring.status import list_jobs, show_job

# expectation field -> flag
FLAGS = {
    "every": "--every",
    "cron": "--cron",
    "timezone": "--timezone",
    "grace": "--grace",
    "failure_threshold": "--failure-threshold",
    "failure_rate": "--failure-rate",
    "regression_factor": "--regression-factor",
    "max_runtime": "--max-runtime",
    "min_runtime": "--min-runtime",
    "until": "--until",
    "job": "JOB",
}


def add_parser(commands: Commands) -> None:
    jobs = commands.add_parser("jobs", help="what each job is expected to do")
    actions = jobs.add_subparsers(dest="jobs_action", required=True, metavar="ACTION")

    set_ = actions.add_parser("set", help="set or change a job's expectation")
    set_.add_argument("job", metavar="JOB")
    schedule = set_.add_mutually_exclusive_group()
    schedule.add_argument("--every", metavar="DURATION", help="runs at least this often")
    schedule.add_argument("--cron", metavar="EXPR", help='runs on a crontab, e.g. "0 2 * * *"')
    set_.add_argument("--timezone", metavar="TZ", help="time zone of --cron (default UTC)")
    set_.add_argument("--grace", metavar="DURATION", help="how late a run may be")
    set_.add_argument("--failure-threshold", metavar="N", help="failures in a row that alert")
    set_.add_argument("--failure-rate", metavar="RATE", help="failure rate (0-1) that alerts")
    set_.add_argument(
        "--regression-factor", metavar="F", help="slower than baseline by this factor alerts"
    )
    set_.add_argument(
        "--max-runtime",
        metavar="DURATION",
        help="a reported run still going after this raises job_stuck "
        "(default JOBWARDEN_DEFAULT_MAX_RUNTIME)",
    )
    set_.add_argument(
        "--min-runtime",
        metavar="DURATION",
        help="a successful run shorter than this raises performance_regression (ran too short)",
    )

    for name, text in (
        ("unset", "forget a job's expectation"),
        ("show", "one job in full"),
        ("pause", "raise nothing for a job until it is resumed"),
        ("resume", "unpause a job and end its maintenance"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("job", metavar="JOB")
        if name == "show":
            action.add_argument("--json", action="store_true", help="print JSON")
    listing = actions.add_parser("list", help="every job seen or expected")
    listing.add_argument("--json", action="store_true", help="print JSON")
    maint = actions.add_parser("maintenance", help="raise nothing for a job until a time")
    maint.add_argument("job", metavar="JOB")
    maint.add_argument("--until", metavar="ISO-TIME", required=True, help="e.g. 2026-12-01T06:00Z")


def _usage_error(problems: list[tuple[str, str]]) -> int:
    for field, message in problems:
        print(f"jobwarden jobs: {FLAGS.get(field, field)}: {message}", file=sys.stderr)
    return exitcodes.USAGE


async def run(settings: Settings, args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    action: str = args.jobs_action
    try:
        job_id = expectations.validate_job_id(args.job) if hasattr(args, "job") else ""
        change = (
            expectations.parse_change({field: getattr(args, field) for field in _SET_FIELDS})
            if action == "set"
            else None
        )
        until = expectations.parse_until(args.until, now) if action == "maintenance" else None
    except InvalidExpectation as exc:
        return _usage_error(exc.problems)

    db = await open_database(settings)
    try:
        async with db.connection() as conn:
            if action == "list":
                _print_list(await list_jobs(conn, settings, now), as_json=args.json)
                return exitcodes.OK
            if action == "show":
                job = await show_job(conn, settings, now, job_id)
                if job is None:
                    print(f"jobwarden jobs: no job {job_id!r} has been seen or expected",
                          file=sys.stderr)  # fmt: skip
                    return exitcodes.FAILURE
                _print_job(job, as_json=args.json)
                return exitcodes.OK
            if action == "unset":
                removed = await expectations.unset_expectation(conn, job_id)
                print(f"{job_id}: expectation removed" if removed else f"{job_id}: none was set")
                return exitcodes.OK
            try:
                if action == "set":
                    assert change is not None
                    await expectations.set_expectation(conn, job_id, change, now)
                elif action == "pause":
                    await expectations.pause(conn, job_id, now)
                elif action == "resume":
                    await expectations.resume(conn, job_id, now)
                else:
                    assert until is not None
                    await expectations.maintenance(conn, job_id, until, now)
            except InvalidExpectation as exc:
                return _usage_error(exc.problems)
            job = await show_job(conn, settings, now, job_id)
            assert job is not None
            print(_one_line(job))
            return exitcodes.OK
    finally:
        await db.close()


_SET_FIELDS = tuple(field.name for field in fields(ExpectationChange))  # one flag each


def _ago(iso: str | None) -> str:
    return "-" if iso is None else iso.replace("T", " ")[:19] + "Z"


def _one_line(job: dict[str, Any]) -> str:
    e = job["expectation"] or {}
    parts = [job["schedule"]]
    if e.get("grace") is not None:
        parts.append(f"grace {format_duration(e['grace'])}")
    for key, label in (
        ("failureThreshold", "failure threshold"),
        ("failureRate", "failure rate"),
        ("regressionFactor", "regression factor"),
    ):
        if e.get(key) is not None:
            parts.append(f"{label} {e[key]:g}")
    for key, label in (("maxRuntime", "max runtime"), ("minRuntime", "min runtime")):
        if e.get(key) is not None:
            parts.append(f"{label} {format_duration(e[key])}")
    if e.get("paused"):
        parts.append("paused")
    if e.get("maintenanceUntil"):
        parts.append(f"maintenance until {e['maintenanceUntil']}")
    return f"{job['jobId']}: {', '.join(parts)}"


def _print_list(jobs: list[dict[str, Any]], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(jobs, indent=2))
        return
    header = ("JOB", "STATUS", "SCHEDULE", "LAST RUN", "NEXT DUE", "OBSERVED CADENCE")
    rows = [
        (
            j["jobId"],
            j["status"],
            j["schedule"],
            _ago(j["lastExecutionAt"]),
            _ago(j["nextDueAt"]),
            "-"
            if j["observedCadenceSeconds"] is None
            else f"every {format_duration(round(j['observedCadenceSeconds'], 3))}",
        )
        for j in jobs
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if not rows:
        print("(no jobs seen or expected yet)")


def _print_job(job: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(job, indent=2))
        return
    print(_one_line(job))
    print(f"  status:       {job['status']} ({job['reason']})")
    print(f"  last run:     {_ago(job['lastExecutionAt'])}")
    print(f"  next due:     {_ago(job['nextDueAt'])}")
    cadence = job["observedCadenceSeconds"]
    print(f"  cadence:      {'-' if cadence is None else format_duration(round(cadence, 3))}")
    print(f"  failing:      {job['failureStreak']} in a row; "
          f"{job['recent']['failures']} of {job['recent']['executions']} recently")  # fmt: skip
    baseline = job["baselineAvgMs"]
    print(f"  baseline:     {'-' if baseline is None else f'{baseline:.0f} ms'}")
    knobs = job["effective"]
    print(
        f"  thresholds:   {knobs['failureThreshold']} in a row, rate {knobs['failureRate']:g}, "
        f"grace {format_duration(knobs['grace'])}, regression x{knobs['regressionFactor']:g}"
    )
    min_runtime = knobs["minRuntime"]
    print(
        f"  runtime:      at most {format_duration(knobs['maxRuntime'])}, "
        f"at least {'-' if min_runtime is None else format_duration(min_runtime)}"
    )
