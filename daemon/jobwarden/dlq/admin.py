"""What an operator sees of the dead-letter queue and may do to it: the same functions
behind `jobwarden dlq ...` and `/api/dlq`.

Views return JSON-ready dicts: an entry under its columns' names (`jobId`,
`processedAt`, ...), instants as ISO 8601 UTC with `Z`, statuses upper-case.

- **Retrying** puts FAILED (and PENDING) entries back: `PENDING`, `processedAt` NULL,
  due now, a fresh attempt budget (`dlq_schedule.budget_from` = the attempts so far:
  `attempts` keeps counting every retry jobwarden made), no lease, no exhaustion, and
  a `requeued` entry in the history. A PROCESSING entry is in flight and a SUCCEEDED
  one is done: both are refused. A NOTIFY in the same transaction wakes the processors.
- **Discarding** gives up on a PENDING or FAILED entry: `FAILED`, unscheduled, and a
  `discarded` entry with the operator's reason in the history; it also acknowledges an
  exhausted entry (no more `dlq_exhausted` alert for it).

Every write is one transaction that locks the shared rows (`FOR UPDATE`) and then their
schedule rows, both in id order, as the processor's writers do; `metadata` is merged
through `jobwarden.dlq_history`, never replaced.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobwarden.alerts.notification import iso_utc
from jobwarden.db.pg import Conn, storable
from jobwarden.db.prisma import from_prisma, to_prisma
from jobwarden.dlq.queue import HISTORY_KEPT, NOTIFY_CHANNEL
from jobwarden.dlq.routes import InvalidInput

STATUSES = ("PENDING", "PROCESSING", "SUCCEEDED", "FAILED")
RETRYABLE = ("FAILED", "PENDING")
MAX_REASON_LENGTH = 500
# History entries written by operators, not by attempts.
OPERATOR_OUTCOMES = frozenset({"requeued", "discarded"})

# Newest first, along "dead_letter_queue_createdAt_idx" (or the status / jobId index).
LIST_ENTRIES = """
SELECT q.id, q."jobId" AS job_id, q.status, q.attempts, q.error,
       q."createdAt" AS created_at, q."updatedAt" AS updated_at,
       q."lastAttemptAt" AS last_attempt_at, q."processedAt" AS processed_at,
       CASE WHEN s.active AND q.status = 'PENDING' THEN s.due_at END AS due_at,
       (q.metadata -> 'jobwarden' -> 'history' -> -1)::text AS last_history
FROM dead_letter_queue q
LEFT JOIN jobwarden.dlq_schedule s ON s.dlq_id = q.id
WHERE ($1::text IS NULL OR q.status = $1) AND ($2::text IS NULL OR q."jobId" = $2)
ORDER BY q."createdAt" DESC, q.id DESC
LIMIT $3
"""

ONE_ENTRY = """
SELECT q.id, q."jobId" AS job_id, q.status, q.attempts, q.error,
       q."eventData"::text AS event_data, q.metadata::text AS metadata,
       q."createdAt" AS created_at, q."updatedAt" AS updated_at,
       q."lastAttemptAt" AS last_attempt_at, q."processedAt" AS processed_at,
       s.dlq_id IS NOT NULL AS scheduled, s.active, s.due_at, s.budget_from, s.lease_owner,
       s.lease_until, s.exhausted_at
FROM dead_letter_queue q
LEFT JOIN jobwarden.dlq_schedule s ON s.dlq_id = q.id
WHERE q.id = $1
"""

LOCK_ONE = "SELECT id, status FROM dead_letter_queue WHERE id = $1 FOR UPDATE"

LOCK_JOB = """
SELECT id, status FROM dead_letter_queue
WHERE "jobId" = $1 AND status IN ('FAILED', 'PENDING')
ORDER BY id
FOR UPDATE
"""

LOCK_ALL_FAILED = """
SELECT id, status FROM dead_letter_queue WHERE status = 'FAILED' ORDER BY id FOR UPDATE
"""

LOCK_SCHEDULES = """
SELECT dlq_id FROM jobwarden.dlq_schedule WHERE dlq_id = ANY($1::text[]) ORDER BY dlq_id
FOR UPDATE
"""

# $1 ids, $2 now as Prisma stores it, $3 now, $4 the history entry, $5 history kept.
# The schedule row is created when missing (the trigger or discovery never saw it).
REQUEUE = """
WITH requeued AS (
    UPDATE dead_letter_queue q
    SET status = 'PENDING', "processedAt" = NULL, "updatedAt" = $2,
        metadata = jobwarden.dlq_history(q.metadata, jsonb_build_array($4::text::jsonb), $5)
    WHERE q.id = ANY($1::text[]) AND q.status IN ('FAILED', 'PENDING')
    RETURNING q.id, q."jobId" AS job_id, q.attempts
)
INSERT INTO jobwarden.dlq_schedule AS s
    (dlq_id, job_id, active, due_at, budget_from, lease_owner, lease_until, exhausted_at,
     updated_at)
