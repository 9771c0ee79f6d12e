"""The generic webhook: one Standard Webhooks message per notification.

The body is `{"type": "alert.<event>", "timestamp": <this attempt, ISO 8601 UTC>,
"data": <the alert's columns>}`. `webhook-id` is the notification's key, so the
receiver sees the same id on every retry and can drop duplicates; `webhook-timestamp`
is this attempt's Unix time. With a secret `whsec_<base64>`, `webhook-signature` is
`v1,<base64 HMAC-SHA256>` of `<id>.<timestamp>.<body>` under the decoded key.

Any 2xx is success. 3xx (never followed), 410 and other 4xx are permanent; 408, 429
and 5xx are transient, `Retry-After` honoured. No digests: one message, one alert.
"""

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import aiohttp

from jobwarden.alerts.channels.base import Attempt, Outcome
from jobwarden.alerts.channels.http import post
from jobwarden.alerts.notification import Notification, iso_utc
from jobwarden.secret import Secret

SECRET_PREFIX = "whsec_"  # noqa: S105 — the prefix, not a secret


def sign(secret_text: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<signature>` of one message under a `whsec_…` secret."""
    key = base64.b64decode(secret_text.removeprefix(SECRET_PREFIX))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def webhook_body(notification: Notification, now: float) -> dict[str, Any]:
    return {
        "type": f"alert.{notification.event.value}",
        "timestamp": iso_utc(datetime.fromtimestamp(now, UTC)),
        "data": notification.alert.as_data(),
    }


class WebhookChannel:
    name: ClassVar[str] = "webhook"
    digests: ClassVar[bool] = False

    def __init__(
        self,
        http: aiohttp.ClientSession,
        url: Secret,
        secret: Secret | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = http
        self._url = url
        self._secret = secret
        self._clock = clock

    async def send(self, notifications: Sequence[Notification]) -> Attempt:
        if len(notifications) != 1:
            raise ValueError(
                f"the webhook sends one notification at a time, not {len(notifications)}"
            )
        notification = notifications[0]
        now = self._clock()
        timestamp = int(now)
        body = json.dumps(webhook_body(notification, now), ensure_ascii=False).encode()
        headers = {
            "Content-Type": "application/json",
            "webhook-id": notification.key,
            "webhook-timestamp": str(timestamp),
        }
        if self._secret is not None:
            headers["webhook-signature"] = sign(
                self._secret.reveal(), notification.key, timestamp, body
            )
        reply = await post(self._http, self._url.reveal(), body, headers, secret_url=True)
        if isinstance(reply, Attempt):
            return reply
        if reply.success:
            return Attempt(Outcome.SENT, reply.status)
        if 300 <= reply.status < 400:
            return reply.failed(f"HTTP {reply.status}: redirect not followed")
        return reply.failed(reply.described(), reply.retry_after(self._clock()))
