"""Where a dead-letter entry is retried: a handler chosen by its `jobId`.

In order of precedence:

1. the job's **route** (`jobwarden dlq route set JOB URL`, in `jobwarden.dlq_routes`):
   an HTTP retry to that URL, changeable while the daemon runs;
2. a **Python handler** registered in the entry-point group `jobwarden.dlq_handlers`
   under the job's id: `async def handle(entry) -> None`, which raises to fail (a
   `PermanentFailure` fails the entry at once, anything else is retried);
3. the **default URL**, `JOBWARDEN_DLQ_RETRY_URL`.

An HTTP retry POSTs `{"dlqId", "jobId", "attempt", "eventData", "error"}` with
`Idempotency-Key: <dlq id>` (the same on every attempt) and the bearer token when one
is set; `{jobId}` in the URL is replaced by the job's id, URL-quoted. 2xx succeeds;
no response, 408, 429 and 5xx are retried later (`Retry-After` honoured when longer
than the backoff); any other status fails the entry at once with the response's
excerpt. URLs are secrets: no outcome or log line shows one.
"""

import asyncio
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib.metadata import entry_points
from typing import Protocol
from urllib.parse import quote

import aiohttp

from jobwarden.alerts.channels.http import HIDDEN, Reply, excerpt, post
from jobwarden.config import DLQ_JOB_PLACEHOLDER, Settings
from jobwarden.dlq.queue import Claimed, Entry, Routing
from jobwarden.logsetup import get_logger
from jobwarden.secret import Secret

log = get_logger(__name__)

ENTRY_POINT_GROUP = "jobwarden.dlq_handlers"
MAX_SERVER_WAIT = 24 * 3600.0  # a Retry-After beyond a day is read as a day


class PermanentFailure(Exception):
    """Raised by a Python handler: the entry is FAILED at once, never retried."""


class Verdict(StrEnum):
    SUCCEEDED = "succeeded"
    RETRY = "retry"  # transient: try again after the backoff
    FAILED = "failed"  # permanent: never retried


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    status: int | None = None  # HTTP status, when there was a response
    error: str | None = None  # an excerpt: the response, the exception; never a URL
    wait: float | None = None  # seconds the server asked for (Retry-After)


HandlerFunction = Callable[[Entry], Awaitable[None]]


class Handler(Protocol):
    @property
    def kind(self) -> str: ...  # "route" | "python" | "http": written into the history

    async def __call__(self, entry: Entry) -> Outcome: ...


@dataclass(frozen=True)
class HttpHandler:
    http: aiohttp.ClientSession
    url: Secret  # may hold {jobId}
    token: Secret | None
    timeout: float
    kind: str = "http"

    async def __call__(self, entry: Entry) -> Outcome:
        url = self.url.reveal().replace(DLQ_JOB_PLACEHOLDER, quote(entry.job_id, safe=""))
        # eventData goes on as PostgreSQL wrote it: valid JSON, never decoded here.
        body = (
            f'{{"dlqId": {json.dumps(entry.id)}, "jobId": {json.dumps(entry.job_id)},'
            f' "attempt": {entry.attempt}, "eventData": {entry.event_data_json},'
            f' "error": {json.dumps(entry.error)}}}'
        ).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": entry.id}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token.reveal()}"
        reply = await post(self.http, url, body, headers, secret_url=True, timeout=self.timeout)
        if not isinstance(reply, Reply):
            return Outcome(Verdict.RETRY, error=reply.error)
        if reply.success:
            return Outcome(Verdict.SUCCEEDED, reply.status)
        # The URL's parts are hidden by `post`; the token too, if the endpoint echoes it.
        error = reply.described()
        if self.token is not None:
            error = error.replace(self.token.reveal(), HIDDEN)
        if reply.transient:
            wait = reply.retry_after(time.time())
            return Outcome(
                Verdict.RETRY,
                reply.status,
                error,
                None if wait is None else min(wait, MAX_SERVER_WAIT),
            )
        return Outcome(Verdict.FAILED, reply.status, error)


@dataclass(frozen=True)
class PythonHandler:
    name: str  # the entry point's name: the job id
    function: HandlerFunction
    timeout: float
    kind: str = "python"

    async def __call__(self, entry: Entry) -> Outcome:
        try:
            async with asyncio.timeout(self.timeout):
                await self.function(entry)
        except PermanentFailure as exc:
            return Outcome(Verdict.FAILED, error=excerpt(f"PermanentFailure: {exc}"))
        except TimeoutError:
            return Outcome(Verdict.RETRY, error=f"timed out after {self.timeout:g}s")
        except Exception as exc:  # noqa: BLE001  a handler fails by raising anything
            return Outcome(Verdict.RETRY, error=excerpt(f"{type(exc).__name__}: {exc}"))
        return Outcome(Verdict.SUCCEEDED)


def load_entry_points(group: str = ENTRY_POINT_GROUP) -> dict[str, HandlerFunction]:
    """Python handlers installed in `group`, by job id. One that cannot be loaded, or is
    not an `async def`, is logged as an error and skipped: its job falls through to a
    route or the default URL, if any."""
    found: dict[str, HandlerFunction] = {}
    for point in entry_points(group=group):
        try:
            function = point.load()
        except Exception as exc:  # noqa: BLE001  a broken plugin must not stop the daemon
            log.error(
                "could not load a dead-letter handler; its job is not handled by it",
                job_id=point.name,
                entry_point=point.value,
                error=f"{type(exc).__name__}: {exc}",
            )
            continue
        if not inspect.iscoroutinefunction(function):
            log.error(
                "a dead-letter handler must be an async def; its job is not handled by it",
                job_id=point.name,
                entry_point=point.value,
            )
            continue
        found[point.name] = function
    return found


class Router:
    """The handler of each claimed entry: route, then Python handler, then default URL."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        *,
        default_url: Secret | None,
        token: Secret | None,
        timeout: float,
        functions: Mapping[str, HandlerFunction],
    ) -> None:
        self._http, self._token, self._timeout = http, token, timeout
        self._default = (
            None if default_url is None else HttpHandler(http, default_url, token, timeout)
        )
        self._python = {
            job: PythonHandler(job, function, timeout) for job, function in functions.items()
        }

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        http: aiohttp.ClientSession,
        functions: Mapping[str, HandlerFunction] | None = None,
    ) -> "Router":
        return cls(
            http,
            default_url=settings.dlq_retry_url,
            token=settings.dlq_retry_token,
            timeout=settings.dlq_retry_timeout,
            functions=load_entry_points() if functions is None else functions,
        )

    @property
    def routing(self) -> Routing:
        """What the claim may take: everything with a default URL, else routed jobs."""
        return Routing(every_job=self._default is not None, handled_jobs=tuple(self._python))

    @property
    def python_jobs(self) -> tuple[str, ...]:
        return tuple(sorted(self._python))

    @property
    def has_default(self) -> bool:
        return self._default is not None

    def handler_for(self, claimed: Claimed) -> Handler | None:
        if claimed.route_url is not None:
            return HttpHandler(
                self._http, Secret(claimed.route_url), self._token, self._timeout, kind="route"
            )
        python = self._python.get(claimed.entry.job_id)
        if python is not None:
            return python
        return self._default
