"""The outbox: every alert row becomes a delivery per channel, once, whoever wrote it.

Expansion and the sweep are driven directly with a chosen `now`; channels are not
called here (see test_alert_delivery.py for that).
"""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from jobwarden.alerts import outbox, sweep
from jobwarden.context import AppContext
from jobwarden.db.pg import Conn
from tests.integration.outboxes import DAY, expand
from tests.integration.webapp import drop_jobwarden_triggers, insert_alert, resolve_alert


async def deliveries(conn: Conn, alert_id: str) -> dict[tuple[str, str, int], dict[str, Any]]:
    rows = await conn.fetch("SELECT * FROM jobwarden.deliveries WHERE alert_id = $1", alert_id)
    return {(r["channel"], r["event"], r["reminder"]): dict(r) for r in rows}


def statuses(found: dict[tuple[str, str, int], dict[str, Any]]) -> dict[str, str]:
    return {f"{c}/{e}" + (f"#{n}" if n else ""): row["status"] for (c, e, n), row in found.items()}


async def test_an_alert_inserted_by_plain_sql_is_queued_for_every_channel_it_ranks_for(
    ctx: AppContext,
) -> None:
    async with ctx.db.connection() as conn:
        warning = await insert_alert(conn, severity="WARNING")
        critical = await insert_alert(conn, severity="CRITICAL")
        info = await insert_alert(conn, severity="INFO")
        result = await expand(conn)
        assert result.events == 3
        assert statuses(await deliveries(conn, critical)) == {
            "slack/firing": "pending", "webhook/firing": "pending", "email/firing": "pending",
        }  # fmt: skip
        assert statuses(await deliveries(conn, warning)) == {
            "slack/firing": "pending", "webhook/firing": "pending", "email/firing": "suppressed",
        }  # fmt: skip
        found = await deliveries(conn, info)
        assert statuses(found)["slack/firing"] == "suppressed"
        assert found[("slack", "firing", 0)]["last_error"] == (
            "below JOBWARDEN_SLACK_MIN_SEVERITY (WARNING)"
        )
        # Expanding again creates nothing: one delivery per alert x channel x event.
        assert (await expand(conn)).events == 0
        count = await conn.fetchval("SELECT count(*) FROM jobwarden.deliveries")
        assert count == 9


async def test_the_trigger_wakes_listeners(ctx: AppContext) -> None:
    got = asyncio.Event()
    assert ctx.settings.database is not None
    listener = await asyncpg.connect(ctx.settings.database.dsn)
    try:
        await listener.add_listener(outbox.NOTIFY_CHANNEL, lambda *_: got.set())
        async with ctx.db.connection() as conn:
            await insert_alert(conn)
        await asyncio.wait_for(got.wait(), 5)
    finally:
        await listener.close()


async def test_a_broken_trigger_never_fails_the_web_apps_insert_and_the_sweep_catches_up(
    ctx: AppContext,
) -> None:
    async with ctx.db.connection() as conn:
        # Something goes wrong inside the trigger: its insert violates a constraint.
        await conn.execute(
            "ALTER TABLE jobwarden.alert_events ADD CONSTRAINT broken CHECK (false) NOT VALID"
        )
        alert_id = await insert_alert(conn)  # must not raise
        assert await conn.fetchval("SELECT count(*) FROM alerts") == 1
        assert (await expand(conn)).events == 0
        await conn.execute("ALTER TABLE jobwarden.alert_events DROP CONSTRAINT broken")
        result = await sweep.sweep(conn, datetime.now(UTC), repeat_interval=0, max_age=DAY)
        assert result.missed == 1
        await expand(conn)
        assert statuses(await deliveries(conn, alert_id))["webhook/firing"] == "pending"


