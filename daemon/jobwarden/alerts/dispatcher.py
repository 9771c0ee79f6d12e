"""The delivery dispatcher: a service that moves the outbox to the channels.

One loop expands events into deliveries (woken by NOTIFY from the trigger or the
sweep, with a fallback tick); one loop per channel claims what is due for that
channel, sends it with no transaction open, and records the outcome. Channels never
wait for each other: a Slack outage or a slow SendGrid leaves the webhook alone.

Per channel:
- Slack spends one token per message from a bucket shared by every replica (a
  burst of 5, one more per second: never more than 15 in any 10 seconds).
- Slack and email send one digest when more than `JOBWARDEN_DIGEST_THRESHOLD`
  notifications wait; the webhook always sends one message per notification.
- A transient failure retries the notification with capped exponential backoff and
  jitter, and pauses the channel (the server's wait when it gave one, else the
  backoff of its failures in a row); a paused channel is then probed with one
  message at a time until one goes through.
- A permanent failure fails the notification at once and logs the service's message.

`step()` runs one expansion and one send per channel: tests drive it directly.
`start()`/`stop(grace)` run the loops; on stop, sends in flight finish within the
grace period and whatever was claimed but not finished is handed back.
"""

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg

from jobwarden.alerts import outbox
from jobwarden.alerts.channels.base import Attempt, Channel, Outcome, send_guarded
from jobwarden.alerts.notification import AlertView, Event, Notification
from jobwarden.alerts.routing import Route
from jobwarden.backoff import BackoffPolicy
from jobwarden.context import AppContext
from jobwarden.db.pg import DATABASE_ERRORS
from jobwarden.logsetup import get_logger
from jobwarden.runtime import services
from jobwarden.runtime.services import RETRY_RECORDING, default_owner, loop_failure_delay

log = get_logger(__name__)

EXPANSION_BATCH = 500  # events expanded per transaction
ANALYZE_AFTER_EVENTS = 1000
# SKIP_LOCKED: never wait behind a VACUUM or another replica's ANALYZE.
ANALYZE_OUTBOX = "ANALYZE (SKIP_LOCKED) jobwarden.alert_events, jobwarden.deliveries"
IDLE_TICK_SECONDS = 2.0  # longest a loop sleeps without a wake-up
MIN_SLEEP_SECONDS = 0.05  # shortest, when nothing could be claimed
SLACK_BUCKET = outbox.TokenBucket(burst=5, rate=1.0)
BATCH = {"slack": 5, "webhook": 32, "email": 10}
MIN_SEVERITY_SETTING = {
    "slack": "JOBWARDEN_SLACK_MIN_SEVERITY",
    "webhook": "JOBWARDEN_WEBHOOK_MIN_SEVERITY",
    "email": "JOBWARDEN_EMAIL_MIN_SEVERITY",
}


# Claimed deliveries with what each says; and one send: what, how it went, seconds.
Group = list[tuple[outbox.Claimed, Notification]]
Sent = tuple[Group, Attempt, float]


def routes_for(ctx: AppContext, channels: Sequence[Channel]) -> list[Route]:
    minimum = {
        "slack": ctx.settings.slack_min_severity,
        "webhook": ctx.settings.webhook_min_severity,
        "email": ctx.settings.email_min_severity,
    }
    return [Route(c.name, minimum[c.name], MIN_SEVERITY_SETTING[c.name]) for c in channels]


@dataclass
class ChannelPass:
    claimed: int = 0
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    suppressed: int = 0
    wait: float | None = None  # nothing claimable: seconds until something may be


@dataclass
class StepResult:
    expanded: outbox.Expansion = field(default_factory=outbox.Expansion)
    channels: dict[str, ChannelPass] = field(default_factory=dict)


