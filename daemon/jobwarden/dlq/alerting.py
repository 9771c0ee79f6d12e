"""The dead-letter queue's alerts, raised into the shared `alerts` table.

A leader-only pass, every `JOBWARDEN_POLL_INTERVAL`, judges the queue and hands its
signals to the alert store (`sync_alerts`, dedup and hysteresis as for monitoring):

| rule          | severity | one per | fires while                                        |
|---------------|----------|---------|----------------------------------------------------|
| dlq_exhausted | ERROR    | job     | entries failed for good and nobody dealt with them |
|               |          |         | (`dlq_schedule.exhausted_at` set, entry `FAILED`)  |
| dlq_backlog   | WARNING  | queue   | more `PENDING` entries than the threshold, or the  |
|               |          |         | oldest older than the maximum age                  |
| dlq_unrouted  | WARNING  | job     | `PENDING` entries with no route, no Python handler |
|               |          |         | and no default URL                                 |

`dlq retry` and `dlq discard` clear `exhausted_at`; so does resolving the job's
`dlq_exhausted` alert by hand, which acknowledges the entries exhausted until then:
the condition clears, and a later exhaustion raises a new alert instead of staying
suppressed (the store's rule for conditions that clear by themselves).

`alerts_pass(routing)` is the pass (`run_once(ctx, now)`); `sync_dlq_alerts` its core.
"""

import shlex
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from jobwarden.alerts.channels.http import excerpt
from jobwarden.alerts.notification import iso_utc
from jobwarden.alerts.store import (
    Signal,
    SyncResult,
    log_changes,
    sync_alerts,
    take_hand_resolved,
)
from jobwarden.context import AppContext
from jobwarden.db.pg import Conn, affected
from jobwarden.db.prisma import from_prisma
from jobwarden.dlq.queue import Routing
from jobwarden.durations import format_duration
from jobwarden.logsetup import get_logger

log = get_logger(__name__)

DLQ_ALERTS_JOB = "dlq-alerts"  # its name in the scheduler and the log
DLQ_EXHAUSTED = "dlq_exhausted"
DLQ_BACKLOG = "dlq_backlog"
DLQ_UNROUTED = "dlq_unrouted"
DLQ_RULES = frozenset({DLQ_EXHAUSTED, DLQ_BACKLOG, DLQ_UNROUTED})  # the alerts it owns
ERROR_EXCERPT = 300

# Per job: its entries failed for good and not dealt with (still FAILED in the shared
# table), and the most recently exhausted one with the last error of its history.
EXHAUSTED_BY_JOB = """
WITH exhausted AS (
    SELECT s.job_id, s.dlq_id, s.exhausted_at
    FROM jobwarden.dlq_schedule s
    JOIN dead_letter_queue q ON q.id = s.dlq_id AND q.status = 'FAILED'
    WHERE s.exhausted_at IS NOT NULL
), jobs AS (
    SELECT DISTINCT ON (job_id) job_id, dlq_id AS newest_id,
           count(*) OVER (PARTITION BY job_id) AS entries
    FROM exhausted
    ORDER BY job_id, exhausted_at DESC, dlq_id DESC
)
SELECT j.job_id, j.entries, j.newest_id, n.error AS entry_error,
       (SELECT h.e ->> 'error'
        FROM jsonb_array_elements(
                 CASE WHEN jsonb_typeof(n.metadata -> 'jobwarden' -> 'history') = 'array'
                      THEN n.metadata -> 'jobwarden' -> 'history' ELSE '[]'::jsonb END)
             WITH ORDINALITY AS h(e, i)
        WHERE jsonb_typeof(h.e) = 'object' AND h.e ->> 'error' IS NOT NULL
        ORDER BY h.i DESC
        LIMIT 1) AS history_error
FROM jobs j
JOIN dead_letter_queue n ON n.id = j.newest_id
ORDER BY j.job_id
"""

# One group-by over the status index serves both the backlog and the unrouted jobs.
PENDING_BY_JOB = """
SELECT "jobId" AS job_id, count(*) AS entries, min("createdAt") AS oldest
FROM dead_letter_queue
WHERE status = 'PENDING'
GROUP BY "jobId"
"""

ROUTED = "SELECT job_id FROM jobwarden.dlq_routes WHERE job_id = ANY($1::text[])"

# Acknowledged by hand: the job's entries exhausted until then are no longer news.
ACKNOWLEDGE = """
UPDATE jobwarden.dlq_schedule SET exhausted_at = NULL, updated_at = $3
WHERE job_id = $1 AND exhausted_at IS NOT NULL AND exhausted_at <= $2
"""


@dataclass(frozen=True)
class Exhausted:
    job_id: str
    entries: int
    newest_id: str
    newest_error: str


