"""An embedded PostgreSQL for when DATABASE_URL is unset (the `embedded` extra).

pgserver ships PostgreSQL binaries in a wheel and runs a server on a unix socket
inside the state directory. It is stopped when the last process using it exits.
"""

import asyncio
import contextlib
import warnings
from pathlib import Path

import asyncpg

from jobwarden.db.pg import quote_ident
from jobwarden.logsetup import get_logger

log = get_logger(__name__)
DATABASE_NAME = "jobwarden"


class EmbeddedUnavailable(Exception):
    pass


async def start_embedded(state_dir: Path) -> str:
    """Start (or join) the embedded server; return a DSN for its `jobwarden` database."""
    # platformdirs warns on stderr when XDG_RUNTIME_DIR is unset (systemd services,
    # containers); pgserver then uses /tmp, which is what we want.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    try:
        import pgserver  # optional dependency: the `embedded` extra
    except ImportError:
        raise EmbeddedUnavailable(
            "DATABASE_URL is unset and the embedded PostgreSQL is not installed: "
            "set DATABASE_URL, or install jobwarden[embedded]"
        ) from None
    pgdata = state_dir / "postgres"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    log.info("DATABASE_URL is unset: using an embedded PostgreSQL", pgdata=str(pgdata))
    server = await asyncio.to_thread(pgserver.get_server, pgdata, cleanup_mode="stop")
    admin_dsn: str = server.get_uri("postgres")
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE_NAME)
        if not exists:
            # Another process (a `migrate` beside a `run`) may win the race: fine.
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await conn.execute(f"CREATE DATABASE {quote_ident(DATABASE_NAME)}")
    finally:
        await conn.close()
    dsn: str = server.get_uri(DATABASE_NAME)
    return dsn
