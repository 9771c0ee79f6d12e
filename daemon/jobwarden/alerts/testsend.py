"""`alerts test`: one test notification straight through each configured channel.

No outbox and no database: the point is to check a channel's configuration (URL, key,
sender, recipients) from where jobwarden runs, daemon or not. Each channel makes one
attempt, all at once, and says how it went.
"""

import asyncio
import socket
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from jobwarden.alerts.channels.base import Attempt, Channel, Outcome
from jobwarden.alerts.notification import AlertView, Event, Notification
from jobwarden.alerts.outbox import new_delivery_id
from jobwarden.db.prisma import new_id

CHANNEL_NAMES = ("slack", "webhook", "email")
# What turns each channel on, for the message when it is off.
CHANNEL_SETTINGS = {
    "slack": "SLACK_WEBHOOK_URL",
    "webhook": "ALERT_WEBHOOK_URL",
    "email": "SENDGRID_API_KEY, ALERT_EMAIL_FROM and ALERT_EMAIL_RECIPIENTS",
}
TEST_TYPE = "test"
TEST_TITLE = "jobwarden test notification"


class ChannelNotConfigured(ValueError):
    """No channel is configured, or not the one asked for (or no such channel exists)."""


def build_notification(now: datetime, host: str) -> Notification:
    """The test notification: an INFO alert of type `test` that is in no table."""
    alert = AlertView(
        id=new_id(),
        type=TEST_TYPE,
        severity="INFO",
        title=TEST_TITLE,
        message=(
            f"jobwarden on {host} sent this to check that alerts reach this channel. "
            "No action is needed."
        ),
        created_at=now,
        metadata={"test": True, "host": host},
    )
    return Notification(key=new_delivery_id(), alert=alert, event=Event.FIRING)


def select(channels: Sequence[Channel], only: str | None) -> list[Channel]:
    """The channels to test: all configured ones, or the one named. Raises
    ChannelNotConfigured saying what to set."""
    if only is not None and only not in CHANNEL_NAMES:
        raise ChannelNotConfigured(f"no channel {only!r}: channels are {', '.join(CHANNEL_NAMES)}")
    if not channels:
        settings = "; ".join(f"{name}: {CHANNEL_SETTINGS[name]}" for name in CHANNEL_NAMES)
        raise ChannelNotConfigured(f"no alert channel is configured (set {settings})")
    chosen = [c for c in channels if only is None or c.name == only]
    if not chosen:
        assert only is not None
        configured = ", ".join(c.name for c in channels)
        raise ChannelNotConfigured(
            f"channel {only!r} is not configured (set {CHANNEL_SETTINGS[only]});"
            f" configured: {configured}"
        )
    return chosen


async def _send(channel: Channel, notification: Notification) -> Attempt:
    try:
        return await channel.send([notification])
    except Exception as exc:  # noqa: BLE001 — a channel's bug is this channel's failure
        # The type only: an exception's text may carry the channel's URL or key.
        return Attempt(Outcome.FAILED, error=f"unexpected error: {type(exc).__name__}")


async def send_test(channels: Sequence[Channel], only: str | None) -> list[tuple[str, Attempt]]:
    """Send one test notification through each selected channel (see `select`), all at
    once; return (channel name, attempt) in the channels' order."""
    chosen = select(channels, only)
    notification = build_notification(datetime.now(UTC), socket.gethostname())
    # One idempotency key per channel, as the outbox gives each delivery its own.
    attempts = await asyncio.gather(
        *(_send(c, replace(notification, key=new_delivery_id())) for c in chosen)
    )
    return [(c.name, a) for c, a in zip(chosen, attempts, strict=True)]
