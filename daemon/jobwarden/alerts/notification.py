"""What a channel is asked to say: one alert at one moment of its life.

A **notification** is an alert (a row of the shared `alerts` table, as read when the
notification is sent) plus the event that prompted it: the alert was raised
(`firing`), it was resolved (`resolved`), or it is still open and worth repeating
(`reminder`, numbered from 1). Its `key` is the idempotency key the receiver sees:
the same on every retry of this notification, different for every other one.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class Event(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"
    REMINDER = "reminder"


# The web app's severities, least to most urgent (its migration guide lists these four).
SEVERITIES = ("INFO", "WARNING", "ERROR", "CRITICAL")
_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
# What the web app's migration guide leaves open: a severity it does not list ranks as
# ERROR, so an alert with a typo in its severity still reaches someone.
_UNKNOWN_RANK = _RANK["ERROR"]


def severity_rank(severity: str) -> int:
    return _RANK.get(severity.strip().upper(), _UNKNOWN_RANK)


def iso_utc(moment: datetime | None) -> str | None:
    """`2026-11-26T12:00:00.000Z`: an instant as JSON carries it (Prisma's form)."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class AlertView:
    """One row of `alerts`; instants are aware UTC datetimes."""

    id: str
    type: str
    severity: str
    title: str
    message: str
    created_at: datetime
    resolved: bool = False
    resolved_at: datetime | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def job_id(self) -> str | None:
        job = self.metadata.get("jobId")
        return job if isinstance(job, str) and job else None

    def as_data(self) -> dict[str, Any]:
        """The alert under its columns' names, as the webhook's `data` carries it."""
        return {
            "id": self.id,
            "type": self.type,
            "severity": self.severity,
            "title": self.title,
            "message": self.message,
            "metadata": dict(self.metadata),
            "resolved": self.resolved,
            "resolvedAt": iso_utc(self.resolved_at),
            "createdAt": iso_utc(self.created_at),
        }


@dataclass(frozen=True)
class Notification:
    key: str  # idempotency key: the delivery's id, the same on every retry
    alert: AlertView
    event: Event
    reminder: int = 0  # 1, 2, … for reminders; 0 otherwise
