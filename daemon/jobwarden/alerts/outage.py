"""When the database itself is down, nothing can pass through the outbox.

`DatabaseOutageWatch` probes the database every few seconds. Once it has been
unreachable for `JOBWARDEN_DB_DOWN_ALERT_AFTER`, it sends one CRITICAL "database
unreachable" notification straight to every channel (trying again at each probe
on a channel that failed transiently), and when the database answers again, a
resolved one to the channels that got it. Then it records the episode in `alerts`
as one resolved `system_health` row, with its events and deliveries marked as
already sent in the same transaction: the outbox never sends it a second time.

With several replicas, the one that led (or runs alone) when the outage began
speaks; the others only log. No database means no leader election, so this is
decided from what each replica knew when it lost the database.

An announced outage is remembered in a file of the state directory until it is
recorded: a daemon restarted in the middle of one (the database still down when
it starts, it waits) sends the resolved notification once it is back.
"""

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from jobwarden.alerts.channels.base import Attempt, Channel, Outcome, send_guarded
from jobwarden.alerts.notification import AlertView, Event, Notification
from jobwarden.alerts.outbox import new_delivery_id
from jobwarden.context import AppContext
from jobwarden.db.pg import DATABASE_ERRORS, Conn
from jobwarden.db.prisma import new_id, to_prisma
from jobwarden.logsetup import get_logger

log = get_logger(__name__)

PROBE_INTERVAL_SECONDS = 5.0
PROBE_TIMEOUT_SECONDS = 5.0

INSERT_EPISODE = """
INSERT INTO alerts (id, type, severity, title, message, metadata, resolved, "resolvedAt",
                    "createdAt", "updatedAt")
VALUES ($1, 'system_health', 'CRITICAL', $2, $3, $4::jsonb, true, $5, $6, $5)
ON CONFLICT (id) DO NOTHING
"""

# The trigger has just recorded the firing and resolved events: they were delivered.
MARK_EPISODE_EXPANDED = """
UPDATE jobwarden.alert_events SET expanded_at = $2, source = 'daemon'
WHERE alert_id = $1
"""

INSERT_EPISODE_DELIVERIES = """
INSERT INTO jobwarden.deliveries (id, alert_id, channel, event, status, attempts, last_error,
                                  response_status, sent_at, next_attempt_at, created_at,
                                  updated_at)
SELECT d.id, $1, d.channel, d.event, d.status, d.attempts, d.error, d.response_status,
       d.sent_at, $8, $8, $8
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::text[],
            $9::int[], $10::timestamptz[])
     AS d(id, channel, event, status, attempts, error, response_status, sent_at)
ON CONFLICT DO NOTHING
"""


@dataclass
class _Delivery:
    """One direct notification on one channel, tried until it goes through or fails."""

    key: str = field(default_factory=new_delivery_id)
    attempts: int = 0
    last: Attempt | None = None
    sent_at: datetime | None = None
    not_before: float = 0.0  # monotonic: the service asked to wait (Retry-After) until then

    @property
    def done(self) -> bool:
        return self.last is not None and self.last.outcome is not Outcome.RETRY

    def saved(self) -> dict[str, Any]:
        last = self.last
        return {
            "key": self.key,
            "attempts": self.attempts,
            "sentAt": None if self.sent_at is None else self.sent_at.isoformat(),
            "outcome": None if last is None else last.outcome.value,
            "status": None if last is None else last.status,
            "error": None if last is None else last.error,
        }

    @classmethod
    def restored(cls, saved: dict[str, Any]) -> "_Delivery":
        outcome = saved.get("outcome")
        last = None
        if outcome is not None:
            last = Attempt(Outcome(outcome), status=saved.get("status"), error=saved.get("error"))
        sent_at = saved.get("sentAt")
        return cls(
            key=saved["key"],
            attempts=saved["attempts"],
            last=last,
            sent_at=None if sent_at is None else datetime.fromisoformat(sent_at),
        )


@dataclass
class _Episode:
    alert_id: str
    began: datetime  # wall clock, when the first probe failed
    began_monotonic: float
    error: str
    firing: dict[str, _Delivery] = field(default_factory=dict)
    resolved: dict[str, _Delivery] = field(default_factory=dict)
    announced: bool = False
    speaks: bool = False


