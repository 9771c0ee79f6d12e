"""The delivery sweep: a periodic pass that catches what the trigger did not.

Every few seconds, on every replica (each statement is idempotent):

- an alert with no `firing` event (it predates jobwarden, or the trigger was dropped
  or failed) gets one; a resolved alert with no `resolved` event gets one. Every
  pass looks at the alerts created in the last ten minutes (along the index on
  `createdAt`); once a minute a pass looks at all of them (scans: about 170 ms
  for 200,000 alerts);
- an open CRITICAL or ERROR alert whose firing notification went out somewhere gets
  reminder n once n x `JOBWARDEN_ALERT_REPEAT_INTERVAL` has passed since it fired
  (after a long stop, only the latest reminder is due, not every one missed);
- a resolved or reminder delivery whose channel's firing notification failed or was
  suppressed is suppressed too; a delivery still pending after
  `JOBWARDEN_DELIVERY_MAX_AGE` is given up (`failed`);
- in the full pass, the events and finished deliveries of alerts the web app has
  deleted are deleted too: the outbox grows with the alerts table, never beyond it.

Whatever it records is announced with NOTIFY, so every dispatcher looks at once.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from jobwarden.alerts.outbox import NOTIFY_CHANNEL
from jobwarden.context import AppContext
from jobwarden.db.pg import Conn, affected
from jobwarden.db.prisma import to_prisma
from jobwarden.logsetup import get_logger

log = get_logger(__name__)

RECORD_MISSED_EVENTS = """
INSERT INTO jobwarden.alert_events (alert_id, event, source, recorded_at)
SELECT a.id, 'firing', 'sweep', $1::timestamptz FROM alerts a
WHERE NOT EXISTS (SELECT 1 FROM jobwarden.alert_events e
                  WHERE e.alert_id = a.id AND e.event = 'firing' AND e.reminder = 0)
UNION ALL
SELECT a.id, 'resolved', 'sweep', $1::timestamptz FROM alerts a
WHERE a.resolved AND NOT EXISTS (SELECT 1 FROM jobwarden.alert_events e
                                 WHERE e.alert_id = a.id AND e.event = 'resolved'
                                   AND e.reminder = 0)
ON CONFLICT DO NOTHING
"""

RECORD_RECENT_MISSED_EVENTS = """
INSERT INTO jobwarden.alert_events (alert_id, event, source, recorded_at)
SELECT a.id, 'firing', 'sweep', $1::timestamptz FROM alerts a
WHERE a."createdAt" >= $2
  AND NOT EXISTS (SELECT 1 FROM jobwarden.alert_events e
                  WHERE e.alert_id = a.id AND e.event = 'firing' AND e.reminder = 0)
UNION ALL
SELECT a.id, 'resolved', 'sweep', $1::timestamptz FROM alerts a
WHERE a."createdAt" >= $2 AND a.resolved
  AND NOT EXISTS (SELECT 1 FROM jobwarden.alert_events e
                  WHERE e.alert_id = a.id AND e.event = 'resolved' AND e.reminder = 0)
ON CONFLICT DO NOTHING
"""
RECENT = timedelta(minutes=10)

RECORD_REMINDERS = """
INSERT INTO jobwarden.alert_events (alert_id, event, reminder, source, recorded_at)
SELECT f.alert_id, 'reminder',
       floor(extract(epoch FROM $1::timestamptz - f.recorded_at) / $2::float8)::int,
       'reminders', $1::timestamptz
FROM jobwarden.alert_events f
JOIN alerts a ON a.id = f.alert_id
WHERE f.event = 'firing' AND f.reminder = 0
  AND f.recorded_at <= $1::timestamptz - make_interval(secs => $2::float8)
  AND NOT a.resolved AND upper(a.severity) IN ('CRITICAL', 'ERROR')
  AND EXISTS (SELECT 1 FROM jobwarden.deliveries d
              WHERE d.alert_id = f.alert_id AND d.event = 'firing' AND d.status = 'sent')
ON CONFLICT DO NOTHING
"""

SUPPRESS_ORPHANS = """
UPDATE jobwarden.deliveries d
SET status = 'suppressed', last_error = 'the firing notification did not go out on this channel',
    updated_at = $1
FROM jobwarden.deliveries f
WHERE d.status = 'pending' AND d.event <> 'firing' AND d.claimed_by IS NULL
  AND f.alert_id = d.alert_id AND f.channel = d.channel AND f.event = 'firing'
  AND f.status IN ('failed', 'suppressed')
"""

GIVE_UP = """
UPDATE jobwarden.deliveries
SET status = 'failed', updated_at = $1,
    last_error = 'given up after JOBWARDEN_DELIVERY_MAX_AGE' || coalesce(': ' || last_error, '')
WHERE status = 'pending' AND created_at < $1::timestamptz - make_interval(secs => $2::float8)
  AND (claimed_until IS NULL OR claimed_until < $1)
"""

PRUNE_EVENTS = """
DELETE FROM jobwarden.alert_events e
WHERE e.expanded_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.id = e.alert_id)
"""

PRUNE_DELIVERIES = """
DELETE FROM jobwarden.deliveries d
WHERE d.status <> 'pending' AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.id = d.alert_id)
"""

NOTIFY = "SELECT pg_notify($1, '')"


@dataclass(frozen=True)
class SweepResult:
    missed: int  # events the trigger did not record
    reminders: int
    suppressed: int
    given_up: int
    pruned: int = 0  # outbox rows of deleted alerts

    def log_fields(self) -> dict[str, object]:
        return {
            "missed": self.missed,
            "reminders": self.reminders,
            "suppressed": self.suppressed,
            "given_up": self.given_up,
            "pruned": self.pruned,
        }


async def sweep(
    conn: Conn, now: datetime, *, repeat_interval: float, max_age: float, full: bool = True
) -> SweepResult:
    """One sweep; `full`: look at every alert, not only the recent ones."""
    if full:
        missed = affected(await conn.execute(RECORD_MISSED_EVENTS, now))
    else:
        recent = to_prisma(now - RECENT)
        missed = affected(await conn.execute(RECORD_RECENT_MISSED_EVENTS, now, recent))
    reminders = 0
    if repeat_interval > 0:
        reminders = affected(await conn.execute(RECORD_REMINDERS, now, repeat_interval))
    given_up = affected(await conn.execute(GIVE_UP, now, max_age))
    suppressed = affected(await conn.execute(SUPPRESS_ORPHANS, now))
    pruned = 0
    if full:
        pruned = affected(await conn.execute(PRUNE_EVENTS))
        pruned += affected(await conn.execute(PRUNE_DELIVERIES))
    if missed or reminders:
        await conn.execute(NOTIFY, NOTIFY_CHANNEL)
    return SweepResult(missed, reminders, suppressed, given_up, pruned)


SWEEP_JOB = "delivery-sweep"
SWEEP_INTERVAL_SECONDS = 5.0


async def run_once(ctx: AppContext, now: datetime) -> SweepResult:
    settings = ctx.settings
    async with ctx.db.connection() as conn:
        result = await sweep(
            conn,
            now,
            repeat_interval=settings.alert_repeat_interval,
            max_age=settings.delivery_max_age,
            full=now.second < SWEEP_INTERVAL_SECONDS,  # the first pass of each minute
        )
    if any(result.log_fields().values()):  # the pass itself logs at debug only
        log.info("delivery sweep found work", **result.log_fields())
    return result
