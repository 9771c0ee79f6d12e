"""Reported runs added up into job_metrics: each exactly once, beside the web app's own
increments, with two folders at once, and across a fold killed mid-statement."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from jobwarden.db.pg import Conn
from jobwarden.monitoring import runs
from jobwarden.monitoring.rollup import fold_runs
from jobwarden.monitoring.runs import Run

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def run(job: str, outcome: str, duration: int | None, minutes_ago: float = 1) -> Run:
    finished = NOW - timedelta(minutes=minutes_ago)
    return Run(job_id=job, outcome=outcome, finished_at=finished, duration_ms=duration)


async def metrics(conn: Conn, job: str) -> dict[str, Any]:
    row = await conn.fetchrow('SELECT * FROM job_metrics WHERE "jobId" = $1', job)
    assert row is not None
    return dict(row)


async def waiting(conn: Conn) -> int:
    count: int = await conn.fetchval("SELECT count(*) FROM jobwarden.run_inbox")
    return count


async def app_increment(conn: Conn, job: str, successes: int) -> None:
    """What the web app's runner does after each run (Prisma `increment`)."""
    for _ in range(successes):
        await conn.execute(
            'UPDATE job_metrics SET "totalExecutions" = "totalExecutions" + 1,'
            ' "successCount" = "successCount" + 1,'
            ' "updatedAt" = now() AT TIME ZONE \'UTC\' WHERE "jobId" = $1',
            job,
        )


async def test_a_new_job_gets_a_row_like_prismas(migrated_dsn: str) -> None:
    conn = await asyncpg.connect(migrated_dsn)
    try:
        await runs.record_runs(
            conn,
            [
                run("export", "success", 1200, minutes_ago=30),
                run("export", "failure", 300, minutes_ago=20),
                run("export", "success", None, minutes_ago=10),  # duration not known
            ],
        )
        result = await fold_runs(conn, NOW)
        row = await metrics(conn, "export")
        left = await waiting(conn)
        again = await fold_runs(conn, NOW)
    finally:
        await conn.close()
    assert (result.runs, result.jobs) == (3, 1)
    assert row["id"].startswith("c")
    assert len(row["id"]) == 25
    assert (row["totalExecutions"], row["successCount"], row["failureCount"]) == (3, 2, 1)
    assert (row["totalDurationMs"], row["minDurationMs"], row["maxDurationMs"]) == (1500, 300, 1200)
    assert row["lastExecutionAt"] == (NOW - timedelta(minutes=10)).replace(tzinfo=None)
    assert row["lastSuccessAt"] == (NOW - timedelta(minutes=10)).replace(tzinfo=None)
    assert row["lastFailureAt"] == (NOW - timedelta(minutes=20)).replace(tzinfo=None)
    assert row["updatedAt"] == NOW.replace(tzinfo=None)
    assert left == 0
    assert again.runs == 0


async def test_the_web_apps_counts_and_times_are_kept(migrated_dsn: str) -> None:
    conn = await asyncpg.connect(migrated_dsn)
    try:
        await conn.execute(
            'INSERT INTO job_metrics (id, "jobId", "totalExecutions", "successCount",'
            ' "totalDurationMs", "minDurationMs", "maxDurationMs", "lastExecutionAt",'
            ' "lastSuccessAt", metadata, "updatedAt")'
            " VALUES ('cappsrow', 'mixed', 10, 10, 5000, 100, 900, $1, $1,"
            ' \'{"team": "billing"}\', $1)',
            (NOW + timedelta(hours=1)).replace(tzinfo=None),  # newer than any run below
        )
        await runs.record_runs(conn, [run("mixed", "failure", 50), run("mixed", "success", None)])
        await fold_runs(conn, NOW)
        row = await metrics(conn, "mixed")
    finally:
        await conn.close()
    assert (row["totalExecutions"], row["successCount"], row["failureCount"]) == (12, 11, 1)
    assert (row["totalDurationMs"], row["minDurationMs"], row["maxDurationMs"]) == (5050, 50, 900)
    assert row["lastExecutionAt"] == (NOW + timedelta(hours=1)).replace(tzinfo=None)
    assert row["lastFailureAt"] == (NOW - timedelta(minutes=1)).replace(tzinfo=None)
    assert row["metadata"] == '{"team": "billing"}'
    assert row["id"] == "cappsrow"


async def test_exact_beside_the_app_and_a_second_folder(migrated_dsn: str) -> None:
    """The web app increments the same row while two folders take turns over 2,000
    runs: nothing is lost and nothing is counted twice."""
    setup = await asyncpg.connect(migrated_dsn)
    await setup.execute(
        'INSERT INTO job_metrics (id, "jobId", "updatedAt")'
        " VALUES ('cshared', 'shared', now() AT TIME ZONE 'UTC')"
    )
    conns = [await asyncpg.connect(migrated_dsn) for _ in range(4)]

    async def report() -> None:
        for _ in range(20):
            batch = [run("shared", "failure" if i % 10 == 0 else "success", i) for i in range(100)]
            await runs.record_runs(conns[0], batch)

    async def fold(conn: Conn) -> int:
        folded = 0
        for _ in range(40):
            folded += (await fold_runs(conn, NOW, batch=150)).runs
        return folded

    try:
        _, folded_a, folded_b, _ = await asyncio.gather(
            report(), fold(conns[1]), fold(conns[2]), app_increment(conns[3], "shared", 300)
        )
        rest = await fold_runs(setup, NOW)
        row = await metrics(setup, "shared")
    finally:
        for conn in [setup, *conns]:
            await conn.close()
    assert folded_a + folded_b + rest.runs == 2000
    assert row["totalExecutions"] == 2000 + 300
    assert row["failureCount"] == 200
    assert row["successCount"] == 1800 + 300
    assert row["totalDurationMs"] == 20 * sum(range(100))


