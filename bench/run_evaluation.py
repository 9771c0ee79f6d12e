"""One evaluation pass with 1,000 jobs reporting their runs, over 1 and 10 million
recorded runs. Prints; asserts nothing.

Measures, against an embedded PostgreSQL in a temporary directory (or
BENCH_DATABASE_URL, a server where it may CREATE DATABASE), for each history size
of HISTORIES:
  - a history of that many runs of JOBS jobs (one in 20 failing), finished over the
    last 30 days and recorded when they finished, in their daily partitions, as the
    fold leaves them: counted in job_metrics and jobwarden.run_jobs, none waiting
    (loaded with the inbox trigger off, as a restore would, so the load is quick);
  - then PASSES evaluation passes (`evaluation.run_once`, what the leader runs every
    JOBWARDEN_POLL_INTERVAL: add the new runs to job_metrics, sample it, read the
    facts of every job from its runs, judge, write alerts), OPEN_RUNS runs open,
    30 s apart, with the runs reported since the previous pass at the history's own
    rate, then as many again with every job having run once since the previous pass:
    p50, p95 and max of the pass;
  - the baselines pass (hourly; the exact average and p95 of every job's successful
    runs over JOBWARDEN_BASELINE_WINDOW, 7 days).
Target (issue 8): a pass ≤ 100 ms whatever the history size. Printed, never asserted.
"""

import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from _kit import app_context, create_database, postgres

from jobwarden.context import AppContext
from jobwarden.logsetup import configure_logging
from jobwarden.monitoring import baselines, evaluation
from jobwarden.monitoring.runs import Run, record_runs, start

JOBS = 1000
HISTORIES = (1_000_000, 10_000_000)
CHUNK = 1_000_000  # rows per loading statement
DAYS = 30
PASSES = 20
PASS_SECONDS = 30
OPEN_RUNS = 50
TARGET_MS = 100.0

# n-th run of the history: job n % JOBS, finished (and recorded) evenly over DAYS days
# before $3, one in 20 a failure, 100 to 999 ms long.
LOAD = """
INSERT INTO jobwarden.runs (job_id, outcome, started_at, finished_at, duration_ms, source,
                            recorded_at)
SELECT 'job-' || lpad((n % $4)::text, 4, '0'),
       CASE WHEN n % 20 = 0 THEN 'failure' ELSE 'success' END,
       t - make_interval(secs => d / 1000.0), t, d, 'batch', t
FROM (SELECT n, $3::timestamptz - (($5::bigint - n)::float8 / $5) * make_interval(days => $6)
                AS t,
             100 + (n * 7919) % 900 AS d
      FROM generate_series($1::bigint, $2::bigint) AS n) AS x
"""

# What the fold would have left: the counters and each job's newest facts.
SETTLE = """
INSERT INTO job_metrics (id, "jobId", "totalExecutions", "successCount", "failureCount",
    "totalDurationMs", "minDurationMs", "maxDurationMs", "lastExecutionAt", "lastSuccessAt",
    "lastFailureAt", "updatedAt")
SELECT 'cbench' || job_id, job_id, count(*), count(*) FILTER (WHERE outcome = 'success'),
       count(*) FILTER (WHERE outcome = 'failure'), sum(duration_ms), min(duration_ms),
       max(duration_ms), max(finished_at) AT TIME ZONE 'UTC',
       max(finished_at) FILTER (WHERE outcome = 'success') AT TIME ZONE 'UTC',
       max(finished_at) FILTER (WHERE outcome = 'failure') AT TIME ZONE 'UTC',
       now() AT TIME ZONE 'UTC'
FROM jobwarden.runs GROUP BY job_id;
INSERT INTO jobwarden.run_jobs (job_id, last_run_at, last_success_at, last_failure_at,
                                last_success_ms, failure_streak)
SELECT job_id, max(finished_at), max(finished_at) FILTER (WHERE outcome = 'success'),
       max(finished_at) FILTER (WHERE outcome = 'failure'),
       (array_agg(duration_ms ORDER BY finished_at DESC) FILTER (WHERE outcome = 'success'))[1],
       0
FROM jobwarden.runs GROUP BY job_id;
"""


