"""`/api/dlq` in-process, on a real database, entries written by plain SQL as the web
app writes them (made FAILED, PROCESSING or SUCCEEDED as the processor would)."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from jobwarden.context import AppContext
from jobwarden.db.pg import Conn
from jobwarden.dlq import queue
from jobwarden.dlq.routes import redact_url
from tests.integration.api_client import client_for
from tests.integration.conftest import app_context
from tests.integration.test_dlq_cli import (
    SECRET_URL,
    make_failed,
    make_processing,
    make_succeeded,
    snapshot,
)
from tests.integration.webapp import dlq_entry, dlq_history, insert_dlq_entry

TOKEN = "a-long-enough-api-token-0123456789"


@asynccontextmanager
async def notifications(ctx: AppContext) -> AsyncIterator[asyncio.Event]:
    """Set when a NOTIFY on the DLQ channel arrives (what wakes running daemons)."""
    assert ctx.settings.database is not None
    listener = await asyncpg.connect(ctx.settings.database.dsn)
    woken = asyncio.Event()
    try:
        await listener.add_listener(queue.NOTIFY_CHANNEL, lambda *_: woken.set())
        yield woken
    finally:
        await listener.close()


async def error_of(resp: Any, status: int) -> dict[str, Any]:
    body: dict[str, Any] = await resp.json()
    assert resp.status == status, body
    return body


async def test_list_show_and_stats(ctx: AppContext) -> None:
    async with ctx.db.connection() as conn, client_for(ctx) as client:
        pending = await insert_dlq_entry(conn, "A")
        failed = await insert_dlq_entry(conn, "A", metadata={"tenant": "acme"})
        await make_failed(conn, failed, attempts=22)
        running = await insert_dlq_entry(conn, "B")
        await make_processing(conn, running)
        for minutes, entry in ((30, pending), (20, failed), (10, running)):
            await conn.execute(
                "UPDATE dead_letter_queue SET \"createdAt\" = now() AT TIME ZONE 'UTC'"
                " - $2::interval WHERE id = $1",
                entry, timedelta(minutes=minutes),
            )  # fmt: skip

        resp = await client.get("/api/dlq")
        entries = (await error_of(resp, 200))["entries"]
        assert [e["id"] for e in entries] == [running, failed, pending]  # newest first
        assert entries[1]["lastOutcome"]["outcome"] == "exhausted"
        assert entries[2]["dueAt"].endswith("Z")
        for params, expected in (
            ({"status": "failed"}, [failed]),
            ({"status": "PROCESSING"}, [running]),
            ({"jobId": "A", "limit": "1"}, [failed]),
            ({"jobId": "nobody"}, []),
        ):
            resp = await client.get("/api/dlq", params=params)
            assert [e["id"] for e in (await error_of(resp, 200))["entries"]] == expected, params

        resp = await client.get(f"/api/dlq/{failed}")
        shown = await error_of(resp, 200)
        assert (shown["status"], shown["attempts"], shown["jobId"]) == ("FAILED", 22, "A")
        assert shown["metadata"] == {"tenant": "acme"}
        assert len(shown["history"]) == 20
        assert shown["history"][0]["attempt"] == 3
        assert shown["earlierAttemptsNotKept"] == 2
        assert shown["schedule"]["active"] is False
        assert shown["schedule"]["maxAttempts"] == ctx.settings.dlq_max_attempts
        resp = await client.get(f"/api/dlq/{running}")
        schedule = (await error_of(resp, 200))["schedule"]
        assert schedule["leaseOwner"] == "host-a:4242"
        assert schedule["leaseUntil"].endswith("Z")
        body = await error_of(await client.get("/api/dlq/c-nope"), 404)
        assert (body["field"], body["error"]) == ("id", "no dead-letter entry 'c-nope'")

        stats = await error_of(await client.get("/api/dlq/stats"), 200)  # not an entry id
        assert stats["byStatus"] == {"PENDING": 1, "PROCESSING": 1, "SUCCEEDED": 0, "FAILED": 1}
        assert [(j["jobId"], j["total"]) for j in stats["jobs"]] == [("A", 2), ("B", 1)]
        assert stats["oldestPending"]["id"] == pending
        assert 30 * 60 - 60 < stats["oldestPending"]["ageSeconds"] < 30 * 60 + 60
        assert stats["attempts"] == [
            {"attempts": 0, "entries": 1}, {"attempts": 1, "entries": 1},
            {"attempts": 22, "entries": 1},
        ]  # fmt: skip


async def test_bad_query_values_get_400_naming_the_field(ctx: AppContext) -> None:
    async with client_for(ctx) as client:
        for params, field in (
            ({"status": "DONE"}, "status"),
            ({"status": ""}, "status"),
            ({"limit": "0"}, "limit"),
            ({"limit": "1001"}, "limit"),
            ({"limit": "ten"}, "limit"),
            ({"jobId": " "}, "jobId"),
        ):
            body = await error_of(await client.get("/api/dlq", params=params), 400)
            assert body["field"] == field, params
            assert body["error"].startswith(field), body


async def test_retry_one_a_job_or_every_failed_entry(ctx: AppContext) -> None:
    async with (
        ctx.db.connection() as conn,
        client_for(ctx) as client,
        notifications(ctx) as woken,
    ):
        failed = await insert_dlq_entry(conn, "A", metadata={"tenant": "acme"})
        await make_failed(conn, failed, attempts=5)
        before = datetime.now(UTC)
        resp = await client.post(f"/api/dlq/{failed}/retry")
        assert await error_of(resp, 200) == {"retried": 1, "failed": 1, "pending": 0}
        await asyncio.wait_for(woken.wait(), 5)
        row = await dlq_entry(conn, failed)
        assert (row["status"], row["attempts"], row["processedAt"]) == ("PENDING", 5, None)
        assert row["metadata"]["tenant"] == "acme"
        requeued = dlq_history(row)[-1]
        assert (requeued["outcome"], requeued["by"]) == ("requeued", "api:127.0.0.1")
        sched = await conn.fetchrow(
            "SELECT * FROM jobwarden.dlq_schedule WHERE dlq_id = $1", failed
        )
        assert sched is not None
        assert (sched["active"], sched["budget_from"], sched["exhausted_at"]) == (True, 5, None)
        assert before <= sched["due_at"] <= datetime.now(UTC)

        resp = await client.post(f"/api/dlq/{failed}/retry")  # PENDING: due now again
        assert await error_of(resp, 200) == {"retried": 1, "failed": 0, "pending": 1}

        running = await insert_dlq_entry(conn, "A")
        await make_processing(conn, running)
        done = await insert_dlq_entry(conn, "A")
        await make_succeeded(conn, done)
        untouched = await snapshot(conn)
        for entry, status in ((running, "PROCESSING"), (done, "SUCCEEDED")):
            body = await error_of(await client.post(f"/api/dlq/{entry}/retry"), 409)
            assert (body["field"], body["status"]) == ("id", status)
            assert body["error"].startswith(f"cannot retry dead-letter entry {entry!r}")
        body = await error_of(await client.post("/api/dlq/c-nope/retry"), 404)
        assert body["field"] == "id"

        for payload, field in (
            ({}, "jobId"),
            ({"jobId": 3}, "jobId"),
            ({"jobId": ""}, "jobId"),
            ({"allFailed": False}, "allFailed"),
            ({"allFailed": "yes"}, "allFailed"),
            ({"jobId": "A", "allFailed": True}, "allFailed"),
            ({"allFailed": True, "force": True}, "force"),
            ([1, 2], "body"),
        ):
            resp = await client.post("/api/dlq/retry", json=payload)
            assert (await error_of(resp, 400))["field"] == field, payload
        resp = await client.post("/api/dlq/retry", data="{not json")
        assert (await error_of(resp, 400))["field"] == "body"
        assert await snapshot(conn) == untouched

        a_failed = await insert_dlq_entry(conn, "A")
        await make_failed(conn, a_failed)
        b_failed = await insert_dlq_entry(conn, "B")
        await make_failed(conn, b_failed)
        resp = await client.post("/api/dlq/retry", json={"jobId": "A"})
        assert await error_of(resp, 200) == {"retried": 2, "failed": 1, "pending": 1}
        assert (await dlq_entry(conn, running))["status"] == "PROCESSING"
        woken.clear()
        resp = await client.post("/api/dlq/retry", json={"allFailed": True})
        assert await error_of(resp, 200) == {"retried": 1, "failed": 1, "pending": 0}
        await asyncio.wait_for(woken.wait(), 5)
        assert (await dlq_entry(conn, b_failed))["status"] == "PENDING"


async def test_discard_over_http(ctx: AppContext) -> None:
    async with ctx.db.connection() as conn, client_for(ctx) as client:
        entry = await insert_dlq_entry(conn, metadata={"tenant": "acme"})
        running = await insert_dlq_entry(conn)
        await make_processing(conn, running)
        untouched = await snapshot(conn)
        for payload in ({}, {"reason": ""}, {"reason": "   "}, {"reason": 5},
                        {"reason": "x" * 501}):  # fmt: skip
            resp = await client.post(f"/api/dlq/{entry}/discard", json=payload)
            body = await error_of(resp, 400)
            assert body["field"] == "reason", payload
        resp = await client.post(f"/api/dlq/{entry}/discard", json={"reason": "x", "why": "y"})
        assert (await error_of(resp, 400))["field"] == "why"
        resp = await client.post("/api/dlq/c-nope/discard", json={"reason": "dup"})
        assert (await error_of(resp, 404))["field"] == "id"
        resp = await client.post(f"/api/dlq/{running}/discard", json={"reason": "dup"})
        body = await error_of(resp, 409)
        assert (body["field"], body["status"]) == ("id", "PROCESSING")
        assert "try again once it has finished" in body["error"]
        assert await snapshot(conn) == untouched

        resp = await client.post(f"/api/dlq/{entry}/discard", json={"reason": "x" * 500})
        body = await error_of(resp, 200)
        assert body["status"] == "FAILED"
        assert body["processedAt"].endswith("Z")
        assert body["metadata"] == {"tenant": "acme"}
        [discarded] = body["history"]
        assert (discarded["outcome"], discarded["reason"]) == ("discarded", "x" * 500)
        assert discarded["by"] == "api:127.0.0.1"
        assert body["schedule"]["active"] is False
        row = await dlq_entry(conn, entry)
        assert (row["status"], row["metadata"]["tenant"]) == ("FAILED", "acme")

        resp = await client.post(f"/api/dlq/{entry}/retry")  # a discarded entry may come back
        assert (await error_of(resp, 200))["retried"] == 1


async def routes_of(conn: Conn) -> dict[str, str]:
    rows = await conn.fetch("SELECT job_id, url FROM jobwarden.dlq_routes")
    return {row["job_id"]: row["url"] for row in rows}


async def test_routes_over_http_never_show_a_credential(migrated_dsn: str) -> None:
    default = "https://user:topsecret@default.example/retry"
    async with (
        app_context(migrated_dsn, JOBWARDEN_DLQ_RETRY_URL=default) as ctx,
        ctx.db.connection() as conn,
        client_for(ctx) as client,
        notifications(ctx) as woken,
    ):
        redacted = "https://retry.internal:8443/***"
        resp = await client.put("/api/dlq/routes/send-invoice", json={"url": SECRET_URL})
        text = await resp.text()
        assert resp.status == 200, text
        assert await resp.json() == {"jobId": "send-invoice", "url": redacted, "created": True}
        await asyncio.wait_for(woken.wait(), 5)  # entries of a newly routed job may go now
        resp = await client.put("/api/dlq/routes/send-invoice", json={"url": SECRET_URL + "&a=1"})
        assert (await error_of(resp, 200))["created"] is False
        assert await routes_of(conn) == {"send-invoice": SECRET_URL + "&a=1"}

        resp = await client.get("/api/dlq/routes")  # not an entry id
        listed = await resp.text()
        table = await error_of(resp, 200)
        assert table["defaultUrl"] is True
        [route] = table["routes"]
        assert (route["jobId"], route["source"], route["url"]) == (
            "send-invoice",
            "route",
            redacted,
        )
        for secret in ("hunter2", "abc123", "svc", "topsecret", "default.example"):
            assert secret not in text + listed

        for payload in (
            {},
            {"url": 7},
            {"url": "ftp://files.example/x"},
            {"url": "https://svc:hunter2@/no-host"},
            {"url": "https://h.example/{job}?token=hunter2"},
            {"url": "https://h.example/a b?token=hunter2"},
        ):
            resp = await client.put("/api/dlq/routes/send-invoice", json=payload)
            text = await resp.text()
            body = await error_of(resp, 400)
            assert body["field"] == "url", payload
            assert "hunter2" not in text
        resp = await client.put("/api/dlq/routes/%20", json={"url": SECRET_URL})
        assert (await error_of(resp, 400))["field"] == "jobId"
        resp = await client.put("/api/dlq/routes/x", json={"url": SECRET_URL, "extra": 1})
        assert (await error_of(resp, 400))["field"] == "extra"
        assert await routes_of(conn) == {"send-invoice": SECRET_URL + "&a=1"}

        resp = await client.delete("/api/dlq/routes/send-invoice")
        assert await error_of(resp, 200) == {"jobId": "send-invoice", "removed": True}
        resp = await client.delete("/api/dlq/routes/send-invoice")
        assert (await error_of(resp, 404))["field"] == "jobId"
        assert await error_of(await client.get("/api/dlq/routes"), 200) == {
            "routes": [],
            "defaultUrl": True,
        }


async def test_every_write_needs_the_token(migrated_dsn: str) -> None:
    async with app_context(migrated_dsn, JOBWARDEN_API_TOKEN=TOKEN) as ctx, client_for(ctx) as c:
        async with ctx.db.connection() as conn:
            entry = await insert_dlq_entry(conn)
            await make_failed(conn, entry)
            before = await snapshot(conn)
        writes: list[tuple[str, str, dict[str, Any] | None]] = [
            ("POST", f"/api/dlq/{entry}/retry", None),
            ("POST", "/api/dlq/retry", {"allFailed": True}),
            ("POST", f"/api/dlq/{entry}/discard", {"reason": "dup"}),
            ("PUT", "/api/dlq/routes/send-invoice", {"url": "https://retry.example/x"}),
            ("DELETE", "/api/dlq/routes/send-invoice", None),
        ]
        for method, path, payload in writes:
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                resp = await c.request(method, path, json=payload, headers=headers)
                assert (await error_of(resp, 401))["field"] == "Authorization", (method, path)
        for path in ("/api/dlq", f"/api/dlq/{entry}", "/api/dlq/stats", "/api/dlq/routes"):
            assert (await c.get(path)).status == 200, path  # reads stay open
        async with ctx.db.connection() as conn:
            assert await snapshot(conn) == before

        auth = {"Authorization": f"Bearer {TOKEN}"}
        resp = await c.post(f"/api/dlq/{entry}/retry", headers=auth)
        assert (await error_of(resp, 200))["retried"] == 1
        resp = await c.put(
            "/api/dlq/routes/send-invoice", json={"url": "https://retry.example/x"}, headers=auth
        )
        assert (await error_of(resp, 200))["created"] is True


def test_a_route_url_is_shown_as_its_origin_only() -> None:
    for url, shown in (
        (SECRET_URL, "https://retry.internal:8443/***"),
        ("http://retry.example/jobs/{jobId}", "http://retry.example/***"),
        ("https://:pw@[::1]:8080/x#frag", "https://[::1]:8080/***"),
        ("https://token@retry.example?k=v", "https://retry.example/***"),
        ("https://retry.example/", "https://retry.example"),
    ):
        assert redact_url(url) == shown
