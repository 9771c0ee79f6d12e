"""The evaluation pass against a real PostgreSQL: each rule raises once and resolves.

The clock is a parameter: every pass is driven directly with its own `now`.
"""

import asyncio
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from jobwarden.context import AppContext
from jobwarden.db.pg import quote_ident
from jobwarden.monitoring import baselines, evaluation, expectations
from jobwarden.monitoring.expectations import ExpectationChange
from jobwarden.monitoring.sampling import sample_jobs
from tests.integration.conftest import app_context
from tests.integration.pgcluster import Cluster
from tests.integration.webapp import alerts, open_alerts, record_run, record_runs

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
JOB = "content-generation"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def test_repeated_failures_raise_one_alert_that_resolves_after_healthy_passes(
    ctx: AppContext,
) -> None:
    async with ctx.db.connection() as conn:
        await record_run(conn, JOB, at(0))
        await evaluation.run_once(ctx, at(1))  # first sight: nothing known to judge
        for second in (10, 20):
            await record_run(conn, JOB, at(second), ok=False)
            await evaluation.run_once(ctx, at(second + 1))
        assert await alerts(conn) == []  # two in a row: below the threshold of 3

        await record_run(conn, JOB, at(30), ok=False)
        await evaluation.run_once(ctx, at(31))
        [alert] = await alerts(conn)
        assert (alert["type"], alert["severity"], alert["resolved"]) == (
            "job_failure",
            "ERROR",
            False,
        )
        assert alert["message"] == f"{JOB} failed 3 times in a row; last failure 10:00 UTC"
        assert isinstance(alert["id"], str)
        assert alert["id"].startswith("c")
        assert alert["createdAt"] == alert["updatedAt"] == at(31).replace(tzinfo=None)
        meta = alert["metadata"]
        assert meta["jobId"] == JOB
        assert meta["rule"] == "job_failure"
        assert meta["fingerprint"] == f"job_failure:{JOB}"
        assert meta["occurrences"] == 1
        assert meta["failureStreak"] == 3
        assert meta["firstSeenAt"] == meta["lastSeenAt"] == "2026-11-26T10:00:31.000Z"

        # Still failing: the same row is updated, never a second one.
        await record_run(conn, JOB, at(40), ok=False)
        await evaluation.run_once(ctx, at(41))
        [alert] = await alerts(conn)
        assert alert["metadata"]["occurrences"] == 2
        assert alert["metadata"]["failureStreak"] == 4
        assert alert["metadata"]["lastSeenAt"] == "2026-11-26T10:00:41.000Z"

        # Healthy again: resolved only after JOBWARDEN_RESOLVE_AFTER (2) healthy passes.
        await record_run(conn, JOB, at(50))
        await evaluation.run_once(ctx, at(51))
        assert len(await open_alerts(conn)) == 1
        await evaluation.run_once(ctx, at(61))
        [alert] = await alerts(conn)
        assert alert["resolved"] is True
        assert alert["resolvedAt"] == alert["updatedAt"] == at(61).replace(tzinfo=None)


async def test_a_failing_pass_between_healthy_ones_keeps_the_alert_open(ctx: AppContext) -> None:
    async with ctx.db.connection() as conn:
        await record_run(conn, JOB, at(0))
        await evaluation.run_once(ctx, at(1))
        await record_runs(conn, JOB, at(10), 3, ok=False)
        await evaluation.run_once(ctx, at(11))
        await record_run(conn, JOB, at(20))
        await evaluation.run_once(ctx, at(21))  # healthy 1 of 2
        await record_runs(conn, JOB, at(30), 3, ok=False)
        await evaluation.run_once(ctx, at(31))  # firing again: the count starts over
        await record_run(conn, JOB, at(40))
        await evaluation.run_once(ctx, at(41))
        assert len(await open_alerts(conn)) == 1
        assert len(await alerts(conn)) == 1


