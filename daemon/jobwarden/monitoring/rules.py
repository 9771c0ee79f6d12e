"""The rules: pure functions of a job's facts, its knobs and `now`. No clock, no I/O.

| rule                   | fires when                                                      |
|------------------------|-----------------------------------------------------------------|
| job_failure            | N failures since the last success, or failure rate >= R over    |
|                        | the failure window with at least M executions                   |
| job_missed             | a scheduled job has no execution after its due time + grace     |
| job_stuck              | a reported run started and has not ended within max runtime     |
| performance_regression | recent average duration > baseline average x factor, >= M runs  |
|                        | (a job with reported runs: the p95s of its successful runs), or |
|                        | its newest success ran shorter than its min runtime             |
| system_health          | every scheduled job (at least 2) is missed in the same pass     |

Paused jobs and jobs in maintenance are held: nothing fires and nothing heals.
When system_health fires, the per-job job_missed alerts are held for that pass.
"""

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from jobwarden.durations import format_duration
from jobwarden.monitoring.model import (
    Finding,
    JobFacts,
    JobStatus,
    JobVerdict,
    Knobs,
    Rule,
    Verdict,
    fingerprint,
)

MIN_JOBS_FOR_SYSTEM_HEALTH = 2


def clock(moment: datetime, now: datetime) -> str:
    """10:42 UTC today, 2026-11-25 10:42 UTC otherwise."""
    if moment.date() == now.date():
        return f"{moment:%H:%M} UTC"
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def iso(moment: datetime | None) -> str | None:
    """An instant as JSON shows it: ISO 8601, UTC as `Z`."""
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def job_failure(facts: JobFacts, knobs: Knobs, now: datetime) -> Finding | None:
    job, window = facts.job_id, facts.failure_window
    last = f"; last failure {clock(facts.last_failure_at, now)}" if facts.last_failure_at else ""
    figures = {
        "failureStreak": facts.failure_streak,
        "failureThreshold": knobs.failure_threshold,
        "windowExecutions": window.executions,
        "windowFailures": window.failures,
        "windowSeconds": knobs.failure_window,
        "failureRate": round(window.failure_rate, 4),
        "failureRateThreshold": knobs.failure_rate,
        "lastFailureAt": iso(facts.last_failure_at),
    }
    if facts.failure_streak >= knobs.failure_threshold:
        return Finding(
            Rule.JOB_FAILURE,
            job,
            f"{job} is failing",
            f"{job} failed {facts.failure_streak} times in a row{last}",
            figures,
        )
    if (
        window.executions >= knobs.failure_min_executions
        and window.failure_rate >= knobs.failure_rate
    ):
        return Finding(
            Rule.JOB_FAILURE,
            job,
            f"{job} is failing",
            f"{job} failed {window.failures} of {window.executions} runs "
            f"({window.failure_rate:.0%}) in the last {format_duration(knobs.failure_window)}"
            f"{last}",
            figures,
        )
    return None


def due_at(facts: JobFacts, now: datetime) -> datetime | None:
    """When the job's next run is due, or None when it has no schedule."""
    expectation = facts.expectation
    if expectation is None or not expectation.scheduled:
        return None
    # A job that never ran is due one period after its schedule was set.
    anchor = expectation.schedule_set_at or expectation.created_at or now
    return expectation.schedule.next_due(facts.last_execution_at, anchor)


def job_missed(facts: JobFacts, knobs: Knobs, now: datetime) -> Finding | None:
    due = due_at(facts, now)
    if due is None or now.timestamp() <= due.timestamp() + knobs.grace:
        return None
    assert facts.expectation is not None
    job = facts.job_id
    schedule = facts.expectation.schedule.describe()
    since = (
        f"has not run since {clock(facts.last_execution_at, now)}"
        if facts.last_execution_at
        else "has never run"
    )
    return Finding(
        Rule.JOB_MISSED,
        job,
        f"{job} missed its run",
        f"{job} {since}; it was due at {clock(due, now)} "
        f"({schedule}, grace {format_duration(knobs.grace)})",
        {
            "dueAt": iso(due),
            "lastExecutionAt": iso(facts.last_execution_at),
            "schedule": schedule,
            "graceSeconds": knobs.grace,
            "lateSeconds": round((now - due).total_seconds() - knobs.grace, 3),
        },
    )


def performance_regression(facts: JobFacts, knobs: Knobs, now: datetime) -> Finding | None:
    return _slower(facts, knobs) or _too_short(facts, knobs)


def _slower(facts: JobFacts, knobs: Knobs) -> Finding | None:
    """Slower than usual: the window's p95 against the baseline's for a job judged by
    its runs, the averages for one judged by its counters."""
    window = facts.regression_window
    recent, baseline, measure = (
        (window.p95_ms, facts.baseline_p95_ms, " p95")
        if facts.reported
        else (window.avg_ms, facts.baseline_avg_ms, "")
    )
    if (
        baseline is None
        or baseline <= 0  # no measurable normal to be slower than
        or recent is None
        or window.executions < knobs.regression_min_executions
        or recent <= baseline * knobs.regression_factor
    ):
        return None
    job = facts.job_id
    ratio = recent / baseline
    verb = "had a p95 of" if facts.reported else "averaged"
    figures: dict[str, Any] = {
        "windowExecutions": window.executions,
        "windowSeconds": knobs.regression_window,
        "regressionFactor": knobs.regression_factor,
    }
    if facts.reported:
        figures |= {"windowP95Ms": round(recent, 3), "baselineP95Ms": round(baseline, 3)}
    else:
        figures |= {"windowAvgMs": round(recent, 3), "baselineAvgMs": round(baseline, 3)}
    return Finding(
        Rule.PERFORMANCE_REGRESSION,
        job,
        f"{job} is running slow",
        f"{job} {verb} {recent:.0f} ms over {window.executions} runs in the last "
        f"{format_duration(knobs.regression_window)}, {ratio:.1f}x its baseline{measure} of "
        f"{baseline:.0f} ms (threshold {knobs.regression_factor:g}x)",
        figures,
    )


