"""Runs reported to jobwarden: pings (start, success, fail) and batches.

Every finished run is one row of `jobwarden.runs` (sql/0005); a start waits in
`jobwarden.run_starts` until its end. Input is validated whole before anything is
written, and each write is one statement: a batch is all or nothing, and a ping is
answered once it is committed.

Pairing: a start and an end pair by job and `rid`. Without a `rid` a job has one open
start: a second start replaces the first (as healthchecks.io does). An end without its
start is a run of unknown duration, unless the end says `duration_ms`.
"""

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from jobwarden.alerts.notification import iso_utc
from jobwarden.db.pg import Conn, storable

JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
RUN_ID = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, no space
MAX_BATCH = 1000
MAX_TEXT_BYTES = 10 * 1024  # a ping's body, a batch item's error
MAX_METADATA_BYTES = 10 * 1024
MAX_DURATION_MS = 2**31 - 1  # job_metrics keeps durations as INTEGER
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)  # what the table takes (sql/0005)
FUTURE_SLACK = timedelta(minutes=5)  # clocks disagree a little; never by days
MAX_METADATA_DEPTH = 32
OUTCOMES = {"success": "success", "failure": "failure"}
_BATCH_FIELDS = frozenset(
    {"jobId", "status", "durationMs", "startedAt", "finishedAt", "error", "metadata"}
)


class InvalidRun(ValueError):
    """Input that names a field: `field` as the HTTP error shows it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field} {message}")
        self.field = field
        self.message = f"{field} {message}"


@dataclass(frozen=True)
class Run:
    job_id: str
    outcome: str  # success | failure
    finished_at: datetime
    started_at: datetime | None = None  # None: not known
    duration_ms: int | None = None  # None: not known
    error: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    run_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "jobId": self.job_id,
            "rid": self.run_id,
            "status": self.outcome,
            "startedAt": iso_utc(self.started_at),
            "finishedAt": iso_utc(self.finished_at),
            "durationMs": self.duration_ms,
        }


# --- validation ---------------------------------------------------------------------------


def job_id(value: Any, name: str = "jobId") -> str:
    if not isinstance(value, str) or not JOB_ID.fullmatch(value):
        raise InvalidRun(
            name,
            "must be 1 to 128 characters: letters, digits and . _ : - (not first)",
        )
    return value


def run_id(value: str | None, name: str = "rid") -> str | None:
    if value is None:
        return None
    if not RUN_ID.fullmatch(value):
        raise InvalidRun(name, "must be 1 to 128 printable ASCII characters without spaces")
    return value


def duration_ms(value: Any, name: str = "durationMs") -> int:
    """A JSON integer of milliseconds, 0 up to ~24.8 days."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRun(name, "must be a non-negative integer of milliseconds")
    if value < 0:
        raise InvalidRun(name, "must not be negative")
    if value > MAX_DURATION_MS:
        raise InvalidRun(name, f"must be at most {MAX_DURATION_MS}")
    return value


def duration_text(value: str, name: str = "duration_ms") -> int:
    """The same, from a query string."""
    if not (value.isascii() and value.isdigit() and len(value) <= len(str(MAX_DURATION_MS))):
        raise InvalidRun(name, f"must be an integer of milliseconds, 0 to {MAX_DURATION_MS}")
    return duration_ms(int(value), name)


def instant(value: Any, name: str, now: datetime) -> datetime:
    """ISO 8601 (without an offset: UTC), from 2000 until a few minutes after `now`."""
    if not isinstance(value, str):
        raise InvalidRun(name, "must be an ISO 8601 time")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidRun(name, "must be an ISO 8601 time") from None
    if moment < EARLIEST:
        raise InvalidRun(name, "must not be before 2000")
    if moment > now + FUTURE_SLACK:
        raise InvalidRun(name, "must not be in the future")
    return moment


def error_text(raw: bytes | str, name: str) -> str | None:
    data = raw.encode("utf-8", "replace") if isinstance(raw, str) else raw
    if len(data) > MAX_TEXT_BYTES:
        raise InvalidRun(name, f"must be at most {MAX_TEXT_BYTES} bytes")
    return storable(data.decode("utf-8", "replace").strip()) or None


def _metadata(value: Any, name: str) -> dict[str, Any]:
    """A JSON object PostgreSQL's jsonb takes: no NaN or Infinity, no NUL, no lone
    surrogate, at most MAX_METADATA_DEPTH deep and MAX_METADATA_BYTES long."""
    if not isinstance(value, dict):
        raise InvalidRun(name, "must be a JSON object")
    if problem := _unstorable(value, MAX_METADATA_DEPTH):
        raise InvalidRun(name, f"must not hold {problem}")
    try:
        size = len(json.dumps(value, allow_nan=False, ensure_ascii=False).encode())
    except ValueError:
        raise InvalidRun(name, "must not hold NaN or Infinity") from None
    if size > MAX_METADATA_BYTES:
        raise InvalidRun(name, f"must be at most {MAX_METADATA_BYTES} bytes as JSON")
    return value


def _unstorable(value: Any, depth: int) -> str | None:
    """What in a decoded JSON value jsonb refuses, if anything."""
    if depth < 0:
        return f"more than {MAX_METADATA_DEPTH} levels of nesting"
    texts: list[str] = []
    if isinstance(value, str):
        texts = [value]
    elif isinstance(value, dict):
        texts = list(value)
        for item in value.values():
            if problem := _unstorable(item, depth - 1):
                return problem
    elif isinstance(value, list):
        for item in value:
            if problem := _unstorable(item, depth - 1):
                return problem
    for text in texts:
        if "\x00" in text:
            return "a NUL character"
        try:
            text.encode()
        except UnicodeEncodeError:
            return "a lone surrogate (not UTF-8)"
    return None


