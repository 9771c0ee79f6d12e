"""Retention of reported runs: `jobwarden.runs` kept healthy, once an hour, by the leader.

Each pass
- creates the daily partitions of today (UTC) and the next `DAYS_AHEAD` days that are
  missing (`jobwarden.ensure_run_partitions`, one day per statement);
- drops the daily partitions whose whole day ended `JOBWARDEN_RUN_RETENTION` ago or
  more (a day goes when its upper bound <= now - retention; the day that straddles
  the cut-off stays whole), oldest first;
- deletes the rows of the default partition older than the cut-off, and the starts
  in `jobwarden.run_starts` older than it (runs whose end never came);
- forgets that a job reports its runs (`jobwarden.run_jobs`) once it has reported
  none since the cut-off and has no run open or waiting: it is judged from its
  counters again;
- never touches `jobwarden.run_inbox`: a run not yet added up is still added up.

Nothing waits long on the web app's locks: every statement runs under a `lock_timeout`
of `LOCK_TIMEOUT_MS`; a lock not granted in time is logged, the pass stops dropping and
the next pass tries again.

How a day is dropped. `DETACH PARTITION ... CONCURRENTLY` (PostgreSQL 14+) never takes
an ACCESS EXCLUSIVE lock on `runs`, but PostgreSQL refuses it while the table has a
DEFAULT partition, which `runs` has (sql/0005_runs.sql). So it is used only when
there is no default partition; otherwise (and before PostgreSQL 14) the partition is
detached and dropped in one short transaction: a catalog change only, whose ACCESS
EXCLUSIVE lock is waited for at most `LOCK_TIMEOUT_MS`. A partition left pending by an
interrupted concurrent detach is finished with `DETACH ... FINALIZE`, and one detached
but not yet dropped is dropped.
"""

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import asyncpg

from jobwarden.context import AppContext
from jobwarden.db.pg import Conn, affected, quote_ident
from jobwarden.logsetup import get_logger

log = get_logger(__name__)

RETENTION_JOB = "runs-retention"
RETENTION_INTERVAL_SECONDS = 3600.0
DAYS_AHEAD = 7  # partitions exist from today through today + DAYS_AHEAD
LOCK_TIMEOUT_MS = 500  # the longest any statement of the pass queues for a lock

_DAILY = re.compile(r"runs_p([0-9]{8})")

ENSURE = "SELECT jobwarden.ensure_run_partitions($1::date, 1)"

# The partitions of jobwarden.runs: daily ones, the default one, and (PostgreSQL 14+)
# whether a concurrent detach of it was left pending.
PARTITIONS = """
SELECT c.relname AS name, c.oid = p.partdefid AS is_default, {pending} AS pending
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_partitioned_table p ON p.partrelid = i.inhparent
WHERE i.inhparent = 'jobwarden.runs'::regclass
"""
PENDING_14 = "i.inhdetachpending"
PENDING_BEFORE_14 = "false"

# Daily tables detached from runs but not dropped (a pass ended between the two).
# ensure_run_partitions creates and attaches a day in one transaction, so a table of
# that name outside runs is always one of these.
DETACHED = """
SELECT c.relname AS name
FROM pg_class c
WHERE c.relnamespace = 'jobwarden'::regnamespace AND c.relkind = 'r'
  AND NOT c.relispartition AND c.relname ~ '^runs_p[0-9]{8}$'
"""

# {} is a quoted partition name, always from the catalog.
DETACH_CONCURRENTLY = "ALTER TABLE jobwarden.runs DETACH PARTITION jobwarden.{} CONCURRENTLY"
DETACH_FINALIZE = "ALTER TABLE jobwarden.runs DETACH PARTITION jobwarden.{} FINALIZE"
DETACH = "ALTER TABLE jobwarden.runs DETACH PARTITION jobwarden.{}"
DROP = "DROP TABLE jobwarden.{}"
PRUNE_DEFAULT = "DELETE FROM jobwarden.{} WHERE recorded_at < $1"

PRUNE_STARTS = "DELETE FROM jobwarden.run_starts WHERE started_at < $1"

RELEASE_JOBS = """
DELETE FROM jobwarden.run_jobs j
WHERE coalesce(j.last_run_at, j.created_at) < $1 AND j.created_at < $1
  AND NOT EXISTS (SELECT 1 FROM jobwarden.run_starts s WHERE s.job_id = j.job_id)
  AND NOT EXISTS (SELECT 1 FROM jobwarden.run_inbox i WHERE i.job_id = j.job_id)
"""

# What a pass gives up on, to try again at the next one.
_LOCK_BUSY: tuple[type[BaseException], ...] = (
    asyncpg.LockNotAvailableError,
    asyncpg.DeadlockDetectedError,
)


@dataclass(frozen=True)
class RetentionResult:
    created: int  # daily partitions created ahead
    dropped: tuple[str, ...]  # daily partitions dropped, oldest first
    default_deleted: int  # rows deleted from the default partition
    starts_deleted: int  # abandoned starts deleted
    jobs_released: int = 0  # jobs judged from their counters again
    lock_busy: tuple[str, ...] = ()  # what waited too long for a lock

    def log_fields(self) -> dict[str, object]:
        fields: dict[str, object] = {
            "partitions_created": self.created,
            "partitions_dropped": len(self.dropped),
            "default_rows_deleted": self.default_deleted,
            "run_starts_deleted": self.starts_deleted,
            "jobs_released": self.jobs_released,
        }
        if self.dropped:
            fields["dropped"] = list(self.dropped)
        if self.lock_busy:
            fields["lock_busy"] = list(self.lock_busy)
        return fields