async def test_a_dropped_trigger_costs_latency_not_alerts(ctx: AppContext) -> None:
    async with ctx.db.connection() as conn:
        await drop_jobwarden_triggers(conn)
        alert_id = await insert_alert(conn, severity="CRITICAL")
        await resolve_alert(conn, alert_id)
        result = await sweep.sweep(conn, datetime.now(UTC), repeat_interval=0, max_age=DAY)
        assert result.missed == 2  # fired and resolved
        again = await sweep.sweep(conn, datetime.now(UTC), repeat_interval=0, max_age=DAY)
        assert again.missed == 0
        await expand(conn)
        found = statuses(await deliveries(conn, alert_id))
        assert found["slack/firing"] == "pending"
        assert found["slack/resolved"] == "pending"


async def test_a_year_of_old_alerts_is_recorded_but_not_sent(ctx: AppContext) -> None:
    now = datetime.now(UTC)
    async with ctx.db.connection() as conn:
        await drop_jobwarden_triggers(conn)  # "before install"
        for days in range(2, 366, 7):
            await insert_alert(conn, severity="CRITICAL", created_at=now - timedelta(days=days))
        fresh = await insert_alert(conn, severity="CRITICAL", created_at=now - timedelta(hours=1))
        await sweep.sweep(conn, now, repeat_interval=0, max_age=DAY)
        await expand(conn, now)
        pending = await conn.fetch(
            "SELECT DISTINCT alert_id FROM jobwarden.deliveries WHERE status = 'pending'"
        )
        assert [r["alert_id"] for r in pending] == [fresh]
        reasons = await conn.fetch(
            "SELECT DISTINCT last_error FROM jobwarden.deliveries WHERE status = 'suppressed'"
        )
        assert [r["last_error"] for r in reasons] == [
            "older than JOBWARDEN_DELIVERY_MAX_AGE when first seen"
        ]


async def test_resolved_goes_only_where_the_firing_notification_went(ctx: AppContext) -> None:
    async with ctx.db.connection() as conn:
        alert_id = await insert_alert(conn, severity="WARNING")  # not for email
        await expand(conn)
        await resolve_alert(conn, alert_id)
        await expand(conn)
        found = statuses(await deliveries(conn, alert_id))
        assert found["slack/resolved"] == "pending"
        assert found["webhook/resolved"] == "pending"
        assert found["email/resolved"] == "suppressed"


async def test_an_alert_fired_and_resolved_before_expansion_still_sends_both(
    ctx: AppContext,
) -> None:
    async with ctx.db.connection() as conn:
        alert_id = await insert_alert(conn, severity="ERROR")
        await resolve_alert(conn, alert_id)
        result = await expand(conn)
        assert result.events == 2
        found = statuses(await deliveries(conn, alert_id))
        assert found["email/firing"] == found["email/resolved"] == "pending"


async def test_open_critical_alerts_are_reminded_once_per_interval(ctx: AppContext) -> None:
    now = datetime.now(UTC)
    hour = 3600.0
    async with ctx.db.connection() as conn:
        critical = await insert_alert(conn, severity="CRITICAL")
        warning = await insert_alert(conn, severity="WARNING")
        await expand(conn, now)
        # Reminders re-announce what was announced: mark the firing notifications sent.
        await conn.execute(
            "UPDATE jobwarden.deliveries SET status = 'sent', sent_at = $1 WHERE event = 'firing'"
            " AND status = 'pending'",
            now,
        )

        async def remind(at: datetime) -> int:
            swept = await sweep.sweep(conn, at, repeat_interval=4 * hour, max_age=DAY)
            return swept.reminders

        assert await remind(now + timedelta(hours=3)) == 0
        assert await remind(now + timedelta(hours=4, minutes=1)) == 1
        assert await remind(now + timedelta(hours=5)) == 0  # reminder 1 already recorded
        assert await remind(now + timedelta(hours=13)) == 1  # after a long stop: only #3
        await expand(conn, now + timedelta(hours=13))
        found = statuses(await deliveries(conn, critical))
        assert found["slack/reminder#1"] == "pending"
        assert found["slack/reminder#3"] == "pending"
        assert "slack/reminder#2" not in found
        assert not any("reminder" in key for key in statuses(await deliveries(conn, warning)))
        await resolve_alert(conn, critical)
        assert await remind(now + timedelta(hours=30)) == 0


