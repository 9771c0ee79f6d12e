"""Versioned SQL migrations: `sql/NNNN_name.sql`, applied in order, each once.

Each file runs in its own transaction together with its ledger row in
`jobwarden.schema_migrations`; a file whose first lines hold
`-- jobwarden:no-transaction` runs statement by statement outside a transaction
(for `CREATE INDEX CONCURRENTLY`), and must therefore be safe to re-run.

Several daemons may start at once: one applies, the others wait. The wait polls
`pg_try_advisory_lock` (never a blocking lock: a session blocked in
`pg_advisory_lock` holds a snapshot, and `CREATE INDEX CONCURRENTLY` in the
holder would wait for it forever).

A database is refused, naming the file, when an applied file's checksum changed
or when it has applied versions this build does not know.
"""

import asyncio
import hashlib
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

import asyncpg

from jobwarden import __version__
from jobwarden.db.pg import Conn, quote_ident
from jobwarden.db.sqlsplit import split_statements
from jobwarden.logsetup import get_logger

log = get_logger(__name__)

# Session advisory lock key: ASCII "JWMIGRAT". Prisma Migrate uses 72707369.
MIGRATION_LOCK_KEY = 0x4A574D4947524154
_LOCK_POLL_SECONDS = 0.5
_FILENAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
_NO_TRANSACTION = re.compile(r"^\s*--\s*jobwarden:no-transaction\s*$", re.MULTILINE)

_BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS jobwarden;
CREATE TABLE IF NOT EXISTS jobwarden.schema_migrations (
    version      text PRIMARY KEY,
    name         text NOT NULL,
    checksum     text NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now(),
    execution_ms integer NOT NULL,
    applied_by   text NOT NULL
);
"""


class MigrationError(Exception):
    """The database cannot be migrated by this build; the message says why."""


class MigrationLockTimeout(Exception):
    """Another session held the migration lock for too long: worth retrying later."""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    filename: str
    sql: str = field(repr=False)
    checksum: str
    transactional: bool


@dataclass(frozen=True)
class AppliedMigration:
    version: str
    name: str
    checksum: str
    applied_at: datetime
    execution_ms: int
    applied_by: str


@dataclass(frozen=True)
class MigrationStatus:
    known: tuple[Migration, ...]
    applied: tuple[AppliedMigration, ...]

    @property
    def applied_versions(self) -> dict[str, AppliedMigration]:
        return {a.version: a for a in self.applied}

    @property
    def pending(self) -> list[Migration]:
        done = self.applied_versions
        return [m for m in self.known if m.version not in done]

    @property
    def changed(self) -> list[tuple[Migration, AppliedMigration]]:
        done = self.applied_versions
        return [
            (m, done[m.version])
            for m in self.known
            if m.version in done and done[m.version].checksum != m.checksum
        ]

    @property
    def unknown(self) -> list[AppliedMigration]:
        known = {m.version for m in self.known}
        return [a for a in self.applied if a.version not in known]

    @property
    def schema_version(self) -> str | None:
        return max((a.version for a in self.applied), default=None)

    @property
    def current(self) -> bool:
        return not (self.pending or self.changed or self.unknown)

    def problems(self) -> list[str]:
        found = [
            f"migration {m.filename} was changed after it was applied "
            f"(applied checksum {a.checksum[:12]}, file checksum {m.checksum[:12]}); "
            "restore the file and add a new migration instead"
            for m, a in self.changed
        ]
        found += [
            f"the database has migration {a.version}_{a.name} applied, which this build of "
            f"jobwarden does not know (applied by {a.applied_by}); a newer jobwarden "
            "migrated this database: upgrade this one"
            for a in self.unknown
        ]
        return found


def checksum(text: str) -> str:
    """sha256 of the file with line endings normalised, so a CRLF checkout matches."""
    normalised = text.replace("\r\n", "\n").replace("\r", "\n")
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


def default_directory() -> Traversable:
    """The migrations shipped in the wheel, or `sql/` of a source checkout."""
    packaged = resources.files("jobwarden") / "sql"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "sql"


def _sql_files(directory: Traversable) -> Iterator[Traversable]:
    return (entry for entry in directory.iterdir() if entry.name.endswith(".sql"))


def load_migrations(directory: Traversable | None = None) -> tuple[Migration, ...]:
    directory = directory or default_directory()
    migrations: dict[str, Migration] = {}
    for entry in _sql_files(directory):
        match = _FILENAME.match(entry.name)
        if match is None:
            raise MigrationError(
                f"migration file {entry.name} is not named NNNN_lowercase_name.sql"
            )
        version = match["version"]
        if version in migrations:
            raise MigrationError(
                f"migrations {migrations[version].filename} and {entry.name} share version "
                f"{version}"
            )
        text = entry.read_text(encoding="utf-8")
        migrations[version] = Migration(
            version=version,
            name=match["name"],
            filename=entry.name,
            sql=text,
            checksum=checksum(text),
            transactional=_NO_TRANSACTION.search(text) is None,
        )
    return tuple(migrations[v] for v in sorted(migrations))


async def read_status(conn: Conn, known: tuple[Migration, ...]) -> MigrationStatus:
    """What is applied and what is pending; reads only, creates nothing."""
    exists = await conn.fetchval("SELECT to_regclass('jobwarden.schema_migrations') IS NOT NULL")
    rows = (
        await conn.fetch(
            "SELECT version, name, checksum, applied_at, execution_ms, applied_by "
            "FROM jobwarden.schema_migrations ORDER BY version"
        )
        if exists
        else []
    )
    return MigrationStatus(known=known, applied=tuple(AppliedMigration(**dict(r)) for r in rows))


@asynccontextmanager
async def migration_lock(conn: Conn, timeout: float) -> AsyncIterator[None]:
    """Hold the cluster-wide migration lock on `conn`, polling until it is free."""
    deadline = time.monotonic() + timeout
    announced = False
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK_KEY):
        if time.monotonic() >= deadline:
            raise MigrationLockTimeout(
                f"gave up after {timeout:g}s waiting for the migration lock held by "
                f"{await _lock_holder(conn)}"
            )
        if not announced:
            log.info("waiting for the migration lock", holder=await _lock_holder(conn))
            announced = True
        await asyncio.sleep(_LOCK_POLL_SECONDS)
    try:
        yield
    finally:
        await conn.fetchval("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


async def _lock_holder(conn: Conn) -> str:
    row = await conn.fetchrow(
        "SELECT a.pid, a.application_name, a.client_addr::text AS addr "
        "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted "
        "AND l.classid = $1 AND l.objid = $2 LIMIT 1",
        MIGRATION_LOCK_KEY >> 32,
        MIGRATION_LOCK_KEY & 0xFFFFFFFF,
    )
    if row is None:
        return "another session"
    return f"pid {row['pid']} ({row['application_name'] or 'unnamed'} {row['addr'] or 'local'})"


def applied_by() -> str:
    return f"jobwarden {__version__} on {socket.gethostname()} pid {os.getpid()}"


async def apply_migrations(
    conn: Conn,
    known: tuple[Migration, ...],
    *,
    lock_timeout: float,
    shared_schema: str | None = None,
) -> list[Migration]:
    """Apply every pending migration under the lock; return those applied now."""
    async with migration_lock(conn, lock_timeout):
        await conn.execute(_BOOTSTRAP)
        if shared_schema:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(shared_schema)}")
        status = await read_status(conn, known)
        if problems := status.problems():
            raise MigrationError("\n".join(problems))
        for migration in status.pending:
            await _apply_one(conn, migration)
        return status.pending


async def _apply_one(conn: Conn, migration: Migration) -> None:
    log.info("applying migration", migration=migration.filename)
    started = time.monotonic()
    try:
        if migration.transactional:
            async with conn.transaction():
                await conn.execute(migration.sql)
                await _record(conn, migration, started)
        else:
            for statement in split_statements(migration.sql):
                await conn.execute(statement)
            await _record(conn, migration, started)
    except asyncpg.PostgresError as exc:
        raise MigrationError(
            f"migration {migration.filename} failed: {type(exc).__name__}: {exc}"
        ) from exc
    log.info(
        "applied migration",
        migration=migration.filename,
        duration_ms=round((time.monotonic() - started) * 1000),
    )


async def _record(conn: Conn, migration: Migration, started: float) -> None:
    await conn.execute(
        "INSERT INTO jobwarden.schema_migrations "
        "(version, name, checksum, execution_ms, applied_by) VALUES ($1, $2, $3, $4, $5)",
        migration.version,
        migration.name,
        migration.checksum,
        round((time.monotonic() - started) * 1000),
        applied_by(),
    )