class DeliveryDispatcher:
    def __init__(
        self, ctx: AppContext, channels: Sequence[Channel], owner: str | None = None
    ) -> None:
        self._ctx = ctx
        self.channels = list(channels)
        self.routes = routes_for(ctx, self.channels)
        self.owner = owner or default_owner()
        settings = ctx.settings
        self._backoff = BackoffPolicy(
            initial=settings.delivery_backoff_base,
            factor=2.0,
            maximum=settings.delivery_backoff_cap,
        )
        self._lease = 2 * settings.http_client_timeout + 5.0  # a send ends within one timeout
        self._expand_wake = asyncio.Event()
        self._channel_wakes = {c.name: asyncio.Event() for c in self.channels}
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Outcomes of sends whose recording failed (the database went away just then):
        # written before the channel claims again, so nothing sent is sent again.
        self._unrecorded: dict[str, tuple[list[outbox.Finished], outbox.ChannelOutcome]] = {}

    # --- one step, for tests and for the loops ---------------------------------------

    async def expand(self, now: datetime | None = None) -> outbox.Expansion:
        total = outbox.Expansion()
        while True:
            async with self._ctx.db.connection() as conn:
                batch = await outbox.expand_events(
                    conn,
                    self.routes,
                    now or services.now(),
                    max_age=self._ctx.settings.delivery_max_age,
                    limit=EXPANSION_BATCH,
                )
            total.add(batch)
            for name in batch.by_channel:
                if name in self._channel_wakes:
                    self._channel_wakes[name].set()
            if batch.events == 0:  # a resolved event may wait for its firing one's batch
                break
        if total.events >= ANALYZE_AFTER_EVENTS:
            # A burst grew the outbox from nearly nothing: plans need its new size now,
            # not when autovacuum gets to it.
            async with self._ctx.db.connection() as conn:
                await conn.execute(ANALYZE_OUTBOX)
        return total

    async def deliver(self, channel: Channel, now: datetime | None = None) -> ChannelPass:
        """Claim what is due for `channel`, send it, record what happened.

        `now`: the time to act at (tests pass any); None reads the clock at each step.
        """
        clock = services.clock(now)
        now = clock()
        settings = self._ctx.settings
        await self._record_unrecorded(channel.name, now)
        async with self._ctx.db.connection() as conn:
            claim = await outbox.claim(
                conn,
                channel.name,
                self.owner,
                now,
                lease=self._lease,
                batch=BATCH.get(channel.name, 10),
                digest_threshold=settings.digest_threshold if channel.digests else None,
                bucket=SLACK_BUCKET if channel.name == "slack" else None,
            )
            if not claim.deliveries:
                return ChannelPass(wait=claim.wait)
            alerts = await outbox.load_alerts(conn, [d.alert_id for d in claim.deliveries])
        finished, notifications = _settle(claim.deliveries, alerts, now)
        result = ChannelPass(claimed=len(claim.deliveries), suppressed=len(finished))
        if notifications:
            sends = await self._send(channel, notifications, claim.digest)
            finished += self._finish(channel, sends, result, clock())
            outcome = self._channel_outcome(sends, claim.failures, clock())
        else:
            outcome = outbox.ChannelOutcome(None, None, None, claim.failures)
        self._unrecorded[channel.name] = (finished, outcome)
        await self._record_unrecorded(channel.name, clock())
        return result

    async def _record_unrecorded(self, channel: str, now: datetime) -> None:
        if (unrecorded := self._unrecorded.get(channel)) is None:
            return
        finished, outcome = unrecorded
        try:
            async with self._ctx.db.connection() as conn:
                recorded = await outbox.record(conn, channel, self.owner, finished, outcome, now)
        except asyncpg.PostgresError as exc:
            if isinstance(exc, RETRY_RECORDING):
                raise  # the database is away: keep the outcomes, write them when it is back
            # Writing them again cannot work: do not let them block the channel.
            del self._unrecorded[channel]
            log.error(
                "could not record notification outcomes; their leases will expire",
                channel=channel,
                count=len(finished),
                error=f"{type(exc).__name__}: {exc}",
            )
            return
        del self._unrecorded[channel]
        if recorded < len(finished):
            log.warning(
                "outcomes recorded after the lease expired: another replica may send again",
                channel=channel,
                late=len(finished) - recorded,
            )

    async def step(self, now: datetime | None = None) -> StepResult:
        """One expansion, then one send per channel, all channels at once."""
        expanded = await self.expand(now)
        passes = await asyncio.gather(*(self.deliver(c, now) for c in self.channels))
        return StepResult(expanded, {c.name: p for c, p in zip(self.channels, passes, strict=True)})

    # --- sending ---------------------------------------------------------------------

    async def _send(self, channel: Channel, notifications: Group, digest: bool) -> list[Sent]:
        """Send each notification (or one digest of all); (what, how it went, seconds)."""
        groups = [notifications] if digest else [[n] for n in notifications]

        async def timed(group: Group) -> Sent:
            started = time.monotonic()
            attempt = await send_guarded(channel, [n for _, n in group])
            return group, attempt, time.monotonic() - started

        return list(await asyncio.gather(*(timed(g) for g in groups)))

    def _finish(
        self,
        channel: Channel,
        sends: list[Sent],
        result: ChannelPass,
        now: datetime,
    ) -> list[outbox.Finished]:
        finished: list[outbox.Finished] = []
        max_age = timedelta(seconds=self._ctx.settings.delivery_max_age)
        for group, attempt, seconds in sends:
            digest_id = group[0][1].key if len(group) > 1 else None
            for delivery, notification in group:
                fields = {
                    "channel": channel.name,
                    "alert_id": notification.alert.id,
                    "notification": notification.event.value,
                    "delivery_id": delivery.id,
                    "attempt": delivery.attempts,
                    "status": attempt.status,
                    "duration_ms": round(seconds * 1000),
                }
                if digest_id is not None:
                    fields["digest_of"] = len(group)
                if attempt.outcome is Outcome.SENT:
                    result.sent += 1
                    finished.append(
                        outbox.Finished(delivery.id, "sent", None, attempt.status, sent_at=now,
                                        digest_id=digest_id)
                    )  # fmt: skip
                    log.info("notification sent", **fields)
                    continue
                if attempt.outcome is Outcome.FAILED:
                    result.failed += 1
                    finished.append(
                        outbox.Finished(delivery.id, "failed", attempt.error, attempt.status)
                    )
                    log.error("notification failed for good", error=attempt.error, **fields)
                    continue
                delay = self._backoff.delay(delivery.attempts, attempt.wait)
                retry_at = now + timedelta(seconds=delay)
                if retry_at > delivery.created_at + max_age:
                    result.failed += 1
                    error = f"given up after JOBWARDEN_DELIVERY_MAX_AGE: {attempt.error}"
                    finished.append(outbox.Finished(delivery.id, "failed", error, attempt.status))
                    log.error("notification given up", error=attempt.error, **fields)
                    continue
                result.retrying += 1
                finished.append(
                    outbox.Finished(delivery.id, "pending", attempt.error, attempt.status,
                                    next_attempt_at=retry_at)
                )  # fmt: skip
                log.warning(
                    "notification will be retried",
                    error=attempt.error,
                    retry_in_s=round(delay, 3),
                    **fields,
                )
        return finished

    def _channel_outcome(
        self,
        sends: list[Sent],
        failures: int,
        now: datetime,
    ) -> outbox.ChannelOutcome:
        attempts = [a for _, a, _ in sends]
        succeeded = any(a.outcome is Outcome.SENT for a in attempts)
        errors = [a.error for a in attempts if a.outcome is not Outcome.SENT and a.error]
        transient = [a for a in attempts if a.outcome is Outcome.RETRY]
        if succeeded or not transient:
            failures_after = 0 if succeeded else failures
            pause = None
        else:
            failures_after = failures + 1
            waits = [a.wait for a in transient if a.wait is not None]
            pause = max(waits) if waits else self._backoff.delay(failures_after)
        server_waits = [a.wait for a in attempts if a.wait is not None]
        if pause is None and server_waits:  # a 429 among successes still slows the channel
            pause = max(server_waits)
        return outbox.ChannelOutcome(
            succeeded_at=now if succeeded else None,
            error=errors[-1] if errors else None,
            paused_until=None if pause is None else now + timedelta(seconds=pause),
            failures=failures_after,
        )

    # --- the service -----------------------------------------------------------------

    def wake(self) -> None:
        """Look for new events now (a NOTIFY arrived, or the listener reconnected)."""
        self._expand_wake.set()

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._expand_loop(), name="delivery-expander")]
        self._tasks += [
            asyncio.create_task(self._channel_loop(c), name=f"delivery-{c.name}")
            for c in self.channels
        ]

    async def stop(self, grace: float) -> None:
        """Stop claiming; sends in flight get `grace` seconds; hand back the rest."""
        self._stopping.set()
        self._expand_wake.set()
        for wake in self._channel_wakes.values():
            wake.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace)
            for task in pending:
                log.warning("delivery did not finish within the grace period", task=task.get_name())
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        try:
            for channel in list(self._unrecorded):
                await self._record_unrecorded(channel, services.now())
            async with self._ctx.db.connection() as conn:
                released = await outbox.release(conn, self.owner, services.now())
        except DATABASE_ERRORS as exc:
            log.warning("could not hand back claimed notifications; their lease will expire",
                        error=f"{type(exc).__name__}: {exc}")  # fmt: skip
            return
        if released:
            log.info("handed back claimed notifications", count=released)

    async def _expand_loop(self) -> None:
        errors = 0
        while not self._stopping.is_set():
            self._expand_wake.clear()
            try:
                await self.expand()
                errors = 0
                wait = IDLE_TICK_SECONDS
            except Exception as exc:  # noqa: BLE001  the loop outlives any one failure (logged)
                errors += 1
                wait = loop_failure_delay(log, errors, "expanding alert events", exc)
            await self._sleep(self._expand_wake, wait)

    async def _channel_loop(self, channel: Channel) -> None:
        wake = self._channel_wakes[channel.name]
        errors = 0
        while not self._stopping.is_set():
            wake.clear()
            try:
                result = await self.deliver(channel)
                errors = 0
            except Exception as exc:  # noqa: BLE001  the loop outlives any one failure (logged)
                errors += 1
                await self._sleep(
                    wake, loop_failure_delay(log, errors, f"delivering to {channel.name}", exc)
                )
                continue
            if result.claimed:
                continue
            wait = IDLE_TICK_SECONDS if result.wait is None else min(result.wait, IDLE_TICK_SECONDS)
            await self._sleep(wake, max(wait, MIN_SLEEP_SECONDS))

    async def _sleep(self, wake: asyncio.Event, seconds: float) -> None:
        if self._stopping.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), max(seconds, 0.0))


def _settle(
    claimed: Sequence[outbox.Claimed], alerts: dict[str, AlertView], now: datetime
) -> tuple[list[outbox.Finished], Group]:
    """Deliveries that no longer make sense are suppressed; the rest become notifications."""
    finished: list[outbox.Finished] = []
    ready: Group = []
    for delivery in claimed:
        alert = alerts.get(delivery.alert_id)
        if alert is None:
            finished.append(outbox.Finished(delivery.id, "suppressed", "the alert was deleted"))
        elif delivery.event is Event.REMINDER and alert.resolved:
            finished.append(
                outbox.Finished(delivery.id, "suppressed", "resolved before the reminder went out")
            )
        else:
            ready.append(
                (delivery, Notification(delivery.id, alert, delivery.event, delivery.reminder))
            )
    return finished, ready