async def test_failure_rate_over_the_window_raises(migrated_dsn: str) -> None:
    env = {"JOBWARDEN_FAILURE_MIN_EXECUTIONS": "4", "JOBWARDEN_FAILURE_WINDOW": "10s"}
    async with app_context(migrated_dsn, **env) as ctx, ctx.db.connection() as conn:
        await record_run(conn, JOB, at(0))
        await evaluation.run_once(ctx, at(1))
        for second in (2, 4, 6):  # fail, succeed, fail, succeed ... never 3 in a row
            await record_run(conn, JOB, at(second), ok=False)
            await record_run(conn, JOB, at(second + 0.5))
            await evaluation.run_once(ctx, at(second + 1))
            if second == 2:  # 1 of 2 runs failed: fewer than 4 executions, not judged yet
                assert await alerts(conn) == []
        [alert] = await alerts(conn)  # raised at 2 of 4, still the one row at 3 of 6
        assert "failed 2 of 4 runs (50%) in the last 10s" in alert["message"]
        assert alert["metadata"]["windowFailures"] == 3
        # The failures age out of the 10 s window: healthy, then resolved.
        await evaluation.run_once(ctx, at(30))
        await evaluation.run_once(ctx, at(31))
        assert await open_alerts(conn) == []


async def test_a_job_that_misses_its_run_raises_once_and_resolves_when_it_runs(
    ctx: AppContext,
) -> None:
    async with ctx.db.connection() as conn:
        await expectations.set_expectation(conn, JOB, ExpectationChange(every=60, grace=10), at(0))
        await record_run(conn, JOB, at(0))
        await evaluation.run_once(ctx, at(1))
        await evaluation.run_once(ctx, at(70))  # due at 60 s, grace 10 s: not yet
        assert await alerts(conn) == []
        await evaluation.run_once(ctx, at(71))
        await evaluation.run_once(ctx, at(100))
        [alert] = await alerts(conn)
        assert (alert["type"], alert["severity"]) == ("job_missed", "ERROR")
        assert alert["message"] == (
            f"{JOB} has not run since 10:00 UTC; it was due at 10:01 UTC (every 1m, grace 10s)"
        )
        assert alert["metadata"]["occurrences"] == 2

        await record_run(conn, JOB, at(110))
        await evaluation.run_once(ctx, at(111))
        await evaluation.run_once(ctx, at(112))
        assert (await alerts(conn))[0]["resolved"] is True


async def test_a_job_expected_but_never_seen_is_missed(ctx: AppContext) -> None:
    async with ctx.db.connection() as conn:
        await expectations.set_expectation(
            conn, "nightly-report", ExpectationChange(every=60), at(0)
        )
        await evaluation.run_once(ctx, at(60 + 300))  # default grace 5m
        assert await alerts(conn) == []
        await evaluation.run_once(ctx, at(60 + 301))
        [alert] = await alerts(conn)
        assert alert["message"].startswith("nightly-report has never run; it was due at 10:01 UTC")


async def test_every_scheduled_job_missed_raises_one_system_health_alert(
    ctx: AppContext,
) -> None:
    jobs = ("emails", "billing", "reports")
    async with ctx.db.connection() as conn:
        for job in jobs:
            await expectations.set_expectation(conn, job, ExpectationChange(every=60), at(0))
            await record_run(conn, job, at(0))
        await evaluation.run_once(ctx, at(1))
        await evaluation.run_once(ctx, at(400))
        [alert] = await alerts(conn)
        assert (alert["type"], alert["severity"]) == ("system_health", "CRITICAL")
        assert alert["title"] == "All 3 scheduled jobs missed their runs"
        assert alert["metadata"]["jobs"] == sorted(jobs)

        # One job comes back: the runner is alive; the two still late alert on their own.
        await record_run(conn, "emails", at(410))
        await evaluation.run_once(ctx, at(411))
        missed = await alerts(conn, type="job_missed")
        assert sorted(a["metadata"]["jobId"] for a in missed) == ["billing", "reports"]
        assert missed[0]["title"] == f"{missed[0]['metadata']['jobId']} missed its run"
        # ... and the system_health alert resolves after a second healthy pass.
        [blind] = await alerts(conn, type="system_health")
        assert blind["resolved"] is False
        await evaluation.run_once(ctx, at(412))
        [blind] = await alerts(conn, type="system_health")
        assert blind["resolved"] is True


