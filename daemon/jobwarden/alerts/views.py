"""Read-only views of alerts and their deliveries for `alerts`/`deliveries` and /api/health.

Every view returns JSON-ready dicts: the alert under its columns' names (`resolvedAt`,
`createdAt`, ...), a delivery under camelCase names, instants as ISO 8601 UTC (`Z`).
The CLI prints them and the HTTP API answers with them, so both doors say the same.
"""

from collections.abc import Mapping
from typing import Any

from jobwarden.alerts.notification import iso_utc
from jobwarden.db.pg import Conn
from jobwarden.db.prisma import from_prisma

CHANNEL_ORDER = {"slack": 0, "webhook": 1, "email": 2}  # as listings show them
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000

# Newest first, along "alerts_createdAt_idx".
LIST_ALERTS = """
SELECT id, type, severity, title, message, metadata, resolved, "resolvedAt" AS resolved_at,
       "createdAt" AS created_at, "updatedAt" AS updated_at
FROM alerts
ORDER BY "createdAt" DESC, id DESC
LIMIT $1
"""

LIST_UNRESOLVED_ALERTS = """
SELECT id, type, severity, title, message, metadata, resolved, "resolvedAt" AS resolved_at,
       "createdAt" AS created_at, "updatedAt" AS updated_at
FROM alerts
WHERE NOT resolved
ORDER BY "createdAt" DESC, id DESC
LIMIT $1
"""

ONE_ALERT = """
SELECT id, type, severity, title, message, metadata, resolved, "resolvedAt" AS resolved_at,
       "createdAt" AS created_at, "updatedAt" AS updated_at
FROM alerts
WHERE id = $1
"""

# Per alert and channel, its latest delivery: resolved after reminders after firing.
LATEST_PER_CHANNEL = """
SELECT DISTINCT ON (alert_id, channel) alert_id, channel, event, reminder, status
FROM jobwarden.deliveries
WHERE alert_id = ANY($1::text[])
ORDER BY alert_id, channel,
         CASE event WHEN 'resolved' THEN 2 WHEN 'reminder' THEN 1 ELSE 0 END DESC,
         reminder DESC
"""

DELIVERIES_OF_ONE_ALERT = """
SELECT id, alert_id, channel, event, reminder, status, attempts, next_attempt_at, last_error,
       response_status, sent_at, digest_id, created_at, updated_at
FROM jobwarden.deliveries
WHERE alert_id = $1
ORDER BY CASE event WHEN 'resolved' THEN 2 WHEN 'reminder' THEN 1 ELSE 0 END, reminder,
         CASE channel WHEN 'slack' THEN 0 WHEN 'webhook' THEN 1 ELSE 2 END
"""

# Most recently changed first.
LIST_DELIVERIES = """
SELECT d.id, d.alert_id, d.channel, d.event, d.reminder, d.status, d.attempts,
       d.next_attempt_at, d.last_error, d.response_status, d.sent_at, d.digest_id,
       d.created_at, d.updated_at, a.severity, a.title
FROM jobwarden.deliveries d
LEFT JOIN alerts a ON a.id = d.alert_id
ORDER BY d.updated_at DESC, d.id DESC
LIMIT $1
"""

# The same for failed ones, along the partial index deliveries_failed_idx.
LIST_FAILED_DELIVERIES = """
SELECT d.id, d.alert_id, d.channel, d.event, d.reminder, d.status, d.attempts,
       d.next_attempt_at, d.last_error, d.response_status, d.sent_at, d.digest_id,
       d.created_at, d.updated_at, a.severity, a.title
FROM jobwarden.deliveries d
LEFT JOIN alerts a ON a.id = d.alert_id
WHERE d.status = 'failed'
ORDER BY d.updated_at DESC, d.id DESC
LIMIT $1
"""

# Every channel with a state row or a pending delivery; pending counted on the
# partial index deliveries_pending_idx.
CHANNEL_HEALTH = """
SELECT coalesce(s.channel, p.channel) AS channel, s.last_success_at, s.last_error,
       s.last_error_at, s.paused_until, coalesce(p.pending, 0) AS pending
FROM jobwarden.channel_state s
FULL JOIN (SELECT channel, count(*) AS pending FROM jobwarden.deliveries
           WHERE status = 'pending' GROUP BY channel) p ON p.channel = s.channel
ORDER BY 1
"""


