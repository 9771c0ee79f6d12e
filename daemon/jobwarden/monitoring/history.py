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

# Median gap between runs over each job's last passes with runs: each pass's gap
# since the previous newest execution, divided by the runs it saw. The newest passes
# of each job come from the primary key (job_id, sampled_at), so the cost does not
# grow with the length of the history.
OBSERVED_CADENCE = """
SELECT j.job_id,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY g.gap_seconds) AS cadence_seconds
FROM unnest($1::text[]) AS j(job_id)
CROSS JOIN LATERAL (
    SELECT extract(epoch FROM last_execution_at - lag(last_execution_at)
               OVER (ORDER BY sampled_at)) / executions AS gap_seconds
    FROM (
        SELECT sampled_at, executions, last_execution_at
        FROM jobwarden.job_history h
        WHERE h.job_id = j.job_id AND h.executions > 0
        ORDER BY h.sampled_at DESC
        LIMIT $2
    ) newest
) g
WHERE g.gap_seconds > 0
GROUP BY j.job_id
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
