"""Expectations per job: schedule, grace and thresholds, kept in `jobwarden.job_expectations`.

The CLI (`jobwarden jobs ...`) and the HTTP API (`/api/jobs/...`) both call these
functions: one implementation, two doors. Input is validated here, every problem
named by its field, before anything is written. A running daemon reads the table
on every pass, so a change takes effect on the next one.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from jobwarden.db.pg import Conn
from jobwarden.durations import format_duration, parse_duration
from jobwarden.monitoring.model import Expectation
from jobwarden.monitoring.schedule import Schedule, cron_trigger, parse_timezone
from jobwarden.values import factor, positive_duration, positive_int, rate

MAX_JOB_ID_LENGTH = 200
MAX_SECONDS = 366 * 86400  # a period or grace longer than a year is a typo

SELECT_ALL = """
SELECT job_id, every_seconds, cron, timezone, schedule_set_at, grace_seconds, failure_threshold,
       failure_rate, regression_factor, max_runtime_seconds, min_runtime_seconds, paused,
       maintenance_until, created_at, updated_at
FROM jobwarden.job_expectations ORDER BY job_id
"""

SELECT_ONE = """
SELECT job_id, every_seconds, cron, timezone, schedule_set_at, grace_seconds, failure_threshold,
       failure_rate, regression_factor, max_runtime_seconds, min_runtime_seconds, paused,
       maintenance_until, created_at, updated_at
FROM jobwarden.job_expectations WHERE job_id = $1
"""

SELECT_ONE_FOR_UPDATE = """
SELECT job_id, every_seconds, cron, timezone, schedule_set_at, grace_seconds, failure_threshold,
       failure_rate, regression_factor, max_runtime_seconds, min_runtime_seconds, paused,
       maintenance_until, created_at, updated_at
FROM jobwarden.job_expectations WHERE job_id = $1 FOR UPDATE
"""

UPSERT = """
INSERT INTO jobwarden.job_expectations (job_id, every_seconds, cron, timezone, schedule_set_at,
    grace_seconds, failure_threshold, failure_rate, regression_factor, max_runtime_seconds,
    min_runtime_seconds, paused, maintenance_until, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)
ON CONFLICT (job_id) DO UPDATE SET
    every_seconds = excluded.every_seconds, cron = excluded.cron, timezone = excluded.timezone,
    schedule_set_at = excluded.schedule_set_at,
    grace_seconds = excluded.grace_seconds, failure_threshold = excluded.failure_threshold,
    failure_rate = excluded.failure_rate, regression_factor = excluded.regression_factor,
    max_runtime_seconds = excluded.max_runtime_seconds,
    min_runtime_seconds = excluded.min_runtime_seconds,
    paused = excluded.paused, maintenance_until = excluded.maintenance_until,
    updated_at = excluded.updated_at
RETURNING job_id, every_seconds, cron, timezone, schedule_set_at, grace_seconds, failure_threshold,
       failure_rate, regression_factor, max_runtime_seconds, min_runtime_seconds, paused,
       maintenance_until, created_at, updated_at
"""


class InvalidExpectation(ValueError):
    """Input that cannot be stored; `problems` pairs each field with what is wrong."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{name}: {message}" for name, message in problems))
        self.problems = problems


@dataclass(frozen=True)
class ExpectationChange:
    """Fields to change; None leaves a field as it is. `every` and `cron` replace each other."""

    every: float | None = None
    cron: str | None = None
    timezone: str | None = None
    grace: float | None = None
    failure_threshold: int | None = None
    failure_rate: float | None = None
    regression_factor: float | None = None
    max_runtime: float | None = None  # seconds
    min_runtime: float | None = None  # seconds


