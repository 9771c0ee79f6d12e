"""Alerts reach Slack, the webhook and email: once per channel, through failures.

Real PostgreSQL, real channels, local fake services that follow the contracts.
The dispatcher is driven one step at a time with a chosen `now`, or run as the
service it is; nothing sleeps to wait for work.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobwarden.alerts import sweep
from jobwarden.alerts.actions import retry_deliveries
from jobwarden.alerts.channels import configured_channels
from jobwarden.alerts.dispatcher import DeliveryDispatcher
from jobwarden.context import AppContext
from tests.integration.conftest import app_context
from tests.integration.fakes.services import Services
from tests.integration.webapp import alerts, drop_jobwarden_triggers, insert_alert, resolve_alert


@asynccontextmanager
async def dispatcher(
    dsn: str, services: Services, **env: str
) -> AsyncIterator[tuple[AppContext, DeliveryDispatcher]]:
    async with app_context(dsn, **services.env(**env)) as ctx:
        channels = configured_channels(ctx.settings, ctx.http, sandbox=False)
        yield ctx, DeliveryDispatcher(ctx, channels)


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def delivery_rows(ctx: AppContext, alert_id: str) -> dict[str, dict[str, Any]]:
    async with ctx.db.connection() as conn:
        rows = await conn.fetch(
            "SELECT * FROM jobwarden.deliveries WHERE alert_id = $1 ORDER BY created_at", alert_id
        )
    return {f"{r['channel']}/{r['event']}": dict(r) for r in rows}


async def test_an_alert_inserted_by_plain_sql_reaches_all_three(
    migrated_dsn: str, services: Services
) -> None:
    async with dispatcher(migrated_dsn, services) as (ctx, d):
        async with ctx.db.connection() as conn:
            alert_id = await insert_alert(
                conn, severity="CRITICAL", title="Payments <sync> & export", message="exit 1"
            )
        result = await d.step()
        assert result.expanded.events == 1
        (hook,) = await services.hook.wait_for(1)
        (slack,) = await services.slack.wait_for(1)
        (email,) = await services.email.wait_for(1)
    assert hook.json["type"] == "alert.firing"
    assert hook.json["data"]["id"] == alert_id
    assert hook.json["data"]["title"] == "Payments <sync> & export"
    assert set(hook.json["data"]) == {
        "id", "type", "severity", "title", "message", "metadata", "resolved", "resolvedAt",
        "createdAt",
    }  # fmt: skip
    assert "Payments <sync> & export" in slack.json["blocks"][0]["text"]["text"]
    assert "CRITICAL" in slack.json["blocks"][0]["text"]["text"]
    assert email.json["subject"] == "[CRITICAL] Payments <sync> & export"
    assert [to["email"] for to in email.json["personalizations"][0]["to"]] == [
        "oncall@example.com",
        "lead@example.com",
    ]


async def test_each_delivery_is_recorded_as_sent_with_the_response(
    migrated_dsn: str, services: Services
) -> None:
    async with dispatcher(migrated_dsn, services) as (ctx, d):
        async with ctx.db.connection() as conn:
            alert_id = await insert_alert(conn, severity="ERROR")
        await d.step()
        rows = await delivery_rows(ctx, alert_id)
        assert {k: (r["status"], r["attempts"]) for k, r in rows.items()} == {
            "slack/firing": ("sent", 1),
            "webhook/firing": ("sent", 1),
            "email/firing": ("sent", 1),
        }
        assert rows["email/firing"]["response_status"] == 202
        assert services.hook.ids == [rows["webhook/firing"]["id"]]
        # Nothing more to send: another step sends nothing again.
        await d.step(later(3600))
        assert services.counts() == (1, 1, 1)


async def test_routing_sends_each_channel_only_what_ranks_for_it(
    migrated_dsn: str, services: Services
) -> None:
    async with dispatcher(migrated_dsn, services) as (ctx, d):
        async with ctx.db.connection() as conn:
            info = await insert_alert(conn, severity="INFO")
            warning = await insert_alert(conn, severity="WARNING")
        await d.step()
        await services.hook.wait_for(2)
        assert services.counts() == (1, 2, 0)
        assert services.slack.messages[0].json["text"].count("WARNING") >= 1
        assert (await delivery_rows(ctx, info))["slack/firing"]["status"] == "suppressed"
        assert (await delivery_rows(ctx, warning))["email/firing"]["status"] == "suppressed"


async def test_resolved_and_reminder_notifications_say_so(
    migrated_dsn: str, services: Services
) -> None:
    async with dispatcher(migrated_dsn, services) as (ctx, d):
        async with ctx.db.connection() as conn:
            alert_id = await insert_alert(conn, severity="CRITICAL", title="Queue stalled")
            await d.step()
            swept = await sweep.sweep(
                conn, later(4 * 3600 + 60), repeat_interval=4 * 3600, max_age=86400
            )
            assert swept.reminders == 1
            await d.step()
            await resolve_alert(conn, alert_id)
            await d.step()
        await services.hook.wait_for(3)
    assert [m.json["type"] for m in services.hook.messages] == [
        "alert.firing",
        "alert.reminder",
        "alert.resolved",
    ]
    assert services.hook.messages[2].json["data"]["resolved"] is True
    assert len(set(services.hook.ids)) == 3
    subjects = [m.json["subject"] for m in services.email.messages]
    assert subjects[0] == "[CRITICAL] Queue stalled"
    assert subjects[1].startswith("[REMINDER]")
    assert "Queue stalled" in subjects[1]
    assert subjects[2] == "[RESOLVED] Queue stalled"
    headers = [m.json["blocks"][0]["text"]["text"] for m in services.slack.messages]
    assert "REMINDER" in headers[1]
    assert "RESOLVED" in headers[2]


async def test_a_channel_down_for_a_while_then_back_loses_nothing_and_delays_no_other(
    migrated_dsn: str, services: Services
) -> None:
    services.hook.go_down(status=500)
    async with dispatcher(migrated_dsn, services) as (ctx, d):
        async with ctx.db.connection() as conn:
            alert_id = await insert_alert(conn, severity="CRITICAL")
        first = await d.step()
        assert first.channels["webhook"].retrying == 1
        assert first.channels["slack"].sent == first.channels["email"].sent == 1
        for minutes in (1, 2, 4):  # still down: retried, one probe at a time
            await d.step(later(60 * minutes))
        down_requests = len(services.hook.requests)
        assert 2 <= down_requests <= 4
        services.hook.come_back()
        await d.step(later(600))
        await services.hook.wait_for(1)
        rows = await delivery_rows(ctx, alert_id)
    assert rows["webhook/firing"]["status"] == "sent"
    assert rows["webhook/firing"]["attempts"] == down_requests + 1
    # The same idempotency key on every try of the one notification.
    assert {r.headers["webhook-id"] for r in services.hook.requests} == {
        rows["webhook/firing"]["id"]
    }
    assert services.counts() == (1, 1, 1)  # Slack and email were not repeated


async def test_retry_after_pauses_the_whole_channel(migrated_dsn: str, services: Services) -> None:
    services.slack.fail_next(1, status=429, body="rate_limited", headers={"Retry-After": "30"})
    async with dispatcher(migrated_dsn, services) as (ctx, d):
        async with ctx.db.connection() as conn:
            await insert_alert(conn, severity="CRITICAL", title="first")
            result = await d.step()
            assert result.channels["slack"].retrying == 1
            await insert_alert(conn, severity="CRITICAL", title="second")
            paused = await d.step(later(10))
            assert paused.channels["slack"].claimed == 0  # not even the new one
            assert len(services.slack.requests) == 1
            await d.step(later(31))  # one message probes the channel
            await d.step(later(32))  # it went through: the rest follows
        await services.slack.wait_for(2)
    assert len(services.slack.requests) == 3
    texts = [m.json["text"] for m in services.slack.messages]
    assert any("second" in t for t in texts)
    assert any("first" in t for t in texts)


async def test_sendgrids_rate_limit_reset_pauses_email_until_then(
    migrated_dsn: str, services: Services
) -> None:
    services.email.rate_limit_next(1, reset_in=120)
    async with dispatcher(migrated_dsn, services) as (ctx, d):
        async with ctx.db.connection() as conn:
            alert_id = await insert_alert(conn, severity="CRITICAL")
        await d.step()
        assert (await d.step(later(60))).channels["email"].claimed == 0
        await d.step(later(125))
        await services.email.wait_for(1)
        assert (await delivery_rows(ctx, alert_id))["email/firing"]["attempts"] == 2


@pytest.mark.parametrize(
    ("channel", "status", "body"),
    [
        ("slack", 404, "channel_not_found"),
        ("slack", 410, "channel_is_archived"),
        ("webhook", 410, "gone"),
        ("webhook", 400, "bad request"),
    ],
)
async def test_a_permanent_failure_fails_at_once_with_the_services_message(
    migrated_dsn: str, services: Services, channel: str, status: int, body: str
) -> None:
    fake = services.slack if channel == "slack" else services.hook
    fake.fail_next(1, status=status, body=body)
    async with dispatcher(migrated_dsn, services) as (ctx, d):
        async with ctx.db.connection() as conn:
            alert_id = await insert_alert(conn, severity="CRITICAL")
        result = await d.step()
        assert result.channels[channel].failed == 1
        await d.step(later(3600))
        row = (await delivery_rows(ctx, alert_id))[f"{channel}/firing"]
    assert (row["status"], row["attempts"], row["response_status"]) == ("failed", 1, status)
    assert body in row["last_error"]
    assert len(fake.requests) == 1


async def test_sendgrid_permanent_errors_keep_sendgrids_message(
    migrated_dsn: str, services: Services
) -> None:
    services.email.error_next(
        1,
        status=403,
        message="The from address does not match a verified Sender Identity.",
        field="from",
    )
    async with dispatcher(migrated_dsn, services) as (ctx, d):
        async with ctx.db.connection() as conn:
            alert_id = await insert_alert(conn, severity="CRITICAL")
        await d.step()
        row = (await delivery_rows(ctx, alert_id))["email/firing"]
    assert row["status"] == "failed"
    assert "verified Sender Identity" in row["last_error"]


async def test_a_storm_goes_to_slack_and_email_as_one_digest_but_one_webhook_each(
    migrated_dsn: str, services: Services
) -> None:
    async with dispatcher(migrated_dsn, services) as (ctx, d):
        async with ctx.db.connection() as conn:
            ids = [await insert_alert(conn, severity="CRITICAL", title=f"job {i} failed")
                   for i in range(30)]  # fmt: skip
        await d.step()
        while (await d.step()).channels["webhook"].claimed:
            pass
        await services.hook.wait_for(30)
        async with ctx.db.connection() as conn:
            digests = await conn.fetch(
                "SELECT channel, count(*) AS n, count(DISTINCT digest_id) AS digests"
                " FROM jobwarden.deliveries WHERE status = 'sent' GROUP BY channel"
            )
    assert services.counts() == (1, 30, 1)
    assert len(set(services.hook.ids)) == 30
    by_channel = {r["channel"]: (r["n"], r["digests"]) for r in digests}
    assert by_channel == {"slack": (30, 1), "email": (30, 1), "webhook": (30, 0)}
    slack_text = services.slack.messages[0].json["text"]
    assert "30" in slack_text
    assert "30" in services.email.messages[0].json["subject"]
    assert len(ids) == 30


async def test_slack_gets_about_one_message_a_second_and_never_more_than_20_in_10s(
    migrated_dsn: str, services: Services
) -> None:
    """Two replicas share Slack's budget: it lives in the database, not in a process."""
    start = datetime.now(UTC)
    sent_at: list[float] = []
    quiet = {"JOBWARDEN_DIGEST_THRESHOLD": "1000"}
    async with (
        dispatcher(migrated_dsn, services, **quiet) as (ctx, one),
        dispatcher(migrated_dsn, services, **quiet) as (_, two),
    ):
        async with ctx.db.connection() as conn:
            for i in range(60):
                await insert_alert(conn, severity="CRITICAL", title=f"job {i}")
        await one.expand()
        for tick in range(80):  # 20 seconds in quarter-second steps, replicas taking turns
            replica = one if tick % 2 else two
            slack = next(c for c in replica.channels if c.name == "slack")
            result = await replica.deliver(slack, start + timedelta(seconds=tick / 4))
            sent_at += [tick / 4] * result.sent
    assert len(sent_at) >= 20  # kept going at about one a second
    windows = [sum(1 for t in sent_at if s <= t < s + 10) for s in sent_at]
    assert max(windows) <= 20
    assert len(services.slack.messages) == len(sent_at)


