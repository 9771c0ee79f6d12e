"""A fake of the web app's retry endpoint: where jobwarden POSTs a dead-letter entry.

`RetryEndpointFake(token=None, status=200)` listens at `retry_url` (a path holding
`{jobId}` and a secret-looking query, as a real one might). A retry needs JSON with
`dlqId`, `jobId`, `attempt`, `eventData` and `error`, an `Idempotency-Key` equal to
`dlqId` (else `400`), and the bearer token when the fake has one (else `401`). It is
answered `status`, or `status_by_job[jobId]`, or `answer(body)` when set.

`gate`: when set, each retry waits for it before answering (retries in flight).
`in_flight` counts retries being answered per dlqId; `overlaps` lists every dlqId
that arrived while another retry of it was still in flight (never, if entries are
handled by one daemon at a time); `most_at_once` is the largest number in flight.
"""

import asyncio
import json
import secrets
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.integration.fakes.server import FakeService, Received

FIELDS = ("dlqId", "jobId", "attempt", "eventData", "error")


class RetryEndpointFake(FakeService):
    def __init__(self, *, token: str | None = None, status: int = 200) -> None:
        super().__init__()
        self.token = token
        self.status = status
        self.status_by_job: dict[str, int] = {}
        self.answer: Callable[[dict[str, Any]], int] | None = None
        self.gate: asyncio.Event | None = None
        self.in_flight: dict[str, int] = {}
        self.overlaps: list[str] = []
        self.most_at_once = 0
        self.key = secrets.token_urlsafe(12)

    @property
    def retry_url(self) -> str:
        """The URL to configure: `{jobId}` in the path, a secret in the query."""
        return self.url("/jobs/") + "{jobId}/retry?key=" + self.key

    def route_url(self, name: str) -> str:
        """`/routes/<name>`; `{jobId}` in `name` is left for jobwarden to fill in."""
        return self.url("/routes/") + name

    def bodies(self, dlq_id: str | None = None) -> list[dict[str, Any]]:
        """The JSON of every retry received (of one entry), in order."""
        return [r.json for r in self.requests if dlq_id is None or _dlq_id(r) == dlq_id]

    async def handle(self, request: web.Request, received: Received) -> web.Response:
        body = received.json
        if not isinstance(body, dict) or any(name not in body for name in FIELDS):
            return _problem(400, f"the body must be a JSON object with {', '.join(FIELDS)}")
        if received.headers.get("idempotency-key") != body["dlqId"]:
            return _problem(400, "Idempotency-Key must be the dlqId")
        if self.token is not None and received.headers.get("authorization") != (
            f"Bearer {self.token}"
        ):
            return _problem(401, "bad or missing bearer token")
        dlq_id = body["dlqId"]
        self.in_flight[dlq_id] = self.in_flight.get(dlq_id, 0) + 1
        if self.in_flight[dlq_id] > 1:
            self.overlaps.append(dlq_id)
        self.most_at_once = max(self.most_at_once, sum(self.in_flight.values()))
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.answer is not None:
                status = self.answer(body)
            else:
                status = self.status_by_job.get(body["jobId"], self.status)
            return web.json_response({"retried": dlq_id}, status=status)
        finally:
            self.in_flight[dlq_id] -= 1
            if not self.in_flight[dlq_id]:
                del self.in_flight[dlq_id]


def _dlq_id(received: Received) -> object:
    return received.json.get("dlqId") if isinstance(received.json, dict) else None


def _problem(status: int, message: str) -> web.Response:
    return web.Response(
        status=status, text=json.dumps({"error": message}), content_type="application/json"
    )
