"""Read-only views of the jobs for health, metrics and `jobs list/show`.

These read what the leader's passes left (samples, history, baselines) and judge
it with the same rules, writing nothing, so every replica answers alike.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobwarden.config import Settings
from jobwarden.db.pg import Conn
from jobwarden.db.prisma import from_prisma
from jobwarden.monitoring.evaluation import default_knobs, gather_facts
from jobwarden.monitoring.history import observed_cadence
from jobwarden.monitoring.model import JobFacts, Verdict
from jobwarden.monitoring.rules import evaluate, iso
from jobwarden.monitoring.sampling import read_samples

COUNTERS = """
SELECT m."jobId" AS job_id, m."totalExecutions" AS total_executions,
       m."successCount" AS success_count, m."failureCount" AS failure_count,
       m."totalDurationMs" AS total_duration_ms, m."minDurationMs" AS min_duration_ms,
       m."maxDurationMs" AS max_duration_ms, m."lastExecutionAt" AS last_execution_at,
       m."lastSuccessAt" AS last_success_at, m."lastFailureAt" AS last_failure_at,
       b."baselineAvgMs" AS baseline_avg_ms, b."baselineP95Ms" AS baseline_p95_ms,
       b."sampleSize" AS baseline_sample_size, b."updatedAt" AS baseline_updated_at
FROM job_metrics m
LEFT JOIN performance_baselines b ON b."jobId" = m."jobId"
WHERE $1::text IS NULL OR m."jobId" = $1
ORDER BY m."jobId"
"""


@dataclass(frozen=True)
class JobsView:
    facts: dict[str, JobFacts]
    verdict: Verdict


async def judge_jobs(conn: Conn, settings: Settings, now: datetime) -> JobsView:
    """Every known job (seen or expected) with its status as the rules see it now."""
    knobs = default_knobs(settings)
    facts = await gather_facts(conn, await read_samples(conn), now, knobs)
    return JobsView({f.job_id: f for f in facts}, evaluate(facts, knobs, now))


async def job_metrics(
    conn: Conn, settings: Settings, now: datetime, job_id: str | None = None
) -> list[dict[str, Any]]:
    """Counters, baseline and recent-window figures of every job, or of one."""
    view = await judge_jobs(conn, settings, now)
    rows = await conn.fetch(COUNTERS, job_id)
    out = []
    for row in rows:
        facts = view.facts.get(row["job_id"])
        verdict = view.verdict.jobs.get(row["job_id"])
        fw = facts.failure_window if facts else None
        rw = facts.regression_window if facts else None
        out.append(
            {
                "jobId": row["job_id"],
                "status": verdict.status.value if verdict else None,
                "counters": {
                    "totalExecutions": row["total_executions"],
                    "successCount": row["success_count"],
                    "failureCount": row["failure_count"],
                    "totalDurationMs": row["total_duration_ms"],
                    "avgDurationMs": (
                        row["total_duration_ms"] / row["total_executions"]
                        if row["total_executions"]
                        else None
                    ),
                    "minDurationMs": row["min_duration_ms"],
                    "maxDurationMs": row["max_duration_ms"],
                    "lastExecutionAt": iso(from_prisma(row["last_execution_at"])),
                    "lastSuccessAt": iso(from_prisma(row["last_success_at"])),
                    "lastFailureAt": iso(from_prisma(row["last_failure_at"])),
                    "failureStreak": facts.failure_streak if facts else 0,
                },
                "baseline": None
                if row["baseline_avg_ms"] is None
                else {
                    "avgMs": row["baseline_avg_ms"],
                    "p95Ms": row["baseline_p95_ms"],
                    "sampleSize": row["baseline_sample_size"],
                    "updatedAt": iso(from_prisma(row["baseline_updated_at"])),
                },
                "recent": {
                    "failureWindowSeconds": settings.failure_window,
                    "executions": fw.executions if fw else 0,
                    "failures": fw.failures if fw else 0,
                    "failureRate": round(fw.failure_rate, 4) if fw else 0.0,
                    "regressionWindowSeconds": settings.regression_window,
                    "regressionExecutions": rw.executions if rw else 0,
                    "avgDurationMs": rw.avg_ms if rw else None,
                },
            }
        )
    return out


def _expectation_fields(facts: JobFacts) -> dict[str, Any] | None:
    e = facts.expectation
    if e is None:
        return None
    return {
        "every": e.schedule.every,
        "cron": e.schedule.cron,
        "timezone": e.schedule.timezone if e.schedule.cron else None,
        "grace": e.grace,
        "failureThreshold": e.failure_threshold,
        "failureRate": e.failure_rate,
        "regressionFactor": e.regression_factor,
        "maxRuntime": e.max_runtime,
        "minRuntime": e.min_runtime,
        "paused": e.paused,
        "maintenanceUntil": iso(e.maintenance_until),
        "updatedAt": iso(e.updated_at),
    }


def _summary(view: JobsView, job_id: str, cadence: float | None) -> dict[str, Any]:
    facts, verdict = view.facts[job_id], view.verdict.jobs[job_id]
    return {
        "jobId": job_id,
        "status": verdict.status.value,
        "reason": verdict.reason,
        "seen": facts.seen,
        "lastExecutionAt": iso(facts.last_execution_at),
        "nextDueAt": iso(verdict.next_due_at),
        "schedule": facts.expectation.schedule.describe() if facts.expectation else "no schedule",
        "observedCadenceSeconds": cadence,
        "expectation": _expectation_fields(facts),
    }


async def list_jobs(conn: Conn, settings: Settings, now: datetime) -> list[dict[str, Any]]:
    """Every job seen or expected, with its status and its observed cadence."""
    view = await judge_jobs(conn, settings, now)
    cadences = await observed_cadence(conn, list(view.facts))
    return [_summary(view, job_id, cadences.get(job_id)) for job_id in sorted(view.facts)]


async def show_job(
    conn: Conn, settings: Settings, now: datetime, job_id: str
) -> dict[str, Any] | None:
    """One job in full; None when it is neither seen nor expected."""
    view = await judge_jobs(conn, settings, now)
    if job_id not in view.facts:
        return None
    facts = view.facts[job_id]
    defaults = default_knobs(settings)
    knobs = facts.expectation.knobs(defaults) if facts.expectation else defaults
    cadence = (await observed_cadence(conn, [job_id])).get(job_id)
    return {
        **_summary(view, job_id, cadence),
        "failureStreak": facts.failure_streak,
        "lastSuccessAt": iso(facts.last_success_at),
        "lastFailureAt": iso(facts.last_failure_at),
        "baselineAvgMs": facts.baseline_avg_ms,
        "recent": {
            "executions": facts.failure_window.executions,
            "failures": facts.failure_window.failures,
            "regressionExecutions": facts.regression_window.executions,
            "avgDurationMs": facts.regression_window.avg_ms,
        },
        "effective": {
            "grace": knobs.grace,
            "failureThreshold": knobs.failure_threshold,
            "failureRate": knobs.failure_rate,
            "failureWindow": knobs.failure_window,
            "failureMinExecutions": knobs.failure_min_executions,
            "regressionFactor": knobs.regression_factor,
            "regressionWindow": knobs.regression_window,
            "regressionMinExecutions": knobs.regression_min_executions,
            "maxRuntime": knobs.max_runtime,
            "minRuntime": knobs.min_runtime,
        },
    }
