"""The health endpoints in-process, against a real database, in their failure states."""

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from jobwarden.api.server import make_app
from jobwarden.context import AppContext
from jobwarden.db.migrations import Migration
from jobwarden.runtime.scheduler import JobScheduler, heartbeat


async def client_for(ctx: AppContext, scheduler: JobScheduler) -> TestClient[Any, Any]:
    client = TestClient(TestServer(make_app(ctx, scheduler)))
    await client.start_server()
    return client


async def test_full_health_follows_the_scheduler(ctx: AppContext) -> None:
    scheduler = JobScheduler(ctx)
    client = await client_for(ctx, scheduler)
    try:
        resp = await client.get("/api/health")
        body = await resp.json()
        assert resp.status == 503
        assert body["status"] == "error"
        assert body["checks"]["scheduler"]["error"] == "scheduler stopped"
        assert body["checks"]["database"]["status"] == "ok"

        scheduler.start()
        await heartbeat(ctx, datetime.now(UTC))  # one pass, driven directly
        resp = await client.get("/api/health")
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["checks"]["scheduler"]["jobs"] == ["heartbeat"]

        await scheduler.shutdown(grace=1)
        resp = await client.get("/api/health")
        assert resp.status == 503
    finally:
        await client.close()


async def test_pending_migrations_and_a_lost_database_make_health_fail(
    ctx: AppContext,
) -> None:
    newer = Migration("0099", "later", "0099_later.sql", "SELECT 1", "x" * 64, True)
    ctx = replace(ctx, migrations=(*ctx.migrations, newer))
    scheduler = JobScheduler(ctx)
    scheduler.start()
    await heartbeat(ctx, datetime.now(UTC))
    client = await client_for(ctx, scheduler)
    try:
        body = await (await client.get("/api/health")).json()
        assert body["checks"]["migrations"] == {
            "status": "error",
            "schemaVersion": ctx.migrations[-2].version,  # the shipped ones are applied
            "pending": ["0099_later.sql"],
            "error": "migrations pending",
        }
        await ctx.db.pool.close()
        resp = await client.get("/api/health/database")
        body = await resp.json()
        assert resp.status == 503
        assert body["status"] == "error"
        assert "closed" in body["error"]
        quick = await client.get("/api/health?quick=true")
        assert quick.status == 200  # liveness never touches the database
    finally:
        await scheduler.shutdown(grace=1)
        await client.close()


async def test_bad_query_and_unknown_paths_get_json_errors(ctx: AppContext) -> None:
    client = await client_for(ctx, JobScheduler(ctx))
    try:
        resp = await client.get("/api/health?quick=perhaps")
        assert resp.status == 400
        assert await resp.json() == {"error": "quick must be true or false", "field": "quick"}
        resp = await client.get("/api/nothing")
        assert resp.status == 404
        assert (await resp.json())["error"] == "Not Found"
        resp = await client.post("/api/health")
        assert resp.status == 405
        assert resp.headers["Allow"] == "GET,HEAD"
    finally:
        await client.close()
