"""Reading query parameters: a 400 naming the parameter when one cannot be used."""

from aiohttp import web

from jobwarden.api.errors import BadRequest
from jobwarden.values import boolean


def flag(request: web.Request, name: str) -> bool:
    """`?name=true|false` (also 1/0, yes/no, on/off); absent is false."""
    text = request.query.get(name)
    if text is None:
        return False
    try:
        return boolean(text)
    except ValueError as exc:
        raise BadRequest(name, f"{name} {exc}") from None
