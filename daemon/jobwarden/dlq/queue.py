"""The dead-letter queue as the processor sees it: discover, claim, renew, record.

The entries are rows of the web app's `dead_letter_queue`; their scheduling (due
time, lease, attempt budget) is `jobwarden.dlq_schedule` (see sql/0004). Every write
to the shared table is one conditional statement, and none is open while a retry runs:

- `discover` schedules PENDING entries the trigger missed (or the web app put back),
  and unschedules those the web app finished or deleted itself.
- `claim` moves due, routed PENDING entries to PROCESSING with `attempts + 1` and
  `lastAttemptAt`, and leases them, in one statement: `ARRAY(… LIMIT n FOR UPDATE SKIP
  LOCKED)` so no plan can claim more than `n`, and no entry is claimed twice.
- `renew` extends the leases of retries still running; `record` writes outcomes (only
  while the lease is still this daemon's); `release` hands back what was claimed but
  never started; `recover` takes back entries whose daemon died (lease expired).

Each attempt goes into `metadata.jobwarden.history` (the latest 20) through
`jobwarden.dlq_history`, which merges into whatever the web app keeps in `metadata`.
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from jobwarden.db.pg import Conn, affected
from jobwarden.db.prisma import from_prisma, to_prisma

NOTIFY_CHANNEL = "jobwarden_dlq"
HISTORY_KEPT = 20
RECOVER_BATCH = 500

DISCOVER = """
INSERT INTO jobwarden.dlq_schedule AS s (dlq_id, job_id, due_at, budget_from, updated_at)
SELECT q.id, q."jobId", $1, q.attempts, $1
FROM dead_letter_queue q
LEFT JOIN jobwarden.dlq_schedule x ON x.dlq_id = q.id
WHERE q.status = 'PENDING' AND (x.dlq_id IS NULL OR NOT x.active)
ON CONFLICT (dlq_id) DO UPDATE
SET active = true, due_at = $1, budget_from = excluded.budget_from, exhausted_at = NULL,
    lease_owner = NULL, lease_until = NULL, updated_at = $1
WHERE NOT s.active
"""

# Finished or deleted by the web app itself: nothing left for jobwarden to do.
UNSCHEDULE = """
UPDATE jobwarden.dlq_schedule s
SET active = false, lease_owner = NULL, lease_until = NULL, updated_at = $1
WHERE s.active AND NOT EXISTS (
    SELECT 1 FROM dead_letter_queue q
    WHERE q.id = s.dlq_id AND q.status IN ('PENDING', 'PROCESSING'))
"""

PRUNE = """
DELETE FROM jobwarden.dlq_schedule s
WHERE NOT s.active AND NOT EXISTS (SELECT 1 FROM dead_letter_queue q WHERE q.id = s.dlq_id)
"""

# $1 now, $2 now as Prisma stores it, $3 owner, $4 lease until, $5 limit, $6 every job is
# routed (a default URL), $7 jobs with a Python handler, $8 attempts per budget.
CLAIM = """
WITH claimed AS (
    UPDATE dead_letter_queue q
    SET status = 'PROCESSING', attempts = q.attempts + 1, "lastAttemptAt" = $2,
        "updatedAt" = $2
    WHERE q.id = ANY(ARRAY(
        SELECT c.id
        FROM jobwarden.dlq_schedule s
        JOIN dead_letter_queue c ON c.id = s.dlq_id
        WHERE s.active AND s.due_at <= $1 AND (c.status = 'PENDING') IS TRUE
          AND c.attempts - s.budget_from < $8
          AND ($6 OR s.job_id = ANY($7::text[])
               OR EXISTS (SELECT 1 FROM jobwarden.dlq_routes r WHERE r.job_id = s.job_id))
        ORDER BY s.due_at
        LIMIT $5
        FOR UPDATE OF c, s SKIP LOCKED
    ))
    RETURNING q.id, q."jobId" AS job_id, q."eventData"::text AS event_data, q.error,
              q.attempts, q."createdAt" AS created_at, q.metadata::text AS metadata
), leased AS (
    UPDATE jobwarden.dlq_schedule s
    SET lease_owner = $3, lease_until = $4, updated_at = $1
    WHERE s.dlq_id = ANY(ARRAY(SELECT c.id FROM claimed c))
    RETURNING s.dlq_id, s.budget_from
)
SELECT c.*, l.budget_from,
       (SELECT r.url FROM jobwarden.dlq_routes r WHERE r.job_id = c.job_id) AS route_url