def _text(value: object) -> str:
    """Flags arrive as text, JSON as text or numbers: parse them all as text."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"must be given as text or a number, not {value!r}")
    return str(value)


def _bounded_duration(text: str, *, positive: bool) -> float:
    seconds = positive_duration(text) if positive else parse_duration(text)
    if seconds > MAX_SECONDS:
        raise ValueError("must be at most 366d")
    return seconds


def _runtime_problem(
    min_runtime: float | None, max_runtime: float | None, field: str = "min_runtime"
) -> tuple[str, str] | None:
    """A run cannot be both too short and stuck: min runtime must be below max runtime.
    `field` is the one to blame, the one just given."""
    if min_runtime is None or max_runtime is None or min_runtime < max_runtime:
        return None
    low, high = format_duration(min_runtime), format_duration(max_runtime)
    if field == "max_runtime":
        return field, f"must be above the min runtime ({low}), not {high}"
    return field, f"must be below the max runtime ({high}), not {low}"


def validate_job_id(job_id: str) -> str:
    if not job_id.strip():
        raise InvalidExpectation([("job", "must not be empty")])
    if len(job_id) > MAX_JOB_ID_LENGTH or any(ord(c) < 32 for c in job_id):
        raise InvalidExpectation([("job", f"at most {MAX_JOB_ID_LENGTH} printable characters")])
    return job_id


def parse_change(raw: Mapping[str, Any]) -> ExpectationChange:
    """Validate raw values (strings from flags, JSON values over HTTP); all problems at once."""
    problems: list[tuple[str, str]] = []
    parsed: dict[str, Any] = {}
    parsers: dict[str, Callable[[str], Any]] = {
        "every": lambda text: _bounded_duration(text, positive=True),
        "cron": str.strip,
        "timezone": lambda text: parse_timezone(text.strip()).key,
        "grace": lambda text: _bounded_duration(text, positive=False),
        "failure_threshold": positive_int,
        "failure_rate": rate,
        "regression_factor": factor,
        "max_runtime": lambda text: _bounded_duration(text, positive=True),
        "min_runtime": lambda text: _bounded_duration(text, positive=True),
    }
    for name, value in raw.items():
        if value is None:
            continue
        parse = parsers.get(name)
        if parse is None:
            problems.append((name, "is not an expectation field"))
            continue
        try:
            parsed[name] = parse(_text(value))
        except ValueError as exc:
            problems.append((name, str(exc)))
    if parsed.get("every") is not None and parsed.get("cron") is not None:
        problems.append(("cron", "give either every or cron, not both"))
    if parsed.get("timezone") is not None and parsed.get("every") is not None:
        problems.append(("timezone", "only applies to cron"))
    if isinstance(parsed.get("cron"), str) and not any(n == "cron" for n, _ in problems):
        try:
            trigger = cron_trigger(parsed["cron"], parsed.get("timezone") or "UTC")
        except ValueError as exc:
            problems.append(("cron", str(exc)))
        else:
            if trigger.get_next_fire_time(None, datetime.now(UTC)) is None:
                problems.append(("cron", "never fires"))
    runtime_problem = _runtime_problem(parsed.get("min_runtime"), parsed.get("max_runtime"))
    if runtime_problem is not None:
        problems.append(runtime_problem)
    if problems:
        raise InvalidExpectation(problems)
    return ExpectationChange(**parsed)


def apply_change(current: Expectation, change: ExpectationChange, now: datetime) -> Expectation:
    """The expectation after the change; problems that only the current one shows, at once."""
    problems: list[tuple[str, str]] = []
    schedule = current.schedule
    if change.every is not None:
        schedule = Schedule(every=change.every)
    elif change.cron is not None:  # the time zone stays unless given
        schedule = Schedule(cron=change.cron, timezone=change.timezone or schedule.timezone)
    elif change.timezone is not None:
        if schedule.cron is None:
            problems.append(("timezone", "only applies to a cron schedule"))
        else:
            schedule = replace(schedule, timezone=change.timezone)
    new = replace(
        current,
        schedule=schedule,
        schedule_set_at=current.schedule_set_at if schedule == current.schedule else now,
        grace=current.grace if change.grace is None else change.grace,
        failure_threshold=change.failure_threshold or current.failure_threshold,
        failure_rate=change.failure_rate or current.failure_rate,
        regression_factor=change.regression_factor or current.regression_factor,
        max_runtime=current.max_runtime if change.max_runtime is None else change.max_runtime,
        min_runtime=current.min_runtime if change.min_runtime is None else change.min_runtime,
    )
    blame = "min_runtime" if change.min_runtime is not None else "max_runtime"
    runtime_problem = _runtime_problem(new.min_runtime, new.max_runtime, blame)
    if runtime_problem is not None:
        problems.append(runtime_problem)
    if problems:
        raise InvalidExpectation(problems)
    return new


def from_row(row: Mapping[str, Any]) -> Expectation:
    return Expectation(
        job_id=row["job_id"],
        schedule=Schedule(
            every=row["every_seconds"], cron=row["cron"], timezone=row["timezone"] or "UTC"
        ),
        schedule_set_at=row["schedule_set_at"],
        grace=row["grace_seconds"],
        failure_threshold=row["failure_threshold"],
        failure_rate=row["failure_rate"],
        regression_factor=row["regression_factor"],
        max_runtime=row["max_runtime_seconds"],
        min_runtime=row["min_runtime_seconds"],
        paused=row["paused"],
        maintenance_until=row["maintenance_until"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def list_expectations(conn: Conn) -> dict[str, Expectation]:
    rows = await conn.fetch(SELECT_ALL)
    return {row["job_id"]: from_row(row) for row in rows}


async def get_expectation(conn: Conn, job_id: str) -> Expectation | None:
    row = await conn.fetchrow(SELECT_ONE, job_id)
    return None if row is None else from_row(row)


async def _update(conn: Conn, job_id: str, now: datetime, change: Any) -> Expectation:
    """Read-modify-write one expectation under a row lock; `change(current) -> new`."""
    validate_job_id(job_id)
    async with conn.transaction():
        row = await conn.fetchrow(SELECT_ONE_FOR_UPDATE, job_id)
        current = from_row(row) if row else Expectation(job_id=job_id, created_at=now)
        new: Expectation = change(current)
        stored = await conn.fetchrow(
            UPSERT,
            job_id,
            new.schedule.every,
            new.schedule.cron,
            new.schedule.timezone,
            new.schedule_set_at,
            new.grace,
            new.failure_threshold,
            new.failure_rate,
            new.regression_factor,
            new.max_runtime,
            new.min_runtime,
            new.paused,
            new.maintenance_until,
            now,
        )
    assert stored is not None
    return from_row(stored)


async def set_expectation(
    conn: Conn, job_id: str, change: ExpectationChange, now: datetime
) -> Expectation:
    return await _update(conn, job_id, now, lambda current: apply_change(current, change, now))


async def unset_expectation(conn: Conn, job_id: str) -> bool:
    """Forget everything set for the job; False when nothing was set."""
    deleted = await conn.fetchval(
        "DELETE FROM jobwarden.job_expectations WHERE job_id = $1 RETURNING job_id", job_id
    )
    return deleted is not None


async def pause(conn: Conn, job_id: str, now: datetime) -> Expectation:
    return await _update(conn, job_id, now, lambda current: replace(current, paused=True))


async def resume(conn: Conn, job_id: str, now: datetime) -> Expectation:
    """Unpause and end any maintenance window."""
    return await _update(
        conn, job_id, now, lambda c: replace(c, paused=False, maintenance_until=None)
    )


def parse_until(value: object, now: datetime) -> datetime:
    """An ISO 8601 time in the future; without an offset it is taken as UTC."""
    try:
        until = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidExpectation(
            [("until", f"expected an ISO 8601 time such as 2026-12-01T06:00Z, not {value!r}")]
        ) from None
    until = until.replace(tzinfo=UTC) if until.tzinfo is None else until.astimezone(UTC)
    if until <= now:
        raise InvalidExpectation([("until", "is in the past")])
    return until


async def maintenance(conn: Conn, job_id: str, until: datetime, now: datetime) -> Expectation:
    return await _update(conn, job_id, now, lambda c: replace(c, maintenance_until=until))