async def test_a_slow_job_raises_a_performance_regression(migrated_dsn: str) -> None:
    env = {
        "JOBWARDEN_REGRESSION_WINDOW": "10s",
        "JOBWARDEN_REGRESSION_MIN_EXECUTIONS": "3",
        "JOBWARDEN_BASELINE_MIN_SAMPLES": "5",
        "JOBWARDEN_BASELINE_WINDOW": "1h",
    }
    async with app_context(migrated_dsn, **env) as ctx, ctx.db.connection() as conn:
        await record_run(conn, JOB, at(0))
        await evaluation.run_once(ctx, at(1))
        for second in range(10, 60, 10):  # normal: 100 ms a run
            await record_runs(conn, JOB, at(second), 2, duration_ms=100)
            await evaluation.run_once(ctx, at(second + 1))
        await baselines.run_once(ctx, at(100))
        baseline = await conn.fetchrow(
            'SELECT * FROM performance_baselines WHERE "jobId" = $1', JOB
        )
        assert baseline is not None
        assert (baseline["baselineAvgMs"], baseline["sampleSize"]) == (100.0, 10)
        assert baseline["id"].startswith("c")
        assert baseline["updatedAt"] == at(100).replace(tzinfo=None)

        await record_runs(conn, JOB, at(101), 3, duration_ms=400)
        await evaluation.run_once(ctx, at(102))
        [alert] = await alerts(conn)
        assert (alert["type"], alert["severity"]) == ("performance_regression", "WARNING")
        assert "averaged 400 ms over 3 runs" in alert["message"]
        assert "4.0x its baseline of 100 ms" in alert["message"]
        # The slow runs leave the 10 s window: resolved after two healthy passes.
        await evaluation.run_once(ctx, at(120))
        await evaluation.run_once(ctx, at(121))
        assert await open_alerts(conn) == []


async def test_a_counter_reset_raises_nothing(ctx: AppContext) -> None:
    async with ctx.db.connection() as conn:
        await record_runs(conn, JOB, at(0), 2, ok=False)
        await evaluation.run_once(ctx, at(1))
        # The web app's table is wiped and the row created again with old failures.
        await conn.execute('DELETE FROM job_metrics WHERE "jobId" = $1', JOB)
        await record_runs(conn, JOB, at(10), 5, ok=False)
        result = await evaluation.run_once(ctx, at(11))
        assert result.sampling.resets == [JOB]
        # Counters going down (a manual reset to zero) is a reset too.
        await conn.execute(
            'UPDATE job_metrics SET "totalExecutions" = 1, "failureCount" = 1 WHERE "jobId" = $1',
            JOB,
        )
        result = await evaluation.run_once(ctx, at(21))
        assert result.sampling.resets == [JOB]
        assert await alerts(conn) == []
        assert await conn.fetchval("SELECT count(*) FROM jobwarden.job_history") == 0
        # After the reset, new failures count from the fresh sample.
        await record_runs(conn, JOB, at(30), 3, ok=False)
        await evaluation.run_once(ctx, at(31))
        assert [a["type"] for a in await alerts(conn)] == ["job_failure"]


async def test_two_evaluators_racing_raise_one_alert(migrated_dsn: str) -> None:
    async with (
        app_context(migrated_dsn) as one,
        app_context(migrated_dsn) as two,
        one.db.connection() as conn,
    ):
        await record_run(conn, JOB, at(0))
        await evaluation.run_once(one, at(1))
        await record_runs(conn, JOB, at(5), 3, ok=False)
        for second in (10, 20, 30):
            await asyncio.gather(
                evaluation.run_once(one, at(second)), evaluation.run_once(two, at(second))
            )
        [alert] = await alerts(conn)
        assert alert["metadata"]["occurrences"] == 3  # once per pass, not per evaluator
        history = await conn.fetchval("SELECT sum(failures) FROM jobwarden.job_history")
        assert history == 3  # the runs were recorded once


async def test_an_alert_resolved_by_hand_stays_quiet_until_the_condition_clears(
    ctx: AppContext,
) -> None:
    async with ctx.db.connection() as conn:
        await record_run(conn, JOB, at(0))
        await evaluation.run_once(ctx, at(1))
        await record_runs(conn, JOB, at(10), 3, ok=False)
        await evaluation.run_once(ctx, at(11))
        await conn.execute(
            'UPDATE alerts SET resolved = true, "resolvedAt" = now(), "updatedAt" = now()'
        )
        await record_run(conn, JOB, at(20), ok=False)
        await evaluation.run_once(ctx, at(21))
        await evaluation.run_once(ctx, at(31))
        assert len(await alerts(conn)) == 1
        assert await open_alerts(conn) == []

        await record_run(conn, JOB, at(40))  # the condition clears once ...
        await evaluation.run_once(ctx, at(41))
        await record_runs(conn, JOB, at(50), 3, ok=False)  # ... and comes back: a new alert
        await evaluation.run_once(ctx, at(51))
        assert len(await alerts(conn)) == 2
        assert len(await open_alerts(conn)) == 1