@dataclass(frozen=True)
class Pending:
    job_id: str
    entries: int
    oldest: datetime | None


@dataclass(frozen=True)
class Acknowledged:
    job_id: str
    alert_id: str
    entries: int  # whose exhaustion it cleared


@dataclass(frozen=True)
class DlqAlertsResult:
    exhausted: tuple[Exhausted, ...]
    pending: int
    oldest_pending_age: float | None  # seconds
    unrouted: tuple[Pending, ...]
    acknowledged: tuple[Acknowledged, ...]
    signals: Mapping[str, Signal]  # by fingerprint: what fired this pass
    alerts: SyncResult = field(default_factory=SyncResult)

    def log_fields(self) -> dict[str, object]:
        return {
            "exhausted": sum(e.entries for e in self.exhausted),
            "exhausted_jobs": len(self.exhausted),
            "pending": self.pending,
            "oldest_pending_s": (
                None if self.oldest_pending_age is None else round(self.oldest_pending_age, 3)
            ),
            "unrouted_jobs": len(self.unrouted),
            "acknowledged": sum(a.entries for a in self.acknowledged),
            "firing": len(self.signals),
            "raised": len(self.alerts.raised),
            "resolved": len(self.alerts.resolved),
        }


def fingerprint(rule: str, job_id: str | None) -> str:
    return rule if job_id is None else f"{rule}:{job_id}"


def plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def age(seconds: float) -> str:
    """A wait as people say it, its two largest units: `45s`, `12m 5s`, `3h`, `2d 4h`."""
    if seconds < 1:
        return f"{seconds:.1f}s"
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    units = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    first = next(i for i, (n, _) in enumerate(units) if n)
    return " ".join(f"{n}{unit}" for n, unit in units[first : first + 2] if n)


def exhausted_signal(found: Exhausted) -> Signal:
    job, n = found.job_id, found.entries
    arg = shlex.quote(job)
    return Signal(
        fingerprint=fingerprint(DLQ_EXHAUSTED, job),
        type=DLQ_EXHAUSTED,
        severity="ERROR",
        title=f"{job}: dead-letter entries failed for good",  # metadata.count stays current
        message=(
            f"{plural(n, 'dead-letter entry', 'dead-letter entries')} of {job} "
            f"{'has' if n == 1 else 'have'} run out of retry attempts or been refused; "
            f"newest error: {found.newest_error}. "
            f"See {'it' if n == 1 else 'them'} with "
            f"`jobwarden dlq list --job {arg} --status FAILED`; once the cause is fixed, "
            f"`jobwarden dlq retry --job {arg}`, or `jobwarden dlq discard ID --reason R`. "
            "Resolving this alert acknowledges them: a later failure raises a new one."
        ),
        job_id=job,
        details={
            "count": n,
            "newestError": found.newest_error,
            "newestEntryId": found.newest_id,
        },
    )


def backlog_signal(
    pending: int,
    oldest: datetime | None,
    oldest_age: float | None,
    *,
    threshold: int,
    max_age: float,
) -> Signal:
    waited = "" if oldest_age is None else f"; the oldest has waited {age(oldest_age)}"
    return Signal(
        fingerprint=DLQ_BACKLOG,
        type=DLQ_BACKLOG,
        severity="WARNING",
        title=f"Dead-letter backlog: {plural(pending, 'entry', 'entries')} pending",
        message=(
            f"{plural(pending, 'dead-letter entry is', 'dead-letter entries are')} pending"
            f"{waited} (limits: more than {threshold} pending, or the oldest older than "
            f"{format_duration(max_age)}). Retries are not keeping up or not happening: "
            "see `jobwarden dlq stats`."
        ),
        job_id=None,
        details={
            "pending": pending,
            "oldestPendingAt": iso_utc(oldest),
            "oldestAgeSeconds": None if oldest_age is None else round(oldest_age, 3),
            "threshold": threshold,
            "maxAgeSeconds": max_age,
        },
    )


def unrouted_signal(found: Pending) -> Signal:
    job, n = found.job_id, found.entries
    return Signal(
        fingerprint=fingerprint(DLQ_UNROUTED, job),
        type=DLQ_UNROUTED,
        severity="WARNING",
        title=f"{job}: dead-letter entries have nowhere to be retried",
        message=(
            f"{plural(n, 'pending dead-letter entry', 'pending dead-letter entries')} of "
            f"{job} wait{'s' if n == 1 else ''} for a handler: the job has no route, no "
            "Python handler, and no default retry URL is set. Route it with "
            f"`jobwarden dlq route set {shlex.quote(job)} URL`, or set "
            "JOBWARDEN_DLQ_RETRY_URL."
        ),
        job_id=job,
        details={
            "pending": n,
            "oldestPendingAt": iso_utc(found.oldest),
        },
    )


