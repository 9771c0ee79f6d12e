"""One HTTP attempt, made the same way by every channel.

`post()` sends a body once, never follows a redirect (a 3xx is the channel's answer to
judge, and following it would carry a signed or secret request elsewhere) and returns
the `Reply`: status, headers and the start of the body. When no response comes (a
connection error, a timeout) it returns the transient `Attempt` instead, whose error
names the exception's class and a fixed reason: aiohttp's own messages embed the URL,
and a webhook URL is a secret. For the same reason a reply's text has the URL, its
path and its query replaced by `***` when `secret_url` is set, in case the server
echoes them.

The timeout of an attempt is the session's (`JOBWARDEN_HTTP_CLIENT_TIMEOUT`) unless
the caller gives its own (a dead-letter retry: `JOBWARDEN_DLQ_RETRY_TIMEOUT`).
"""

import math
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from functools import cached_property, lru_cache
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import aiohttp

from jobwarden import __version__
from jobwarden.alerts.channels.base import ERROR_EXCERPT, Attempt, Outcome
from jobwarden.db.pg import storable

USER_AGENT = f"jobwarden/{__version__}"
MAX_BODY = 64 * 1024  # bytes of a response read: enough for any service's error JSON
HIDDEN = "***"


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]  # case-insensitive
    body: str  # the body's first MAX_BODY bytes, decoded, as the server sent them
    secret_url: str | None = None  # a URL whose parts `text` hides

    @cached_property
    def text(self) -> str:
        """The body with the secret URL's parts hidden (worked out only when read: a
        success is rarely read at all)."""
        if self.secret_url is None or not self.body:
            return self.body
        return hide_url(self.body, self.secret_url)

    @property
    def success(self) -> bool:
        return 200 <= self.status < 300

    @property
    def transient(self) -> bool:
        """Per the contracts: 3xx and 4xx other than 408 and 429 are permanent."""
        return not (300 <= self.status < 500) or self.status in (408, 429)

    def excerpt(self) -> str:
        return excerpt(self.text)

    def described(self) -> str:
        """`HTTP 410: <excerpt of the body>`."""
        shown = self.excerpt()
        return f"HTTP {self.status}: {shown}" if shown else f"HTTP {self.status}"

    def retry_after(self, now: float) -> float | None:
        return retry_after(self.headers.get("Retry-After"), now)

    def failed(self, error: str, wait: float | None = None) -> Attempt:
        """The attempt for a reply that is not a success: RETRY or FAILED by status."""
        if self.transient:
            return Attempt(Outcome.RETRY, self.status, error, wait)
        return Attempt(Outcome.FAILED, self.status, error)


def excerpt(text: str, limit: int = ERROR_EXCERPT) -> str:
    """`text` on one line, at most `limit` characters, `…` when cut; no NUL and no lone
    surrogate (PostgreSQL's text refuses both)."""
    flat = " ".join((storable(text) or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a `Retry-After` value: delta seconds or an HTTP-date."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = moment.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _secret_parts(url: str) -> list[str]:
    parts = urlsplit(url)
    path_query = f"{parts.path}?{parts.query}" if parts.query else parts.path
    candidates = {url, url.split("?", 1)[0], path_query, parts.path, unquote(parts.path)}
    if parts.query:
        candidates |= {parts.query, unquote(parts.query)}
    # A key or a password echoed on its own; not values so short ("1", "v2") that hiding
    # them would blank out ordinary words.
    values = [value for _, value in parse_qsl(parts.query)] + [parts.username, parts.password]
    for value in values:
        if value and len(value) > 3:
            candidates |= {value, quote(value, safe=""), unquote(value)}
    # Echoed inside JSON, "/" may come back as "\/".
    candidates |= {c.replace("/", "\\/") for c in candidates}
    return sorted((c for c in candidates if len(c) > 1), key=len, reverse=True)


def hide_url(text: str, url: str) -> str:
    for part in _secret_parts(url):
        text = text.replace(part, HIDDEN)
    return text


def _reason(exc: BaseException) -> str:
    """A fixed description of a transport error: never `str(exc)`, which may hold the URL."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "TLS handshake or certificate failed"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, socket.gaierror):
            return "host name did not resolve"
        return _with_os_reason("cannot connect", exc.os_error)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server closed the connection without a response"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "response body incomplete"
    if isinstance(exc, aiohttp.InvalidURL):
        return "invalid URL"
    if isinstance(exc, aiohttp.ClientOSError | ConnectionError):
        return _with_os_reason("connection error", exc)
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"invalid response (status {exc.status})"
    if isinstance(exc, OSError):
        return _with_os_reason("network error", exc)
    return "request failed"


def _with_os_reason(reason: str, exc: OSError) -> str:
    """The reason with the error number's standard wording: asyncio's own `strerror`
    may name the address."""
    return f"{reason} ({os.strerror(exc.errno)})" if exc.errno else reason


@lru_cache(maxsize=16)
def _total_timeout(seconds: float) -> aiohttp.ClientTimeout:
    """One per setting, not one per request (a dead-letter drain sends thousands)."""
    return aiohttp.ClientTimeout(total=seconds)


def transport_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_reason(exc)}"


async def post(
    http: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    secret_url: bool,
    timeout: float | None = None,
) -> Reply | Attempt:
    """POST `body` once; the reply, or a RETRY attempt when no response came.

    `timeout`: seconds for the whole attempt, instead of the session's."""
    sent = {"User-Agent": USER_AGENT, **headers}
    limit = http.timeout if timeout is None else _total_timeout(timeout)
    try:
        async with http.post(
            url, data=body, headers=sent, allow_redirects=False, timeout=limit
        ) as resp:
            raw = bytearray()
            while len(raw) < MAX_BODY:
                chunk = await resp.content.read(MAX_BODY - len(raw))
                if not chunk:
                    break
                raw += chunk
            status, reply_headers = resp.status, resp.headers  # parsed: kept after release
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return Attempt(Outcome.RETRY, error=transport_error(exc))
    text = raw.decode("utf-8", errors="replace")
    return Reply(status, reply_headers, text, url if secret_url else None)
