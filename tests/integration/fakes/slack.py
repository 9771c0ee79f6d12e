"""A fake Slack incoming webhook that holds every message to the Block Kit limits.

`SlackFake(rate_limit=(count, seconds))` listens at `webhook_url`, a secret-looking
`/services/T…/B…/<token>` path (any other path: `404 no_service`). A message must be
JSON with a `text` and blocks within the limits of contracts.md (`block_problems()`);
otherwise `400 invalid_payload`, and the problems found are kept in `problems`. With a
rate limit, a message beyond `count` in any `seconds` is answered `429` with
`Retry-After`; `max_in_window(seconds)` tells the most messages accepted in any such
window, to assert that a sender kept to it.
"""

import asyncio
import math
import secrets
from typing import Any

from aiohttp import web

from tests.integration.fakes.server import FakeService, Received

MAX_BLOCKS = 50
TEXT_TYPES = ("plain_text", "mrkdwn")


def _text_object(obj: Any, where: str, limit: int, types: tuple[str, ...]) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in types:
        return [f"{where}: must be a text object of type {' or '.join(types)}"]
    text = obj.get("text")
    if not isinstance(text, str) or not 1 <= len(text) <= limit:
        size = len(text) if isinstance(text, str) else "no"
        return [f"{where}.text: must be 1 to {limit} characters, has {size}"]
    return []


def _block_problems(block: Any, where: str) -> list[str]:
    if not isinstance(block, dict):
        return [f"{where}: must be an object"]
    kind = block.get("type")
    if kind == "header":
        return _text_object(block.get("text"), f"{where}.text", 150, ("plain_text",))
    if kind == "section":
        problems: list[str] = []
        if "text" not in block and "fields" not in block:
            problems.append(f"{where}: needs text or fields")
        if "text" in block:
            problems += _text_object(block["text"], f"{where}.text", 3000, TEXT_TYPES)
        if "fields" in block:
            fields = block["fields"]
            if not isinstance(fields, list) or not 1 <= len(fields) <= 10:
                problems.append(f"{where}.fields: must be 1 to 10 items")
            else:
                for i, item in enumerate(fields):
                    problems += _text_object(item, f"{where}.fields[{i}]", 2000, TEXT_TYPES)
        return problems
    if kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
            return [f"{where}.elements: must be 1 to 10 items"]
        return [
            problem
            for i, element in enumerate(elements)
            for problem in _text_object(element, f"{where}.elements[{i}]", 3000, TEXT_TYPES)
        ]
    if kind == "divider":
        return []
    return [f"{where}: unknown block type {kind!r}"]


def block_problems(payload: Any) -> list[str]:
    """What Slack would reject in a webhook message; empty when it is valid."""
    if not isinstance(payload, dict):
        return ["the body must be a JSON object"]
    problems: list[str] = []
    text = payload.get("text")
    if not isinstance(text, str) or not text.strip():
        problems.append("text: required (the notification fallback)")
    blocks = payload.get("blocks", [])
    if not isinstance(blocks, list):
        return [*problems, "blocks: must be a list"]
    if len(blocks) > MAX_BLOCKS:
        problems.append(f"blocks: at most {MAX_BLOCKS}, has {len(blocks)}")
    for i, block in enumerate(blocks):
        problems += _block_problems(block, f"blocks[{i}]")
    return problems


class SlackFake(FakeService):
    def __init__(self, *, rate_limit: tuple[int, float] | None = None) -> None:
        super().__init__()
        self.token = secrets.token_urlsafe(18)
        self.path = f"/services/T0FAKE0001/B0FAKE0001/{self.token}"
        self.rate_limit = rate_limit
        self.problems: list[list[str]] = []
        self.accepted_at: list[float] = []

    @property
    def webhook_url(self) -> str:
        return self.url(self.path)

    def max_in_window(self, seconds: float) -> int:
        """The most messages accepted within any `seconds` (from one to the next)."""
        times = self.accepted_at
        return max(
            (sum(1 for t in times[i:] if t - start < seconds) for i, start in enumerate(times)),
            default=0,
        )

    async def handle(self, request: web.Request, received: Received) -> web.Response:
        if request.path != self.path:
            return web.Response(status=404, text="no_service")
        if request.method != "POST":
            return web.Response(status=405, text="invalid_method")
        if request.content_type != "application/json" or received.json is None:
            self.problems.append(["the body must be JSON (application/json)"])
            return web.Response(status=400, text="invalid_payload")
        problems = block_problems(received.json)
        if problems:
            self.problems.append(problems)
            return web.Response(status=400, text="invalid_payload")
        now = asyncio.get_running_loop().time()
        if self.rate_limit is not None:
            count, seconds = self.rate_limit
            recent = [t for t in self.accepted_at if now - t < seconds]
            if len(recent) >= count:
                wait = math.ceil(recent[0] + seconds - now)
                return web.Response(
                    status=429, text="rate_limited", headers={"Retry-After": str(max(1, wait))}
                )
        self.accepted_at.append(now)
        return web.Response(status=200, text="ok")