def partition_day(name: str) -> date | None:
    """The UTC day of a daily partition `runs_pYYYYMMDD`; None for any other name."""
    match = _DAILY.fullmatch(name)
    if match is None:
        return None
    try:
        return datetime.strptime(match.group(1), "%Y%m%d").date()
    except ValueError:
        return None


def day_ended_by(name: str, cutoff: datetime) -> bool:
    """Whether the whole day of partition `name` lies before `cutoff`."""
    day = partition_day(name)
    if day is None:
        return False
    upper = datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC)
    return upper <= cutoff


def _busy(what: str, exc: BaseException) -> str:
    log.warning(
        "runs retention: a lock was not granted in time; trying again at the next pass",
        target=what,
        lock_timeout_ms=LOCK_TIMEOUT_MS,
        error=f"{type(exc).__name__}: {exc}",
    )
    return what


async def ensure_partitions(conn: Conn, today: date, busy: list[str]) -> int:
    """Create the missing partitions of today .. today + DAYS_AHEAD; how many."""
    created = 0
    for offset in range(DAYS_AHEAD + 1):
        day = today + timedelta(days=offset)
        try:
            created += await conn.fetchval(ENSURE, day)
        except _LOCK_BUSY as exc:
            busy.append(_busy(f"runs_p{day:%Y%m%d}", exc))
            break
        except asyncpg.PostgresError as exc:  # that day only: the others still come
            log.error(
                "runs retention: could not create a daily partition",
                day=day.isoformat(),
                error=f"{type(exc).__name__}: {exc}",
            )
    return created


async def drop_old_partitions(
    conn: Conn, cutoff: datetime, busy: list[str]
) -> tuple[str | None, list[str]]:
    """Drop the daily partitions whose day ended by `cutoff`, oldest first.

    Returns the default partition's name (None without one) and the dropped ones."""
    major = conn.get_server_version().major
    rows = await conn.fetch(
        PARTITIONS.format(pending=PENDING_14 if major >= 14 else PENDING_BEFORE_14)
    )
    default = next((r["name"] for r in rows if r["is_default"]), None)
    concurrent = major >= 14 and default is None
    pending = {r["name"] for r in rows if r["pending"]}
    attached = sorted(r["name"] for r in rows if not r["is_default"])
    detached = sorted(r["name"] for r in await conn.fetch(DETACHED))
    dropped: list[str] = []
    # What an earlier pass left first (a table may have one detach pending at a time),
    # then oldest first (runs_pYYYYMMDD: by name is by day).
    order = detached + sorted(attached, key=lambda name: (name not in pending, name))
    for name in order:
        if not day_ended_by(name, cutoff):
            continue
        table = quote_ident(name)
        try:
            if name in detached:
                await conn.execute(DROP.format(table))
            elif name in pending:
                await conn.execute(DETACH_FINALIZE.format(table))
                await conn.execute(DROP.format(table))
            elif concurrent:
                await conn.execute(DETACH_CONCURRENTLY.format(table))
                await conn.execute(DROP.format(table))
            else:
                async with conn.transaction():
                    await conn.execute(DETACH.format(table))
                    await conn.execute(DROP.format(table))
        except _LOCK_BUSY as exc:
            busy.append(_busy(name, exc))
            break  # one wait per pass at most: the web app is busy with the table
        dropped.append(name)
    return default, dropped


async def prune_default(conn: Conn, default: str, cutoff: datetime, busy: list[str]) -> int:
    try:
        status = await conn.execute(PRUNE_DEFAULT.format(quote_ident(default)), cutoff)
    except _LOCK_BUSY as exc:
        busy.append(_busy(default, exc))
        return 0
    return affected(status)


async def prune_starts(conn: Conn, cutoff: datetime, busy: list[str]) -> int:
    try:
        status = await conn.execute(PRUNE_STARTS, cutoff)
    except _LOCK_BUSY as exc:
        busy.append(_busy("run_starts", exc))
        return 0
    return affected(status)


async def run_once(ctx: AppContext, now: datetime) -> RetentionResult:
    cutoff = now - timedelta(seconds=ctx.settings.run_retention)
    busy: list[str] = []
    async with ctx.db.connection() as conn:
        # Session-wide: DETACH ... CONCURRENTLY cannot run inside a transaction block.
        await conn.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
        try:
            created = await ensure_partitions(conn, now.astimezone(UTC).date(), busy)
            default, dropped = await drop_old_partitions(conn, cutoff, busy)
            default_deleted = 0
            if default is not None:
                default_deleted = await prune_default(conn, default, cutoff, busy)
            starts_deleted = await prune_starts(conn, cutoff, busy)
            released = affected(await conn.execute(RELEASE_JOBS, cutoff))
        finally:
            if not conn.is_closed():
                await conn.execute("RESET lock_timeout")
    return RetentionResult(
        created=created,
        dropped=tuple(dropped),
        default_deleted=default_deleted,
        starts_deleted=starts_deleted,
        jobs_released=released,
        lock_busy=tuple(busy),
    )
