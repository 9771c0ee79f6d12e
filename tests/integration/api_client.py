"""A test client of the daemon's HTTP API, on a context of the test's own."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from jobwarden.api.server import make_app
from jobwarden.context import AppContext
from jobwarden.runtime.scheduler import JobScheduler


@asynccontextmanager
async def client_for(ctx: AppContext) -> AsyncIterator[TestClient[Any, Any]]:
    client = TestClient(TestServer(make_app(ctx, JobScheduler(ctx))))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
