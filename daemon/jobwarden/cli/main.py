"""Command line: `jobwarden run | migrate | jobs | alerts | deliveries | dlq | check-config`.

Exit statuses are in `exitcodes`: 64 for a bad command line (naming the flag),
78 for bad configuration (every problem listed, no traceback), 65 when the
database schema is refused, 69 when the database cannot be used, 1 for anything
unexpected. Each command group lives in a module of its own.
"""

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import TextIO

import asyncpg

from jobwarden import __version__, exitcodes
from jobwarden.cli import alerts, dlq, jobs, migrate
from jobwarden.cli.parser import UsageParser
from jobwarden.config import ConfigError, Settings, load_settings, systemd_env
from jobwarden.daemon import Daemon
from jobwarden.db.embedded import EmbeddedUnavailable
from jobwarden.db.migrations import MigrationError, MigrationLockTimeout
from jobwarden.db.pool import DatabaseUnavailable
from jobwarden.db.schema_check import SchemaMismatch
from jobwarden.logsetup import configure_logging, get_logger, stream_is_journal

log = get_logger("jobwarden")


def _parser() -> argparse.ArgumentParser:
    parser = UsageParser(
        prog="jobwarden",
        description="Watches a web application's background jobs through PostgreSQL.",
    )
    parser.add_argument("--version", action="version", version=f"jobwarden {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("run", help="run the daemon until SIGTERM")
    migrate.add_parser(commands)
    jobs.add_parser(commands)
    alerts.add_parsers(commands)
    dlq.add_parser(commands)
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
        if args.command == "jobs":
            return asyncio.run(jobs.run(settings, args))
        if args.command in ("alerts", "deliveries"):
            return asyncio.run(alerts.run(settings, args))
        if args.command == "dlq":
            return asyncio.run(dlq.run(settings, args))
        return asyncio.run(migrate.run(settings, args))
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
    except asyncpg.UndefinedTableError as exc:
        log.error("jobwarden's tables are missing: run `jobwarden migrate` first", error=str(exc))
        return exitcodes.SCHEMA_REFUSED
    except Exception:
        log.exception("jobwarden failed")
        return exitcodes.FAILURE


def _print_config_problems(problems: list[str], journal: tuple[int, int] | None) -> None:
    if stream_is_journal(journal, sys.stderr):
        # One journal record at priority err, so `journalctl -p err` shows it whole.
        print(f"<3>invalid configuration: {'; '.join(problems)}", file=sys.stderr)
        return
    lines = "\n".join(f"  - {problem}" for problem in problems)
    count = f"{len(problems)} problem{'' if len(problems) == 1 else 's'}"
    print(f"jobwarden: invalid configuration ({count}):\n{lines}", file=sys.stderr)


def _print_settings(settings: Settings, out: TextIO = sys.stdout) -> None:
    rows = settings.describe()
    width = max(len(name) for name, _, _ in rows)
    for name, value, source in rows:
        print(f"{name:<{width}}  {value}  [{source}]", file=out)