FROM claimed c JOIN leased l ON l.dlq_id = c.id
ORDER BY c.id
"""

# When the next entry may be claimed: the claim's own filters, so an entry the claim
# would skip never makes the loop look again at once.
NEXT_DUE = """
SELECT s.due_at
FROM jobwarden.dlq_schedule s
JOIN dead_letter_queue c ON c.id = s.dlq_id
WHERE s.active AND s.lease_owner IS NULL AND (c.status = 'PENDING') IS TRUE
  AND c.attempts - s.budget_from < $3
  AND ($1 OR s.job_id = ANY($2::text[])
       OR EXISTS (SELECT 1 FROM jobwarden.dlq_routes r WHERE r.job_id = s.job_id))
ORDER BY s.due_at
LIMIT 1
"""

# Every write of a claim's outcome is fenced by (lease owner, attempt number): once an
# entry was taken back and claimed again, even by the same daemon, the old claim's
# renewal, outcome or hand-back matches nothing.
RENEW = """
UPDATE jobwarden.dlq_schedule s SET lease_until = $3, updated_at = $2
FROM unnest($1::text[], $5::int[]) AS u(id, attempt), dead_letter_queue q
WHERE s.dlq_id = u.id AND q.id = u.id AND s.lease_owner = $4
  AND q.status = 'PROCESSING' AND q.attempts = u.attempt
