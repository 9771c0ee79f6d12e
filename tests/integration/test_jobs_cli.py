"""`jobwarden jobs ...` as an operator meets it: real subprocesses, a real database."""

import asyncio
import json
from datetime import UTC, datetime, timedelta

from jobwarden.monitoring import evaluation
from tests.integration.conftest import app_context
from tests.integration.processes import run_cli
from tests.integration.webapp import record_run


def test_set_show_list_pause_resume_and_unset(migrated_dsn: str) -> None:
    env = {"DATABASE_URL": migrated_dsn}
    done = run_cli(
        "jobs", "set", "nightly-report", "--cron", "0 2 * * *", "--timezone", "Europe/Berlin",
        "--grace", "10m", "--failure-threshold", "5", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.output
    assert done.stdout == (
        "nightly-report: cron 0 2 * * * (Europe/Berlin), grace 10m, failure threshold 5\n"
    )
    # Only the given flags change; the schedule stays.
    done = run_cli("jobs", "set", "nightly-report", "--failure-rate", "0.25", env=env)
    assert "cron 0 2 * * * (Europe/Berlin), grace 10m, failure threshold 5, failure rate 0.25" in (
        done.stdout
    )

    shown = run_cli("jobs", "show", "nightly-report", env=env)
    assert shown.returncode == 0, shown.output
    assert "status:       healthy (ok)" in shown.stdout  # not due until 02:00 Berlin
    assert "next due:" in shown.stdout
    assert "grace 10m" in shown.stdout

    listed = run_cli("jobs", "list", env=env)
    assert listed.stdout.splitlines()[0].split() == [
        "JOB", "STATUS", "SCHEDULE", "LAST", "RUN", "NEXT", "DUE", "OBSERVED", "CADENCE",
    ]  # fmt: skip
    assert "nightly-report  healthy" in listed.stdout

    assert "paused" in run_cli("jobs", "pause", "nightly-report", env=env).stdout
    assert "nightly-report  paused" in run_cli("jobs", "list", env=env).stdout
    run_cli("jobs", "resume", "nightly-report", env=env)
    assert "nightly-report  healthy" in run_cli("jobs", "list", env=env).stdout

    until = (datetime.now(UTC) + timedelta(hours=2)).replace(second=0, microsecond=0)
    done = run_cli(
        "jobs", "maintenance", "nightly-report", "--until", f"{until:%Y-%m-%dT%H:%M}Z", env=env
    )
    assert done.returncode == 0, done.output
    assert f"maintenance until {until:%Y-%m-%dT%H:%M:%S}Z" in done.stdout
    assert "nightly-report  maintenance" in run_cli("jobs", "list", env=env).stdout
    run_cli("jobs", "resume", "nightly-report", env=env)  # also ends the maintenance
    assert "nightly-report  healthy" in run_cli("jobs", "list", env=env).stdout

    assert run_cli("jobs", "unset", "nightly-report", env=env).stdout == (
        "nightly-report: expectation removed\n"
    )
    assert run_cli("jobs", "show", "nightly-report", env=env).returncode == 1


def test_bad_flags_exit_64_naming_the_flag_and_write_nothing(migrated_dsn: str) -> None:
    env = {"DATABASE_URL": migrated_dsn}
    assert run_cli("jobs", "set", "emails", "--every", "5m", env=env).returncode == 0
    for args, flag in (
        (("--every", "soon"), "--every"),
        (("--every", "0s"), "--every"),
        (("--cron", "61 * * * *"), "--cron"),
        (("--cron", "0 2 * * *", "--timezone", "Mars/Olympus"), "--timezone"),
        (("--every", "5m", "--cron", "0 2 * * *"), "--cron"),
        (("--failure-threshold", "0"), "--failure-threshold"),
        (("--failure-rate", "1.5"), "--failure-rate"),
        (("--regression-factor", "0.9"), "--regression-factor"),
        (("--grace", "-5m"), "--grace"),
        (("--colour", "red"), "--colour"),
    ):
        result = run_cli("jobs", "set", "emails", *args, env=env)
        assert result.returncode == 64, (args, result.output)
        assert flag in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.output
    until = run_cli("jobs", "maintenance", "emails", "--until", "2001-01-01T00:00Z", env=env)
    assert (until.returncode, "--until" in until.stderr) == (64, True)
    assert run_cli("jobs", "frobnicate", "emails", env=env).returncode == 64

    shown = run_cli("jobs", "show", "emails", env=env)
    assert shown.stdout.splitlines()[0] == "emails: every 5m"  # nothing bad was written


def test_list_shows_the_observed_cadence(migrated_dsn: str) -> None:
    start = datetime.now(UTC) - timedelta(minutes=10)

    async def runs_every_two_minutes() -> None:
        async with app_context(migrated_dsn) as ctx, ctx.db.connection() as conn:
            for minute in range(0, 10, 2):
                await record_run(conn, "emails", start + timedelta(minutes=minute))
                await evaluation.run_once(ctx, start + timedelta(minutes=minute, seconds=1))

    asyncio.run(runs_every_two_minutes())
    listed = run_cli("jobs", "list", env={"DATABASE_URL": migrated_dsn})
    [row] = [line for line in listed.stdout.splitlines() if line.startswith("emails")]
    assert row.endswith("every 2m")


def test_max_and_min_runtime_are_set_and_shown(migrated_dsn: str) -> None:
    env = {"DATABASE_URL": migrated_dsn}
    done = run_cli(
        "jobs", "set", "imports", "--every", "1h", "--max-runtime", "2h", "--min-runtime", "90s",
        env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.output
    assert done.stdout == "imports: every 1h, max runtime 2h, min runtime 90s\n"

    shown = run_cli("jobs", "show", "imports", env=env)
    assert shown.returncode == 0, shown.output
    assert shown.stdout.splitlines()[0] == "imports: every 1h, max runtime 2h, min runtime 90s"
    assert "  runtime:      at most 2h, at least 90s" in shown.stdout
    as_json = json.loads(run_cli("jobs", "show", "imports", "--json", env=env).stdout)
    assert (as_json["expectation"]["maxRuntime"], as_json["expectation"]["minRuntime"]) == (
        7200,
        90,
    )
    assert (as_json["effective"]["maxRuntime"], as_json["effective"]["minRuntime"]) == (7200, 90)

    # Plain seconds work too; only the flag given changes.
    done = run_cli("jobs", "set", "imports", "--min-runtime", "120", env=env)
    assert done.stdout == "imports: every 1h, max runtime 2h, min runtime 2m\n", done.output

    # Without its own, a job is judged by the default max runtime and no minimum.
    run_cli("jobs", "set", "reports", "--every", "1h", env=env)
    shown = run_cli("jobs", "show", "reports", env=env)
    assert "  runtime:      at most 1h, at least -" in shown.stdout
    as_json = json.loads(run_cli("jobs", "show", "reports", "--json", env=env).stdout)
    assert (as_json["expectation"]["maxRuntime"], as_json["expectation"]["minRuntime"]) == (
        None,
        None,
    )
    assert (as_json["effective"]["maxRuntime"], as_json["effective"]["minRuntime"]) == (3600, None)


def test_bad_runtimes_exit_64_naming_the_flag_and_write_nothing(migrated_dsn: str) -> None:
    env = {"DATABASE_URL": migrated_dsn}
    done = run_cli("jobs", "set", "imports", "--max-runtime", "1h", "--min-runtime", "1m", env=env)
    assert done.returncode == 0, done.output
    for args, flags in (
        (("--max-runtime=-5m",), ["--max-runtime"]),  # "=": else argparse takes -5m for a flag
        (("--max-runtime", "0"), ["--max-runtime"]),
        (("--max-runtime", "forever"), ["--max-runtime"]),
        (("--max-runtime", "367d"), ["--max-runtime"]),
        (("--min-runtime=-1s",), ["--min-runtime"]),
        (("--min-runtime", "0s"), ["--min-runtime"]),
        (("--min-runtime", "quick"), ["--min-runtime"]),
        (("--min-runtime", "2h", "--max-runtime", "1h"), ["--min-runtime"]),
        (("--min-runtime", "1h", "--max-runtime", "1h"), ["--min-runtime"]),
        (("--min-runtime", "2h"), ["--min-runtime"]),  # not below the job's max of 1h
        (("--max-runtime", "30s"), ["--max-runtime"]),  # not above the job's min of 1m
        # Every problem at once.
        (("--max-runtime", "0", "--min-runtime", "x"), ["--max-runtime", "--min-runtime"]),
        (("--every", "soon", "--min-runtime", "2h", "--max-runtime", "1h"),
         ["--every", "--min-runtime"]),
    ):  # fmt: skip
        result = run_cli("jobs", "set", "imports", *args, env=env)
        assert result.returncode == 64, (args, result.output)
        for flag in flags:
            assert f"jobwarden jobs: {flag}: " in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.output

    shown = run_cli("jobs", "show", "imports", env=env)  # nothing bad was written
    assert shown.stdout.splitlines()[0] == "imports: no schedule, max runtime 1h, min runtime 1m"
