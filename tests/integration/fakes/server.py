"""What every fake service shares: a local server, a record, a failure script.

A fake listens on 127.0.0.1 (any free port). Every request is recorded as a
`Received` (its headers, raw body and parsed JSON, the status answered); those the
service accepted are also in `messages`. Tests wait for them with `wait_for(count)` or
`wait_for_requests(count)`, which return as soon as that many arrived, or raise
`TimeoutError`. A message is a request the service itself answered with a 2xx.

The failure script: `fail_next(n, status=…, body=…, headers=…)` answers the next `n`
requests so; `hang_next(n)` never answers them (until the fake closes), for client
timeouts; `go_down(...)` answers every request so (or hangs) until `come_back()`.
Scripted answers come before validation, as a service that is down validates nothing.
A subclass implements `handle(request, received)`, the service's own behaviour.
"""

import asyncio
import json
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict


@dataclass(frozen=True)
class Scripted:
    status: int = 500
    body: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    hang: bool = False


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    json: Any  # None when the body is not JSON
    at: float  # the loop's clock
    status: int = 0  # what the fake answered; 0 while it hangs


class FakeService:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.messages: list[Received] = []
        self._script: deque[Scripted] = deque()
        self._down: Scripted | None = None
        self._changed = asyncio.Condition()
        self._released = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._server = TestServer(app, host="127.0.0.1")

    async def __aenter__(self) -> Self:
        await self._server.start_server()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        self._released.set()
        await self._server.close()

    def url(self, path: str) -> str:
        return str(self._server.make_url(path))

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 500,
        body: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._script.extend([Scripted(status, body, dict(headers or {}))] * n)

    def hang_next(self, n: int = 1) -> None:
        self._script.extend([Scripted(hang=True)] * n)

    def go_down(
        self,
        *,
        status: int = 503,
        body: str = "",
        headers: Mapping[str, str] | None = None,
        hang: bool = False,
    ) -> None:
        self._down = Scripted(status, body, dict(headers or {}), hang)

    def come_back(self) -> None:
        self._down = None

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """The first `count` accepted messages, once they have arrived."""
        await self._wait(lambda: len(self.messages) >= count, timeout)
        return self.messages[:count]

    async def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[Received]:
        """The first `count` requests, accepted or not, once they have arrived."""
        await self._wait(lambda: len(self.requests) >= count, timeout)
        return self.requests[:count]

    async def wait_until(self, ready: Callable[[], bool], timeout: float = 5.0) -> None:
        """Return once `ready()` holds (checked after every request), or raise TimeoutError."""
        await self._wait(ready, timeout)

    async def _wait(self, ready: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(ready)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        received = Received(
            path=request.path_qs,
            headers={name.lower(): value for name, value in request.headers.items()},
            body=body,
            json=parsed,
            at=asyncio.get_running_loop().time(),
        )
        self.requests.append(received)
        await self._notify()
        scripted = self._script.popleft() if self._script else self._down
        if scripted is not None and scripted.hang:
            await self._released.wait()
            raise web.HTTPServiceUnavailable()
        if scripted is not None:
            headers = CIMultiDict({"Content-Type": "text/plain; charset=utf-8"})
            headers.update(scripted.headers)
            response = web.Response(
                status=scripted.status, body=scripted.body.encode(), headers=headers
            )
        else:
            response = await self.handle(request, received)
            if 200 <= response.status < 300:
                self.messages.append(received)
        for name, value in self.every_response_headers().items():
            response.headers.setdefault(name, value)
        received.status = response.status
        await self._notify()
        return response

    async def handle(self, request: web.Request, received: Received) -> web.Response:
        raise NotImplementedError

    def every_response_headers(self) -> Mapping[str, str]:
        """Headers the service puts on every answer, scripted or not, unless set."""
        return {}
