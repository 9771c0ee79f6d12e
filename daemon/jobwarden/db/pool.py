"""The one asyncpg pool of the process, and how it is opened.

Every session runs with `TimeZone=UTC`: the shared tables hold UTC in
`timestamp without time zone` columns (as Prisma writes them), so a server whose
TimeZone is not UTC must not shift them. With Prisma's `?schema=X` the
search_path is exactly X, as for the web app.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from jobwarden.backoff import BackoffPolicy
from jobwarden.config import Settings
from jobwarden.db.pg import Conn, quote_ident
from jobwarden.dsn import DatabaseUrl
from jobwarden.logsetup import get_logger
from jobwarden.sdnotify import Notifier

log = get_logger(__name__)

DEFAULT_ACQUIRE_TIMEOUT = 10.0
# Errors that mean "not reachable yet": keep trying. Anything else (a wrong password,
# a database that does not exist) will not fix itself by waiting.
TRANSIENT_CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.PostgresConnectionError,
    asyncpg.ConnectionDoesNotExistError,
)


class DatabaseUnavailable(Exception):
    """Connecting failed for a reason waiting will not fix."""


@dataclass(frozen=True)
class PoolStats:
    size: int
    free: int
    min: int
    max: int


class Database:
    def __init__(self, pool: asyncpg.Pool, url: DatabaseUrl) -> None:
        self.pool = pool
        self.url = url

    @property
    def shared_schema(self) -> str:
        return self.url.schema or "public"

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        """A pooled connection, waiting at most Prisma's `pool_timeout` (default 10 s)."""
        timeout = self.url.pool_timeout or DEFAULT_ACQUIRE_TIMEOUT
        async with self.pool.acquire(timeout=timeout) as conn:
            yield conn

    async def ping(self, timeout: float = 2.0) -> float:
        """Round-trip time of `SELECT 1` in milliseconds; raises when unreachable."""
        started = time.perf_counter()
        async with self.connection() as conn:
            await conn.fetchval("SELECT 1", timeout=timeout)
        return (time.perf_counter() - started) * 1000

    def stats(self) -> PoolStats:
        return PoolStats(
            size=self.pool.get_size(),
            free=self.pool.get_idle_size(),
            min=self.pool.get_min_size(),
            max=self.pool.get_max_size(),
        )

    async def close(self, timeout: float = 10.0) -> None:
        try:
            await asyncio.wait_for(self.pool.close(), timeout)
        except TimeoutError:
            log.warning("database pool did not close in time; terminating", timeout_s=timeout)
            self.pool.terminate()


async def use_json_codecs(conn: Conn) -> None:
    """json and jsonb columns read as Python objects and accept them as parameters."""
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, schema="pg_catalog", encoder=json.dumps, decoder=json.loads, format="text"
        )


def session_settings(url: DatabaseUrl) -> dict[str, str]:
    """Run-time settings of every jobwarden session: UTC, its name, Prisma's schema,
    custom plans."""
    settings = {"TimeZone": "UTC", "application_name": url.application_name or "jobwarden"}
    if not url.pgbouncer:  # there statements are not cached, and PgBouncer refuses it
        # jobwarden's tables grow from empty in minutes (a burst of alerts): a generic
        # plan made while one was small would scan it whole long after. Planning each
        # statement costs well under a millisecond.
        settings["plan_cache_mode"] = "force_custom_plan"
    if url.schema:
        settings["search_path"] = quote_ident(url.schema)
    return settings


async def open_pool(url: DatabaseUrl, settings: Settings) -> asyncpg.Pool:
    server_settings = session_settings(url)
    pool: asyncpg.Pool = await asyncpg.create_pool(
        url.dsn,
        min_size=1,
        max_size=settings.effective_pool_size,
        timeout=url.connect_timeout or settings.db_connect_timeout,
        command_timeout=url.socket_timeout,
        statement_cache_size=0 if url.pgbouncer else 100,
        max_inactive_connection_lifetime=300,
        server_settings=server_settings,
        init=use_json_codecs,
    )
    return pool


async def connect_with_retry(
    url: DatabaseUrl,
    settings: Settings,
    notifier: Notifier,
    stop: asyncio.Event,
    policy: BackoffPolicy | None = None,
) -> Database | None:
    """Open the pool, waiting with capped backoff while the database is unreachable.

    Returns None when `stop` is set while waiting. Each failed try is logged and
    shown in systemd's STATUS=; the start-up timeout is extended while waiting,
    so systemd sees progress rather than a hung start.
    """
    policy = policy or BackoffPolicy(initial=0.5, maximum=settings.db_retry_max_delay)
    attempt = 0
    while not stop.is_set():
        attempt += 1
        try:
            pool = await open_pool(url, settings)
        except TRANSIENT_CONNECT_ERRORS as exc:
            delay = policy.delay(attempt)
            log.warning(
                "database unreachable; will retry",
                attempt=attempt,
                retry_in_s=round(delay, 2),
                error=f"{type(exc).__name__}: {exc}",
            )
            notifier.status(f"Waiting for the database (attempt {attempt}, retry in {delay:.1f}s)")
            notifier.extend_timeout(delay + settings.db_connect_timeout + 5)
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                continue
            return None
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise DatabaseUnavailable(
                f"cannot use the database: {type(exc).__name__}: {exc}"
            ) from exc
        log.info(
            "database connected",
            attempt=attempt,
            shared_schema=url.schema or "public",
            pool_max=settings.effective_pool_size,
        )
        return Database(pool, url)
    return None