async def test_paused_and_maintenance_jobs_raise_nothing(ctx: AppContext) -> None:
    async with ctx.db.connection() as conn:
        await record_run(conn, JOB, at(0))
        await evaluation.run_once(ctx, at(1))
        await expectations.pause(conn, JOB, at(2))
        await record_runs(conn, JOB, at(10), 5, ok=False)
        await evaluation.run_once(ctx, at(11))
        assert await alerts(conn) == []
        await expectations.resume(conn, JOB, at(12))
        await expectations.maintenance(conn, JOB, at(100), at(12))
        await record_run(conn, JOB, at(20), ok=False)
        await evaluation.run_once(ctx, at(21))
        assert await alerts(conn) == []
        await record_run(conn, JOB, at(110), ok=False)
        await evaluation.run_once(ctx, at(111))  # maintenance is over
        assert [a["type"] for a in await alerts(conn)] == ["job_failure"]


async def test_the_server_time_zone_shifts_nothing(cluster: Cluster, migrated_dsn: str) -> None:
    database = urlsplit(migrated_dsn).path.lstrip("/")
    await cluster.execute(
        f"ALTER DATABASE {quote_ident(database)} SET TimeZone = 'America/New_York'"
    )
    async with app_context(migrated_dsn) as ctx, ctx.db.connection() as conn:
        await expectations.set_expectation(conn, JOB, ExpectationChange(every=3600), at(0))
        await record_run(conn, JOB, at(0))
        await evaluation.run_once(ctx, at(1))
        await evaluation.run_once(ctx, at(3600 + 299))
        assert await alerts(conn) == []
        await evaluation.run_once(ctx, at(3600 + 301))
        [alert] = await alerts(conn)
        assert alert["createdAt"] == at(3600 + 301).replace(tzinfo=None)
        assert "has not run since 10:00 UTC; it was due at 11:00 UTC" in alert["message"]


async def test_baselines_need_enough_runs_and_leave_out_the_judged_window(
    migrated_dsn: str,
) -> None:
    env = {
        "JOBWARDEN_REGRESSION_WINDOW": "10s",
        "JOBWARDEN_BASELINE_WINDOW": "100s",
        "JOBWARDEN_BASELINE_MIN_SAMPLES": "6",
    }
    async with app_context(migrated_dsn, **env) as ctx, ctx.db.connection() as conn:
        await record_run(conn, JOB, at(0))
        await evaluation.run_once(ctx, at(1))
        # Three passes with 2 runs each: per-pass averages 100, 200 and 600 ms.
        for second, duration in ((10, 100), (20, 200), (30, 600)):
            await record_runs(conn, JOB, at(second), 2, duration_ms=duration)
            await evaluation.run_once(ctx, at(second + 1))
        result = await baselines.run_once(ctx, at(35))  # the last pass is being judged
        assert result.updated == 0  # 4 runs before the judged window: fewer than 6
        assert await conn.fetchval("SELECT count(*) FROM performance_baselines") == 0

        baseline = await baselines.run_once(ctx, at(45))
        assert baseline.updated == 1
        row = await conn.fetchrow('SELECT * FROM performance_baselines WHERE "jobId" = $1', JOB)
        assert row is not None
        assert row["sampleSize"] == 6
        assert row["baselineAvgMs"] == 300.0  # (200 + 400 + 1200) / 6
        assert row["baselineP95Ms"] == 560.0  # p95 of the per-pass averages 100, 200, 600
        first_id = row["id"]

        # Later runs move the baseline: the same row is rewritten, one row per job.
        await record_runs(conn, JOB, at(50), 6, duration_ms=1000)
        await evaluation.run_once(ctx, at(51))
        assert (await baselines.run_once(ctx, at(65))).updated == 1
        rows = await conn.fetch('SELECT * FROM performance_baselines WHERE "jobId" = $1', JOB)
        assert [(r["id"], r["sampleSize"]) for r in rows] == [(first_id, 12)]
        assert rows[0]["baselineAvgMs"] == 650.0  # (1800 + 6000) / 12
        assert rows[0]["updatedAt"] == at(65).replace(tzinfo=None)


