"""The health endpoints in-process, against a real database, in their failure states."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from jobwarden.alerts.channels import configured_channels
from jobwarden.alerts.dispatcher import DeliveryDispatcher
from jobwarden.api.server import make_app
from jobwarden.context import AppContext
from jobwarden.db.migrations import Migration
from jobwarden.runtime.scheduler import JobScheduler, heartbeat
from tests.integration.conftest import app_context
from tests.integration.fakes.services import Services
from tests.integration.webapp import insert_alert


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
        assert await resp.json() == {
            "error": "quick must be true or false, not 'perhaps'",
            "field": "quick",
        }
        resp = await client.get("/api/nothing")
        assert resp.status == 404
        assert (await resp.json())["error"] == "Not Found"
        resp = await client.post("/api/health")
        assert resp.status == 405
        assert resp.headers["Allow"] == "GET,HEAD"
    finally:
        await client.close()


async def test_health_shows_each_channel_enabled_last_success_last_error_and_pending(
    migrated_dsn: str, services: Services
) -> None:
    env = services.env(SLACK_WEBHOOK_URL="", SENDGRID_API_KEY="", ALERT_EMAIL_RECIPIENTS="")
    services.hook.fail_next(1, status=503, body="maintenance", headers={"Retry-After": "60"})
    async with app_context(migrated_dsn, **env) as ctx:
        dispatcher = DeliveryDispatcher(
            ctx, configured_channels(ctx.settings, ctx.http, sandbox=False)
        )
        async with ctx.db.connection() as conn:
            await insert_alert(conn, severity="CRITICAL")
        await dispatcher.step()
        scheduler = JobScheduler(ctx)
        client = await client_for(ctx, scheduler)
        try:
            body = await (await client.get("/api/health")).json()
            failing = body["checks"]["deliveries"]["channels"]
            services.hook.come_back()
            await dispatcher.step(datetime.now(UTC) + timedelta(seconds=61))
            body = await (await client.get("/api/health")).json()
            recovered = body["checks"]["deliveries"]["channels"]
        finally:
            await client.close()
    assert failing["slack"] == {
        "enabled": False, "lastSuccessAt": None, "lastError": None, "lastErrorAt": None,
        "pausedUntil": None, "pending": 0,
    }  # fmt: skip
    assert failing["webhook"]["enabled"] is True
    assert failing["webhook"]["pending"] == 1
    assert "maintenance" in failing["webhook"]["lastError"]
    assert failing["webhook"]["pausedUntil"] is not None
    assert failing["webhook"]["lastSuccessAt"] is None
    assert recovered["webhook"]["pending"] == 0
    assert recovered["webhook"]["lastSuccessAt"] is not None