async def test_a_restart_in_the_middle_of_a_burst_sends_everything_once(
    migrated_dsn: str, services: Services
) -> None:
    async with AsyncExitStack() as stack:
        ctx, first = await stack.enter_async_context(dispatcher(migrated_dsn, services))
        async with ctx.db.connection() as conn:
            for i in range(60):
                await insert_alert(conn, severity="INFO", title=f"burst {i}")  # webhook only
        first.start()
        await services.hook.wait_for(10)
        await first.stop(grace=0)  # killed mid-burst: claims handed back
        _, second = await stack.enter_async_context(dispatcher(migrated_dsn, services))
        second.start()
        await services.hook.wait_until(lambda: len(set(services.hook.ids)) == 60, timeout=20)
        await second.stop(grace=5)
        async with ctx.db.connection() as conn:
            statuses = await conn.fetch(
                "SELECT status, count(*) AS n FROM jobwarden.deliveries"
                " WHERE channel = 'webhook' GROUP BY status"
            )
    assert {r["status"]: r["n"] for r in statuses} == {"sent": 60}
    # A repeat is allowed only for a send cut off before its commit, under the same key.
    assert len(set(services.hook.ids)) == 60
    assert len(services.hook.ids) - 60 <= 32


async def test_two_daemons_never_send_a_notification_twice(
    migrated_dsn: str, services: Services
) -> None:
    async with (
        dispatcher(migrated_dsn, services) as (ctx, one),
        dispatcher(migrated_dsn, services) as (_, two),
    ):
        one.start()
        two.start()
        async with ctx.db.connection() as conn:
            for i in range(100):
                await insert_alert(conn, severity="INFO", title=f"alert {i}")
        one.wake()
        two.wake()
        await services.hook.wait_for(100, timeout=20)
        await asyncio.gather(one.stop(grace=5), two.stop(grace=5))
    assert len(services.hook.ids) == len(set(services.hook.ids)) == 100