SELECT r.id, r.job_id, true, $3, r.attempts, NULL, NULL, NULL, $3
FROM requeued r
ORDER BY r.id
ON CONFLICT (dlq_id) DO UPDATE
SET job_id = excluded.job_id, active = true, due_at = excluded.due_at,
    budget_from = excluded.budget_from, lease_owner = NULL, lease_until = NULL,
    exhausted_at = NULL, updated_at = excluded.updated_at
"""

# $1 id, $2 now as Prisma stores it, $3 now, $4 the history entry, $5 history kept.
# A FAILED entry keeps the processedAt of when it failed.
DISCARD = """
WITH discarded AS (
    UPDATE dead_letter_queue q
    SET status = 'FAILED',
        "processedAt" = CASE WHEN q.status = 'FAILED' THEN coalesce(q."processedAt", $2)
                             ELSE $2 END,
        "updatedAt" = $2,
        metadata = jobwarden.dlq_history(q.metadata, jsonb_build_array($4::text::jsonb), $5)
    WHERE q.id = $1 AND q.status IN ('PENDING', 'FAILED')
    RETURNING q.id
)
UPDATE jobwarden.dlq_schedule s
SET active = false, lease_owner = NULL, lease_until = NULL, exhausted_at = NULL,
    updated_at = $3
FROM discarded d
WHERE s.dlq_id = d.id
"""

NOTIFY = "SELECT pg_notify($1, '')"

COUNTS = """
SELECT "jobId" AS job_id, status, count(*) AS entries
FROM dead_letter_queue
GROUP BY 1, 2
ORDER BY 1, 2
"""

OLDEST_PENDING = """
SELECT id, "jobId" AS job_id, "createdAt" AS created_at
FROM dead_letter_queue
WHERE status = 'PENDING'
ORDER BY "createdAt", id
LIMIT 1
"""

ATTEMPTS_HISTOGRAM = """
SELECT attempts, count(*) AS entries FROM dead_letter_queue GROUP BY 1 ORDER BY 1
"""


class UnknownEntry(LookupError):
    def __init__(self, entry_id: str) -> None:
        super().__init__(f"no dead-letter entry {entry_id!r}")
        self.entry_id = entry_id


class Refused(ValueError):
    """The entry's status does not allow this: in flight (PROCESSING) or done."""

    def __init__(self, entry_id: str, status: str, action: str) -> None:
        why = {
            ("retry", "PROCESSING"): "a retry of it is running right now; its outcome will"
            " decide (retry it once it has FAILED)",
            ("retry", "SUCCEEDED"): "it has SUCCEEDED: there is nothing to retry",
            ("discard", "PROCESSING"): "a retry of it is running right now; try again once"
            " it has finished",
            ("discard", "SUCCEEDED"): "it has SUCCEEDED: there is nothing to discard",
        }.get((action, status), f"its status is {status}")
        super().__init__(f"cannot {action} dead-letter entry {entry_id!r}: {why}")
        self.entry_id = entry_id
        self.status = status


@dataclass(frozen=True)
class Retried:
    """How many entries went back to PENDING, by the status they had."""

    failed: int = 0
    pending: int = 0

    @property
    def total(self) -> int:
        return self.failed + self.pending


def parse_status(text: str) -> str:
    """A status in any case, as stored: `failed` -> `FAILED`."""
    status = text.strip().upper()
    if status not in STATUSES:
        raise InvalidInput("status", f"must be one of {', '.join(STATUSES)}, not {text!r}")
    return status


