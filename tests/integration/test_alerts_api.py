"""`/api/alerts` and `/api/deliveries` in-process, on a real database, with local fakes."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from jobwarden.alerts import outbox, views
from jobwarden.context import AppContext
from tests.integration.api_client import client_for
from tests.integration.conftest import app_context
from tests.integration.fakes import SlackFake, WebhookFake
from tests.integration.outboxes import expand, fail_deliveries
from tests.integration.webapp import insert_alert

TOKEN = "a-long-enough-api-token-0123456789"


async def test_alerts_list_and_show_with_their_deliveries(ctx: AppContext) -> None:
    now = datetime.now(UTC)
    async with ctx.db.connection() as conn, client_for(ctx) as client:
        older = await insert_alert(
            conn, severity="CRITICAL", title="Billing failed", created_at=now - timedelta(minutes=1)
        )
        await expand(conn)
        [failed] = await fail_deliveries(conn, "webhook", "HTTP 410: gone", 410)
        newer = await insert_alert(conn, severity="WARNING", title="Slow export", created_at=now)
        await conn.execute(
            "UPDATE alerts SET resolved = true, \"resolvedAt\" = $2, \"updatedAt\" = $2"
            " WHERE id = $1",
            newer, now.replace(tzinfo=None),
        )  # fmt: skip
        await expand(conn)

        resp = await client.get("/api/alerts")
        assert resp.status == 200
        alerts = (await resp.json())["alerts"]
        assert [a["id"] for a in alerts] == [newer, older]  # newest first
        assert alerts[1]["deliveries"] == {
            "slack": {"event": "firing", "reminder": 0, "status": "pending"},
            "webhook": {"event": "firing", "reminder": 0, "status": "failed"},
            "email": {"event": "firing", "reminder": 0, "status": "pending"},
        }
        assert alerts[0]["deliveries"]["slack"]["event"] == "resolved"
        assert alerts[0]["resolvedAt"].endswith("Z")

        resp = await client.get("/api/alerts", params={"unresolved": "true"})
        assert [a["id"] for a in (await resp.json())["alerts"]] == [older]
        resp = await client.get("/api/alerts", params={"limit": "1", "unresolved": "false"})
        assert [a["id"] for a in (await resp.json())["alerts"]] == [newer]

        resp = await client.get(f"/api/alerts/{older}")
        body = await resp.json()
        assert resp.status == 200, body
        assert (body["title"], body["severity"], body["resolved"]) == (
            "Billing failed", "CRITICAL", False,
        )  # fmt: skip
        [webhook] = [d for d in body["deliveries"] if d["channel"] == "webhook"]
        assert webhook["id"] == failed
        assert (webhook["event"], webhook["status"], webhook["attempts"]) == ("firing", "failed", 1)
        assert (webhook["responseStatus"], webhook["lastError"]) == (410, "HTTP 410: gone")
        assert {d["channel"] for d in body["deliveries"]} == {"slack", "webhook", "email"}

        resp = await client.get("/api/alerts/nope")
        assert resp.status == 404
        assert (await resp.json())["field"] == "id"


async def test_bad_query_values_get_400_naming_the_field(ctx: AppContext) -> None:
    async with client_for(ctx) as client:
        for path, params, field in (
            ("/api/alerts", {"limit": "0"}, "limit"),
            ("/api/alerts", {"limit": "1001"}, "limit"),
            ("/api/alerts", {"limit": "ten"}, "limit"),
            ("/api/alerts", {"unresolved": "maybe"}, "unresolved"),
            ("/api/deliveries", {"limit": "-1"}, "limit"),
            ("/api/deliveries", {"failed": "yes please"}, "failed"),
        ):
            resp = await client.get(path, params=params)
            assert resp.status == 400, (path, params)
            assert (await resp.json())["field"] == field
        resp = await client.get("/api/deliveries", params={"limit": "1000"})
        assert resp.status == 200


async def test_resolve_over_http_merges_metadata_and_records_the_event(ctx: AppContext) -> None:
    async with ctx.db.connection() as conn, client_for(ctx) as client:
        alert_id = await insert_alert(conn, metadata={"jobId": "emails", "owner": "ops"})
        resp = await client.post(f"/api/alerts/{alert_id}/resolve")
        body = await resp.json()
        assert resp.status == 200, body
        assert body["resolved"] is True
        assert body["metadata"] == {
            "jobId": "emails",
            "owner": "ops",
            "resolvedBy": "jobwarden-api",
        }
        row = await conn.fetchrow("SELECT * FROM alerts WHERE id = $1", alert_id)
        assert row is not None
        assert row["updatedAt"] == row["resolvedAt"]
        assert abs(row["resolvedAt"] - datetime.now(UTC).replace(tzinfo=None)) < timedelta(
            seconds=30
        )  # UTC, not the server's local time
        events = await conn.fetch(
            "SELECT event FROM jobwarden.alert_events WHERE alert_id = $1", alert_id
        )
        assert sorted(e["event"] for e in events) == ["firing", "resolved"]

        resp = await client.post(f"/api/alerts/{alert_id}/resolve")  # already resolved: same
        assert resp.status == 200
        assert (await resp.json())["resolvedAt"] == body["resolvedAt"]
        resp = await client.post("/api/alerts/nope/resolve")
        assert (resp.status, (await resp.json())["field"]) == (404, "id")


async def test_retry_one_and_all_failed_over_http(ctx: AppContext) -> None:
    assert ctx.settings.database is not None
    listener = await asyncpg.connect(ctx.settings.database.dsn)
    woken = asyncio.Event()
    await listener.add_listener(outbox.NOTIFY_CHANNEL, lambda *_: woken.set())
    try:
        async with ctx.db.connection() as conn, client_for(ctx) as client:
            for _ in range(3):
                await insert_alert(conn, severity="CRITICAL")
            await expand(conn)
            failed = await fail_deliveries(conn, "email", "HTTP 403: sender not verified", 403)
            assert len(failed) == 3

            resp = await client.get("/api/deliveries", params={"failed": "true", "limit": "2"})
            listed = (await resp.json())["deliveries"]
            assert len(listed) == 2
            assert {d["status"] for d in listed} == {"failed"}
            assert listed[0]["alert"]["severity"] == "CRITICAL"
            resp = await client.get("/api/deliveries")
            assert len((await resp.json())["deliveries"]) == 9

            woken.clear()
            resp = await client.post(f"/api/deliveries/{failed[0]}/retry")
            assert (resp.status, await resp.json()) == (200, {"retried": 1})
            await asyncio.wait_for(woken.wait(), 5)
            row = await conn.fetchrow("SELECT * FROM jobwarden.deliveries WHERE id = $1", failed[0])
            assert row is not None
            assert (row["status"], row["attempts"]) == ("pending", 0)
            assert row["next_attempt_at"] <= datetime.now(UTC)
            assert row["last_error"] == "HTTP 403: sender not verified"

            resp = await client.post(f"/api/deliveries/{failed[0]}/retry")  # pending now
            body = await resp.json()
            assert (resp.status, body["field"], body["status"]) == (409, "id", "pending")
            resp = await client.post("/api/deliveries/msg_nope/retry")
            assert (resp.status, (await resp.json())["field"]) == (404, "id")

            for payload in ({}, {"allFailed": False}, {"allFailed": "yes"}):
                resp = await client.post("/api/deliveries/retry", json=payload)
                assert (resp.status, (await resp.json())["field"]) == (400, "allFailed")
            resp = await client.post("/api/deliveries/retry", json={"allFailed": True, "x": 1})
            assert (resp.status, (await resp.json())["field"]) == (400, "x")

            woken.clear()
            resp = await client.post("/api/deliveries/retry", json={"allFailed": True})
            assert (resp.status, await resp.json()) == (200, {"retried": 2})
            await asyncio.wait_for(woken.wait(), 5)
            resp = await client.get("/api/deliveries", params={"failed": "true"})
            assert (await resp.json())["deliveries"] == []
    finally:
        await listener.close()


async def test_every_write_needs_the_token(migrated_dsn: str) -> None:
    async with app_context(migrated_dsn, JOBWARDEN_API_TOKEN=TOKEN) as ctx, client_for(ctx) as c:
        async with ctx.db.connection() as conn:
            alert_id = await insert_alert(conn, severity="CRITICAL")
            await expand(conn)
            [failed] = await fail_deliveries(conn, "webhook", "HTTP 410: gone", 410)
        writes: list[tuple[str, dict[str, Any] | None]] = [
            (f"/api/alerts/{alert_id}/resolve", None),
            ("/api/alerts/test", {}),
            (f"/api/deliveries/{failed}/retry", None),
            ("/api/deliveries/retry", {"allFailed": True}),
        ]
        for path, payload in writes:
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                resp = await c.post(path, json=payload, headers=headers)
                assert resp.status == 401, path
                assert (await resp.json())["field"] == "Authorization"
        resp = await c.get(f"/api/alerts/{alert_id}")  # reads stay open; nothing was written
        body = await resp.json()
        assert body["resolved"] is False
        assert {d["id"]: d["status"] for d in body["deliveries"]}[failed] == "failed"

        auth = {"Authorization": f"Bearer {TOKEN}"}
        resp = await c.post(f"/api/alerts/{alert_id}/resolve", headers=auth)
        assert (resp.status, (await resp.json())["resolved"]) == (200, True)
        resp = await c.post(f"/api/deliveries/{failed}/retry", headers=auth)
        assert resp.status == 200


async def test_send_a_test_notification_through_the_configured_channels(
    migrated_dsn: str,
) -> None:
    async with SlackFake() as slack, WebhookFake() as hook:
        env = {"SLACK_WEBHOOK_URL": slack.webhook_url, "ALERT_WEBHOOK_URL": hook.hook_url}
        async with app_context(migrated_dsn, **env) as ctx, client_for(ctx) as client:
            hook.fail_next(1, status=503, body="maintenance", headers={"Retry-After": "30"})
            resp = await client.post("/api/alerts/test")
            text = await resp.text()
            assert resp.status == 502, text
            results = {r["channel"]: r for r in (await resp.json())["results"]}
            assert results["slack"] == {
                "channel": "slack", "outcome": "sent", "status": 200, "error": None, "wait": None,
            }  # fmt: skip
            assert results["webhook"]["outcome"] == "retry"
            assert results["webhook"]["status"] == 503
            assert results["webhook"]["wait"] == 30
            for secret in (slack.path, hook.path):
                assert secret not in text

            resp = await client.post("/api/alerts/test", json={"channel": "webhook"})
            body = await resp.json()
            assert resp.status == 200, body
            assert [r["channel"] for r in body["results"]] == ["webhook"]
            assert body["ok"] is True
            assert hook.messages[-1].json["data"]["title"] == "jobwarden test notification"

            for payload in ({"channel": "email"}, {"channel": "pager"}, {"channel": 3}):
                resp = await client.post("/api/alerts/test", json=payload)
                assert resp.status == 400, payload
                assert (await resp.json())["field"] == "channel"
            async with ctx.db.connection() as conn:  # a test goes through no table
                assert await conn.fetchval("SELECT count(*) FROM jobwarden.deliveries") == 0
                assert await conn.fetchval("SELECT count(*) FROM alerts") == 0


async def test_channel_health_reports_last_outcomes_and_pending_per_channel(
    ctx: AppContext,
) -> None:
    async with ctx.db.connection() as conn:
        assert await views.channel_health(conn) == {}
        await insert_alert(conn, severity="CRITICAL")
        await insert_alert(conn, severity="WARNING")
        await expand(conn)
        await fail_deliveries(conn, "webhook", "HTTP 410: gone", 410)
        health = await views.channel_health(conn)
    assert health["slack"] == {
        "lastSuccessAt": None, "lastError": None, "lastErrorAt": None, "pausedUntil": None,
        "pending": 2,
    }  # fmt: skip
    assert health["email"]["pending"] == 1  # the WARNING is below email's minimum
    webhook = health["webhook"]
    assert (webhook["pending"], webhook["lastError"]) == (0, "HTTP 410: gone")
    assert webhook["lastErrorAt"].endswith("Z")
