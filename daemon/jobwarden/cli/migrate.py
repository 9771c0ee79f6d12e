"""`jobwarden migrate [--dry-run] | migrate status`: the schema, applied or shown."""

import argparse

from jobwarden import exitcodes
from jobwarden.cli.database import open_database
from jobwarden.cli.parser import Commands
from jobwarden.config import Settings
from jobwarden.daemon import migrate_and_verify
from jobwarden.db.migrations import MigrationStatus, load_migrations, read_status


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser("migrate", help="apply pending migrations and exit")
    parser.add_argument(
        "action", nargs="?", choices=["status"], help="status: show applied and pending files"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="show what would be applied; change nothing"
    )


async def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "status" or args.dry_run:
        return await show_status(settings, dry_run=args.dry_run)
    return await migrate(settings)


async def migrate(settings: Settings) -> int:
    migrations = load_migrations()
    db = await open_database(settings)
    try:
        await migrate_and_verify(db, settings, migrations)
    finally:
        await db.close()
    # Unknown or changed versions were refused, so every known file is now applied.
    print(f"schema version {migrations[-1].version if migrations else 'none'}: up to date")
    return exitcodes.OK


async def show_status(settings: Settings, *, dry_run: bool) -> int:
    db = await open_database(settings)
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
