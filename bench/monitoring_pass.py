"""One full evaluation pass with 1,000 jobs, a month vs a year of history. Prints; asserts nothing.

Measures, against an embedded PostgreSQL in a temporary directory (or
BENCH_DATABASE_URL, a server where it may CREATE DATABASE):
  - the evaluation pass (sample job_metrics, write history, judge every job,
    write alerts) with 1,000 jobs, every job having run since the last pass and
    50 of them failing (so 50 open alerts are updated each pass), over a month
    and over a year of per-pass history (each job ran about hourly: one history
    row per job per hour, 8.76 million rows for the year);
  - the baselines pass over the same history, and the views behind `jobs list` and
    `GET /api/metrics`;
  - resident memory of a `jobwarden run` daemon watching those 1,000 jobs.
"""

import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import psutil
from _kit import app_context, create_database

from jobwarden.db.migrations import apply_migrations, load_migrations
from jobwarden.logsetup import configure_logging
from jobwarden.monitoring import baselines, evaluation, status

JOBS = 1000
FAILING = 50
PASSES = 30

SEED_METRICS = """
INSERT INTO job_metrics (id, "jobId", "totalExecutions", "successCount", "failureCount",
    "totalDurationMs", "minDurationMs", "maxDurationMs", "lastExecutionAt", "lastSuccessAt",
    "updatedAt")
SELECT 'cbench' || j, 'job-' || lpad(j::text, 4, '0'), 100, 100, 0, 100 * 250, 100, 400,
       $1, $1, $1
FROM generate_series(1, $2) AS j
"""

SEED_HISTORY = """
INSERT INTO jobwarden.job_history
    (job_id, sampled_at, executions, successes, failures, duration_ms, last_execution_at)
SELECT 'job-' || lpad(j::text, 4, '0'), t, 1, 1, 0, 200 + (j * 7 + extract(hour FROM t)::int) % 100,
       (t - interval '5 seconds') AT TIME ZONE 'UTC'
FROM generate_series(1, $3) AS j,
     generate_series($1::timestamptz, $2::timestamptz, interval '1 hour') AS t
"""

# Every job ran once since the last pass; the first FAILING jobs failed.
ONE_ROUND_OF_RUNS = """
UPDATE job_metrics SET
    "totalExecutions" = "totalExecutions" + 1,
    "successCount" = "successCount" + CASE WHEN "jobId" <= $2 THEN 0 ELSE 1 END,
    "failureCount" = "failureCount" + CASE WHEN "jobId" <= $2 THEN 1 ELSE 0 END,
    "totalDurationMs" = "totalDurationMs" + 250,
    "lastExecutionAt" = $1,
    "lastSuccessAt" = CASE WHEN "jobId" <= $2 THEN "lastSuccessAt" ELSE $1 END,
    "lastFailureAt" = CASE WHEN "jobId" <= $2 THEN $1 ELSE "lastFailureAt" END,
    "updatedAt" = $1
"""


async def _seed(dsn: str, days: int, now: datetime) -> None:
    conn = await asyncpg.connect(dsn, server_settings={"TimeZone": "UTC"})
    try:
        await apply_migrations(conn, load_migrations(), lock_timeout=30)
        last = (now - timedelta(minutes=1)).replace(tzinfo=None)
        await conn.execute(SEED_METRICS, last, JOBS)
        started = time.perf_counter()
        await conn.execute(SEED_HISTORY, now - timedelta(days=days), now - timedelta(hours=1), JOBS)
        await conn.execute("VACUUM ANALYZE jobwarden.job_history")
        rows = await conn.fetchval("SELECT count(*) FROM jobwarden.job_history")
        print(f"  seeded {rows:,} history rows in {time.perf_counter() - started:.1f} s")
        await conn.execute(
            "INSERT INTO jobwarden.job_expectations (job_id, every_seconds) "
            "SELECT 'job-' || lpad(j::text, 4, '0'), 3600 FROM generate_series(1, 200) AS j"
        )
    finally:
        await conn.close()


async def _measure(dsn: str, days: int) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    await _seed(dsn, days, now)
    async with app_context(dsn, JOBWARDEN_HISTORY_RETENTION="400d") as ctx:
        started = time.perf_counter()
        await baselines.run_once(ctx, now)
        print(f"  baselines pass: {(time.perf_counter() - started) * 1000:.0f} ms")
        await evaluation.run_once(ctx, now)  # first sight of every job
        timings = []
        for n in range(1, PASSES + 1):
            moment = now + timedelta(seconds=30 * n)
            async with ctx.db.connection() as conn:
                await conn.execute(
                    ONE_ROUND_OF_RUNS, (moment - timedelta(seconds=1)).replace(tzinfo=None),
                    f"job-{FAILING:04d}",
                )  # fmt: skip
            started = time.perf_counter()
            result = await evaluation.run_once(ctx, moment)
            timings.append((time.perf_counter() - started) * 1000)
        p95 = statistics.quantiles(timings, n=20)[18]
        print(
            f"  evaluation pass ({JOBS} jobs, {len(result.sampling.deltas)} with new runs, "
            f"{len(result.alerts.updated)} alerts updated): p50 {statistics.median(timings):.0f} "
            f"ms, p95 {p95:.0f} ms, max {max(timings):.0f} ms"
        )
        async with ctx.db.connection() as conn:
            for name, view in (("jobs list / GET /api/jobs", status.list_jobs),
                               ("GET /api/metrics", status.job_metrics)):  # fmt: skip
                started = time.perf_counter()
                await view(conn, ctx.settings, moment)
                print(f"  {name} ({JOBS} jobs): {(time.perf_counter() - started) * 1000:.0f} ms")


async def _daemon_rss(dsn: str, state: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("JOBWARDEN_")},
        "DATABASE_URL": dsn,
        "JOBWARDEN_HTTP_PORT": "0",
        "JOBWARDEN_STATE_DIR": str(state),
        "JOBWARDEN_POLL_INTERVAL": "1s",
        "JOBWARDEN_HISTORY_RETENTION": "400d",
        "JOBWARDEN_LOG_FORMAT": "logfmt",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jobwarden", "run", env=env, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    passes = 0
    try:
        while passes < 10:
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            passes += "job=evaluate" in line and "pass finished" in line
        rss = psutil.Process(proc.pid).memory_info().rss / 2**20
        print(f"  daemon resident memory after {passes} passes over {JOBS} jobs: {rss:.1f} MiB")
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.communicate()


async def main() -> None:
    configure_logging(level="error")  # the passes raise 50 alerts: figures only
    with tempfile.TemporaryDirectory(prefix="jobwarden-bench-") as tmp:
        admin = os.environ.get("BENCH_DATABASE_URL")
        if not admin:
            import pgserver

            admin = str(pgserver.get_server(Path(tmp) / "pg", cleanup_mode="stop").get_uri())
        for label, days in (("1 month", 30), ("1 year", 365)):
            print(f"history: {label}")
            dsn = await create_database(admin, f"bench_{days}d", migrate=False)  # _seed migrates
            await _measure(dsn, days)
            if days == 365:
                await _daemon_rss(dsn, Path(tmp))


if __name__ == "__main__":
    asyncio.run(main())
