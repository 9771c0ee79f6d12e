"""Jobs with reported runs are judged from their runs: exact streaks, runs that never
end (job_stuck), baselines and regressions from the durations of single runs.

Each pass is driven directly with its own `now` (near the real clock: the runs are
recorded by the database's)."""

from datetime import UTC, datetime, timedelta
from typing import Any

from jobwarden.context import AppContext
from jobwarden.db.pg import Conn
from jobwarden.monitoring import baselines, evaluation, expectations, runs
from jobwarden.monitoring.expectations import ExpectationChange
from jobwarden.monitoring.runs import Run
from jobwarden.monitoring.status import list_jobs
from tests.integration.webapp import alerts, open_alerts, record_runs

JOB = "nightly-export"


def finished(job: str, now: datetime, minutes_ago: float, outcome: str, ms: int) -> Run:
    end = now - timedelta(minutes=minutes_ago)
    return Run(job, outcome, end, end - timedelta(milliseconds=ms), ms)


async def by_type(conn: Conn, kind: str) -> list[dict[str, Any]]:
    return [a for a in await alerts(conn) if a["type"] == kind]


async def test_failures_in_a_row_come_from_the_runs(ctx: AppContext) -> None:
    """Three failures reported in one batch are three in a row (counters seen between
    two passes could only tell one), also when the web app counts the job too."""
    now = datetime.now(UTC)
    async with ctx.db.connection() as conn:
        await record_runs(conn, JOB, now - timedelta(minutes=30), 5)  # the web app's own
        await evaluation.run_once(ctx, now - timedelta(minutes=20))
        await runs.record_runs(
            conn,
            [
                finished(JOB, now, 10, "success", 100),
                finished(JOB, now, 3, "failure", 100),
                finished(JOB, now, 2, "failure", 100),
                finished(JOB, now, 1, "failure", 100),
            ],
        )
        result = await evaluation.run_once(ctx, now)
        [alert] = await by_type(conn, "job_failure")
        row = await conn.fetchrow(
            'SELECT "totalExecutions", "failureCount" FROM job_metrics WHERE "jobId" = $1', JOB
        )
    assert result.folded.runs == 4
    assert alert["metadata"]["failureStreak"] == 3
    assert alert["message"].startswith(f"{JOB} failed 3 times in a row")
    assert row is not None
    assert (row["totalExecutions"], row["failureCount"]) == (9, 3)


async def test_a_run_that_never_ends_is_stuck_until_it_ends(ctx: AppContext) -> None:
    now = datetime.now(UTC)
    async with ctx.db.connection() as conn:
        await runs.start(conn, "backup", None, now - timedelta(minutes=90))
        await evaluation.run_once(ctx, now)
        [alert] = await open_alerts(conn)
        jobs = {j["jobId"]: j for j in await list_jobs(conn, ctx.settings, now)}
        await runs.finish(conn, "backup", None, "success", now + timedelta(seconds=1))
        for seconds in (2, 3):  # resolved after JOBWARDEN_RESOLVE_AFTER healthy passes
            await evaluation.run_once(ctx, now + timedelta(seconds=seconds))
        still_open = await open_alerts(conn)
        ended = await conn.fetchval(
            "SELECT duration_ms FROM jobwarden.runs WHERE job_id = 'backup'"
        )
    assert (alert["type"], alert["severity"]) == ("job_stuck", "WARNING")
    assert "backup started a run at" in alert["message"]
    assert "max runtime 1h" in alert["message"]
    assert jobs["backup"]["status"] == "stuck"
    assert still_open == []
    assert ended >= 90 * 60 * 1000


async def test_baselines_and_regressions_use_single_runs(ctx: AppContext) -> None:
    """The baseline is the exact average and p95 of successful runs; the regression
    rule compares the window's p95 with it."""
    now = datetime.now(UTC)
    usual = [finished(JOB, now, 120 + n, "success", 100 + n) for n in range(40)]  # 100..139
    failed = [finished(JOB, now, 200, "failure", 99_999)]  # not a success: not in the figures
    async with ctx.db.connection() as conn:
        await runs.record_runs(conn, usual + failed)
        await evaluation.run_once(ctx, now - timedelta(minutes=61))
        await baselines.run_once(ctx, now)
        row = await conn.fetchrow(
            'SELECT "baselineAvgMs", "baselineP95Ms", "sampleSize" FROM performance_baselines'
            ' WHERE "jobId" = $1',
            JOB,
        )
        # The last hour: 18 usual runs and 2 slow ones. The average (173 ms) stays under
        # 1.5 x the baseline average; the p95 (605 ms) is far above 1.5 x its p95.
        recent = [finished(JOB, now, 1 + n, "success", 120) for n in range(18)]
        recent += [finished(JOB, now, 30, "success", 600), finished(JOB, now, 31, "success", 700)]
        await runs.record_runs(conn, recent)
        await evaluation.run_once(ctx, now)
        [alert] = await by_type(conn, "performance_regression")
    assert row is not None
    assert row["sampleSize"] == 40
    assert row["baselineAvgMs"] == sum(range(100, 140)) / 40
    assert row["baselineP95Ms"] == 100 + 0.95 * 39  # percentile_cont over 100..139
    assert alert["metadata"]["windowExecutions"] == 20
    assert alert["metadata"]["windowP95Ms"] == 605.0
    assert alert["metadata"]["baselineP95Ms"] == round(100 + 0.95 * 39, 3)
    assert "p95" in alert["message"]


async def test_a_success_under_the_min_runtime_ran_too_short(ctx: AppContext) -> None:
    """`jobs set --min-runtime 30s`: a success in 80 ms is a job that did nothing."""
    now = datetime.now(UTC)
    async with ctx.db.connection() as conn:
        await expectations.set_expectation(
            conn, "mailer", ExpectationChange(min_runtime=30, max_runtime=600), now
        )
        await runs.record_runs(conn, [finished("mailer", now, 5, "success", 45_000)])
        await evaluation.run_once(ctx, now)
        quiet = await open_alerts(conn)
        await runs.record_runs(conn, [finished("mailer", now, 1, "success", 80)])
        await evaluation.run_once(ctx, now + timedelta(seconds=1))
        [alert] = await open_alerts(conn)
    assert quiet == []
    assert alert["type"] == "performance_regression"
    assert alert["metadata"]["reason"] == "ran too short"
    assert alert["metadata"]["lastSuccessMs"] == 80
    assert "ran too short" in alert["message"]


async def test_a_baseline_of_counters_is_not_held_against_the_runs_p95(ctx: AppContext) -> None:
    """A job that used to be judged by its counters has a baseline of per-pass averages;
    its runs' p95 is compared with nothing until a baseline comes from its runs."""
    now = datetime.now(UTC)
    async with ctx.db.connection() as conn:
        await conn.execute(
            'INSERT INTO performance_baselines (id, "jobId", "baselineAvgMs", "baselineP95Ms",'
            ' "sampleSize", "updatedAt") VALUES (\'cold\', $1, 100, 110, 500,'
            " now() AT TIME ZONE 'UTC')",
            JOB,
        )
        await runs.record_runs(
            conn, [finished(JOB, now, 1 + n, "success", 300 + 10 * n) for n in range(20)]
        )
        await evaluation.run_once(ctx, now)
        slow = await by_type(conn, "performance_regression")
    assert slow == []
