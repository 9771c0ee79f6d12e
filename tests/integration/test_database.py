"""The pool jobwarden opens: UTC sessions, Prisma's schema, nothing else sent to the server."""

from urllib.parse import urlsplit

import asyncpg

from jobwarden.config import load_settings
from jobwarden.db.pg import quote_ident
from jobwarden.db.pool import open_pool
from tests.integration.pgcluster import with_params


async def test_sessions_write_utc_even_when_the_server_default_is_not(migrated_dsn: str) -> None:
    database = urlsplit(migrated_dsn).path.lstrip("/")
    admin = await asyncpg.connect(migrated_dsn)
    try:
        await admin.execute(
            f"ALTER DATABASE {quote_ident(database)} SET TimeZone TO 'America/New_York'"
        )
    finally:
        await admin.close()

    settings = load_settings({"DATABASE_URL": migrated_dsn})
    assert settings.database is not None
    pool = await open_pool(settings.database, settings)
    try:
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """
                INSERT INTO alerts (id, type, severity, title, message, "updatedAt")
                VALUES ('a1', 'system_health', 'INFO', 't', 'm', now())
                RETURNING "createdAt", "updatedAt",
                          (now() AT TIME ZONE 'UTC')::timestamp(3) AS utc_now
                """
            )
        assert row is not None
        assert row["createdAt"] == row["utc_now"]  # the column default, as Prisma relies on
        assert row["updatedAt"] == row["utc_now"]
    finally:
        await pool.close()


async def test_prisma_only_parameters_are_not_sent_as_server_settings(migrated_dsn: str) -> None:
    url = with_params(
        migrated_dsn,
        schema="public",
        connection_limit="2",
        pgbouncer="true",
        pool_timeout="3",
        socket_timeout="9",
        sslaccept="strict",
        schema_cache="x",
        application_name="webapp-jobs",
    )
    settings = load_settings({"DATABASE_URL": url})
    assert settings.database is not None
    pool = await open_pool(settings.database, settings)
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW application_name") == "webapp-jobs"
            assert await conn.fetchval("SHOW search_path") == '"public"'
            for prisma_only in ("connection_limit", "pgbouncer", "sslaccept", "schema_cache"):
                assert await conn.fetchval("SELECT current_setting($1, true)", prisma_only) is None
        assert pool.get_max_size() == 2
    finally:
        await pool.close()
