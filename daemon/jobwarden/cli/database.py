"""How one-shot commands reach the database: one attempt, an outage reported, not waited out."""

from jobwarden.config import Settings
from jobwarden.daemon import resolve_database_url
from jobwarden.db.pool import TRANSIENT_CONNECT_ERRORS, Database, DatabaseUnavailable, open_pool


async def open_database(settings: Settings) -> Database:
    url = await resolve_database_url(settings)
    try:
        return Database(await open_pool(url, settings), url)
    except TRANSIENT_CONNECT_ERRORS as exc:
        raise DatabaseUnavailable(f"database unreachable: {type(exc).__name__}: {exc}") from exc
