"""The delivery outbox in schema `jobwarden`: events in, deliveries out.

1. **Events** (`alert_events`) say what someone must hear about: an alert fired,
   resolved, or is still open (reminder n). The trigger on `alerts` records them in
   the web app's own transaction; `sweep` records what the trigger missed.
2. **Expansion** turns each event into one delivery per configured channel
   (`routing.plan`), pending or suppressed with the reason, unique on alert x
   channel x event x reminder, and marks the event expanded. One transaction; one
   expander at a time across replicas (a transaction advisory lock), so a resolved
   event always sees the firing deliveries of its alert.
3. **Claiming** takes due deliveries of one channel with a lease (`claimed_by`,
   `claimed_until`) in a short transaction that also holds the channel's row: the
   channel's pause (a server's Retry-After) and its send budget (Slack's token
   bucket) are shared by every replica. No transaction is open while a channel is
   called. A replica that dies mid-send leaves a lease that expires: the delivery is
   tried again, under the same idempotency key (the delivery id).
4. **Recording** writes each outcome, only for deliveries this owner still holds.
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from jobwarden.alerts.notification import AlertView, Event
from jobwarden.alerts.routing import Planned, Route, plan
from jobwarden.db.pg import Conn, affected, storable
from jobwarden.db.prisma import from_prisma, new_id

# Transaction advisory lock key for expansion: ASCII "JWEXPAND".
EXPANSION_LOCK_KEY = 0x4A57455850414E44
NOTIFY_CHANNEL = "jobwarden_alert_events"

LOCK_EXPANSION = "SELECT pg_advisory_xact_lock($1)"

UNEXPANDED_EVENTS = """
SELECT e.alert_id, e.event, e.reminder, e.recorded_at,
       a.id IS NOT NULL AS alert_exists, a.severity, a."createdAt" AS created_at,
       a."resolvedAt" AS resolved_at
FROM jobwarden.alert_events e
LEFT JOIN alerts a ON a.id = e.alert_id
WHERE e.expanded_at IS NULL
  -- resolved and reminders only after their firing event: they go where it went
  AND (e.event = 'firing' OR EXISTS (
        SELECT 1 FROM jobwarden.alert_events f
        WHERE f.alert_id = e.alert_id AND f.event = 'firing' AND f.reminder = 0
          AND f.expanded_at IS NOT NULL))
ORDER BY e.recorded_at, e.event
LIMIT $1
"""

FIRING_STATUSES = """
SELECT alert_id, channel, status FROM jobwarden.deliveries
WHERE alert_id = ANY($1::text[]) AND event = 'firing'
"""

INSERT_DELIVERIES = """
INSERT INTO jobwarden.deliveries (id, alert_id, channel, event, reminder, status, last_error,
                                  next_attempt_at, created_at, updated_at)
SELECT d.id, d.alert_id, d.channel, d.event, d.reminder, d.status, d.reason, $8, $8, $8
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[], $7::text[])
     AS d(id, alert_id, channel, event, reminder, status, reason)
