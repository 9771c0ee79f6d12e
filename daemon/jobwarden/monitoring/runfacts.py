"""What the rules know of jobs with reported runs, read once per pass.

Such a job is judged from its runs rather than from the differences of its counters:
its newest run, success and failure and its failures since the newest success come
from `jobwarden.run_jobs` (kept exact by the fold, monitoring/rollup.py); its windows
(failure rate, the regression window's executions, average and 95th percentile of
successful runs) from the runs that finished within them; its open runs (started,
not ended) from `jobwarden.run_starts`.

The windows read only the newest partitions: a run counts in a window by when it
finished, and it is looked for among the runs recorded since the window began less
RECORDED_SLACK (a run whose reported end lies further in the future than that is
not seen in its window). The pass costs the same however long the history is.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from jobwarden.db.pg import Conn
from jobwarden.monitoring.model import Window

RECORDED_SLACK = timedelta(hours=1)

RUN_JOBS = """
SELECT job_id, last_run_at, last_success_at, last_failure_at, last_success_ms, failure_streak,
       baseline_at IS NOT NULL AS baseline_from_runs
FROM jobwarden.run_jobs
"""

OPEN_RUNS = """
SELECT job_id, min(started_at) AS oldest, count(*) AS open
FROM jobwarden.run_starts
GROUP BY job_id
"""

# $1 start of the failure window, $2 of the regression window, $3 the slack.
WINDOWS = """
SELECT job_id,
       count(*) FILTER (WHERE finished_at > $1) AS failure_executions,
       count(*) FILTER (WHERE finished_at > $1 AND outcome = 'failure') AS failure_failures,
       count(duration_ms) FILTER (WHERE finished_at > $2 AND outcome = 'success')
           AS regression_executions,
       coalesce(sum(duration_ms) FILTER (WHERE finished_at > $2 AND outcome = 'success'), 0)
           ::bigint AS regression_duration_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms)
           FILTER (WHERE finished_at > $2 AND outcome = 'success') AS regression_p95_ms
FROM jobwarden.runs
WHERE recorded_at > least($1, $2) - $3::interval AND finished_at > least($1, $2)
GROUP BY job_id
"""


@dataclass(frozen=True)
class ReportedFacts:
    last_run_at: datetime | None = None
    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None
    last_success_ms: int | None = None
    failure_streak: int = 0
    failure_window: Window = field(default_factory=Window)
    regression_window: Window = field(default_factory=Window)
    oldest_open_start: datetime | None = None
    open_runs: int = 0
    baseline_from_runs: bool = False  # else its baseline, if any, is its counters'


async def reported_facts(
    conn: Conn, now: datetime, failure_window: float, regression_window: float
) -> dict[str, ReportedFacts]:
    """job id -> its facts, for every job with reported runs or an open run."""
    jobs = {row["job_id"]: dict(row) for row in await conn.fetch(RUN_JOBS)}
    opened = {row["job_id"]: row for row in await conn.fetch(OPEN_RUNS)}
    windows = {
        row["job_id"]: row
        for row in await conn.fetch(
            WINDOWS,
            now - timedelta(seconds=failure_window),
            now - timedelta(seconds=regression_window),
            RECORDED_SLACK,
        )
    }
    facts: dict[str, ReportedFacts] = {}
    for job_id in _union(jobs, opened):
        job, opens = jobs.get(job_id, {}), opened.get(job_id)
        failure, regression = _windows(windows.get(job_id))
        facts[job_id] = ReportedFacts(
            last_run_at=job.get("last_run_at"),
            last_success_at=job.get("last_success_at"),
            last_failure_at=job.get("last_failure_at"),
            last_success_ms=job.get("last_success_ms"),
            failure_streak=job.get("failure_streak", 0),
            baseline_from_runs=job.get("baseline_from_runs", False),
            failure_window=failure,
            regression_window=regression,
            oldest_open_start=None if opens is None else opens["oldest"],
            open_runs=0 if opens is None else opens["open"],
        )
    return facts


def _windows(row: Mapping[str, Any] | None) -> tuple[Window, Window]:
    if row is None:
        return Window(), Window()
    return (
        Window(executions=row["failure_executions"], failures=row["failure_failures"]),
        Window(
            executions=row["regression_executions"],
            duration_ms=row["regression_duration_ms"],
            p95_ms=row["regression_p95_ms"],
        ),
    )


def _union(*keyed: Iterable[str]) -> list[str]:
    return sorted(set().union(*keyed))