async def acknowledge(conn: Conn, now: datetime) -> list[Acknowledged]:
    """`dlq_exhausted` alerts resolved by hand: clear the exhaustion of the job's entries
    exhausted until then (the resolve, or `now` if earlier), and forget the alert."""
    async with conn.transaction():
        taken = await take_hand_resolved(conn, DLQ_EXHAUSTED, now)
        done = []
        for hand in sorted(taken, key=lambda t: t.fingerprint):  # one statement per job
            if hand.job_id is None:
                continue
            until = now if hand.resolved_at is None else min(hand.resolved_at, now)
            cleared = affected(await conn.execute(ACKNOWLEDGE, hand.job_id, until, now))
            done.append(Acknowledged(hand.job_id, hand.alert_id, cleared))
    return done


async def exhausted_by_job(conn: Conn) -> list[Exhausted]:
    rows = await conn.fetch(EXHAUSTED_BY_JOB)
    return [
        Exhausted(
            job_id=row["job_id"],
            entries=row["entries"],
            newest_id=row["newest_id"],
            newest_error=excerpt(row["history_error"] or row["entry_error"] or "", ERROR_EXCERPT)
            or "(none recorded)",
        )
        for row in rows
    ]


async def pending_by_job(conn: Conn) -> list[Pending]:
    rows = await conn.fetch(PENDING_BY_JOB)
    return sorted(
        (Pending(row["job_id"], row["entries"], from_prisma(row["oldest"])) for row in rows),
        key=lambda p: p.job_id,
    )


async def unrouted(conn: Conn, pending: Sequence[Pending], routing: Routing) -> list[Pending]:
    """Jobs with pending entries that nothing would retry."""
    if routing.every_job:
        return []
    candidates = [p for p in pending if p.job_id not in routing.handled_jobs]
    if not candidates:
        return []
    routed = {row["job_id"] for row in await conn.fetch(ROUTED, [p.job_id for p in candidates])}
    return [p for p in candidates if p.job_id not in routed]


async def sync_dlq_alerts(
    conn: Conn,
    now: datetime,
    *,
    routing: Routing,
    backlog_threshold: int,
    backlog_max_age: float,
    resolve_after: int,
) -> DlqAlertsResult:
    """Acknowledge what was resolved by hand, judge the queue, and sync the alerts."""
    acknowledged = await acknowledge(conn, now)
    exhausted = await exhausted_by_job(conn)
    pending = await pending_by_job(conn)
    nowhere = await unrouted(conn, pending, routing)

    total = sum(p.entries for p in pending)
    oldest = min((p.oldest for p in pending if p.oldest is not None), default=None)
    oldest_age = None if oldest is None else max((now - oldest).total_seconds(), 0.0)

    signals = [exhausted_signal(e) for e in exhausted]
    if total > backlog_threshold or (oldest_age is not None and oldest_age > backlog_max_age):
        signals.append(
            backlog_signal(
                total, oldest, oldest_age, threshold=backlog_threshold, max_age=backlog_max_age
            )
        )
    signals.extend(unrouted_signal(p) for p in nowhere)

    alerts = await sync_alerts(conn, signals, (), now, rules=DLQ_RULES, resolve_after=resolve_after)
    return DlqAlertsResult(
        exhausted=tuple(exhausted),
        pending=total,
        oldest_pending_age=oldest_age,
        unrouted=tuple(nowhere),
        acknowledged=tuple(acknowledged),
        signals={s.fingerprint: s for s in signals},
        alerts=alerts,
    )


def alerts_pass(routing: Routing) -> Callable[[AppContext, datetime], Awaitable[DlqAlertsResult]]:
    """The periodic pass (leader only): `routing` is the processor's, so a job is called
    unrouted exactly when the processor would leave its entries alone."""

    async def run_once(ctx: AppContext, now: datetime) -> DlqAlertsResult:
        async with ctx.db.connection() as conn:
            result = await sync_dlq_alerts(
                conn,
                now,
                routing=routing,
                backlog_threshold=ctx.settings.dlq_backlog_threshold,
                backlog_max_age=ctx.settings.dlq_backlog_max_age,
                resolve_after=ctx.settings.resolve_after,
            )
        _log_changes(result)
        return result

    return run_once


def _log_changes(result: DlqAlertsResult) -> None:
    """One line per alert raised or resolved, and per acknowledgement."""
    for ack in result.acknowledged:
        log.info(
            "dead-letter exhaustion acknowledged: its alert was resolved by hand",
            job_id=ack.job_id,
            alert_id=ack.alert_id,
            entries=ack.entries,
        )
    log_changes(result.alerts, result.signals)
