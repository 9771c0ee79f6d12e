"""Driving the outbox by hand in tests: default routes, expansion, failed deliveries."""

from datetime import UTC, datetime

from jobwarden.alerts import outbox
from jobwarden.alerts.routing import Route
from jobwarden.db.pg import Conn

# The default routing: what the daemon builds with every channel configured.
ROUTES = [
    Route("slack", "WARNING", "JOBWARDEN_SLACK_MIN_SEVERITY"),
    Route("webhook", "INFO", "JOBWARDEN_WEBHOOK_MIN_SEVERITY"),
    Route("email", "ERROR", "JOBWARDEN_EMAIL_MIN_SEVERITY"),
]
DAY = 86400.0


async def expand(conn: Conn, now: datetime | None = None) -> outbox.Expansion:
    """Expand every event there is, as the dispatcher does (batch after batch)."""
    total = outbox.Expansion()
    while True:
        batch = await outbox.expand_events(conn, ROUTES, now or datetime.now(UTC), max_age=DAY)
        if not batch.events:
            return total
        total.add(batch)


async def fail_deliveries(conn: Conn, channel: str, error: str, status: int) -> list[str]:
    """The dispatcher's way: claim the channel's due deliveries, record them failed."""
    now = datetime.now(UTC)
    claim = await outbox.claim(
        conn, channel, "test", now, lease=30, batch=50, digest_threshold=None, bucket=None
    )
    finished = [outbox.Finished(d.id, "failed", error, status) for d in claim.deliveries]
    await outbox.record(
        conn, channel, "test", finished, outbox.ChannelOutcome(None, error, None, 0), now
    )
    return [d.id for d in claim.deliveries]
