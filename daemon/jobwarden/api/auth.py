"""`JOBWARDEN_API_TOKEN`: when set, every write under /api needs `Authorization: Bearer`.

Reads (GET, HEAD, OPTIONS) stay open. The token is compared in constant time.
"""

import hmac

from aiohttp import web

from jobwarden.api.errors import Handler
from jobwarden.secret import Secret

_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def require_token_for_writes(token: Secret | None) -> web.middleware:  # type: ignore[valid-type]
    expected = None if token is None else token.reveal().encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is None or request.method in _READS or not request.path.startswith("/api"):
            return await handler(request)
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            return web.json_response(
                {"error": "a valid bearer token is required", "field": "Authorization"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="jobwarden"'},
            )
        return await handler(request)

    return middleware