def parse_batch(body: Any, now: datetime) -> list[Run]:
    """One run object or an array of up to MAX_BATCH; the first problem found, its
    field named as `[i].name` for an array."""
    if not isinstance(body, list):
        return [_parse_item(body, "", now)]
    if not body:
        raise InvalidRun("body", "must hold at least one run")
    if len(body) > MAX_BATCH:
        raise InvalidRun("body", f"must hold at most {MAX_BATCH} runs (it holds {len(body)})")
    return [_parse_item(item, f"[{i}].", now) for i, item in enumerate(body)]


def _parse_item(item: Any, at: str, now: datetime) -> Run:
    if not isinstance(item, dict):
        raise InvalidRun(at.rstrip(".") or "body", "must be a JSON object")
    for name in item:
        if name not in _BATCH_FIELDS:
            raise InvalidRun(f"{at}{name}", "is not a field of a run")
    for name in ("jobId", "status", "durationMs"):
        if name not in item:
            raise InvalidRun(f"{at}{name}", "is required")
    job = job_id(item["jobId"], f"{at}jobId")
    outcome = OUTCOMES.get(item["status"]) if isinstance(item["status"], str) else None
    if outcome is None:
        raise InvalidRun(f"{at}status", 'must be "success" or "failure"')
    duration = duration_ms(item["durationMs"], f"{at}durationMs")
    started = _optional_instant(item, "startedAt", at, now)
    finished = _optional_instant(item, "finishedAt", at, now)
    if finished is None:
        finished = now if started is None else started + timedelta(milliseconds=duration)
    if started is None:
        started = max(finished - timedelta(milliseconds=duration), EARLIEST)
    elif started > finished:
        raise InvalidRun(f"{at}finishedAt", "must not be before startedAt")
    error = item.get("error")
    if error is not None and not isinstance(error, str):
        raise InvalidRun(f"{at}error", "must be a string")
    metadata = _metadata(item.get("metadata", {}), f"{at}metadata")
    return Run(
        job_id=job,
        outcome=outcome,
        finished_at=finished,
        started_at=started,
        duration_ms=duration,
        error=None if error is None else error_text(error, f"{at}error"),
        metadata=metadata,
    )


def _optional_instant(
    item: Mapping[str, Any], name: str, at: str, now: datetime
) -> datetime | None:
    value = item.get(name)
    return None if value is None else instant(value, f"{at}{name}", now)


# --- writing ------------------------------------------------------------------------------

INSERT_RUNS = """
INSERT INTO jobwarden.runs (job_id, run_id, outcome, started_at, finished_at, duration_ms,
                            error, metadata, source)
SELECT j, r, o, s, f, d, e, m::jsonb, $9
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
            $6::bigint[], $7::text[], $8::text[]) AS u(j, r, o, s, f, d, e, m)
"""

START = """
INSERT INTO jobwarden.run_starts AS s (job_id, run_key, started_at, recorded_at)
VALUES ($1, $2, $3, $3)
ON CONFLICT (job_id, run_key) DO UPDATE SET started_at = $3, recorded_at = $3
"""

# The end of a run: its start (if any) taken out and the run written, in one statement.
# $1 job, $2 run key ('' without rid), $3 outcome, $4 now, $5 duration given (or NULL),
# $6 error.
FINISH = """
WITH started AS (
    DELETE FROM jobwarden.run_starts WHERE job_id = $1::text AND run_key = $2::text
    RETURNING started_at
), run AS (
    SELECT coalesce(s.started_at, $4::timestamptz - make_interval(secs => $5::bigint / 1000.0))
               AS started_at,
           coalesce($5::bigint, CASE WHEN s.started_at IS NOT NULL THEN least(2147483647,
               greatest(0, round(extract(epoch FROM $4::timestamptz - s.started_at) * 1000)))
               ::bigint END) AS duration_ms
    FROM (SELECT 1) AS one LEFT JOIN started s ON true
)
INSERT INTO jobwarden.runs (job_id, run_id, outcome, started_at, finished_at, duration_ms,
                            error, source)
SELECT $1::text, nullif($2::text, ''), $3::text, r.started_at, $4::timestamptz, r.duration_ms,
       $6::text, 'ping'
FROM run r
RETURNING started_at, duration_ms
"""


async def record_runs(conn: Conn, runs: Sequence[Run], source: str = "batch") -> int:
    """All of `runs` in one statement: all or nothing."""
    if not runs:
        return 0
    await conn.execute(
        INSERT_RUNS,
        [r.job_id for r in runs],
        [r.run_id for r in runs],
        [r.outcome for r in runs],
        [r.started_at for r in runs],
        [r.finished_at for r in runs],
        [r.duration_ms for r in runs],
        [r.error for r in runs],
        [json.dumps(r.metadata) for r in runs],
        source,
    )
    return len(runs)


async def start(conn: Conn, job: str, rid: str | None, now: datetime) -> None:
    await conn.execute(START, job, rid or "", now)


async def finish(
    conn: Conn,
    job: str,
    rid: str | None,
    outcome: str,
    now: datetime,
    *,
    duration: int | None = None,
    error: str | None = None,
) -> Run:
    """End a run: paired with its start when there is one; committed when it returns."""
    row = await conn.fetchrow(FINISH, job, rid or "", outcome, now, duration, error)
    assert row is not None
    return Run(
        job_id=job,
        outcome=outcome,
        finished_at=now,
        started_at=row["started_at"],
        duration_ms=row["duration_ms"],
        error=error,
        run_id=rid,
    )
