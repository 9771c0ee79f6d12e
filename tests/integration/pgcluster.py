"""The PostgreSQL the integration tests use: TEST_DATABASE_URL, or an embedded one.

Tests never mock the database. Each test gets its own database: cloned from a
migrated template (fast) or empty (for migration tests).
"""

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from jobwarden.db.migrations import apply_migrations, load_migrations
from jobwarden.db.pg import quote_ident


def dsn_for(dsn: str, database: str) -> str:
    """The same server and credentials, another database."""
    parts = urlsplit(dsn)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("dbname", "database")]
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", urlencode(query), ""))


@dataclass(frozen=True)
class UnixTarget:
    path: str


@dataclass(frozen=True)
class TcpTarget:
    host: str
    port: int


def server_address(dsn: str) -> UnixTarget | TcpTarget:
    """Where the server listens, for the TCP proxy that plays an outage."""
    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query))
    host = query.get("host") or parts.hostname or "localhost"
    port = int(query.get("port") or parts.port or 5432)
    if host.startswith("/"):
        return UnixTarget(str(Path(host) / f".s.PGSQL.{port}"))
    return TcpTarget(host, port)


def with_host(dsn: str, host: str, port: int) -> str:
    """The DSN pointed at host:port over TCP, dropping any unix-socket `host=`."""
    parts = urlsplit(dsn)
    userinfo, at, _ = parts.netloc.rpartition("@")
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("host", "port")]
    netloc = f"{userinfo}{at}{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), ""))


def with_params(dsn: str, **params: str) -> str:
    """The DSN with query parameters added (Prisma's, say)."""
    parts = urlsplit(dsn)
    query = urlencode([*parse_qsl(parts.query), *params.items()])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


class Cluster:
    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.template = f"jw_template_{os.getpid()}"

    async def execute(self, sql: str) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def _run(self, sql: str) -> None:
        asyncio.run(self.execute(sql))

    def build_template(self) -> None:
        self._run(f"DROP DATABASE IF EXISTS {quote_ident(self.template)} WITH (FORCE)")
        self._run(f"CREATE DATABASE {quote_ident(self.template)} TEMPLATE template0")

        async def migrate() -> None:
            conn = await asyncpg.connect(
                dsn_for(self.admin_dsn, self.template), server_settings={"TimeZone": "UTC"}
            )
            try:
                await apply_migrations(conn, load_migrations(), lock_timeout=30)
            finally:
                await conn.close()

        asyncio.run(migrate())

    def drop_template(self) -> None:
        self._run(f"DROP DATABASE IF EXISTS {quote_ident(self.template)} WITH (FORCE)")

    def _create_sql(self, name: str, migrated: bool) -> str:
        template = self.template if migrated else "template0"
        return f"CREATE DATABASE {quote_ident(name)} TEMPLATE {quote_ident(template)}"

    @contextmanager
    def database(self, *, migrated: bool) -> Iterator[str]:
        """A new database for one test; its DSN. Dropped afterwards."""
        name = f"jw_test_{uuid.uuid4().hex[:12]}"
        self._run(self._create_sql(name, migrated))
        try:
            yield dsn_for(self.admin_dsn, name)
        finally:
            self._run(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")

    @asynccontextmanager
    async def adatabase(self, *, migrated: bool) -> AsyncIterator[str]:
        """`database()` for use inside a running event loop."""
        name = f"jw_test_{uuid.uuid4().hex[:12]}"
        await self.execute(self._create_sql(name, migrated))
        try:
            yield dsn_for(self.admin_dsn, name)
        finally:
            await self.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