async def test_undeliverable_notifications_are_given_up_after_the_max_age(
    ctx: AppContext,
) -> None:
    now = datetime.now(UTC)
    async with ctx.db.connection() as conn:
        alert_id = await insert_alert(conn, severity="CRITICAL")
        await expand(conn, now)
        swept = await sweep.sweep(conn, now + timedelta(days=1, seconds=1), repeat_interval=0,
                                  max_age=DAY)  # fmt: skip
        assert swept.given_up == 3
        found = await deliveries(conn, alert_id)
        assert {row["status"] for row in found.values()} == {"failed"}
        assert found[("slack", "firing", 0)]["last_error"].startswith(
            "given up after JOBWARDEN_DELIVERY_MAX_AGE"
        )


async def test_the_shared_alerts_table_keeps_its_seed_shape(ctx: AppContext) -> None:
    async with ctx.db.connection() as conn:
        indexes = await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'alerts'")
        assert sorted(r["indexname"] for r in indexes) == [
            "alerts_createdAt_idx", "alerts_pkey", "alerts_resolved_idx",
            "alerts_severity_idx", "alerts_type_idx",
        ]  # fmt: skip
        function_schema = await conn.fetchval(
            "SELECT n.nspname FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid"
            " JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE t.tgname = 'jobwarden_alerts_inserted'"
        )
        assert function_schema == "jobwarden"


async def test_the_frequent_sweep_looks_at_recent_alerts_and_the_full_one_at_all(
    ctx: AppContext,
) -> None:
    now = datetime.now(UTC)
    async with ctx.db.connection() as conn:
        await drop_jobwarden_triggers(conn)
        await insert_alert(conn, created_at=now - timedelta(minutes=1))
        await insert_alert(conn, created_at=now - timedelta(hours=2))
        recent = await sweep.sweep(conn, now, repeat_interval=0, max_age=DAY, full=False)
        assert recent.missed == 1
        full = await sweep.sweep(conn, now, repeat_interval=0, max_age=DAY, full=True)
        assert full.missed == 1


async def test_the_outbox_of_alerts_the_web_app_deleted_is_pruned(ctx: AppContext) -> None:
    async with ctx.db.connection() as conn:
        kept = await insert_alert(conn, severity="CRITICAL")
        gone = await insert_alert(conn, severity="CRITICAL")
        await expand(conn)
        await conn.execute(
            "UPDATE jobwarden.deliveries SET status = 'sent' WHERE alert_id = $1", gone
        )
        await conn.execute("DELETE FROM alerts WHERE id = $1", gone)
        swept = await sweep.sweep(conn, datetime.now(UTC), repeat_interval=0, max_age=DAY)
        assert swept.pruned == 4  # its firing event and its three deliveries
        assert await deliveries(conn, gone) == {}
        assert len(await deliveries(conn, kept)) == 3
        again = await sweep.sweep(conn, datetime.now(UTC), repeat_interval=0, max_age=DAY)
        assert (again.pruned, again.missed) == (0, 0)


async def test_a_missed_insert_event_still_lets_the_resolved_one_follow_the_firing_one(
    ctx: AppContext,
) -> None:
    async with ctx.db.connection() as conn:
        await conn.execute("DROP TRIGGER jobwarden_alerts_inserted ON alerts")
        alert_id = await insert_alert(conn, severity="CRITICAL")
        await resolve_alert(conn, alert_id)  # the update trigger records both
        await expand(conn)
        found = statuses(await deliveries(conn, alert_id))
    assert found["slack/firing"] == "pending"
    assert found["slack/resolved"] == "pending"