ON CONFLICT (alert_id, channel, event, reminder) DO NOTHING
"""

MARK_EXPANDED = """
UPDATE jobwarden.alert_events e SET expanded_at = $4
FROM unnest($1::text[], $2::text[], $3::int[]) AS x(alert_id, event, reminder)
WHERE e.alert_id = x.alert_id AND e.event = x.event AND e.reminder = x.reminder
"""

ENSURE_CHANNEL = """
INSERT INTO jobwarden.channel_state (channel) VALUES ($1) ON CONFLICT (channel) DO NOTHING
"""

LOCK_CHANNEL = """
SELECT paused_until, tokens, refilled_at, failures
FROM jobwarden.channel_state WHERE channel = $1 FOR UPDATE
"""

# Due, not leased, and (resolved, reminder) only once the channel's firing notification
# went out: while it is pending they wait; once it failed they are suppressed.
COUNT_CLAIMABLE = """
SELECT count(*) FROM (
    SELECT 1 FROM jobwarden.deliveries c
    WHERE c.channel = $1 AND c.status = 'pending' AND c.next_attempt_at <= $2
      AND (c.claimed_until IS NULL OR c.claimed_until < $2)
      AND (c.event = 'firing' OR NOT EXISTS (
            SELECT 1 FROM jobwarden.deliveries f
            WHERE f.alert_id = c.alert_id AND f.channel = c.channel AND f.event = 'firing'
              AND f.status <> 'sent'))
    LIMIT $3
) AS due
"""

# ARRAY(... LIMIT n FOR UPDATE SKIP LOCKED): the planner can never claim more than n.
CLAIM = """
UPDATE jobwarden.deliveries d
SET attempts = d.attempts + 1, claimed_by = $3, claimed_until = $4, updated_at = $2
WHERE d.id = ANY(ARRAY(
    SELECT c.id FROM jobwarden.deliveries c
    WHERE c.channel = $1 AND c.status = 'pending' AND c.next_attempt_at <= $2
      AND (c.claimed_until IS NULL OR c.claimed_until < $2)
      AND (c.event = 'firing' OR NOT EXISTS (
            SELECT 1 FROM jobwarden.deliveries f
            WHERE f.alert_id = c.alert_id AND f.channel = c.channel AND f.event = 'firing'
              AND f.status <> 'sent'))
    ORDER BY c.next_attempt_at, c.created_at
    LIMIT $5
    FOR UPDATE SKIP LOCKED
))
RETURNING d.id, d.alert_id, d.event, d.reminder, d.attempts, d.created_at
"""

NEXT_DUE = """
SELECT min(GREATEST(c.next_attempt_at, coalesce(c.claimed_until, c.next_attempt_at)))
FROM jobwarden.deliveries c
WHERE c.channel = $1 AND c.status = 'pending'
  AND (c.event = 'firing' OR NOT EXISTS (
        SELECT 1 FROM jobwarden.deliveries f
        WHERE f.alert_id = c.alert_id AND f.channel = c.channel AND f.event = 'firing'
          AND f.status <> 'sent'))
"""

WRITE_BUCKET = """
UPDATE jobwarden.channel_state SET tokens = $2, refilled_at = $3, updated_at = $3
WHERE channel = $1
"""

LOAD_ALERTS = """
SELECT id, type, severity, title, message, metadata, resolved, "resolvedAt" AS resolved_at,
       "createdAt" AS created_at
FROM alerts WHERE id = ANY($1::text[])
"""

FINISH = """
UPDATE jobwarden.deliveries d
SET status = u.status, next_attempt_at = coalesce(u.next_attempt_at, d.next_attempt_at),
    last_error = u.error, response_status = u.response_status, sent_at = u.sent_at,
    digest_id = u.digest_id, claimed_by = NULL, claimed_until = NULL, updated_at = $9
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::int[],
            $6::timestamptz[], $7::text[])
     AS u(id, status, next_attempt_at, error, response_status, sent_at, digest_id)
WHERE d.id = u.id AND d.claimed_by = $8
"""

# A firing notification that failed (or was suppressed) takes its channel's resolved and
# reminder notifications with it: nobody hears "resolved" about what they never got.
SUPPRESS_DEPENDENTS = """
UPDATE jobwarden.deliveries d
SET status = 'suppressed', last_error = 'the firing notification did not go out on this channel',
    updated_at = $2
FROM jobwarden.deliveries f
WHERE f.id = ANY($1::text[]) AND f.event = 'firing' AND f.status IN ('failed', 'suppressed')
  AND d.alert_id = f.alert_id AND d.channel = f.channel AND d.event <> 'firing'
  AND d.status = 'pending' AND d.claimed_by IS NULL
"""

WRITE_CHANNEL_OUTCOME = """
UPDATE jobwarden.channel_state SET
    last_success_at = coalesce($2, last_success_at),
    last_error = coalesce($3, last_error),
    last_error_at = CASE WHEN $3::text IS NULL THEN last_error_at ELSE $5 END,
    paused_until = CASE WHEN $4::timestamptz IS NULL THEN paused_until
                        ELSE GREATEST(paused_until, $4) END,
    failures = $6, updated_at = $5
WHERE channel = $1
"""

# A stopping daemon hands back what it claimed but did not finish: the attempt is
# not counted, and another replica (or this one, restarted) sends it.
RELEASE = """
UPDATE jobwarden.deliveries
SET claimed_by = NULL, claimed_until = NULL, attempts = GREATEST(attempts - 1, 0),
    updated_at = $2
