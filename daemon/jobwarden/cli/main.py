"""Command line: `jobwarden run | migrate [--dry-run] | migrate status | check-config`.

Exit statuses are in `exitcodes`: 78 for bad configuration (every problem listed,
no traceback), 65 when the database schema is refused, 69 when the database
cannot be used, 1 for anything unexpected.
"""

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from jobwarden import __version__, exitcodes
from jobwarden.config import ConfigError, Settings, load_settings, systemd_env
from jobwarden.daemon import Daemon, migrate_and_verify, resolve_database_url
from jobwarden.db.embedded import EmbeddedUnavailable
from jobwarden.db.migrations import (
    MigrationError,
    MigrationLockTimeout,
    MigrationStatus,
    load_migrations,
    read_status,
)
from jobwarden.db.pool import TRANSIENT_CONNECT_ERRORS, Database, DatabaseUnavailable, open_pool
from jobwarden.db.schema_check import SchemaMismatch
from jobwarden.logsetup import configure_logging, get_logger, stream_is_journal

log = get_logger("jobwarden")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobwarden",
        description="Watches a web application's background jobs through PostgreSQL.",
    )
    parser.add_argument("--version", action="version", version=f"jobwarden {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("run", help="run the daemon until SIGTERM")
    migrate = commands.add_parser("migrate", help="apply pending migrations and exit")
    migrate.add_argument(
        "action", nargs="?", choices=["status"], help="status: show applied and pending files"
    )
    migrate.add_argument(
        "--dry-run", action="store_true", help="show what would be applied; change nothing"
    )
    commands.add_parser("check-config", help="print the effective configuration (secrets redacted)")
    return parser


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(os.environ)
    except ConfigError as exc:
        _print_config_problems(exc.problems, systemd_env(os.environ).journal_stream)
        return exitcodes.CONFIG

    # `run` logs to stdout (the journal); one-shot commands keep stdout for their output.
    configure_logging(
        level=settings.log_level,
        fmt=settings.log_format,
        journal_stream=settings.systemd.journal_stream,
        secrets=settings.secret_values(),
        stream=sys.stdout if args.command == "run" else sys.stderr,
    )
    for warning in settings.warnings:
        log.warning(warning)

    if args.command == "check-config":
        _print_settings(settings)
        return exitcodes.OK
    try:
        if args.command == "run":
            return asyncio.run(Daemon(settings).run())
        if args.action == "status" or args.dry_run:
            return asyncio.run(_show_status(settings, dry_run=args.dry_run))
        return asyncio.run(_migrate(settings))
    except EmbeddedUnavailable as exc:
        log.error(str(exc))
        return exitcodes.CONFIG
    except (MigrationError, SchemaMismatch) as exc:
        log.error("refusing to use this database", reason=str(exc))
        return exitcodes.SCHEMA_REFUSED
    except MigrationLockTimeout as exc:
        log.error(str(exc))  # not 65: another replica may finish, so a restart can help
        return exitcodes.FAILURE
    except DatabaseUnavailable as exc:
        log.error(str(exc))
        return exitcodes.DATABASE_UNAVAILABLE
    except Exception:
        log.exception("jobwarden failed")
        return exitcodes.FAILURE


def _print_config_problems(problems: list[str], journal: tuple[int, int] | None) -> None:
    if stream_is_journal(journal, sys.stderr):
        # One journal record at priority err, so `journalctl -p err` shows it whole.
        print(f"<3>invalid configuration: {'; '.join(problems)}", file=sys.stderr)
        return
    lines = "\n".join(f"  - {problem}" for problem in problems)
    print(f"jobwarden: invalid configuration ({len(problems)} problems):\n{lines}", file=sys.stderr)


def _print_settings(settings: Settings, out: TextIO = sys.stdout) -> None:
    rows = settings.describe()
    width = max(len(name) for name, _, _ in rows)
    for name, value, source in rows:
        print(f"{name:<{width}}  {value}  [{source}]", file=out)


async def _open(settings: Settings) -> Database:
    """One attempt to connect: a one-shot command reports an outage instead of waiting."""
    url = await resolve_database_url(settings)
    try:
        return Database(await open_pool(url, settings), url)
    except TRANSIENT_CONNECT_ERRORS as exc:
        raise DatabaseUnavailable(f"database unreachable: {type(exc).__name__}: {exc}") from exc


async def _migrate(settings: Settings) -> int:
    migrations = load_migrations()
    db = await _open(settings)
    try:
        await migrate_and_verify(db, settings, migrations)
    finally:
        await db.close()
    # Unknown or changed versions were refused, so every known file is now applied.
    print(f"schema version {migrations[-1].version if migrations else 'none'}: up to date")
    return exitcodes.OK


async def _show_status(settings: Settings, *, dry_run: bool) -> int:
    db = await _open(settings)
    try:
        async with db.connection() as conn:
            status = await read_status(conn, load_migrations())
    finally:
        await db.close()
    _print_status(status)
    if dry_run:
        pending = status.pending
        print("would apply: " + (", ".join(m.filename for m in pending) or "nothing"))
    if problems := status.problems():
        for problem in problems:
            print(f"refused: {problem}")
        return exitcodes.SCHEMA_REFUSED
    return exitcodes.OK


def _print_status(status: MigrationStatus) -> None:
    applied = status.applied_versions
    changed = {m.version for m, _ in status.changed}
    rows: list[tuple[str, str, str, str, str]] = []
    for m in status.known:
        a = applied.get(m.version)
        if a is None:
            rows.append((m.version, m.name, "pending", m.checksum[:12], ""))
        else:
            state = "CHANGED" if m.version in changed else "applied"
            when = a.applied_at.strftime("%Y-%m-%dT%H:%M:%SZ")
            rows.append((m.version, m.name, state, m.checksum[:12], f"{when} by {a.applied_by}"))
    for a in status.unknown:
        when = a.applied_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        rows.append((a.version, a.name, "UNKNOWN", a.checksum[:12], f"{when} by {a.applied_by}"))
    header = ("VERSION", "NAME", "STATE", "CHECKSUM", "APPLIED")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)), row[4])
    print(
        f"schema version: {status.schema_version or 'none'}; "
        f"{len(status.applied)} applied, {len(status.pending)} pending"
    )
