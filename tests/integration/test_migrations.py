"""Migrations against a real PostgreSQL: shared tables exactly as the web app's, safe to
run beside Prisma's own tables, concurrent start-ups, and refusals."""

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from jobwarden.db.migrations import (
    MIGRATION_LOCK_KEY,
    MigrationError,
    MigrationLockTimeout,
    apply_migrations,
    load_migrations,
)
from jobwarden.db.schema_check import SchemaMismatch, verify_shared_tables
from tests.integration.pgcluster import Cluster
from tests.integration.processes import clean_env, command, run_cli

SEED_SQL = (Path(__file__).parent / "seed_migration.sql").read_text()
SHARED_TABLES = ["job_metrics", "performance_baselines", "dead_letter_queue", "alerts"]


async def describe_shared_tables(conn: asyncpg.Connection) -> dict[str, Any]:
    """The four tables as the catalogs see them: columns, defaults, indexes, constraints."""
    columns = await conn.fetch(
        """
        SELECT c.relname AS table, a.attnum, a.attname AS column,
               format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
               pg_get_expr(d.adbin, d.adrelid) AS default
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relname = ANY($1::text[]) AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY 1, 2
        """,
        SHARED_TABLES,
    )
    indexes = await conn.fetch(
        "SELECT tablename, indexname, indexdef FROM pg_indexes "
        "WHERE schemaname = 'public' AND tablename = ANY($1::text[]) ORDER BY 1, 2",
        SHARED_TABLES,
    )
    constraints = await conn.fetch(
        """
        SELECT c.relname AS table, k.conname, k.contype, pg_get_constraintdef(k.oid) AS def
        FROM pg_constraint k
        JOIN pg_class c ON c.oid = k.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
        WHERE c.relname = ANY($1::text[]) ORDER BY 1, 2
        """,
        SHARED_TABLES,
    )
    return {
        "columns": [dict(r) for r in columns],
        "indexes": [dict(r) for r in indexes],
        "constraints": [dict(r) for r in constraints],
    }


async def connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, server_settings={"TimeZone": "UTC"})


async def test_fresh_database_gets_the_shared_tables_exactly_as_the_seed_ddl(
    empty_dsn: str, cluster: Cluster
) -> None:
    conn = await connect(empty_dsn)
    try:
        await apply_migrations(conn, load_migrations(), lock_timeout=30)
        ours = await describe_shared_tables(conn)
    finally:
        await conn.close()

    async with cluster.adatabase(migrated=False) as seed_dsn:
        seed = await connect(seed_dsn)
        try:
            await seed.execute(SEED_SQL)
            reference = await describe_shared_tables(seed)
        finally:
            await seed.close()

    assert len(reference["columns"]) == 42  # the seed really was read
    assert ours == reference


async def test_database_prisma_already_created_migrates_and_keeps_its_rows(
    empty_dsn: str,
) -> None:
    conn = await connect(empty_dsn)
    try:
        await conn.execute(SEED_SQL)
        await conn.execute(
            """
            INSERT INTO alerts (id, type, severity, title, message, "updatedAt")
            VALUES ('clx1', 'job_failure', 'ERROR', 'Job failed', 'boom', now());
            INSERT INTO dead_letter_queue (id, "jobId", "eventData", error, "updatedAt")
            VALUES ('clx2', 'content-generation', '{"a": 1}', 'timeout', now());
            """
        )
        before = await describe_shared_tables(conn)
        rows_before = await conn.fetch("SELECT * FROM alerts ORDER BY id")
        await apply_migrations(conn, load_migrations(), lock_timeout=30)
        await verify_shared_tables(conn)
        assert await describe_shared_tables(conn) == before
        assert await conn.fetch("SELECT * FROM alerts ORDER BY id") == rows_before
        assert await conn.fetchval('SELECT "eventData" FROM dead_letter_queue') == '{"a": 1}'
        assert await conn.fetchval("SELECT count(*) FROM jobwarden.schema_migrations") == len(
            load_migrations()
        )
    finally:
        await conn.close()


