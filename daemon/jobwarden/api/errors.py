"""JSON errors for every failure the API returns: `{"error": …, "field": …}`."""

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from jobwarden.logsetup import get_logger

log = get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _body(field: str, message: str, extra: dict[str, Any]) -> str:
    return json.dumps({"error": message, "field": field, **extra})


class BadRequest(web.HTTPBadRequest):
    """A 400 naming the offending field."""

    def __init__(self, field: str, message: str, **extra: Any) -> None:
        super().__init__(text=_body(field, message, extra), content_type="application/json")


class NotFound(web.HTTPNotFound):
    """A 404 for a resource named by a field (a job id, say)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(text=_body(field, message, {}), content_type="application/json")


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.content_type == "application/json":
            raise
        return web.json_response(
            {"error": exc.reason, "field": None}, status=exc.status, headers=_allow(exc)
        )
    except Exception:
        log.exception("unhandled error in HTTP handler", path=request.path)
        return web.json_response({"error": "internal error", "field": None}, status=500)


def _allow(exc: web.HTTPException) -> dict[str, str]:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else {}
