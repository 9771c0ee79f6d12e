"""The alert store: rows of the shared `alerts` table, one unresolved row per fingerprint.

Dedup state lives in `jobwarden.alert_state` (no constraint may be added to the
web app's table). Each evaluation pass hands over what fires and what is held;
in one transaction, with the state rows locked (`FOR UPDATE`, in fingerprint
order), so that evaluators racing each other still produce one row:

- firing, no open alert      -> a new `alerts` row, written as Prisma would
- firing, open alert         -> its `metadata` is merged (occurrences, lastSeenAt, figures)
- firing, resolved by hand   -> remembered as suppressed: not raised again until
                                the condition has cleared once
- not firing, open alert     -> one more healthy pass; at `resolve_after` of them
                                in a row it is resolved (`resolved`, `resolvedAt`)
- held                       -> untouched (a paused job, a job in maintenance)

A pass owns the states of its `rules` only: it locks, fires and heals those, so the
monitoring pass and the dead-letter pass never resolve each other's alerts.

A rule whose condition only clears when someone deals with it (`dlq_exhausted`) reads
a hand-resolve as an acknowledgement instead: `take_hand_resolved` forgets those
alerts (no suppression), and the caller clears what was acknowledged.

`metadata` is merged (`||`), never replaced: the web app may have added keys.
"""

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jobwarden.db.pg import Conn
from jobwarden.db.prisma import from_prisma, new_id, to_prisma
from jobwarden.logsetup import get_logger

log = get_logger(__name__)

LOCK_STATES = """
SELECT s.fingerprint, s.alert_id, s.occurrences, s.first_seen_at, s.last_seen_at,
       s.healthy_passes, s.suppressed, a.resolved AS alert_resolved
FROM jobwarden.alert_state s
LEFT JOIN alerts a ON a.id = s.alert_id
WHERE s.rule = ANY($2::text[])
  AND (s.fingerprint = ANY($1::text[]) OR s.alert_id IS NOT NULL OR s.suppressed)
ORDER BY s.fingerprint
FOR UPDATE OF s
"""

ENSURE_STATES = """
INSERT INTO jobwarden.alert_state (fingerprint, rule, job_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
ON CONFLICT (fingerprint) DO NOTHING
"""

INSERT_ALERTS = """
INSERT INTO alerts (id, type, severity, title, message, metadata, resolved, "createdAt",
                    "updatedAt")
SELECT id, type, severity, title, message, metadata::jsonb, false, $7, $7
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
     AS n(id, type, severity, title, message, metadata)
"""

# The web app may update alerts too (resolve many at once): lock ours in id order first,
# so two transactions never wait on each other's rows in opposite orders.
LOCK_ALERTS = "SELECT id FROM alerts WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE"

MERGE_METADATA = """
UPDATE alerts a SET metadata = a.metadata || u.patch::jsonb, "updatedAt" = $3
FROM unnest($1::text[], $2::text[]) AS u(id, patch)
WHERE a.id = u.id AND NOT a.resolved
"""

RESOLVE_ALERTS = """
UPDATE alerts a SET resolved = true, "resolvedAt" = $3, "updatedAt" = $3,
       metadata = a.metadata || u.patch::jsonb
FROM unnest($1::text[], $2::text[]) AS u(id, patch)
WHERE a.id = u.id AND NOT a.resolved
"""

# States of one rule whose open alert someone else resolved (or deleted): forgotten, in
# fingerprint order (the order sync_alerts locks in), with the alert and its resolve.
TAKE_HAND_RESOLVED = """
UPDATE jobwarden.alert_state s
SET alert_id = NULL, healthy_passes = 0, suppressed = false, updated_at = $2
FROM (
    SELECT x.fingerprint, x.alert_id, a."resolvedAt" AS resolved_at
    FROM jobwarden.alert_state x
    LEFT JOIN alerts a ON a.id = x.alert_id
    WHERE x.rule = $1 AND x.alert_id IS NOT NULL
      AND (a.id IS NULL
           OR (a.resolved AND a.metadata ->> 'resolvedBy' IS DISTINCT FROM 'jobwarden'))
    ORDER BY x.fingerprint
    FOR UPDATE OF x
) h
WHERE s.fingerprint = h.fingerprint
RETURNING s.fingerprint, s.job_id, h.alert_id, h.resolved_at
"""