async def test_a_reminder_for_an_alert_resolved_meanwhile_is_not_sent(
    migrated_dsn: str, services: Services
) -> None:
    async with dispatcher(migrated_dsn, services, JOBWARDEN_WEBHOOK_MIN_SEVERITY="CRITICAL") as (
        ctx,
        d,
    ):
        async with ctx.db.connection() as conn:
            alert_id = await insert_alert(conn, severity="CRITICAL")
            await d.step()
            await sweep.sweep(conn, later(5 * 3600), repeat_interval=4 * 3600, max_age=86400)
            await d.expand()
            await conn.execute(
                "UPDATE alerts SET resolved = true WHERE id = $1", alert_id
            )  # resolved without the trigger seeing it as new: still a resolved event
            await d.step()
        rows = await delivery_rows(ctx, alert_id)
    assert rows["webhook/reminder"]["status"] == "suppressed"
    assert rows["webhook/reminder"]["last_error"] == "resolved before the reminder went out"
    assert rows["webhook/resolved"]["status"] == "sent"


async def test_an_old_backlog_is_not_sent(migrated_dsn: str, services: Services) -> None:
    async with dispatcher(migrated_dsn, services) as (ctx, d):
        async with ctx.db.connection() as conn:
            await drop_jobwarden_triggers(conn)
            for days in (2, 30, 300):
                await insert_alert(
                    conn, severity="CRITICAL", created_at=datetime.now(UTC) - timedelta(days=days)
                )
            await sweep.sweep(conn, datetime.now(UTC), repeat_interval=3600, max_age=86400)
        await d.step()
        async with ctx.db.connection() as conn:
            assert len(await alerts(conn)) == 3
            suppressed = await conn.fetchval(
                "SELECT count(*) FROM jobwarden.deliveries WHERE status = 'suppressed'"
            )
    assert suppressed == 9
    assert services.counts() == (0, 0, 0)