def _too_short(facts: JobFacts, knobs: Knobs) -> Finding | None:
    """Its newest success ran shorter than its min runtime: a job that silently does
    nothing (reported runs only)."""
    ran = facts.last_success_ms
    if knobs.min_runtime is None or ran is None or ran >= knobs.min_runtime * 1000:
        return None
    job = facts.job_id
    return Finding(
        Rule.PERFORMANCE_REGRESSION,
        job,
        f"{job} ran too short",
        f"{job} ran too short: its last success took {ran} ms, under its minimum runtime of "
        f"{format_duration(knobs.min_runtime)}; it may have done nothing",
        {
            "reason": "ran too short",
            "lastSuccessMs": ran,
            "lastSuccessAt": iso(facts.last_success_at),
            "minRuntimeSeconds": knobs.min_runtime,
        },
    )


def job_stuck(facts: JobFacts, knobs: Knobs, now: datetime) -> Finding | None:
    """A reported run started and has not ended within the job's max runtime."""
    started = facts.oldest_open_start
    if started is None or (now - started).total_seconds() <= knobs.max_runtime:
        return None
    job = facts.job_id
    running = (now - started).total_seconds()
    others = f" ({facts.open_runs} runs open)" if facts.open_runs > 1 else ""
    return Finding(
        Rule.JOB_STUCK,
        job,
        f"{job} is stuck",
        f"{job} started a run at {clock(started, now)} that has not ended after "
        f"{format_duration(running)} (max runtime {format_duration(knobs.max_runtime)}){others}",
        {
            "startedAt": iso(started),
            "runningSeconds": round(running, 3),
            "maxRuntimeSeconds": knobs.max_runtime,
            "openRuns": facts.open_runs,
        },
    )


def system_health(missed: list[Finding], scheduled: int, now: datetime) -> Finding:
    jobs = sorted(f.job_id for f in missed if f.job_id is not None)
    return Finding(
        Rule.SYSTEM_HEALTH,
        None,
        f"All {scheduled} scheduled jobs missed their runs",
        f"Every scheduled job ({', '.join(jobs)}) is past its due time at {clock(now, now)}: "
        "the job runner may be down, or jobwarden cannot see its runs",
        {"jobs": jobs, "scheduledJobs": scheduled},
    )


_STATUS_OF = {
    Rule.JOB_FAILURE: JobStatus.FAILING,
    Rule.JOB_MISSED: JobStatus.LATE,
    Rule.JOB_STUCK: JobStatus.STUCK,
    Rule.PERFORMANCE_REGRESSION: JobStatus.SLOW,
}
_PER_JOB_RULES = (Rule.JOB_FAILURE, Rule.JOB_MISSED, Rule.JOB_STUCK, Rule.PERFORMANCE_REGRESSION)


def evaluate(jobs: Iterable[JobFacts], defaults: Knobs, now: datetime) -> Verdict:
    findings: dict[str, Finding] = {}
    held: set[str] = set()
    verdicts: dict[str, JobVerdict] = {}
    missed: list[Finding] = []
    scheduled = 0
    for facts in jobs:
        expectation = facts.expectation
        knobs = expectation.knobs(defaults) if expectation else defaults
        next_due = due_at(facts, now)
        if expectation is not None and (expectation.paused or expectation.in_maintenance(now)):
            held.update(fingerprint(rule, facts.job_id) for rule in _PER_JOB_RULES)
            status = JobStatus.PAUSED if expectation.paused else JobStatus.MAINTENANCE
            reason = (
                "paused"
                if expectation.paused
                else f"in maintenance until {iso(expectation.maintenance_until)}"
            )
            verdicts[facts.job_id] = JobVerdict(facts.job_id, status, reason, next_due)
            continue
        if expectation is not None and expectation.scheduled:
            scheduled += 1
        found = [
            finding
            for rule in (job_failure, job_missed, job_stuck, performance_regression)
            if (finding := rule(facts, knobs, now)) is not None
        ]
        for finding in found:
            findings[finding.fingerprint] = finding
            if finding.rule is Rule.JOB_MISSED:
                missed.append(finding)
        first = min(found, key=lambda f: _PER_JOB_RULES.index(f.rule), default=None)
        verdicts[facts.job_id] = (
            JobVerdict(facts.job_id, _STATUS_OF[first.rule], first.message, next_due)
            if first
            else JobVerdict(facts.job_id, JobStatus.HEALTHY, "ok", next_due)
        )
    if scheduled >= MIN_JOBS_FOR_SYSTEM_HEALTH and len(missed) == scheduled:
        for finding in missed:
            del findings[finding.fingerprint]
            held.add(finding.fingerprint)
        blind = system_health(missed, scheduled, now)
        findings[blind.fingerprint] = blind
    return Verdict(findings=findings, held=frozenset(held), jobs=verdicts)