class DatabaseOutageWatch:
    def __init__(
        self,
        ctx: AppContext,
        channels: Sequence[Channel],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        state_file: Path | None = None,
    ) -> None:
        self._ctx = ctx
        self._channels = list(channels)
        self._clock = clock
        self._wall = wall
        self._after = ctx.settings.db_down_alert_after
        self._state_file = state_file
        self.episode: _Episode | None = self._load()

    def _load(self) -> _Episode | None:
        """An outage announced before a restart, not yet recorded."""
        if self._state_file is None or not self._state_file.exists():
            return None
        try:
            saved = json.loads(self._state_file.read_text(encoding="utf-8"))
            episode = _Episode(
                alert_id=saved["alertId"],
                began=datetime.fromisoformat(saved["began"]),
                began_monotonic=self._clock(),
                error=saved["error"],
                firing={c: _Delivery.restored(d) for c, d in saved["firing"].items()},
                resolved={c: _Delivery.restored(d) for c, d in saved["resolved"].items()},
                announced=True,
                speaks=True,
            )
        except Exception as exc:  # noqa: BLE001  a bad file must not stop the daemon
            log.warning("ignoring an unreadable outage file", path=str(self._state_file),
                        error=f"{type(exc).__name__}: {exc}")  # fmt: skip
            return None
        log.info("an outage announced before this restart is still to be resolved",
                 alert_id=episode.alert_id)  # fmt: skip
        return episode

    def _save(self, episode: _Episode) -> None:
        if self._state_file is None:
            return
        saved = {
            "alertId": episode.alert_id,
            "began": episode.began.isoformat(),
            "error": episode.error,
            "firing": {c: d.saved() for c, d in episode.firing.items()},
            "resolved": {c: d.saved() for c, d in episode.resolved.items()},
        }
        try:
            self._state_file.parent.mkdir(parents=True, exist_ok=True)
            temporary = self._state_file.with_suffix(".tmp")
            temporary.write_text(json.dumps(saved), encoding="utf-8")
            temporary.replace(self._state_file)
        except OSError as exc:
            log.warning(
                "cannot remember the outage across a restart",
                path=str(self._state_file),
                error=f"{type(exc).__name__}: {exc}",
            )

    def _forget(self) -> None:
        if self._state_file is not None:
            try:
                self._state_file.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("cannot delete the outage file", path=str(self._state_file),
                            error=f"{type(exc).__name__}: {exc}")  # fmt: skip

    async def run(self, stop: asyncio.Event, interval: float = PROBE_INTERVAL_SECONDS) -> None:
        while not stop.is_set():
            try:
                await self.probe_once()
            except Exception:  # the watch must outlive any one failure
                log.exception("database outage watch failed; probing again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def probe_once(self) -> None:
        """Probe the database once and act on what changed."""
        try:
            await asyncio.wait_for(self._ctx.db.ping(), PROBE_TIMEOUT_SECONDS)
        except DATABASE_ERRORS as exc:
            # A pool that is merely busy is not a database that is down: ask directly.
            if not await self._reachable_directly():
                await self._down(type(exc).__name__, detail=f"{type(exc).__name__}: {exc}")
                return
        await self._up()

    async def _reachable_directly(self) -> bool:
        try:
            conn = await asyncpg.connect(self._ctx.db.url.dsn, timeout=PROBE_TIMEOUT_SECONDS)
        except DATABASE_ERRORS:
            return False
        try:
            await conn.fetchval("SELECT 1", timeout=PROBE_TIMEOUT_SECONDS)
            return True
        except DATABASE_ERRORS:
            return False
        finally:
            conn.terminate()

    async def _down(self, error: str, *, detail: str) -> None:
        """`error` goes out to the channels (no host, port or user); `detail` to the log."""
        now = self._clock()
        if self.episode is None:
            log.warning("database unreachable", error=detail)
            self.episode = _Episode(new_id(), self._wall(), now, error)
        episode = self.episode
        if now - episode.began_monotonic < self._after:
            return
        if not episode.announced:
            episode.announced = True
            episode.speaks = self._ctx.leader.led_since(episode.began_monotonic - 30)
            if not episode.speaks:
                log.warning("database unreachable; the leading replica notifies the channels")
                return
            log.error(
                "database unreachable; notifying the channels directly",
                down_s=round(now - episode.began_monotonic),
                error=error,
            )
        if episode.speaks:
            alert = self._alert(episode, resolved_at=None)
            await self._send(episode.firing, alert, Event.FIRING, self._channels)
            self._save(episode)

    async def _up(self) -> None:
        episode = self.episode
        if episode is None:
            return
        if not episode.speaks:
            log.info(
                "database reachable again", down_s=round(self._clock() - episode.began_monotonic)
            )
            self.episode = None
            return
        resolved_at = self._wall()
        carried = [c for c in self._channels if _sent(episode.firing.get(c.name))]
        await self._send(
            episode.resolved, self._alert(episode, resolved_at), Event.RESOLVED, carried
        )
        self._save(episode)  # a restart now must not announce "resolved" twice
        if not all(episode.resolved[c.name].done for c in carried):
            return  # a channel asked to wait: try again at the next probe
        try:
            async with self._ctx.db.connection() as conn:
                await self._record(conn, episode, resolved_at)
        except DATABASE_ERRORS as exc:
            log.warning("could not record the outage yet", error=f"{type(exc).__name__}: {exc}")
            return
        self._forget()
        log.info(
            "database reachable again; outage recorded",
            alert_id=episode.alert_id,
            down_s=round((resolved_at - episode.began).total_seconds()),
        )
        self.episode = None

    def _alert(self, episode: _Episode, resolved_at: datetime | None) -> AlertView:
        host = socket.gethostname()
        return AlertView(
            id=episode.alert_id,
            type="system_health",
            severity="CRITICAL",
            title="Database unreachable",
            message=(
                f"jobwarden on {host} cannot reach its PostgreSQL database since"
                f" {episode.began:%Y-%m-%d %H:%M:%S} UTC ({episode.error}). Alerts cannot be"
                " raised or delivered until it is back."
            ),
            created_at=episode.began,
            resolved=resolved_at is not None,
            resolved_at=resolved_at,
            metadata={"rule": "database_unreachable", "host": host, "source": "jobwarden"},
        )

    async def _send(
        self,
        deliveries: dict[str, _Delivery],
        alert: AlertView,
        event: Event,
        channels: Sequence[Channel],
    ) -> None:
        now = self._clock()
        todo = [
            c
            for c in channels
            if not (d := deliveries.setdefault(c.name, _Delivery())).done and d.not_before <= now
        ]

        async def one(channel: Channel) -> None:
            delivery = deliveries[channel.name]
            delivery.attempts += 1
            attempt = await send_guarded(channel, [Notification(delivery.key, alert, event)])
            delivery.last = attempt
            if attempt.wait is not None:
                delivery.not_before = self._clock() + attempt.wait
            if attempt.outcome is Outcome.SENT:
                delivery.sent_at = self._wall()
                log.info("notification sent", channel=channel.name, alert_id=alert.id,
                         notification=event.value, direct=True)  # fmt: skip
            else:
                (log.error if attempt.outcome is Outcome.FAILED else log.warning)(
                    "direct notification not sent",
                    channel=channel.name,
                    notification=event.value,
                    outcome=attempt.outcome.value,
                    error=attempt.error,
                )

        await asyncio.gather(*(one(c) for c in todo))

    async def _record(self, conn: Conn, episode: _Episode, resolved_at: datetime) -> None:
        alert = self._alert(episode, resolved_at)
        rows = [
            (d.key, channel, event.value, _status(d), d.attempts,
             None if d.last is None else d.last.error,
             None if d.last is None else d.last.status, d.sent_at)
            for event, deliveries in ((Event.FIRING, episode.firing),
                                      (Event.RESOLVED, episode.resolved))
            for channel, d in deliveries.items()
        ]  # fmt: skip
        now = self._wall()
        async with conn.transaction():
            await conn.execute(
                INSERT_EPISODE,
                alert.id,
                alert.title,
                alert.message,
                dict(alert.metadata),
                to_prisma(resolved_at),
                to_prisma(episode.began),
            )
            await conn.execute(MARK_EPISODE_EXPANDED, alert.id, now)
            if rows:
                ids, channels, events, statuses, attempts, errors, codes, sent = map(
                    list, zip(*rows, strict=True)
                )
                await conn.execute(
                    INSERT_EPISODE_DELIVERIES,
                    alert.id, ids, channels, events, statuses, attempts, errors, now, codes, sent,
                )  # fmt: skip


def _sent(delivery: _Delivery | None) -> bool:
    return (
        delivery is not None
        and delivery.last is not None
        and (delivery.last.outcome is Outcome.SENT)
    )


def _status(delivery: _Delivery) -> str:
    if delivery.last is None:
        return "failed"
    return "sent" if delivery.last.outcome is Outcome.SENT else "failed"