WRITE_STATES = """
UPDATE jobwarden.alert_state s SET
    alert_id = u.alert_id, occurrences = u.occurrences, first_seen_at = u.first_seen_at,
    last_seen_at = u.last_seen_at, healthy_passes = u.healthy_passes,
    suppressed = u.suppressed, updated_at = $8
FROM unnest($1::text[], $2::text[], $3::int[], $4::timestamptz[], $5::timestamptz[],
            $6::int[], $7::bool[])
     AS u(fingerprint, alert_id, occurrences, first_seen_at, last_seen_at, healthy_passes,
          suppressed)
WHERE s.fingerprint = u.fingerprint
"""


@dataclass(frozen=True)
class Signal:
    """A condition that holds now: what the alert says if one is raised."""

    fingerprint: str
    type: str
    severity: str
    title: str
    message: str
    job_id: str | None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class _State:
    fingerprint: str
    alert_id: str | None
    occurrences: int
    first_seen_at: datetime | None
    last_seen_at: datetime | None
    healthy_passes: int
    suppressed: bool
    alert_resolved: bool | None  # None: the row is gone (or there is none)


@dataclass(frozen=True)
class AlertRef:
    id: str
    fingerprint: str


@dataclass(frozen=True)
class HandResolved:
    """An open alert someone other than jobwarden resolved (or deleted)."""

    fingerprint: str
    job_id: str | None
    alert_id: str
    resolved_at: datetime | None  # None: deleted, or resolved without a resolvedAt


@dataclass
class SyncResult:
    raised: list[AlertRef] = field(default_factory=list)
    updated: list[AlertRef] = field(default_factory=list)
    resolved: list[AlertRef] = field(default_factory=list)
    suppressed: list[str] = field(default_factory=list)  # fingerprints resolved by hand

    @property
    def writes(self) -> int:
        return len(self.raised) + len(self.updated) + len(self.resolved)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else to_prisma(moment).isoformat(timespec="milliseconds") + "Z"


@dataclass
class _Writes:
    inserts: list[tuple[str, Signal, dict[str, Any]]] = field(default_factory=list)
    merges: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    resolves: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    states: list[_State] = field(default_factory=list)


def _fire(state: _State, signal: Signal, now: datetime, writes: _Writes, out: SyncResult) -> None:
    state.healthy_passes = 0
    if state.alert_id is not None and state.alert_resolved is False:
        if state.last_seen_at is None or state.last_seen_at < now:  # once per pass
            state.occurrences += 1
            state.last_seen_at = now
        writes.merges.append(
            (
                state.alert_id,
                {
                    **signal.details,
                    "occurrences": state.occurrences,
                    "lastSeenAt": _iso(state.last_seen_at),
                },
            )
        )
        out.updated.append(AlertRef(state.alert_id, state.fingerprint))
    elif state.alert_id is not None:  # resolved (or deleted) by hand while still firing
        state.alert_id, state.suppressed = None, True
        out.suppressed.append(state.fingerprint)
    elif not state.suppressed:
        state.alert_id = new_id()
        state.occurrences, state.first_seen_at, state.last_seen_at = 1, now, now
        metadata = {
            **signal.details,
            "jobId": signal.job_id,
            "rule": signal.type,
            "fingerprint": signal.fingerprint,
            "occurrences": 1,
            "firstSeenAt": _iso(now),
            "lastSeenAt": _iso(now),
        }
        writes.inserts.append((state.alert_id, signal, metadata))
        out.raised.append(AlertRef(state.alert_id, state.fingerprint))


def _heal(
    state: _State, now: datetime, resolve_after: int, writes: _Writes, out: SyncResult
) -> None:
    if state.suppressed:
        state.suppressed = False  # the condition cleared once: it may be raised again
        return
    if state.alert_id is None:
        return
    if state.alert_resolved is not False:  # resolved by hand, condition already clear
        state.alert_id, state.healthy_passes = None, 0
        return
    state.healthy_passes += 1
    if state.healthy_passes >= resolve_after:
        patch = {"resolvedBy": "jobwarden", "healthyPasses": state.healthy_passes}
        writes.resolves.append((state.alert_id, patch))
        out.resolved.append(AlertRef(state.alert_id, state.fingerprint))
        state.alert_id, state.healthy_passes = None, 0