def _alert(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "type": row["type"],
        "severity": row["severity"],
        "title": row["title"],
        "message": row["message"],
        "metadata": row["metadata"],
        "resolved": row["resolved"],
        "resolvedAt": iso_utc(from_prisma(row["resolved_at"])),
        "createdAt": iso_utc(from_prisma(row["created_at"])),
        "updatedAt": iso_utc(from_prisma(row["updated_at"])),
    }


def _delivery(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "alertId": row["alert_id"],
        "channel": row["channel"],
        "event": row["event"],
        "reminder": row["reminder"],
        "status": row["status"],
        "attempts": row["attempts"],
        "nextAttemptAt": iso_utc(row["next_attempt_at"]),
        "lastError": row["last_error"],
        "responseStatus": row["response_status"],
        "sentAt": iso_utc(row["sent_at"]),
        "digestId": row["digest_id"],
        "createdAt": iso_utc(row["created_at"]),
        "updatedAt": iso_utc(row["updated_at"]),
    }


def _channel_rank(channel: str) -> tuple[int, str]:
    return CHANNEL_ORDER.get(channel, len(CHANNEL_ORDER)), channel


def parse_limit(text: str) -> int:
    """How many rows a listing shows: a whole number from 1 to MAX_LIMIT."""
    try:
        limit = int(text.strip())
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"must be a whole number from 1 to {MAX_LIMIT}, not {text!r}")
    return limit


def event_label(event: str, reminder: int) -> str:
    """`firing`, `resolved`, `reminder #2`."""
    return f"{event} #{reminder}" if event == "reminder" else event


async def list_alerts(conn: Conn, *, unresolved: bool, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` alerts (only open ones with `unresolved`), each with `deliveries`:
    per channel, the event and status of its latest delivery."""
    query = LIST_UNRESOLVED_ALERTS if unresolved else LIST_ALERTS
    alerts = [_alert(row) for row in await conn.fetch(query, limit)]
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    if alerts:
        for row in await conn.fetch(LATEST_PER_CHANNEL, [a["id"] for a in alerts]):
            summary.setdefault(row["alert_id"], {})[row["channel"]] = {
                "event": row["event"],
                "reminder": row["reminder"],
                "status": row["status"],
            }
    for alert in alerts:
        found = summary.get(alert["id"], {})
        alert["deliveries"] = {c: found[c] for c in sorted(found, key=_channel_rank)}
    return alerts


async def show_alert(conn: Conn, alert_id: str) -> dict[str, Any] | None:
    """One alert with every delivery of it (event order, then channel); None if unknown."""
    row = await conn.fetchrow(ONE_ALERT, alert_id)
    if row is None:
        return None
    alert = _alert(row)
    alert["deliveries"] = [
        _delivery(d) for d in await conn.fetch(DELIVERIES_OF_ONE_ALERT, alert_id)
    ]
    return alert


async def list_deliveries(conn: Conn, *, failed_only: bool, limit: int) -> list[dict[str, Any]]:
    """The `limit` most recently changed deliveries (only failed ones with `failed_only`),
    each with its alert's `severity` and `title` (None once the alert is deleted)."""
    out = []
    query = LIST_FAILED_DELIVERIES if failed_only else LIST_DELIVERIES
    for row in await conn.fetch(query, limit):
        delivery = _delivery(row)
        delivery["alert"] = {"severity": row["severity"], "title": row["title"]}
        out.append(delivery)
    return out


async def channel_health(conn: Conn) -> dict[str, dict[str, Any]]:
    """Per channel that has sent, failed or waits: `lastSuccessAt`, `lastError`,
    `lastErrorAt`, `pausedUntil` (a server's Retry-After) and `pending` deliveries.
    A channel that never did anything is absent."""
    return {
        row["channel"]: {
            "lastSuccessAt": iso_utc(row["last_success_at"]),
            "lastError": row["last_error"],
            "lastErrorAt": iso_utc(row["last_error_at"]),
            "pausedUntil": iso_utc(row["paused_until"]),
            "pending": row["pending"],
        }
        for row in await conn.fetch(CHANNEL_HEALTH)
    }
