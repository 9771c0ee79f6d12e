"""Leadership across replicas: one leads, another takes over when it dies."""

import asyncio
from datetime import datetime

import asyncpg

from jobwarden.context import AppContext
from jobwarden.db.leader import Leadership
from jobwarden.dsn import parse_database_url
from jobwarden.runtime.scheduler import JobScheduler, PeriodicJob


async def test_one_replica_leads_and_another_takes_over_when_it_dies(migrated_dsn: str) -> None:
    url = parse_database_url(migrated_dsn)
    first, second = Leadership(url), Leadership(url)
    try:
        assert await first.check() is True
        assert await second.check() is False
        assert (first.role, second.role) == ("leader", "follower")
        assert await first.check() is True  # a leader keeps its lock

        # The leader's lock session dies (its process crashed, or was cut off).
        admin = await asyncpg.connect(migrated_dsn)
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'jobwarden leader lock' AND pid <> pg_backend_pid() "
                "AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)"
            )
        finally:
            await admin.close()
        assert await second.check() is True
        assert await first.check() is False  # lost at once, and the lock is taken
        assert (first.role, second.role) == ("follower", "leader")
    finally:
        await first.step_down()
        await second.step_down()


async def test_stepping_down_hands_over_leadership(migrated_dsn: str) -> None:
    url = parse_database_url(migrated_dsn)
    first, second = Leadership(url), Leadership(url)
    try:
        assert await first.check() is True
        await first.step_down()
        assert first.role == "follower"
        assert await second.check() is True
    finally:
        await second.step_down()


async def test_without_a_lock_url_a_replica_assumes_it_is_alone() -> None:
    alone = Leadership(None)
    assert await alone.check() is True
    assert alone.role == "single"


async def test_a_follower_skips_passes_that_judge_and_write(
    ctx: AppContext, migrated_dsn: str
) -> None:
    holder = Leadership(parse_database_url(migrated_dsn))
    follower = Leadership(parse_database_url(migrated_dsn))
    ran = asyncio.Event()

    async def judging_pass(_: AppContext, __: datetime) -> None:
        ran.set()

    try:
        assert await holder.check() is True
        assert await follower.check() is False
        follower_ctx = AppContext(**{**vars(ctx), "leader": follower})
        scheduler = JobScheduler(
            follower_ctx, [PeriodicJob("judge", 3600, judging_pass, leader_only=True)]
        )
        await scheduler.tick("judge")  # one tick, driven directly
        assert not ran.is_set()
        await holder.step_down()
        assert await follower.check() is True
        await scheduler.tick("judge")
        assert ran.is_set()
    finally:
        await holder.step_down()
        await follower.step_down()
