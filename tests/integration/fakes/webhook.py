"""A fake Standard Webhooks receiver that checks every delivery it is given.

`WebhookFake(secret=None, status=204, tolerance=300, clock=time.time)` listens at
`hook_url`, a secret-looking `/hooks/<token>` path; any other path is answered `404`
with a body that echoes the path, as careless servers do. A delivery needs JSON
(`type` one of `alert.firing|resolved|reminder`, `timestamp`, `data`), a `webhook-id`
and a `webhook-timestamp` within `tolerance` seconds of `clock()` (else `400`), and,
when the fake has a secret, a `webhook-signature` that `verify()` accepts (else `401`).
A valid delivery is answered `status`; `ids` lists the `webhook-id` of each.

`verify()` is written from the specification, independently of jobwarden's `sign()`.
"""

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

from aiohttp import web

from tests.integration.fakes.server import FakeService, Received

TYPES = ("alert.firing", "alert.resolved", "alert.reminder")


def verify(secret: str, msg_id: str, timestamp: str, body: bytes, signatures: str) -> bool:
    """Whether one of the space-separated `v1,<base64>` signatures signs this message."""
    if not secret.startswith("whsec_"):
        return False
    try:
        key = base64.b64decode(secret[len("whsec_") :], validate=True)
    except (binascii.Error, ValueError):
        return False
    content = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    for signature in signatures.split():
        version, _, value = signature.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False


class WebhookFake(FakeService):
    def __init__(
        self,
        *,
        secret: str | None = None,
        status: int = 204,
        tolerance: float = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.secret = secret
        self.status = status
        self.tolerance = tolerance
        self.clock = clock
        self.path = f"/hooks/{secrets.token_urlsafe(18)}"
        self.problems: list[str] = []

    @property
    def hook_url(self) -> str:
        return self.url(self.path)

    @property
    def ids(self) -> list[str]:
        return [message.headers["webhook-id"] for message in self.messages]

    def _reject(self, status: int, problem: str) -> web.Response:
        self.problems.append(problem)
        return web.Response(status=status, text=problem)

    async def handle(self, request: web.Request, received: Received) -> web.Response:
        if request.path != self.path:
            return web.Response(status=404, text=f"Not Found: no hook at {request.path}")
        if request.method != "POST":
            return web.Response(status=405, text="method not allowed")
        msg_id = received.headers.get("webhook-id", "")
        timestamp = received.headers.get("webhook-timestamp", "")
        if not msg_id:
            return self._reject(400, "webhook-id missing")
        if not timestamp.isdigit() or abs(int(timestamp) - self.clock()) > self.tolerance:
            return self._reject(400, f"webhook-timestamp {timestamp!r} missing or out of range")
        if self.secret is not None and not verify(
            self.secret,
            msg_id,
            timestamp,
            received.body,
            received.headers.get("webhook-signature", ""),
        ):
            return self._reject(401, "invalid signature")
        body = received.json
        if request.content_type != "application/json" or not isinstance(body, dict):
            return self._reject(400, "the body must be a JSON object")
        if body.get("type") not in TYPES or not isinstance(body.get("data"), dict):
            return self._reject(400, "type or data missing or invalid")
        if not isinstance(body.get("timestamp"), str):
            return self._reject(400, "timestamp missing")
        return web.Response(status=self.status)
