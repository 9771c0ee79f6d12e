"""Performance baselines: what normal looks like for each job, in `performance_baselines`.

Every `JOBWARDEN_BASELINE_INTERVAL` the leader recomputes, for every job with at
least `JOBWARDEN_BASELINE_MIN_SAMPLES` executions in the trailing
`JOBWARDEN_BASELINE_WINDOW` (which stops where the regression window, the one
being judged, begins):

- `baselineAvgMs`  total duration / executions over that window
- `baselineP95Ms`  the 95th percentile of the per-pass average durations (the
                   counters give no single run's duration)
- `sampleSize`     the executions behind it

A job with reported runs (`jobwarden.run_jobs`) gets the exact figures of its
successful runs of known duration that finished within that window instead.

Rows look like Prisma's: a generated id on insert, `updatedAt` on every write.
The same pass prunes history older than `JOBWARDEN_HISTORY_RETENTION`.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from jobwarden.context import AppContext
from jobwarden.db.pg import Conn, affected
from jobwarden.db.prisma import new_id, to_prisma
from jobwarden.monitoring.runfacts import RECORDED_SLACK

_MAX_INT4 = 2**31 - 1

COMPUTE = """
SELECT job_id,
       sum(executions)::bigint AS executions,
       sum(duration_ms)::float8 / sum(executions) AS avg_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms::float8 / executions) AS p95_ms,
       false AS from_runs
FROM jobwarden.job_history h
WHERE sampled_at > $1 AND sampled_at <= $2 AND executions > 0
  AND NOT EXISTS (SELECT 1 FROM jobwarden.run_jobs r WHERE r.job_id = h.job_id)
GROUP BY job_id
HAVING sum(executions) >= $3
UNION ALL
SELECT job_id,
       count(*) AS executions,
       avg(duration_ms)::float8 AS avg_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms)::float8 AS p95_ms,
       true AS from_runs
FROM jobwarden.runs
WHERE outcome = 'success' AND duration_ms IS NOT NULL
  AND recorded_at > $1 - $4::interval AND finished_at > $1 AND finished_at <= $2
GROUP BY job_id
HAVING count(*) >= $3
"""

UPSERT = """
INSERT INTO performance_baselines AS b
    (id, "jobId", "baselineAvgMs", "baselineP95Ms", "sampleSize", "createdAt", "updatedAt")
SELECT id, job_id, avg_ms, p95_ms, sample_size, $6, $6
FROM unnest($1::text[], $2::text[], $3::float8[], $4::float8[], $5::int[])
     AS u(id, job_id, avg_ms, p95_ms, sample_size)
ON CONFLICT ("jobId") DO UPDATE SET
    "baselineAvgMs" = excluded."baselineAvgMs", "baselineP95Ms" = excluded."baselineP95Ms",
    "sampleSize" = excluded."sampleSize", "updatedAt" = excluded."updatedAt"
"""

READ = """
SELECT "jobId" AS job_id, "baselineAvgMs" AS avg_ms, "baselineP95Ms" AS p95_ms
FROM performance_baselines
"""

PRUNE = "DELETE FROM jobwarden.job_history WHERE sampled_at < $1"


@dataclass(frozen=True)
class BaselinesResult:
    updated: int
    pruned: int

    def log_fields(self) -> dict[str, object]:
        return {"baselines": self.updated, "history_pruned": self.pruned}


async def recompute_baselines(
    conn: Conn,
    now: datetime,
    *,
    window: float,
    judged_window: float,
    min_samples: int,
) -> int:
    """Recompute and store every job's baseline; return how many were written."""
    end = now - timedelta(seconds=judged_window)
    rows = await conn.fetch(
        COMPUTE, end - timedelta(seconds=window), end, min_samples, RECORDED_SLACK
    )
    if rows:
        await conn.execute(
            UPSERT,
            [new_id() for _ in rows],
            [r["job_id"] for r in rows],
            [r["avg_ms"] for r in rows],
            [r["p95_ms"] for r in rows],
            [min(r["executions"], _MAX_INT4) for r in rows],
            to_prisma(now),
        )
        # Until then such a job's baseline is its counters' (a p95 of per-pass averages):
        # not one to hold its runs' p95 against (monitoring/runfacts.py).
        await conn.execute(
            "UPDATE jobwarden.run_jobs SET baseline_at = $2 WHERE job_id = ANY($1::text[])",
            [r["job_id"] for r in rows if r["from_runs"]],
            now,
        )
    return len(rows)


@dataclass(frozen=True)
class Baseline:
    avg_ms: float
    p95_ms: float


async def read_baselines(conn: Conn) -> dict[str, Baseline]:
    """job id -> its baseline durations in ms."""
    return {row["job_id"]: Baseline(row["avg_ms"], row["p95_ms"]) for row in await conn.fetch(READ)}


async def run_once(ctx: AppContext, now: datetime) -> BaselinesResult:
    settings = ctx.settings
    async with ctx.db.connection() as conn:
        updated = await recompute_baselines(
            conn,
            now,
            window=settings.baseline_window,
            judged_window=settings.regression_window,
            min_samples=settings.baseline_min_samples,
        )
        status = await conn.execute(PRUNE, now - timedelta(seconds=settings.history_retention))
    return BaselinesResult(updated=updated, pruned=affected(status))
