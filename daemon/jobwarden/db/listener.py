"""LISTEN/NOTIFY: one connection of its own, wake-ups fanned out to services.

A service subscribes a channel name with a `wake()` callback (cheap, synchronous:
it sets an event). A notification only says "look now": services never read its
payload, they look in their tables, so a lost notification costs latency, never
work. That is why, whenever the connection is (re)established, every subscriber is
woken: something may have been notified while nobody listened.

The connection reconnects by itself with capped backoff. Behind PgBouncer in
transaction mode LISTEN does not work: with `DIRECT_URL` the listener uses it;
without, there is no listener (url None) and services rely on their ticks.
"""

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import asyncpg

from jobwarden.backoff import BackoffPolicy
from jobwarden.db.pg import DATABASE_ERRORS, TCP_KEEPALIVES, Conn
from jobwarden.db.pool import session_settings
from jobwarden.dsn import DatabaseUrl
from jobwarden.logsetup import get_logger

log = get_logger(__name__)

Wake = Callable[[], None]


class Listener:
    def __init__(
        self,
        url: DatabaseUrl | None,
        *,
        connect_timeout: float = 10.0,
        backoff: BackoffPolicy | None = None,
    ) -> None:
        self._url = url
        self._connect_timeout = connect_timeout
        self._backoff = backoff or BackoffPolicy(initial=0.5, maximum=15.0)
        self._subscribers: dict[str, list[Wake]] = {}
        self._lost = asyncio.Event()
        self._conn: asyncpg.Connection[Any] | None = None

    @property
    def enabled(self) -> bool:
        return self._url is not None

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    def subscribe(self, channel: str, wake: Wake) -> None:
        """Call `wake()` on every NOTIFY of `channel`, and after every (re)connect."""
        self._subscribers.setdefault(channel, []).append(wake)

    def wake_all(self) -> None:
        for wakes in self._subscribers.values():
            for wake in wakes:
                wake()

    async def run(self, stop: asyncio.Event) -> None:
        """Listen until `stop` is set, reconnecting whenever the connection is lost."""
        if self._url is None:
            return
        failures = 0
        try:
            while not stop.is_set():
                try:
                    await self._connect()
                except DATABASE_ERRORS as exc:
                    failures += 1
                    delay = self._backoff.delay(failures)
                    log.warning(
                        "cannot listen for notifications; will retry",
                        error=f"{type(exc).__name__}: {exc}",
                        retry_in_s=round(delay, 2),
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    continue
                if failures:
                    log.info("listening for notifications again", after_failures=failures)
                failures = 0
                self.wake_all()
                await _first(stop.wait(), self._lost.wait())
                if not stop.is_set():
                    log.warning("notification connection lost; reconnecting")
        finally:
            await self._close()

    async def _connect(self) -> None:
        assert self._url is not None
        await self._close()
        self._lost.clear()
        conn: asyncpg.Connection[Any] = await asyncpg.connect(
            self._url.dsn,
            timeout=self._url.connect_timeout or self._connect_timeout,
            statement_cache_size=0,
            server_settings={
                **session_settings(self._url),
                **TCP_KEEPALIVES,
                "application_name": "jobwarden listener",
            },
        )
        try:
            for channel, wakes in self._subscribers.items():
                await conn.add_listener(channel, _callback(wakes))
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._on_terminated)
        self._conn = conn

    def _on_terminated(self, conn: Conn) -> None:
        if conn is self._conn:
            self._lost.set()

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), 5)
            except (*DATABASE_ERRORS, asyncio.CancelledError):  # type: ignore[misc]
                conn.terminate()


def _callback(wakes: list[Wake]) -> Callable[[Conn, int, str, object], None]:
    def on_notify(_conn: Conn, _pid: int, _channel: str, _payload: object) -> None:
        for wake in wakes:
            wake()

    return on_notify


async def _first(*waits: Any) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
