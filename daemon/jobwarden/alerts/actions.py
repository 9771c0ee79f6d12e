"""What an operator may do to alerts and deliveries: resolve an alert, retry deliveries.

- **Resolving** writes the `alerts` row as Prisma would (`resolved`, `resolvedAt`,
  `updatedAt`) and merges `{"resolvedBy": ...}` into its `metadata` (`||`: the web
  app's keys stay). The trigger on `alerts` then records the `resolved` event (the
  sweep, if the trigger is missing), so every channel that carried the alert hears.
- **Retrying** puts failed deliveries back: `pending`, due now, `attempts` 0 and a
  fresh `JOBWARDEN_DELIVERY_MAX_AGE` window (`created_at` = now). `last_error` stays
  until the next attempt replaces it. A NOTIFY wakes every dispatcher at once.
"""

import json
from datetime import datetime

from jobwarden.alerts.outbox import NOTIFY_CHANNEL
from jobwarden.db.pg import Conn
from jobwarden.db.prisma import to_prisma

RESOLVE_ALERT = """
UPDATE alerts SET resolved = true, "resolvedAt" = $2, "updatedAt" = $2,
       metadata = metadata || $3::text::jsonb
WHERE id = $1 AND NOT resolved
RETURNING id
"""

KNOWN_ALERT = "SELECT EXISTS (SELECT 1 FROM alerts WHERE id = $1)"

RETRY_ONE = """
UPDATE jobwarden.deliveries
SET status = 'pending', next_attempt_at = $2, attempts = 0, created_at = $2, updated_at = $2,
    claimed_by = NULL, claimed_until = NULL
WHERE id = $1 AND status = 'failed'
RETURNING id
"""

# A firing notification sent again takes its channel's resolved notification with it,
# if that was held back because the firing one had failed: the channel must not be left
# showing the alert open.
REVIVE_RESOLVED = """
UPDATE jobwarden.deliveries d
SET status = 'pending', next_attempt_at = $1, attempts = 0, created_at = $1, updated_at = $1,
    last_error = NULL
FROM jobwarden.deliveries f
WHERE f.id = ANY($2::text[]) AND f.event = 'firing'
  AND d.alert_id = f.alert_id AND d.channel = f.channel AND d.event = 'resolved'
  AND d.status = 'suppressed'
  AND d.last_error = 'the firing notification did not go out on this channel'
"""

RETRY_ALL_FAILED = """
UPDATE jobwarden.deliveries
SET status = 'pending', next_attempt_at = $1, attempts = 0, created_at = $1, updated_at = $1,
    claimed_by = NULL, claimed_until = NULL
WHERE status = 'failed'
RETURNING id
"""

DELIVERY_STATUS = "SELECT status FROM jobwarden.deliveries WHERE id = $1"

NOTIFY = "SELECT pg_notify($1, '')"


class UnknownAlert(LookupError):
    def __init__(self, alert_id: str) -> None:
        super().__init__(f"no alert {alert_id!r}")
        self.alert_id = alert_id


class UnknownDelivery(LookupError):
    def __init__(self, delivery_id: str) -> None:
        super().__init__(f"no delivery {delivery_id!r}")
        self.delivery_id = delivery_id


class NotRetryable(ValueError):
    """Only a failed delivery can be retried; this one is pending, sent or suppressed."""

    def __init__(self, delivery_id: str, status: str) -> None:
        why = {
            "pending": "it is still pending: the dispatcher will try it",
            "sent": "it was sent",
            "suppressed": "it was suppressed, not failed (see its last error)",
        }.get(status, f"its status is {status}")
        super().__init__(f"delivery {delivery_id!r} is not failed: {why}")
        self.delivery_id = delivery_id
        self.status = status


async def resolve_alert(conn: Conn, alert_id: str, now: datetime, by: str) -> bool:
    """Resolve an open alert; False if it was resolved already. Raises UnknownAlert."""
    patch = json.dumps({"resolvedBy": by})
    if await conn.fetchval(RESOLVE_ALERT, alert_id, to_prisma(now), patch) is not None:
        return True
    if not await conn.fetchval(KNOWN_ALERT, alert_id):
        raise UnknownAlert(alert_id)
    return False


async def retry_deliveries(
    conn: Conn, now: datetime, *, delivery_id: str | None = None, all_failed: bool = False
) -> int:
    """Put one failed delivery (`delivery_id`) or every failed one (`all_failed`) back in
    the queue, due now; return how many. Raises UnknownDelivery or NotRetryable."""
    if (delivery_id is None) == (not all_failed):
        raise TypeError("retry_deliveries takes exactly one of delivery_id and all_failed")
    async with conn.transaction():
        if delivery_id is not None:
            retried = [r["id"] for r in await conn.fetch(RETRY_ONE, delivery_id, now)]
            if not retried:
                status = await conn.fetchval(DELIVERY_STATUS, delivery_id)
                if status is None:
                    raise UnknownDelivery(delivery_id)
                raise NotRetryable(delivery_id, status)
        else:
            retried = [r["id"] for r in await conn.fetch(RETRY_ALL_FAILED, now)]
        if retried:
            await conn.execute(REVIVE_RESOLVED, now, retried)
            await conn.execute(NOTIFY, NOTIFY_CHANNEL)
    return len(retried)
