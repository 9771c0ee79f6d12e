"""LISTEN/NOTIFY wake-ups: at commit, and again after the connection comes back."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from jobwarden.alerts.outbox import NOTIFY_CHANNEL
from jobwarden.backoff import BackoffPolicy
from jobwarden.db.listener import Listener
from jobwarden.dsn import parse_database_url
from tests.integration.webapp import insert_alert


class Wakes:
    """A subscriber that counts its wake-ups; tests wait for a count, never sleep."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = asyncio.Event()

    def __call__(self) -> None:
        self.count += 1
        self._changed.set()

    async def reach(self, count: int, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while self.count < count:
                self._changed.clear()
                await self._changed.wait()


@asynccontextmanager
async def listening(dsn: str) -> AsyncIterator[tuple[Listener, Wakes]]:
    listener = Listener(parse_database_url(dsn), backoff=BackoffPolicy(initial=0.05, maximum=0.2))
    woken = Wakes()
    listener.subscribe(NOTIFY_CHANNEL, woken)
    stop = asyncio.Event()
    task = asyncio.create_task(listener.run(stop))
    try:
        yield listener, woken
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_an_alert_insert_wakes_the_subscriber_at_commit(migrated_dsn: str) -> None:
    async with listening(migrated_dsn) as (_, woken):
        await woken.reach(1)  # connected: everyone is woken once
        conn = await asyncpg.connect(migrated_dsn)
        try:
            await insert_alert(conn)
        finally:
            await conn.close()
        await woken.reach(2)


async def test_a_lost_connection_reconnects_and_wakes_everyone(migrated_dsn: str) -> None:
    async with listening(migrated_dsn) as (listener, woken):
        await woken.reach(1)
        conn = await asyncpg.connect(migrated_dsn)
        try:
            killed = await conn.fetchval(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'jobwarden listener'"
            )
            assert killed
            await woken.reach(2)  # back, and whatever was missed gets looked at
            assert listener.connected
            await insert_alert(conn)
            await woken.reach(3)
        finally:
            await conn.close()