def check_reason(text: str) -> str:
    """Why an entry is discarded: not blank, at most 500 characters."""
    reason = text.strip()
    if not reason:
        raise InvalidInput("reason", "must not be empty: say why the entry is given up")
    if len(reason) > MAX_REASON_LENGTH:
        raise InvalidInput(
            "reason", f"must be at most {MAX_REASON_LENGTH} characters, not {len(reason)}"
        )
    return storable(reason) or reason


def _shared_iso(value: datetime | None) -> str | None:
    """A timestamp of the shared table (naive UTC) as ISO 8601 UTC."""
    return iso_utc(from_prisma(value))


def _history(metadata: Any) -> list[Any]:
    if not isinstance(metadata, dict):
        return []
    ours = metadata.get("jobwarden")
    history = ours.get("history") if isinstance(ours, dict) else None
    return history if isinstance(history, list) else []


def _without_history(metadata: Any) -> Any:
    """`metadata` as stored, less `jobwarden.history` (shown on its own): the web app's
    keys, and any other key of jobwarden's."""
    if not isinstance(metadata, dict) or not isinstance(metadata.get("jobwarden"), dict):
        return metadata
    ours = {k: v for k, v in metadata["jobwarden"].items() if k != "history"}
    rest = {k: v for k, v in metadata.items() if k != "jobwarden"}
    return {**rest, "jobwarden": ours} if ours else rest


def _is_attempt(item: Any) -> bool:
    return not (isinstance(item, dict) and item.get("outcome") in OPERATOR_OUTCOMES)


def _entry(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "jobId": row["job_id"],
        "status": row["status"],
        "attempts": row["attempts"],
        "error": row["error"],
        "createdAt": _shared_iso(row["created_at"]),
        "updatedAt": _shared_iso(row["updated_at"]),
        "lastAttemptAt": _shared_iso(row["last_attempt_at"]),
        "processedAt": _shared_iso(row["processed_at"]),
    }


