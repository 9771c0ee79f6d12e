"""Which channels an event goes to, and why not when it does not (pure).

- firing: every configured channel, unless the alert is below the channel's minimum
  severity, or was already older than `JOBWARDEN_DELIVERY_MAX_AGE` when jobwarden
  first saw it (installing jobwarden on a year of alerts must not page anyone).
- resolved, reminder: each channel that carried (or is still carrying) the firing
  notification, and no other: nobody hears "resolved" about an alert they never got.

A channel that does not get the event still gets a delivery row, `suppressed` with
the reason, so `alerts show` can say what happened on every channel.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from jobwarden.alerts.notification import Event, severity_rank


@dataclass(frozen=True)
class Route:
    channel: str  # slack | webhook | email
    min_severity: str  # INFO | WARNING | ERROR | CRITICAL
    setting: str  # the variable that sets min_severity, for the reason text


@dataclass(frozen=True)
class Planned:
    channel: str
    suppressed: str | None = None  # why it is not sent; None: send it


# What a channel's firing notification became: pending, sent, failed, suppressed.
CARRIED = frozenset({"pending", "sent"})


def plan(
    event: Event,
    severity: str,
    occurred_at: datetime,
    now: datetime,
    max_age: float,
    routes: Sequence[Route],
    firing: Mapping[str, str],
) -> list[Planned]:
    """One delivery per route. `occurred_at`: when the event happened; `firing`: the
    status of this alert's firing delivery per channel."""
    too_old = occurred_at < now - timedelta(seconds=max_age)
    planned = []
    for route in routes:
        reason: str | None = None
        if event is Event.FIRING:
            if too_old:
                reason = "older than JOBWARDEN_DELIVERY_MAX_AGE when first seen"
            elif severity_rank(severity) < severity_rank(route.min_severity):
                reason = f"below {route.setting} ({route.min_severity})"
        elif firing.get(route.channel) not in CARRIED:
            reason = "the firing notification did not go out on this channel"
        elif too_old:
            reason = "older than JOBWARDEN_DELIVERY_MAX_AGE when first seen"
        planned.append(Planned(route.channel, reason))
    return planned
