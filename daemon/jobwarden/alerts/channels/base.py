"""What every channel (Slack, webhook, email) promises the dispatcher.

`send(notifications)` makes one HTTP attempt and says how it went:

- `SENT`: the service accepted it.
- `RETRY`: a transient failure (connection error, timeout, 408, 429, 5xx, …): try
  again later. `wait` is the server's own wait in seconds (`Retry-After`, SendGrid's
  `X-RateLimit-Reset`) when it gave one; it applies to the channel as a whole.
- `FAILED`: a permanent failure per the contract: never retried. `error` carries the
  service's own message.

One notification is one message. A channel with `digests = True` also accepts
several at once: one digest message that lists as many as fit and counts the rest.
`error` never contains a URL, a key or anything else secret.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Protocol

from jobwarden.alerts.notification import Notification
from jobwarden.logsetup import get_logger

log = get_logger(__name__)

ERROR_EXCERPT = 500  # characters of a service's error message kept and logged


class Outcome(StrEnum):
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True)
class Attempt:
    outcome: Outcome
    status: int | None = None  # HTTP status, None when no response came
    error: str | None = None  # the service's message or the transport error, excerpted
    wait: float | None = None  # seconds the server asked the whole channel to wait
    message_id: str | None = None  # the service's id for the message, when it gives one


class Channel(Protocol):
    name: ClassVar[str]  # "slack" | "webhook" | "email"
    digests: ClassVar[bool]  # whether several notifications may go out as one message

    async def send(self, notifications: Sequence[Notification]) -> Attempt: ...


async def send_guarded(channel: Channel, notifications: Sequence[Notification]) -> Attempt:
    """`channel.send`, where a bug in the channel (it raised instead of reporting) is a
    transient failure, logged, rather than an exception that would stop the sender."""
    try:
        return await channel.send(notifications)
    except Exception as exc:
        log.exception("channel raised instead of reporting", channel=channel.name)
        return Attempt(Outcome.RETRY, error=f"internal error: {type(exc).__name__}")