async def list_entries(
    conn: Conn, status: str | None = None, job: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """The newest `limit` entries (of one status, of one job), each with `dueAt` (when a
    PENDING one is tried next) and `lastOutcome` (its latest history entry)."""
    out = []
    for row in await conn.fetch(LIST_ENTRIES, status, job, limit):
        entry = _entry(row)
        entry["dueAt"] = iso_utc(row["due_at"])
        last = None if row["last_history"] is None else json.loads(row["last_history"])
        entry["lastOutcome"] = last if isinstance(last, dict) else None
        out.append(entry)
    return out


async def show_entry(
    conn: Conn, entry_id: str, *, max_attempts: int | None = None
) -> dict[str, Any] | None:
    """One entry in full: its event data, its metadata (less `jobwarden.history`), the
    whole stored history (`history`), and its schedule (due time, lease, attempt budget;
    `attemptsLeft` when `max_attempts` is given). `earlierAttemptsNotKept` counts attempts
    older than the history holds (it keeps the latest HISTORY_KEPT entries). None if
    unknown."""
    row = await conn.fetchrow(ONE_ENTRY, entry_id)
    if row is None:
        return None
    entry = _entry(row)
    metadata = json.loads(row["metadata"])
    history = _history(metadata)
    in_flight = 1 if row["status"] == "PROCESSING" else 0  # claimed, not yet written
    recorded = sum(1 for item in history if _is_attempt(item))
    entry.update(
        eventData=json.loads(row["event_data"]),
        metadata=_without_history(metadata),
        schedule=_schedule(row, max_attempts) if row["scheduled"] else None,
        history=history,
        historyKept=HISTORY_KEPT,
        earlierAttemptsNotKept=max(0, row["attempts"] - in_flight - recorded),
    )
    return entry


def _schedule(row: Mapping[str, Any], max_attempts: int | None) -> dict[str, Any]:
    used = row["attempts"] - row["budget_from"]
    return {
        "active": row["active"],
        "dueAt": iso_utc(row["due_at"]),
        "leaseOwner": row["lease_owner"],
        "leaseUntil": iso_utc(row["lease_until"]),
        "budgetFrom": row["budget_from"],
        "attemptsInBudget": used,
        "maxAttempts": max_attempts,
        "attemptsLeft": None if max_attempts is None else max(0, max_attempts - used),
        "exhaustedAt": iso_utc(row["exhausted_at"]),
    }


def _history_entry(outcome: str, now: datetime, by: str, **extra: str) -> str:
    return json.dumps({"outcome": outcome, "at": iso_utc(now), "by": by, **extra})


async def retry(
    conn: Conn,
    *,
    entry_id: str | None = None,
    job: str | None = None,
    all_failed: bool = False,
    now: datetime,
    by: str,
) -> Retried:
    """Put one entry (`entry_id`: FAILED or PENDING), a job's FAILED and PENDING entries
    (`job`) or every FAILED one (`all_failed`) back to PENDING, due now, with a fresh
    attempt budget. Raises UnknownEntry, or Refused for a PROCESSING or SUCCEEDED entry
    named by id."""
    if sum((entry_id is not None, job is not None, all_failed)) != 1:
        raise TypeError("retry takes exactly one of entry_id, job and all_failed")
    async with conn.transaction():
        if entry_id is not None:
            locked = await conn.fetch(LOCK_ONE, entry_id)
            if not locked:
                raise UnknownEntry(entry_id)
            if locked[0]["status"] not in RETRYABLE:
                raise Refused(entry_id, locked[0]["status"], "retry")
        elif job is not None:
            locked = await conn.fetch(LOCK_JOB, job)
        else:
            locked = await conn.fetch(LOCK_ALL_FAILED)
        ids = [row["id"] for row in locked]
        if not ids:
            return Retried()
        await conn.execute(LOCK_SCHEDULES, ids)
        entry = _history_entry("requeued", now, by)
        await conn.execute(REQUEUE, ids, to_prisma(now), now, entry, HISTORY_KEPT)
        await conn.execute(NOTIFY, NOTIFY_CHANNEL)
    statuses = [row["status"] for row in locked]
    return Retried(failed=statuses.count("FAILED"), pending=statuses.count("PENDING"))


async def discard(conn: Conn, entry_id: str, reason: str, now: datetime, by: str) -> str:
    """Give up on a PENDING or FAILED entry: FAILED, unscheduled, the reason in its
    history. Returns the status it had. Raises UnknownEntry, Refused (PROCESSING,
    SUCCEEDED) or InvalidInput (the reason)."""
    reason = check_reason(reason)
    async with conn.transaction():
        locked = await conn.fetchrow(LOCK_ONE, entry_id)
        if locked is None:
            raise UnknownEntry(entry_id)
        status: str = locked["status"]
        if status not in RETRYABLE:
            raise Refused(entry_id, status, "discard")
        await conn.execute(LOCK_SCHEDULES, [entry_id])
        entry = _history_entry("discarded", now, by, reason=reason)
        await conn.execute(DISCARD, entry_id, to_prisma(now), now, entry, HISTORY_KEPT)
    return status


async def stats(conn: Conn, now: datetime) -> dict[str, Any]:
    """Counts by job and status, the oldest PENDING entry and its age, and how many
    entries have had each number of attempts; one consistent snapshot."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        counts = await conn.fetch(COUNTS)
        oldest = await conn.fetchrow(OLDEST_PENDING)
        histogram = await conn.fetch(ATTEMPTS_HISTOGRAM)
    by_status = dict.fromkeys(STATUSES, 0)
    jobs: dict[str, dict[str, Any]] = {}
    for row in counts:
        job = jobs.setdefault(
            row["job_id"],
            {"jobId": row["job_id"], "counts": dict.fromkeys(STATUSES, 0), "total": 0},
        )
        job["counts"][row["status"]] = row["entries"]
        job["total"] += row["entries"]
        by_status[row["status"]] = by_status.get(row["status"], 0) + row["entries"]
    oldest_pending = None
    if oldest is not None:
        created = from_prisma(oldest["created_at"])
        assert created is not None
        oldest_pending = {
            "id": oldest["id"],
            "jobId": oldest["job_id"],
            "createdAt": iso_utc(created),
            "ageSeconds": round(max(0.0, (now - created).total_seconds()), 3),
        }
    return {
        "generatedAt": iso_utc(now),
        "total": sum(by_status.values()),
        "byStatus": by_status,
        "jobs": list(jobs.values()),
        "oldestPending": oldest_pending,
        "attempts": [{"attempts": r["attempts"], "entries": r["entries"]} for r in histogram],
    }