async def test_a_reset_or_deleted_row_does_not_make_a_scheduled_job_look_missed(
    ctx: AppContext,
) -> None:
    day_before = at(-86400)
    async with ctx.db.connection() as conn:
        for job in ("emails", "billing"):
            await expectations.set_expectation(conn, job, ExpectationChange(every=3600), day_before)
            await record_run(conn, job, at(0))
        await evaluation.run_once(ctx, at(1))
        # The web app wipes one row, and zeroes the other's counters and times.
        await conn.execute("DELETE FROM job_metrics WHERE \"jobId\" = 'emails'")
        await conn.execute(
            'UPDATE job_metrics SET "totalExecutions" = 0, "successCount" = 0, '
            '"lastExecutionAt" = NULL, "lastSuccessAt" = NULL WHERE "jobId" = \'billing\''
        )
        await evaluation.run_once(ctx, at(10))
        await evaluation.run_once(ctx, at(3600))
        assert await alerts(conn) == []  # both ran at 10:00 and are due at 11:00 + 5m
        # Still expected: when the hour and the grace pass without a run, it is missed.
        await evaluation.run_once(ctx, at(3600 + 301))
        [alert] = await alerts(conn)
        assert alert["type"] == "system_health"  # both scheduled jobs are missed


async def test_a_schedule_set_later_is_due_from_when_it_was_set(ctx: AppContext) -> None:
    async with ctx.db.connection() as conn:
        await expectations.pause(conn, "nightly-report", at(-86400))  # created a day ago
        await expectations.resume(conn, "nightly-report", at(-86000))
        await expectations.set_expectation(
            conn, "nightly-report", ExpectationChange(every=600), at(0)
        )
        await evaluation.run_once(ctx, at(60))
        assert await alerts(conn) == []
        await evaluation.run_once(ctx, at(600 + 301))
        assert [a["type"] for a in await alerts(conn)] == ["job_missed"]


async def test_a_cron_job_across_the_spring_forward_night_with_the_daemon_down(
    ctx: AppContext,
) -> None:
    """02:30 New York does not exist on 2026-03-08: the run is due at 03:30 EDT (07:30 UTC).
    jobwarden is down from Saturday 08:00 UTC to Sunday 08:00 UTC, across that due time."""
    saturday_run = datetime(2026, 3, 7, 7, 30, 2, tzinfo=UTC)  # 02:30 EST
    sunday = datetime(2026, 3, 8, 8, 0, tzinfo=UTC)
    change = ExpectationChange(cron="30 2 * * *", timezone="America/New_York", grace=300)
    async with ctx.db.connection() as conn:
        for job in ("on-time", "stalled"):
            await expectations.set_expectation(conn, job, change, saturday_run - timedelta(days=7))
            await record_run(conn, job, saturday_run)
        await evaluation.run_once(ctx, saturday_run + timedelta(minutes=30))
        await record_run(conn, "on-time", datetime(2026, 3, 8, 7, 30, 1, tzinfo=UTC))

        await evaluation.run_once(ctx, sunday)  # the first pass back
        [alert] = await alerts(conn)
        assert alert["metadata"]["jobId"] == "stalled"
        assert alert["message"] == (
            "stalled has not run since 2026-03-07 07:30 UTC; it was due at 07:30 UTC "
            "(cron 30 2 * * * (America/New_York), grace 5m)"
        )
        assert alert["metadata"]["dueAt"] == "2026-03-08T07:30:00Z"


async def test_a_pass_that_dies_after_sampling_loses_no_alert(ctx: AppContext) -> None:
    async with ctx.db.connection() as conn:
        await record_run(conn, JOB, at(0))
        await evaluation.run_once(ctx, at(1))
        await record_runs(conn, JOB, at(10), 3, ok=False)
        # A pass samples the failures, then the process dies before judging them.
        await sample_jobs(conn, at(11))
        assert await alerts(conn) == []
        # The next pass (after a restart, or on another replica) sees no new runs, but the
        # failures are in the samples and history it judges: the alert is raised.
        result = await evaluation.run_once(ctx, at(21))
        assert result.sampling.deltas == []
        [alert] = await alerts(conn)
        assert alert["message"].startswith(f"{JOB} failed 3 times in a row")
