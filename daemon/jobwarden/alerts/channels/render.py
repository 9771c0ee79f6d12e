"""How every channel words a notification: its severity, its event, its moment.

A notification's words come from the web app's rows, so each is brought to one line
where a line is expected (a header, a subject). The moment shown is when the alert was
raised, or when it was resolved for a `resolved` notification, in UTC.
"""

from datetime import UTC, datetime

from jobwarden.alerts.notification import Event, Notification


def one_line(text: str) -> str:
    return " ".join(text.split())


def severity_label(notification: Notification) -> str:
    """`CRITICAL`: the alert's severity as written, upper-cased, on one line."""
    return one_line(notification.alert.severity).upper() or "UNKNOWN"


def event_label(notification: Notification) -> str:
    """`firing`, `resolved`, `reminder #2`."""
    if notification.event is Event.REMINDER:
        return f"reminder #{notification.reminder}"
    return notification.event.value


def moment(notification: Notification) -> datetime:
    alert = notification.alert
    if notification.event is Event.RESOLVED and alert.resolved_at is not None:
        return alert.resolved_at
    return alert.created_at


def utc_time(instant: datetime) -> str:
    """`2026-11-26 12:00:00 UTC`."""
    return instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
