"""JSON errors for every failure the API returns: `{"error": …, "field": …}`."""

from collections.abc import Awaitable, Callable

from aiohttp import web

from jobwarden.logsetup import get_logger

log = get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadRequest(web.HTTPBadRequest):
    """A 400 naming the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(
            text=web.json_response({"error": message, "field": field}).text,
            content_type="application/json",
        )


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