async def test_no_resolved_notification_where_the_firing_one_failed_until_it_is_retried(
    migrated_dsn: str, services: Services
) -> None:
    services.hook.fail_next(1, status=400, body="unknown alert type")
    async with dispatcher(migrated_dsn, services) as (ctx, d):
        async with ctx.db.connection() as conn:
            alert_id = await insert_alert(conn, severity="CRITICAL")
            await d.step()
            await resolve_alert(conn, alert_id)
            await d.step()
            await d.step(later(60))
            rows = await delivery_rows(ctx, alert_id)
            assert rows["webhook/firing"]["status"] == "failed"
            assert rows["webhook/resolved"]["status"] == "suppressed"
            assert rows["slack/resolved"]["status"] == "sent"
            assert [m.json["type"] for m in services.hook.messages] == []
            # Someone fixes the receiver and retries the firing notification: the
            # resolved one follows it, so the receiver does not see the alert open.
            await retry_deliveries(
                conn, datetime.now(UTC), delivery_id=rows["webhook/firing"]["id"]
            )
            await d.step()
            await d.step()
        await services.hook.wait_for(2)
    assert [m.json["type"] for m in services.hook.messages] == ["alert.firing", "alert.resolved"]


async def test_a_resolved_notification_waits_for_its_firing_one_without_spinning(
    migrated_dsn: str, services: Services
) -> None:
    services.hook.go_down(status=500)
    async with dispatcher(migrated_dsn, services, JOBWARDEN_DELIVERY_BACKOFF_BASE="30s",
                          JOBWARDEN_DELIVERY_BACKOFF_CAP="1m") as (ctx, d):  # fmt: skip
        async with ctx.db.connection() as conn:
            alert_id = await insert_alert(conn, severity="CRITICAL")
            await d.step()
            await resolve_alert(conn, alert_id)
        await d.expand()
        webhook = next(c for c in d.channels if c.name == "webhook")
        waiting = await d.deliver(webhook)
        rows = await delivery_rows(ctx, alert_id)
    assert rows["webhook/resolved"]["status"] == "pending"
    assert waiting.claimed == 0
    assert waiting.wait is not None
    assert waiting.wait > 10  # until the firing notification's next try, not at once


async def test_a_service_error_postgresql_cannot_store_does_not_stop_the_channel(
    migrated_dsn: str, services: Services
) -> None:
    services.hook.fail_next(1, status=400, body="bad \x00 body")
    services.email.fail_next(
        1,
        status=400,
        body='{"errors": [{"message": "bad \\udcff address", "field": "from", "help": null}]}',
        headers={"Content-Type": "application/json"},
    )
    async with dispatcher(migrated_dsn, services) as (ctx, d):
        async with ctx.db.connection() as conn:
            first = await insert_alert(conn, severity="CRITICAL")
            await d.step()
            second = await insert_alert(conn, severity="CRITICAL")
            await d.step()
        await services.hook.wait_for(1)
        await services.email.wait_for(1)
        failed, sent = await delivery_rows(ctx, first), await delivery_rows(ctx, second)
    for channel in ("webhook", "email"):
        assert failed[f"{channel}/firing"]["status"] == "failed"
        assert "bad" in failed[f"{channel}/firing"]["last_error"]
        assert sent[f"{channel}/firing"]["status"] == "sent"
