"""Reading a request's JSON body: an object, or a 400 naming `body`."""

from typing import Any

from aiohttp import web

from jobwarden.api.errors import BadRequest


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body is `{}`."""
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("body", "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("body", "the body must be a JSON object")
    return body