def test_three_migrate_commands_started_together_all_succeed_and_apply_once(
    empty_dsn: str, state_dir: Path
) -> None:
    env = clean_env({"DATABASE_URL": empty_dsn, "JOBWARDEN_STATE_DIR": str(state_dir)})
    procs = [
        subprocess.Popen(
            command("migrate"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(3)
    ]
    outcomes = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outcomes

    async def ledger() -> list[str]:
        conn = await connect(empty_dsn)
        try:
            rows = await conn.fetch("SELECT version FROM jobwarden.schema_migrations")
            return [r["version"] for r in rows]
        finally:
            await conn.close()

    assert asyncio.run(ledger()) == [m.version for m in load_migrations()]


def _tamper(dsn: str, sql: str) -> None:
    async def go() -> None:
        conn = await connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


def test_an_edited_applied_migration_is_refused_naming_the_file(
    migrated_dsn: str, state_dir: Path
) -> None:
    _tamper(migrated_dsn, "UPDATE jobwarden.schema_migrations SET checksum = 'abc123' ")
    env = {"DATABASE_URL": migrated_dsn, "JOBWARDEN_STATE_DIR": str(state_dir)}

    for args in (("migrate",), ("run",)):
        result = run_cli(*args, env=env)
        assert result.returncode == 65, result.output
        assert "0001_shared_tables.sql was changed after it was applied" in result.output
        assert "Traceback" not in result.output


def test_a_database_migrated_by_a_newer_jobwarden_is_refused(
    migrated_dsn: str, state_dir: Path
) -> None:
    _tamper(
        migrated_dsn,
        "INSERT INTO jobwarden.schema_migrations (version, name, checksum, execution_ms, "
        "applied_by) VALUES ('9999', 'from_the_future', 'x', 1, 'jobwarden 9.9')",
    )
    env = {"DATABASE_URL": migrated_dsn, "JOBWARDEN_STATE_DIR": str(state_dir)}
    result = run_cli("migrate", env=env)
    assert result.returncode == 65
    assert "9999_from_the_future" in result.output
    assert "newer jobwarden" in result.output


def test_status_and_dry_run_show_pending_files_and_change_nothing(
    empty_dsn: str, state_dir: Path
) -> None:
    env = {"DATABASE_URL": empty_dsn, "JOBWARDEN_STATE_DIR": str(state_dir)}
    status = run_cli("migrate", "status", env=env)
    dry_run = run_cli("migrate", "--dry-run", env=env)
    assert status.returncode == 0, status.output
    assert dry_run.returncode == 0, dry_run.output
    checksum = load_migrations()[0].checksum[:12]
    assert "0001" in status.stdout
    assert "pending" in status.stdout
    assert checksum in status.stdout
    assert "would apply: 0001_shared_tables.sql" in dry_run.stdout

    async def untouched() -> bool:
        conn = await connect(empty_dsn)
        try:
            return bool(
                await conn.fetchval(
                    "SELECT to_regnamespace('jobwarden') IS NULL AND to_regclass('alerts') IS NULL"
                )
            )
        finally:
            await conn.close()

    assert asyncio.run(untouched())

    migrated = run_cli("migrate", env=env)
    assert migrated.returncode == 0
    assert migrated.stdout == f"schema version {load_migrations()[-1].version}: up to date\n"
    after = run_cli("migrate", "status", env=env)
    assert "applied" in after.stdout
    assert "0 pending" in after.stdout


def shipped_migrations_plus(directory: Path, filename: str, sql: str) -> Path:
    """A migrations folder holding the shipped files and one more."""
    directory.mkdir()
    for migration in load_migrations():
        (directory / migration.filename).write_text(migration.sql)
    (directory / filename).write_text(sql)
    return directory


async def test_a_no_transaction_migration_can_create_an_index_concurrently(
    migrated_dsn: str, tmp_path: Path
) -> None:
    migrations_dir = shipped_migrations_plus(
        tmp_path / "sql",
        "0099_concurrent_index.sql",
        "-- jobwarden:no-transaction\n"
        "CREATE TABLE IF NOT EXISTS jobwarden.scratch (id int, note text DEFAULT 'a;b');\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS scratch_id_idx ON jobwarden.scratch (id);\n",
    )
    conn = await connect(migrated_dsn)
    try:
        applied = await apply_migrations(conn, load_migrations(migrations_dir), lock_timeout=30)
        assert [m.filename for m in applied] == ["0099_concurrent_index.sql"]
        assert await conn.fetchval("SELECT to_regclass('jobwarden.scratch_id_idx') IS NOT NULL")
    finally:
        await conn.close()


async def test_a_failing_migration_leaves_no_trace_and_names_the_file(
    migrated_dsn: str, tmp_path: Path
) -> None:
    migrations_dir = shipped_migrations_plus(
        tmp_path / "sql",
        "0099_broken.sql",
        "CREATE TABLE jobwarden.half (id int);\nSELECT * FROM no_such_table;\n",
    )
    conn = await connect(migrated_dsn)
    try:
        with pytest.raises(MigrationError, match=r"0099_broken\.sql failed"):
            await apply_migrations(conn, load_migrations(migrations_dir), lock_timeout=30)
        assert await conn.fetchval("SELECT to_regclass('jobwarden.half') IS NULL")
        latest = load_migrations()[-1].version
        assert await conn.fetchval("SELECT max(version) FROM jobwarden.schema_migrations") == latest
    finally:
        await conn.close()


async def test_missing_shared_columns_are_named_precisely(empty_dsn: str) -> None:
    conn = await connect(empty_dsn)
    try:
        await conn.execute(SEED_SQL)
        await conn.execute('ALTER TABLE alerts DROP COLUMN "resolvedAt"')
        await conn.execute("ALTER TABLE job_metrics ALTER COLUMN metadata TYPE json")
        await conn.execute('ALTER TABLE performance_baselines DROP COLUMN "sampleSize"')
        await conn.execute("DROP TABLE dead_letter_queue")
        await apply_migrations(conn, load_migrations(), lock_timeout=30)
        with pytest.raises(SchemaMismatch) as refused:
            await verify_shared_tables(conn)
    finally:
        await conn.close()
    message = str(refused.value)
    assert 'table alerts is missing column(s) "resolvedAt"' in message
    assert 'column job_metrics."metadata" is json, expected jsonb' in message
    assert 'table performance_baselines is missing column(s) "sampleSize"' in message
    # dead_letter_queue was missing before migrating, so 0001 created it: not reported
    assert "dead_letter_queue" not in message


async def test_waiting_for_the_migration_lock_gives_up_naming_the_holder(
    migrated_dsn: str,
) -> None:
    holder = await connect(migrated_dsn)
    waiter = await connect(migrated_dsn)
    try:
        await holder.execute("SET application_name = 'replica-a'")
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK_KEY)
        with pytest.raises(MigrationLockTimeout, match=r"held by pid \d+ \(replica-a"):
            await apply_migrations(waiter, load_migrations(), lock_timeout=0.2)
    finally:
        await holder.close()
        await waiter.close()
