"""Reading `jobwarden.job_history`: recent windows per job, and the observed cadence."""

from datetime import datetime, timedelta

from jobwarden.db.pg import Conn
from jobwarden.monitoring.model import Window

# Both rule windows of every job in one scan of the recent part of the history.
RECENT_WINDOWS = """
SELECT job_id,
       coalesce(sum(executions) FILTER (WHERE sampled_at > $1), 0) AS failure_executions,
       coalesce(sum(failures)   FILTER (WHERE sampled_at > $1), 0) AS failure_failures,
       coalesce(sum(executions) FILTER (WHERE sampled_at > $2), 0) AS regression_executions,
       coalesce(sum(duration_ms) FILTER (WHERE sampled_at > $2), 0)::bigint
           AS regression_duration_ms
FROM jobwarden.job_history
WHERE sampled_at > least($1, $2)
GROUP BY job_id
"""

# Median gap between runs over a job's last passes: each pass's gap since the
# previous newest execution, divided by the runs it saw.
OBSERVED_CADENCE = """
SELECT job_id,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY gap_seconds) AS cadence_seconds
FROM (
    SELECT job_id,
           extract(epoch FROM last_execution_at - lag(last_execution_at)
               OVER (PARTITION BY job_id ORDER BY sampled_at)) / executions AS gap_seconds
    FROM (
        SELECT job_id, sampled_at, executions, last_execution_at,
               row_number() OVER (PARTITION BY job_id ORDER BY sampled_at DESC) AS recent
        FROM jobwarden.job_history
        WHERE job_id = ANY($1::text[]) AND executions > 0
    ) newest
    WHERE recent <= $2
) gaps
WHERE gap_seconds > 0
GROUP BY job_id
"""
CADENCE_PASSES = 50


async def recent_windows(
    conn: Conn, now: datetime, failure_window: float, regression_window: float
) -> dict[str, tuple[Window, Window]]:
    """job id -> (failure window, regression window), for jobs with runs in either."""
    rows = await conn.fetch(
        RECENT_WINDOWS,
        now - timedelta(seconds=failure_window),
        now - timedelta(seconds=regression_window),
    )
    return {
        row["job_id"]: (
            Window(
                executions=row["failure_executions"],
                failures=row["failure_failures"],
            ),
            Window(
                executions=row["regression_executions"],
                duration_ms=row["regression_duration_ms"],
            ),
        )
        for row in rows
    }


async def observed_cadence(conn: Conn, job_ids: list[str]) -> dict[str, float]:
    """job id -> median seconds between runs, for jobs with enough history to tell."""
    rows = await conn.fetch(OBSERVED_CADENCE, job_ids, CADENCE_PASSES)
    return {row["job_id"]: float(row["cadence_seconds"]) for row in rows}