RETURNING s.dlq_id, u.attempt
"""

# $1..$7 the outcomes, $8 now as Prisma stores it, $9 owner, $10 now. The schedule of a
# SUCCEEDED entry is deleted (the table would otherwise grow with every entry ever
# retried); a FAILED one keeps it, for its dlq_exhausted alert and budget. A refunded
# attempt (interrupted at shutdown) is not counted.
RECORD = """
WITH u AS (
    SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::timestamptz[], $5::text[],
                         $6::bool[], $7::bool[])
        AS u(id, attempt, status, due_at, entry, exhausted, refund)
), written AS (
    UPDATE dead_letter_queue q
    SET status = u.status,
        attempts = q.attempts - CASE WHEN u.refund THEN 1 ELSE 0 END,
        "processedAt" = CASE WHEN u.status = 'PENDING' THEN q."processedAt" ELSE $8 END,
        "updatedAt" = $8,
        metadata = CASE
            -- the usual first attempt: an object without our key; no function call
            WHEN jsonb_typeof(q.metadata) = 'object' AND NOT q.metadata ? 'jobwarden'
            THEN q.metadata || jsonb_build_object(
                'jobwarden', jsonb_build_object('history', jsonb_build_array(u.entry::jsonb)))
            ELSE jobwarden.dlq_history(q.metadata, jsonb_build_array(u.entry::jsonb)) END
    FROM u, jobwarden.dlq_schedule s
    WHERE q.id = u.id AND s.dlq_id = u.id AND s.lease_owner = $9
      AND q.status = 'PROCESSING' AND q.attempts = u.attempt
    RETURNING q.id, q.status
), succeeded AS (  -- nothing left to remember of it
    DELETE FROM jobwarden.dlq_schedule s
    WHERE s.dlq_id = ANY(ARRAY(SELECT w.id FROM written w WHERE w.status = 'SUCCEEDED'))
      AND s.lease_owner = $9
), scheduled AS (
    UPDATE jobwarden.dlq_schedule s
    SET active = (u.status = 'PENDING'), due_at = coalesce(u.due_at, s.due_at),
        lease_owner = NULL, lease_until = NULL,
        exhausted_at = CASE WHEN u.exhausted THEN $10 ELSE s.exhausted_at END,
        updated_at = $10
    FROM u
    WHERE s.dlq_id = u.id AND s.lease_owner = $9
      AND s.dlq_id = ANY(ARRAY(SELECT w.id FROM written w WHERE w.status <> 'SUCCEEDED'))
)
SELECT count(*) FROM written
"""

# Claimed, never started: back to PENDING, due now, and the attempt is not counted.
RELEASE = """
WITH back AS (
    UPDATE dead_letter_queue q
    SET status = 'PENDING', attempts = greatest(q.attempts - 1, 0), "updatedAt" = $3
    FROM unnest($1::text[], $5::int[]) AS u(id, attempt), jobwarden.dlq_schedule s
    WHERE q.id = u.id AND s.dlq_id = q.id AND s.lease_owner = $2
      AND q.status = 'PROCESSING' AND q.attempts = u.attempt
    RETURNING q.id
)
UPDATE jobwarden.dlq_schedule s
SET lease_owner = NULL, lease_until = NULL, due_at = least(s.due_at, $4), updated_at = $4
FROM back b
WHERE s.dlq_id = b.id
"""

# Left PROCESSING by a daemon whose lease expired (it died, or lost the database for
# longer than the lease): retried at once, or FAILED when that was its last attempt.
RECOVER = """
WITH expired AS (
    SELECT s.dlq_id, s.budget_from, s.lease_owner
    FROM jobwarden.dlq_schedule s
    JOIN dead_letter_queue q ON q.id = s.dlq_id
    WHERE s.lease_owner IS NOT NULL AND s.lease_until < $1 AND q.status = 'PROCESSING'
    ORDER BY s.lease_until
    LIMIT $4
    FOR UPDATE OF s, q SKIP LOCKED
), back AS (
    UPDATE dead_letter_queue q
    SET status = CASE WHEN q.attempts - e.budget_from >= $3 THEN 'FAILED' ELSE 'PENDING' END,
        "processedAt" = CASE WHEN q.attempts - e.budget_from >= $3 THEN $2
                             ELSE q."processedAt" END,
        "updatedAt" = $2,
        metadata = jobwarden.dlq_history(q.metadata, jsonb_build_array(jsonb_build_object(
            'attempt', q.attempts,
            'startedAt', to_char(q."lastAttemptAt", 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
            'outcome', CASE WHEN q.attempts - e.budget_from >= $3 THEN 'exhausted'
                            ELSE 'lease_expired' END,
            'error', 'no outcome: the daemon running this retry (' || e.lease_owner
                     || ') stopped before its lease expired',
            'by', e.lease_owner)))
    FROM expired e
    WHERE q.id = e.dlq_id
    RETURNING q.id, q.status, q."jobId" AS job_id
)
UPDATE jobwarden.dlq_schedule s
SET lease_owner = NULL, lease_until = NULL, due_at = $1, active = (b.status = 'PENDING'),
    exhausted_at = CASE WHEN b.status = 'FAILED' THEN $1 ELSE s.exhausted_at END,
    updated_at = $1
FROM back b
WHERE s.dlq_id = b.id
RETURNING s.dlq_id, b.status, b.job_id
"""

# The state of the queue at a glance (health): along the status index, never the
# whole table (SUCCEEDED entries pile up).
SUMMARY = """
SELECT
    (SELECT count(*) FROM dead_letter_queue WHERE status = 'PENDING') AS pending,
    (SELECT count(*) FROM dead_letter_queue WHERE status = 'PROCESSING') AS processing,
    (SELECT min("createdAt") FROM dead_letter_queue WHERE status = 'PENDING') AS oldest_pending,
    (SELECT count(*) FROM jobwarden.dlq_schedule WHERE exhausted_at IS NOT NULL)
        AS failed_unacknowledged
"""

# PENDING entries with no attempt left in their budget (JOBWARDEN_DLQ_MAX_ATTEMPTS was
# lowered, or the web app wrote attempts itself): FAILED, as if their last attempt had
# just failed, so they raise dlq_exhausted instead of waiting for ever.
EXHAUST = """
WITH spent AS (
    SELECT q.id
    FROM jobwarden.dlq_schedule s
    JOIN dead_letter_queue q ON q.id = s.dlq_id
    WHERE s.active AND q.status = 'PENDING' AND q.attempts - s.budget_from >= $3
    ORDER BY q.id
    LIMIT $4
    FOR UPDATE OF s, q SKIP LOCKED
), failed AS (
    UPDATE dead_letter_queue q
    SET status = 'FAILED', "processedAt" = $2, "updatedAt" = $2,
        metadata = jobwarden.dlq_history(q.metadata, jsonb_build_array(jsonb_build_object(
            'attempt', q.attempts,
            'at', to_char($2::timestamp, 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
            'outcome', 'exhausted',
            'error', 'no attempt left: JOBWARDEN_DLQ_MAX_ATTEMPTS is ' || $3::text)))
    FROM spent
    WHERE q.id = spent.id
    RETURNING q.id, q."jobId" AS job_id
)
UPDATE jobwarden.dlq_schedule s
SET active = false, lease_owner = NULL, lease_until = NULL, exhausted_at = $1, updated_at = $1
FROM failed f
WHERE s.dlq_id = f.id
RETURNING s.dlq_id, f.job_id
"""

# Whether the schedule grew well beyond what PostgreSQL last measured of it: a burst of
# 50,000 entries into tables it last saw nearly empty makes every claim scan them all
# until autovacuum gets there (a minute or more later). Counted directly, up to 10,000
# rows (the activity counters lag the app's commit by up to 10 s).
STALE_STATISTICS = """
SELECT active >= 1000 AND active > 2 * greatest(c.reltuples, 0)
FROM pg_class c,
     (SELECT count(*) AS active
      FROM (SELECT 1 FROM jobwarden.dlq_schedule WHERE active LIMIT 10000) AS x) AS a
WHERE c.oid = 'jobwarden.dlq_schedule'::regclass
"""
# SKIP_LOCKED: never wait behind a VACUUM. The web app's table is analyzed too when
# jobwarden's role may (it owns it, or has MAINTAIN); otherwise PostgreSQL skips it
# with a warning.
ANALYZE = "ANALYZE (SKIP_LOCKED) jobwarden.dlq_schedule, dead_letter_queue"


@dataclass(frozen=True)
class Entry:
    """What a handler is given: the entry as the web app wrote it, and this attempt.

    `event_data` and `metadata` are decoded when first read (an HTTP retry passes the
    event data on as PostgreSQL wrote it)."""

    id: str
    job_id: str
    event_data_json: str  # eventData as JSON text
    error: str  # the web app's original error
    attempt: int  # this attempt's number (the entry's `attempts` once claimed)
    created_at: datetime
    metadata_json: str = "{}"

    @cached_property
    def event_data(self) -> Any:
        return json.loads(self.event_data_json)

    @cached_property
    def metadata(self) -> Mapping[str, Any]:
        """The web app's metadata (not an object: under "value")."""
        value = json.loads(self.metadata_json)
        return value if isinstance(value, dict) else {"value": value}


@dataclass(frozen=True)
class Claimed:
    entry: Entry
    budget_attempt: int  # this attempt within the current budget: 1..max attempts
    route_url: str | None  # the job's route, when it has one


@dataclass(frozen=True)
class Finished:
    """An attempt's outcome as it is written."""

    id: str
    attempt: int  # the claim's attempt number: the fence of every write about it
    status: str  # SUCCEEDED | FAILED | PENDING (retried later)
    history: Mapping[str, Any]  # this attempt's entry in metadata.jobwarden.history
    due_at: datetime | None = None  # PENDING: when to try again
    exhausted: bool = False  # FAILED for good: raises dlq_exhausted
    refund: bool = False  # the attempt is not counted (interrupted at shutdown)


@dataclass(frozen=True)
class Recovered:
    id: str
    status: str  # PENDING (retried now) | FAILED (that was its last attempt)
    job_id: str


@dataclass(frozen=True)
class Routing:
    """Which jobs the claim may take: all (a default URL), or those with a handler or
    a route (routes are read from `jobwarden.dlq_routes` by the query itself)."""

    every_job: bool
    handled_jobs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Summary:
    pending: int
    processing: int
    oldest_pending: datetime | None
    failed_unacknowledged: int  # failed for good by jobwarden, not retried or discarded


async def summary(conn: Conn) -> Summary:
    row = await conn.fetchrow(SUMMARY)
    assert row is not None
    return Summary(
        row["pending"],
        row["processing"],
        from_prisma(row["oldest_pending"]),
        row["failed_unacknowledged"],
    )


async def discover(conn: Conn, now: datetime) -> int:
    """Schedule PENDING entries without a schedule; unschedule what is no longer ours."""
    async with conn.transaction():
        found = affected(await conn.execute(DISCOVER, now))
        await conn.execute(UNSCHEDULE, now)
    return found


async def refresh_statistics(conn: Conn) -> bool:
    """ANALYZE both tables when the schedule outgrew their statistics; whether it did."""
    if not await conn.fetchval(STALE_STATISTICS):
        return False
    await conn.execute(ANALYZE)
    return True


async def prune(conn: Conn) -> int:
    """Forget the schedules of entries the web app deleted."""
    return affected(await conn.execute(PRUNE))


async def claim(
    conn: Conn,
    owner: str,
    now: datetime,
    *,
    limit: int,
    lease: float,
    routing: Routing,
    max_attempts: int,
) -> list[Claimed]:
    if limit <= 0:
        return []
    rows = await conn.fetch(
        CLAIM,
        now,
        to_prisma(now),
        owner,
        _plus(now, lease),
        limit,
        routing.every_job,
        list(routing.handled_jobs),
        max_attempts,
    )
    return [_claimed(row) for row in rows]


def _claimed(row: Mapping[str, Any]) -> Claimed:
    entry = Entry(
        id=row["id"],
        job_id=row["job_id"],
        event_data_json=row["event_data"],
        error=row["error"],
        attempt=row["attempts"],
        created_at=from_prisma(row["created_at"]) or datetime.now(UTC),
        metadata_json=row["metadata"],
    )
    return Claimed(entry, row["attempts"] - row["budget_from"], row["route_url"])


async def next_due(conn: Conn, routing: Routing, max_attempts: int) -> datetime | None:
    due: datetime | None = await conn.fetchval(
        NEXT_DUE, routing.every_job, list(routing.handled_jobs), max_attempts
    )
    return due


Claim = tuple[str, int]  # (entry id, attempt number): one claim of one entry


async def renew(
    conn: Conn, owner: str, claims: Sequence[Claim], now: datetime, lease: float
) -> set[Claim]:
    """Extend the leases of `claims`; those still this daemon's."""
    if not claims:
        return set()
    ordered = sorted(claims)  # one lock order for every writer
    rows = await conn.fetch(
        RENEW, [i for i, _ in ordered], now, _plus(now, lease), owner, [a for _, a in ordered]
    )
    return {(row["dlq_id"], row["attempt"]) for row in rows}


async def record(conn: Conn, owner: str, finished: Sequence[Finished], now: datetime) -> int:
    """Write outcomes of entries this daemon still holds; how many were written."""
    if not finished:
        return 0
    ordered = sorted(finished, key=lambda f: f.id)  # one lock order for every writer
    written: int = await conn.fetchval(  # one statement: atomic without BEGIN/COMMIT
        RECORD,
        [f.id for f in ordered],
        [f.attempt for f in ordered],
        [f.status for f in ordered],
        [f.due_at for f in ordered],
        [json.dumps(f.history) for f in ordered],
        [f.exhausted for f in ordered],
        [f.refund for f in ordered],
        to_prisma(now),
        owner,
        now,
    )
    return written


async def release(conn: Conn, owner: str, claims: Sequence[Claim], now: datetime) -> int:
    if not claims:
        return 0
    ordered = sorted(claims)
    status = await conn.execute(
        RELEASE, [i for i, _ in ordered], owner, to_prisma(now), now, [a for _, a in ordered]
    )
    return affected(status)


async def recover(
    conn: Conn, now: datetime, *, max_attempts: int, limit: int = RECOVER_BATCH
) -> list[Recovered]:
    rows = await conn.fetch(RECOVER, now, to_prisma(now), max_attempts, limit)
    return [Recovered(row["dlq_id"], row["status"], row["job_id"]) for row in rows]


async def exhaust(
    conn: Conn, now: datetime, *, max_attempts: int, limit: int = RECOVER_BATCH
) -> list[Recovered]:
    """FAIL the PENDING entries that have no attempt left in their budget."""
    rows = await conn.fetch(EXHAUST, now, to_prisma(now), max_attempts, limit)
    return [Recovered(row["dlq_id"], "FAILED", row["job_id"]) for row in rows]


def _plus(moment: datetime, seconds: float) -> datetime:
    return moment + timedelta(seconds=seconds)