async def test_a_fold_that_dies_mid_statement_counts_nothing(migrated_dsn: str) -> None:
    """The fold has taken the runs out of the inbox when it fails waiting for the row
    (a lock timeout here; a daemon killed there ends the same way: its transaction is
    undone): the runs are back, and the next fold counts them once."""
    admin = await asyncpg.connect(migrated_dsn)
    blocker = await asyncpg.connect(migrated_dsn)
    folder = await asyncpg.connect(migrated_dsn, server_settings={"lock_timeout": "200ms"})
    try:
        await admin.execute(
            'INSERT INTO job_metrics (id, "jobId", "updatedAt")'
            " VALUES ('ckill', 'killed', now() AT TIME ZONE 'UTC')"
        )
        await runs.record_runs(admin, [run("killed", "success", 10) for _ in range(5)])
        async with blocker.transaction():
            await blocker.execute("SELECT 1 FROM job_metrics WHERE \"jobId\" = 'killed' FOR UPDATE")
            died = await asyncio.gather(fold_runs(folder, NOW), return_exceptions=True)
        after_failure = await waiting(admin)
        result = await fold_runs(admin, NOW)
        row = await metrics(admin, "killed")
    finally:
        for conn in (admin, blocker, folder):
            await conn.close()
    assert isinstance(died[0], asyncpg.LockNotAvailableError)
    assert after_failure == 5
    assert result.runs == 5
    assert row["totalExecutions"] == 5


async def streak(conn: Conn, job: str) -> tuple[int, datetime | None, int | None]:
    row = await conn.fetchrow(
        "SELECT failure_streak, last_success_at, last_success_ms FROM jobwarden.run_jobs"
        " WHERE job_id = $1",
        job,
    )
    assert row is not None
    return row["failure_streak"], row["last_success_at"], row["last_success_ms"]


async def test_failures_in_a_row_are_exact_also_out_of_order(migrated_dsn: str) -> None:
    """The streak counts failures that finished after the newest success, however the
    runs arrive and however the folds cut them."""
    conn = await asyncpg.connect(migrated_dsn)
    seen: list[int] = []
    try:
        steps: list[list[Run]] = [
            # F F S F, in order: one failure since the success
            [run("j", "failure", 1, 60), run("j", "failure", 1, 50), run("j", "success", 7, 40),
             run("j", "failure", 1, 30)],
            [run("j", "failure", 1, 45)],  # late, before the success: no change
            [run("j", "failure", 1, 20)],  # after it: two
            [run("j", "success", 9, 25)],  # late success after the first: one (the 20)
            [run("j", "success", 3, 35)],  # late success older than the newest: one
            [run("j", "success", 5, 10)],  # newest: none
        ]  # fmt: skip
        for batch in steps:
            await runs.record_runs(conn, batch)
            await fold_runs(conn, NOW, batch=2)  # folds cut the batches as they like
            seen.append((await streak(conn, "j"))[0])
        final = await streak(conn, "j")
    finally:
        await conn.close()
    assert seen == [1, 1, 2, 1, 1, 0]
    assert final[1] == NOW - timedelta(minutes=10)
    assert final[2] == 5  # the newest success's duration


async def test_the_minimum_comes_from_the_first_known_duration(migrated_dsn: str) -> None:
    """healthchecks-style: first an end without a start (no duration), then timed runs."""
    conn = await asyncpg.connect(migrated_dsn)
    try:
        await runs.record_runs(conn, [run("cron", "success", None)])
        await fold_runs(conn, NOW)
        await runs.record_runs(conn, [run("cron", "success", 500), run("cron", "success", 700)])
        await fold_runs(conn, NOW)
        row = await metrics(conn, "cron")
    finally:
        await conn.close()
    assert (row["minDurationMs"], row["maxDurationMs"], row["totalExecutions"]) == (500, 700, 3)


async def test_a_backlog_is_folded_over_several_passes(migrated_dsn: str) -> None:
    """A pass folds for a limited time (a batch at least), so alerting goes on while a
    backlog is worked off; with time enough, everything."""
    conn = await asyncpg.connect(migrated_dsn)
    try:
        await runs.record_runs(conn, [run("busy", "success", 1) for _ in range(50)])
        first = await fold_runs(conn, NOW, batch=20, time_limit=0)
        left = await waiting(conn)
        second = await fold_runs(conn, NOW, batch=20)
        row = await metrics(conn, "busy")
    finally:
        await conn.close()
    assert first.runs == 20
    assert left == 30
    assert second.runs == 30
    assert row["totalExecutions"] == 50
