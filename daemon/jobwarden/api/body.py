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


async def capped_body(request: web.Request, limit: int) -> bytes:
    """The raw body, or a 400 naming `body` when it is longer than `limit` bytes (read
    no further than that)."""
    if request.content_length is not None and request.content_length > limit:
        raise BadRequest("body", f"the body must be at most {limit} bytes")
    data = bytearray()
    while chunk := await request.content.read(limit + 1 - len(data)):
        data += chunk
        if len(data) > limit:
            raise BadRequest("body", f"the body must be at most {limit} bytes")
    return bytes(data)
