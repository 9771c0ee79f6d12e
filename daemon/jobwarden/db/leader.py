"""Leadership: the one replica that runs the passes that judge and write.

The leader is whoever holds a session-level advisory lock on a connection of its
own (never a pooled one: the pool would hand the session, and the lock, to
whatever borrowed it next). Losing that connection loses leadership at once: the
server releases the lock when the session ends, and the termination listener
clears our flag. A follower retries every `interval` seconds, so another replica
takes over within a few seconds of the leader dying. The connection asks the
server for short TCP keepalives, so a leader cut off by the network is dropped
within seconds too.

Behind PgBouncer in transaction mode a session lock means nothing: with
`DIRECT_URL` the lock connection uses it; without, jobwarden assumes it runs alone
(role "single") and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Literal

import asyncpg

from jobwarden.db.pg import DATABASE_ERRORS, TCP_KEEPALIVES, Conn
from jobwarden.db.pool import session_settings
from jobwarden.dsn import DatabaseUrl
from jobwarden.logsetup import get_logger

log = get_logger(__name__)

# Session advisory lock key: ASCII "JWLEADER".
LEADER_LOCK_KEY = 0x4A574C4541444552
CHECK_INTERVAL_SECONDS = 2.0
PROBE_TIMEOUT_SECONDS = 3.0  # a leader that cannot prove its lock this fast steps down

# Whether this session still holds the lock (not merely whether it is alive: behind a
# transaction pooler by mistake, "alive" would say nothing about the lock).
_HOLDS_LOCK = """
SELECT EXISTS (
    SELECT 1 FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()
      AND classid = $1 AND objid = $2 AND objsubid = 1
)
"""

Role = Literal["leader", "follower", "single"]


class Leadership:
    def __init__(
        self,
        url: DatabaseUrl | None,
        *,
        connect_timeout: float = 10.0,
        key: int = LEADER_LOCK_KEY,
    ) -> None:
        """`url` is where the lock is taken; None means "assume this replica is alone"."""
        self._url = url
        self._connect_timeout = connect_timeout
        self._key = key
        self._conn: asyncpg.Connection[Any] | None = None
        self._leader = url is None
        self.since = time.monotonic()  # when this replica last took (or lost) the lead
        self.lost_at: float | None = None  # when this replica last lost the lead, if ever

    @property
    def role(self) -> Role:
        if self._url is None:
            return "single"
        return "leader" if self._leader else "follower"

    @property
    def is_leader(self) -> bool:
        return self._leader

    def led_since(self, moment: float) -> bool:
        """Whether this replica leads now or led at some time after monotonic `moment`."""
        return self._leader or (self.lost_at is not None and self.lost_at >= moment)

    async def check(self) -> bool:
        """Take the lock if free, or confirm we still hold it; return whether we lead."""
        if self._url is None:
            return True
        try:
            conn = await self._connection()
            if self._leader:
                held = await conn.fetchval(
                    _HOLDS_LOCK,
                    self._key >> 32,
                    self._key & 0xFFFFFFFF,
                    timeout=PROBE_TIMEOUT_SECONDS,
                )
                if not held:
                    self._lost("the lock is no longer held by this session")
            elif await conn.fetchval(
                "SELECT pg_try_advisory_lock($1)", self._key, timeout=PROBE_TIMEOUT_SECONDS
            ):
                self._leader, self.since = True, time.monotonic()
                log.info("this replica is now the leader")
        except DATABASE_ERRORS as exc:
            self._lost(f"{type(exc).__name__}: {exc}")
        return self._leader

    async def run(self, stop: asyncio.Event, interval: float = CHECK_INTERVAL_SECONDS) -> None:
        """Check every `interval` seconds until `stop` is set, then step down."""
        try:
            while not stop.is_set():
                await self.check()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
        finally:
            await self.step_down()

    async def step_down(self) -> None:
        """Release the lock (by closing its session) so another replica can lead."""
        conn, self._conn = self._conn, None
        if self._url is not None:
            if self._leader:
                log.info("stepping down as leader")
            self._leader = False
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), 5)
            except (*DATABASE_ERRORS, asyncio.CancelledError):  # type: ignore[misc]
                conn.terminate()

    async def _connection(self) -> asyncpg.Connection[Any]:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        assert self._url is not None
        conn: asyncpg.Connection[Any] = await asyncpg.connect(
            self._url.dsn,
            timeout=self._url.connect_timeout or self._connect_timeout,
            statement_cache_size=0,
            server_settings={
                **session_settings(self._url),
                **TCP_KEEPALIVES,
                "application_name": "jobwarden leader lock",
            },
        )
        conn.add_termination_listener(self._on_terminated)
        self._conn = conn
        return conn

    def _on_terminated(self, conn: Conn) -> None:
        if conn is self._conn:  # not an older connection closing late
            self._lost("lock connection closed")

    def _lost(self, reason: str) -> None:
        if self._leader and self._url is not None:
            log.warning("lost leadership", reason=reason)
        if self._url is not None and self._leader:
            self._leader, self.since = False, time.monotonic()
            self.lost_at = self.since
        if self._conn is not None and not self._conn.is_closed():
            self._conn.terminate()
        self._conn = None