async def _load(dsn: str, rows: int, now: datetime) -> None:
    conn = await asyncpg.connect(dsn, server_settings={"TimeZone": "UTC"})
    try:
        started = time.perf_counter()
        await conn.execute(
            "SELECT jobwarden.ensure_run_partitions($1, $2)",
            (now - timedelta(days=DAYS + 1)).date(),
            DAYS + 9,
        )
        # The inbox trigger off for the load (a superuser's session; the history is
        # what the fold leaves: counted, nothing waiting).
        await conn.execute("SET session_replication_role = replica")
        for first in range(1, rows + 1, CHUNK):
            last = min(first + CHUNK - 1, rows)
            await conn.execute(LOAD, first, last, now - timedelta(minutes=1), JOBS, rows, DAYS)
        await conn.execute("RESET session_replication_role")
        await conn.execute(SETTLE)
        await conn.execute("VACUUM ANALYZE jobwarden.runs")
        total = await conn.fetchval(
            "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits"
            " WHERE inhparent = 'jobwarden.runs'::regclass"
        )
        print(
            f"  loaded {rows:,} runs of {JOBS} jobs over {DAYS} days in "
            f"{time.perf_counter() - started:.0f} s ({total / 2**20:,.0f} MiB with indexes)",
            flush=True,
        )
    finally:
        await conn.close()


def _new_runs(moment: datetime, n: int, count: int) -> list[Run]:
    """`count` runs since the previous pass, of jobs in turn; one in 20 failed."""
    return [
        Run(
            job_id=f"job-{(n * count + i) % JOBS:04d}",
            outcome="failure" if (i + n) % 20 == 0 else "success",
            finished_at=moment - timedelta(seconds=1),
            started_at=moment - timedelta(seconds=2),
            duration_ms=100 + (i * 31 + n) % 900,
        )
        for i in range(count)
    ]


async def _passes(ctx: AppContext, start_at: datetime, count: int, label: str) -> str:
    timings: list[float] = []
    for n in range(1, PASSES + 1):
        moment = start_at + timedelta(seconds=PASS_SECONDS * n)
        async with ctx.db.connection() as conn:
            await record_runs(conn, _new_runs(moment, n, count))
        started = time.perf_counter()
        await evaluation.run_once(ctx, moment)
        timings.append((time.perf_counter() - started) * 1000)
    p95 = statistics.quantiles(timings, n=20)[18]
    return (
        f"evaluation pass, {label} ({count:,} new runs each, {OPEN_RUNS} open): p50"
        f" {statistics.median(timings):.0f} ms, p95 {p95:.0f} ms, max {max(timings):.0f} ms"
        f" (target ≤ {TARGET_MS:.0f} ms: {'met' if p95 <= TARGET_MS else 'MISSED'})"
    )


async def _measure(ctx: AppContext, now: datetime, rows: int) -> list[str]:
    async with ctx.db.connection() as conn:
        for j in range(OPEN_RUNS):
            await start(conn, f"job-{j:04d}", "bench", now - timedelta(minutes=j))
    await evaluation.run_once(ctx, now)  # first sight of every job
    rate = max(1, round(rows / (DAYS * 86400) * PASS_SECONDS))
    lines = [await _passes(ctx, now, rate, "runs at the history's rate")]
    later = now + timedelta(seconds=PASS_SECONDS * PASSES)
    lines.append(await _passes(ctx, later, JOBS, "every job ran since the last pass"))
    moment = later + timedelta(seconds=PASS_SECONDS * PASSES)
    started = time.perf_counter()
    await baselines.run_once(ctx, moment)
    lines.append(
        f"baselines pass (hourly; exact average and p95 over 7 days of runs):"
        f" {(time.perf_counter() - started) * 1000:,.0f} ms"
    )
    return lines


async def main() -> None:
    configure_logging(level="error")  # the passes raise alerts: figures only
    summary: list[str] = []
    with (
        tempfile.TemporaryDirectory(prefix="jobwarden-bench-") as tmp,
        postgres(Path(tmp)) as (admin, _),
    ):
        for rows in HISTORIES:
            print(f"history: {rows:,} runs", flush=True)
            now = datetime.now(UTC).replace(microsecond=0)
            name = f"jobwarden_bench_runs_{rows}"
            dsn = await create_database(admin, name)
            await _load(dsn, rows, now)
            async with app_context(dsn) as ctx:
                lines = await _measure(ctx, now, rows)
            for line in lines:
                print(f"  {line}", flush=True)
            summary += [f"{rows:,} runs: {line}" for line in lines]
    print("\nsummary")
    for line in summary:
        print(f"  {line}")


if __name__ == "__main__":
    asyncio.run(main())