WHERE claimed_by = $1 AND status = 'pending'
"""


@dataclass(frozen=True)
class Claimed:
    id: str
    alert_id: str
    event: Event
    reminder: int
    attempts: int  # including this one
    created_at: datetime


@dataclass(frozen=True)
class Claim:
    deliveries: list[Claimed]
    digest: bool  # send them as one digest message
    failures: int  # transient failures of the channel in a row before this claim
    wait: float | None  # nothing claimable: seconds until something may be (None: unknown)


@dataclass(frozen=True)
class Finished:
    """What became of one claimed delivery."""

    id: str
    status: str  # pending (retry later) | sent | failed | suppressed
    error: str | None = None
    response_status: int | None = None
    next_attempt_at: datetime | None = None
    sent_at: datetime | None = None
    digest_id: str | None = None


@dataclass(frozen=True)
class TokenBucket:
    """A send budget: `burst` messages at once, refilled at `rate` per second."""

    burst: float
    rate: float

    def available(self, tokens: float | None, refilled_at: datetime | None, now: datetime) -> float:
        if tokens is None or refilled_at is None:
            return self.burst
        elapsed = max(0.0, (now - refilled_at).total_seconds())
        return min(self.burst, tokens + elapsed * self.rate)

    def wait_for_one(self, available: float) -> float:
        return max(0.0, (1 - available) / self.rate)


@dataclass
class Expansion:
    events: int = 0
    deliveries: int = 0
    suppressed: int = 0
    by_channel: dict[str, int] = field(default_factory=dict)  # pending deliveries created

    def add(self, other: "Expansion") -> None:
        self.events += other.events
        self.deliveries += other.deliveries
        self.suppressed += other.suppressed
        for name, count in other.by_channel.items():
            self.by_channel[name] = self.by_channel.get(name, 0) + count


def new_delivery_id() -> str:
    """`msg_…`, the shape Standard Webhooks uses for its idempotency keys."""
    return "msg_" + new_id()


async def expand_events(
    conn: Conn, routes: Sequence[Route], now: datetime, *, max_age: float, limit: int = 500
) -> Expansion:
    """Turn up to `limit` unexpanded events into deliveries; see the module doc."""
    out = Expansion()
    async with conn.transaction():
        await conn.execute(LOCK_EXPANSION, EXPANSION_LOCK_KEY)
        events = await conn.fetch(UNEXPANDED_EVENTS, limit)
        if not events:
            return out
        firing: dict[str, dict[str, str]] = {}
        for row in await conn.fetch(FIRING_STATUSES, list({e["alert_id"] for e in events})):
            firing.setdefault(row["alert_id"], {})[row["channel"]] = row["status"]
        rows: list[tuple[str, str, str, str, int, str, str | None]] = []
        for e in events:
            if not e["alert_exists"]:
                continue  # deleted before anyone was told: nothing to say
            event = Event(e["event"])
            occurred = _occurred_at(event, e)
            planned = plan(
                event, e["severity"], occurred, now, max_age, routes, firing.get(e["alert_id"], {})
            )
            for p in planned:
                status = _status(p)
                rows.append(
                    (new_delivery_id(), e["alert_id"], p.channel, event.value, e["reminder"],
                     status, p.suppressed)
                )  # fmt: skip
                if event is Event.FIRING:
                    firing.setdefault(e["alert_id"], {}).setdefault(p.channel, status)
                if status == "pending":
                    out.by_channel[p.channel] = out.by_channel.get(p.channel, 0) + 1
                else:
                    out.suppressed += 1
        if rows:
            columns = list(zip(*rows, strict=True))
            await conn.execute(INSERT_DELIVERIES, *map(list, columns), now)
        await conn.execute(
            MARK_EXPANDED,
            [e["alert_id"] for e in events],
            [e["event"] for e in events],
            [e["reminder"] for e in events],
            now,
        )
        out.events, out.deliveries = len(events), len(rows)
    return out


def _status(planned: Planned) -> str:
    return "pending" if planned.suppressed is None else "suppressed"


def _occurred_at(event: Event, row: Mapping[str, Any]) -> datetime:
    recorded: datetime = row["recorded_at"]
    if event is Event.FIRING:
        return from_prisma(row["created_at"]) or recorded
    if event is Event.RESOLVED:
        return from_prisma(row["resolved_at"]) or recorded
    return recorded


async def claim(
    conn: Conn,
    channel: str,
    owner: str,
    now: datetime,
    *,
    lease: float,
    batch: int,
    digest_threshold: int | None,
    bucket: TokenBucket | None,
    digest_limit: int = 500,
) -> Claim:
    """Claim what one send of `channel` should carry: a batch, one digest, or nothing.

    With `digest_threshold`, more than that many claimable deliveries go out as one
    digest (up to `digest_limit`). With a `bucket`, each message spends one token.
    """
    async with conn.transaction():
        await conn.execute(ENSURE_CHANNEL, channel)
        state = await conn.fetchrow(LOCK_CHANNEL, channel)
        assert state is not None
        failures: int = state["failures"]
        paused_until: datetime | None = state["paused_until"]
        if paused_until is not None and paused_until > now:
            return Claim([], False, failures, (paused_until - now).total_seconds())
        tokens = None
        if bucket is not None:
            tokens = bucket.available(state["tokens"], state["refilled_at"], now)
            if tokens < 1:
                return Claim([], False, failures, bucket.wait_for_one(tokens))
        limit = min(batch, int(tokens)) if tokens is not None else batch
        if failures:
            limit = 1  # a channel that keeps failing is probed with one message
        digest = False
        if digest_threshold is not None:
            due = await conn.fetchval(COUNT_CLAIMABLE, channel, now, digest_threshold + 1)
            if due > digest_threshold:
                digest, limit = True, digest_limit
        lease_until = now + timedelta(seconds=lease)
        rows = await conn.fetch(CLAIM, channel, now, owner, lease_until, limit)
        if not rows:
            next_due = await conn.fetchval(NEXT_DUE, channel)
            wait = None if next_due is None else max(0.0, (next_due - now).total_seconds())
            return Claim([], False, failures, wait)
        if tokens is not None:
            spent = 1 if digest else len(rows)
            await conn.execute(WRITE_BUCKET, channel, tokens - spent, now)
    claimed = [
        Claimed(r["id"], r["alert_id"], Event(r["event"]), r["reminder"], r["attempts"],
                r["created_at"])
        for r in rows
    ]  # fmt: skip
    return Claim(claimed, digest and len(claimed) > 1, failures, 0.0)


async def load_alerts(conn: Conn, alert_ids: Sequence[str]) -> dict[str, AlertView]:
    rows = await conn.fetch(LOAD_ALERTS, list(set(alert_ids)))
    return {row["id"]: _alert(row) for row in rows}


def _alert(row: Mapping[str, Any]) -> AlertView:
    metadata = row["metadata"]
    if isinstance(metadata, str):
        metadata = json.loads(metadata)
    created = from_prisma(row["created_at"])
    assert created is not None
    return AlertView(
        id=row["id"],
        type=row["type"],
        severity=row["severity"],
        title=row["title"],
        message=row["message"],
        created_at=created,
        resolved=row["resolved"],
        resolved_at=from_prisma(row["resolved_at"]),
        metadata=metadata if isinstance(metadata, dict) else {"value": metadata},
    )


@dataclass(frozen=True)
class ChannelOutcome:
    succeeded_at: datetime | None  # a message went through
    error: str | None  # the latest failure, for health
    paused_until: datetime | None  # the whole channel waits until then
    failures: int  # transient failures in a row after this send


async def record(
    conn: Conn,
    channel: str,
    owner: str,
    finished: Sequence[Finished],
    outcome: ChannelOutcome,
    now: datetime,
) -> int:
    """Write what became of claimed deliveries; return how many were still ours."""
    recorded = 0
    async with conn.transaction():
        if finished:
            status = await conn.execute(
                FINISH,
                [f.id for f in finished],
                [f.status for f in finished],
                [f.next_attempt_at for f in finished],
                [storable(f.error) for f in finished],
                [f.response_status for f in finished],
                [f.sent_at for f in finished],
                [f.digest_id for f in finished],
                owner,
                now,
            )
            recorded = affected(status)
            if ended := [f.id for f in finished if f.status in ("failed", "suppressed")]:
                await conn.execute(SUPPRESS_DEPENDENTS, ended, now)
        await conn.execute(
            WRITE_CHANNEL_OUTCOME,
            channel,
            outcome.succeeded_at,
            storable(outcome.error),
            outcome.paused_until,
            now,
            outcome.failures,
        )
    return recorded


async def release(conn: Conn, owner: str, now: datetime) -> int:
    """Hand back every delivery `owner` claimed and did not finish; return how many."""
    return affected(await conn.execute(RELEASE, owner, now))