async def sync_alerts(
    conn: Conn,
    firing: Collection[Signal],
    held: Collection[str],
    now: datetime,
    *,
    rules: Collection[str],
    resolve_after: int,
) -> SyncResult:
    """Bring the alerts of `rules` in line with one pass's judgement; see the module doc.

    Only states whose rule is in `rules` are locked and healed: every signal's type
    must be one of them."""
    by_fingerprint = {s.fingerprint: s for s in firing}
    if stray := sorted({s.type for s in by_fingerprint.values()} - set(rules)):
        raise ValueError(f"signals of rules this pass does not own: {', '.join(stray)}")
    out, writes = SyncResult(), _Writes()
    async with conn.transaction():
        if by_fingerprint:
            await conn.execute(
                ENSURE_STATES,
                list(by_fingerprint),
                [s.type for s in by_fingerprint.values()],
                [s.job_id for s in by_fingerprint.values()],
            )
        rows = await conn.fetch(LOCK_STATES, list(by_fingerprint), sorted(set(rules)))
        for row in rows:
            state = _State(**dict(row))
            before = (state.alert_id, state.occurrences, state.healthy_passes, state.suppressed)
            if state.fingerprint in held:
                continue
            signal = by_fingerprint.get(state.fingerprint)
            if signal is not None:
                _fire(state, signal, now, writes, out)
            else:
                _heal(state, now, resolve_after, writes, out)
            after = (state.alert_id, state.occurrences, state.healthy_passes, state.suppressed)
            if after != before or signal is not None:
                writes.states.append(state)
        await _write(conn, writes, now)
    return out


async def take_hand_resolved(conn: Conn, rule: str, now: datetime) -> list[HandResolved]:
    """Forget the alerts of `rule` that were resolved (or deleted) by someone else, so
    the next time their condition holds raises a new alert instead of staying quiet.

    For conditions a person clears by dealing with them: call it in the transaction
    that clears what was acknowledged, before `sync_alerts`."""
    rows = await conn.fetch(TAKE_HAND_RESOLVED, rule, now)
    return [
        HandResolved(
            fingerprint=row["fingerprint"],
            job_id=row["job_id"],
            alert_id=row["alert_id"],
            resolved_at=from_prisma(row["resolved_at"]),
        )
        for row in rows
    ]


async def _write(conn: Conn, writes: _Writes, now: datetime) -> None:
    stamp = to_prisma(now)
    if writes.inserts:
        await conn.execute(
            INSERT_ALERTS,
            [alert_id for alert_id, _, _ in writes.inserts],
            [s.type for _, s, _ in writes.inserts],
            [s.severity for _, s, _ in writes.inserts],
            [s.title for _, s, _ in writes.inserts],
            [s.message for _, s, _ in writes.inserts],
            [json.dumps(metadata) for _, _, metadata in writes.inserts],
            stamp,
        )
    if touched := sorted({i for i, _ in writes.merges} | {i for i, _ in writes.resolves}):
        await conn.execute(LOCK_ALERTS, touched)
    for query, patches in ((MERGE_METADATA, writes.merges), (RESOLVE_ALERTS, writes.resolves)):
        if patches:
            await conn.execute(
                query, [i for i, _ in patches], [json.dumps(p) for _, p in patches], stamp
            )
    if writes.states:
        s = writes.states
        await conn.execute(
            WRITE_STATES,
            [x.fingerprint for x in s],
            [x.alert_id for x in s],
            [x.occurrences for x in s],
            [x.first_seen_at for x in s],
            [x.last_seen_at for x in s],
            [x.healthy_passes for x in s],
            [x.suppressed for x in s],
            now,
        )


def log_changes(result: SyncResult, signals: Mapping[str, Signal]) -> None:
    """One line per alert raised or resolved: what on-call reads in the journal.
    `signals`: what fired this pass, by fingerprint."""
    for ref in result.raised:
        signal = signals[ref.fingerprint]
        log.warning(
            "alert raised",
            alert_id=ref.id,
            fingerprint=ref.fingerprint,
            severity=signal.severity,
            message=signal.message,
        )
    for ref in result.resolved:
        log.info("alert resolved", alert_id=ref.id, fingerprint=ref.fingerprint)
    for fingerprint in result.suppressed:
        log.info(
            "alert was resolved by hand while its condition holds; quiet until it clears",
            fingerprint=fingerprint,
        )
