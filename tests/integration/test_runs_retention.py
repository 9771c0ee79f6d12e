"""Retention of reported runs: partitions created ahead, whole old days dropped, the
default partition and abandoned starts pruned, run_inbox left alone, and the web app's
locks never waited on for long (the pass gives up and the next one finishes)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, time, timedelta

import asyncpg
import pytest

from jobwarden.context import AppContext
from jobwarden.db.pg import Conn
from jobwarden.monitoring import retention

RETENTION = timedelta(days=30)  # JOBWARDEN_RUN_RETENTION's default
TODAY = datetime.now(UTC).date()
BASE = datetime.combine(TODAY, time(), tzinfo=UTC)  # today's UTC midnight


def name(day: date) -> str:
    return f"runs_p{day:%Y%m%d}"


def days(first: date, count: int) -> set[str]:
    return {name(first + timedelta(days=n)) for n in range(count)}


async def attached(conn: Conn) -> set[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'jobwarden.runs'::regclass"
    )
    return {r["relname"] for r in rows}


async def exists(conn: Conn, table: str) -> bool:
    found: bool = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"jobwarden.{table}")
    return found


async def pending(conn: Conn) -> set[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'jobwarden.runs'::regclass AND i.inhdetachpending"
    )
    return {r["relname"] for r in rows}


async def insert_run(conn: Conn, job: str, recorded_at: datetime) -> int:
    """A run as the web app inserts it by SQL, recorded at `recorded_at`."""
    run_id: int = await conn.fetchval(
        "INSERT INTO jobwarden.runs (job_id, outcome, finished_at, recorded_at)"
        " VALUES ($1, 'success', $2, $2) RETURNING id",
        job,
        recorded_at,
    )
    return run_id


async def stored(conn: Conn) -> dict[int, str]:
    """run id -> the partition holding it."""
    rows = await conn.fetch("SELECT id, tableoid::regclass::text AS part FROM jobwarden.runs")
    return {r["id"]: r["part"].removeprefix("jobwarden.") for r in rows}


async def inbox(conn: Conn) -> set[int]:
    return {r["id"] for r in await conn.fetch("SELECT id FROM jobwarden.run_inbox")}


@asynccontextmanager
async def web_app_holding(dsn: str, statement: str) -> AsyncIterator[None]:
    """Another session in an open transaction that ran `statement` (its locks held)."""
    conn = await asyncpg.connect(dsn)
    try:
        tx = conn.transaction()
        await tx.start()
        await conn.execute(statement)
        try:
            yield
        finally:
            await tx.rollback()
    finally:
        await conn.close()


async def test_partitions_are_created_ahead_as_time_advances(ctx: AppContext) -> None:
    now = BASE + timedelta(days=10, hours=3)
    later = now.date()
    async with ctx.db.connection() as conn:
        # A run recorded on a day without a partition waits in the default one.
        early = await insert_run(conn, "export", BASE + timedelta(days=10, hours=1))
        before = await stored(conn)
        first = await retention.run_once(ctx, now)
        after_first = await attached(conn)
        moved = await stored(conn)
        second = await retention.run_once(ctx, now + timedelta(days=1))
        after_second = await attached(conn)
        third = await retention.run_once(ctx, now + timedelta(days=1))
    assert before[early] == "runs_default"
    assert first.created == 8
    assert days(later, 8) <= after_first
    assert moved[early] == name(later)
    assert second.created == 1
    assert name(later + timedelta(days=8)) in after_second
    assert third.created == 0
    assert (first.dropped, second.dropped, first.lock_busy) == ((), (), ())
    assert first.log_fields()["partitions_created"] == 8


async def test_whole_days_past_the_retention_are_dropped_and_newer_runs_stay(
    ctx: AppContext,
) -> None:
    day1, day2 = TODAY + timedelta(days=1), TODAY + timedelta(days=2)
    async with ctx.db.connection() as conn:
        await retention.run_once(ctx, BASE + timedelta(hours=12))  # today .. +7 exist
        old = await insert_run(conn, "export", BASE + timedelta(days=1, hours=1))
        edge = await insert_run(conn, "export", BASE + timedelta(days=2, minutes=10))
        new = await insert_run(conn, "export", BASE + timedelta(days=5))
        queued = await inbox(conn)
        # The cut-off falls 1 h into day2: day1 has ended before it, day2 has not.
        first = await retention.run_once(ctx, BASE + timedelta(days=2, hours=1) + RETENTION)
        after_first = await stored(conn)
        parts_first = await attached(conn)
        day1_table = await exists(conn, name(day1))
        # The cut-off exactly at day2's end: day2 goes too.
        second = await retention.run_once(ctx, BASE + timedelta(days=3) + RETENTION)
        after_second = await stored(conn)
        parts_second = await attached(conn)
        queued_after = await inbox(conn)
    assert name(day1) in first.dropped
    assert name(day2) not in first.dropped
    assert old not in after_first
    assert after_first[edge] == name(day2)  # older than the cut-off, but its day is not
    assert after_first[new] == name(TODAY + timedelta(days=5))
    assert name(day1) not in parts_first
    assert not day1_table
    assert name(day2) in parts_first
    assert second.dropped == (name(day2),)
    assert set(after_second) == {new}
    assert name(day2) not in parts_second
    assert "runs_default" in parts_second
    assert first.lock_busy == second.lock_busy == ()
    assert queued_after == queued == {old, edge, new}  # run_inbox is never touched


async def test_old_rows_of_the_default_partition_and_abandoned_starts_are_deleted(
    ctx: AppContext,
) -> None:
    now = BASE + timedelta(hours=12)
    async with ctx.db.connection() as conn:
        gone = [
            await insert_run(conn, "export", BASE - timedelta(days=60)),
            await insert_run(conn, "export", BASE - timedelta(days=31)),
        ]
        kept = await insert_run(conn, "export", BASE - timedelta(days=20))
        before = await stored(conn)
        queued = await inbox(conn)
        await conn.execute(
            "INSERT INTO jobwarden.run_starts (job_id, run_key, started_at, recorded_at)"
            " VALUES ('export', 'abandoned', $1, $1), ('export', 'running', $2, $2)",
            now - timedelta(days=40),
            now - timedelta(hours=1),
        )
        result = await retention.run_once(ctx, now)
        after = await stored(conn)
        starts = [
            r["run_key"] for r in await conn.fetch("SELECT run_key FROM jobwarden.run_starts")
        ]
        queued_after = await inbox(conn)
    assert {before[i] for i in [*gone, kept]} == {"runs_default"}
    assert set(after) == {kept}
    assert result.default_deleted == 2
    assert result.starts_deleted == 1
    assert starts == ["running"]
    assert queued_after == queued == {*gone, kept}
    assert result.log_fields()["default_rows_deleted"] == 2


LOCKS = [
    "SELECT id FROM jobwarden.{part} FOR SHARE",
    "LOCK TABLE jobwarden.{part} IN ACCESS SHARE MODE",
    "SELECT id FROM jobwarden.runs WHERE recorded_at >= '{day}' FOR SHARE",
]


async def expect_lock_not_waited_on(ctx: AppContext, dsn: str, lock: str) -> set[str]:
    """A day the web app holds a lock on survives the pass, which returns; the next
    pass after the lock is released drops it. Returns what was pending in between."""
    day = TODAY + timedelta(days=1)
    now = BASE + timedelta(days=2, hours=1) + RETENTION
    async with ctx.db.connection() as conn:
        run = await insert_run(conn, "export", BASE + timedelta(days=1, hours=1))
        async with web_app_holding(dsn, lock.format(part=name(day), day=day.isoformat())):
            blocked = await retention.run_once(ctx, now)
            # Read from the day's table: a day pending detach is out of runs already.
            kept = await conn.fetchval(f"SELECT id FROM jobwarden.{name(day)} WHERE id = $1", run)
            left_pending = await pending(conn)
        released = await retention.run_once(ctx, now)
        after = await stored(conn)
        parts = await attached(conn)
    assert kept == run
    assert blocked.lock_busy != ()
    assert name(day) not in blocked.dropped
    assert "lock_busy" in blocked.log_fields()
    assert name(day) in released.dropped
    assert released.lock_busy == ()
    assert run not in after
    assert not parts & days(TODAY - timedelta(days=1), 3)
    return left_pending


@pytest.mark.parametrize("lock", LOCKS)
async def test_a_day_the_web_app_holds_a_lock_on_is_not_waited_on(
    ctx: AppContext, migrated_dsn: str, lock: str
) -> None:
    """As migrated (with a default partition): detach and drop in one short transaction."""
    await expect_lock_not_waited_on(ctx, migrated_dsn, lock)


@pytest.mark.parametrize("lock", LOCKS)
async def test_without_a_default_partition_days_are_detached_concurrently(
    ctx: AppContext, migrated_dsn: str, lock: str
) -> None:
    """An interrupted concurrent detach leaves a partition pending: finalized next pass."""
    async with ctx.db.connection() as conn:
        if conn.get_server_version().major < 14:
            pytest.skip("DETACH PARTITION ... CONCURRENTLY needs PostgreSQL 14")
        await conn.execute("ALTER TABLE jobwarden.runs DETACH PARTITION jobwarden.runs_default")
    left_pending = await expect_lock_not_waited_on(ctx, migrated_dsn, lock)
    assert len(left_pending) == 1  # the lock came in the concurrent detach's second step


async def test_a_day_detached_but_not_dropped_is_dropped(ctx: AppContext) -> None:
    day = TODAY + timedelta(days=1)
    async with ctx.db.connection() as conn:
        run = await insert_run(conn, "export", BASE + timedelta(days=1, hours=1))
        await conn.execute(f"ALTER TABLE jobwarden.runs DETACH PARTITION jobwarden.{name(day)}")
        result = await retention.run_once(ctx, BASE + timedelta(days=2) + RETENTION)
        left = await exists(conn, name(day))
        queued = await inbox(conn)
    assert name(day) in result.dropped
    assert not left
    assert run in queued


async def test_a_day_is_not_attached_under_a_run_still_arriving_in_the_default(
    ctx: AppContext, migrated_dsn: str
) -> None:
    """A run being written into the default partition (its day has no partition yet)
    while the pass creates that day: the pass does not wait for it, and the next one
    moves the run into its day."""
    now = BASE + timedelta(days=10, hours=3)
    late = BASE + timedelta(days=10, hours=1)
    statement = (
        "INSERT INTO jobwarden.runs (job_id, outcome, finished_at, recorded_at)"
        f" VALUES ('late', 'success', '{late.isoformat()}', '{late.isoformat()}')"
    )
    async with web_app_holding(migrated_dsn, statement):
        blocked = await retention.run_once(ctx, now)
    async with ctx.db.connection() as conn:
        await conn.execute(statement)  # the web app tries again, and commits
        created = await retention.run_once(ctx, now)
        where = await stored(conn)
    assert name(late.date()) in blocked.lock_busy
    assert created.lock_busy == ()
    assert list(where.values()) == [name(late.date())]


async def test_a_job_that_stopped_reporting_is_judged_by_its_counters_again(
    ctx: AppContext,
) -> None:
    now = BASE + timedelta(hours=12)
    old = now - RETENTION - timedelta(days=1)
    async with ctx.db.connection() as conn:
        for job in ("gone", "still-open", "recent"):
            await conn.execute(
                "INSERT INTO jobwarden.run_jobs (job_id, last_run_at, created_at, updated_at)"
                " VALUES ($1, $2, $3, $3)",
                job,
                now - timedelta(hours=1) if job == "recent" else old,
                old,
            )
        await conn.execute(
            "INSERT INTO jobwarden.run_starts (job_id, started_at) VALUES ('still-open', $1)",
            now - timedelta(days=2),
        )
        result = await retention.run_once(ctx, now)
        left = {r["job_id"] for r in await conn.fetch("SELECT job_id FROM jobwarden.run_jobs")}
    assert result.jobs_released == 1
    assert left == {"still-open", "recent"}
