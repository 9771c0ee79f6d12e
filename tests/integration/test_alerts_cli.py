"""`jobwarden alerts ...` and `jobwarden deliveries ...` as an operator meets them:
real subprocesses, a real database, local fakes of Slack and the webhook."""

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg

from jobwarden.alerts import outbox
from jobwarden.db.pg import Conn
from tests.integration.conftest import app_context
from tests.integration.fakes import SlackFake, WebhookFake
from tests.integration.outboxes import expand, fail_deliveries
from tests.integration.processes import Result, run_cli
from tests.integration.webapp import insert_alert, resolve_alert

# Nothing listens here: `alerts test` must not need the database.
NO_DATABASE = "postgresql://jobwarden:secret@127.0.0.1:9/nowhere"
T = TypeVar("T")


def on_db(dsn: str, work: Callable[[Conn], Awaitable[T]]) -> T:
    async def run() -> T:
        async with app_context(dsn) as ctx, ctx.db.connection() as conn:
            return await work(conn)

    return asyncio.run(run())


async def delivery(conn: Conn, delivery_id: str) -> dict[str, Any]:
    row = await conn.fetchrow("SELECT * FROM jobwarden.deliveries WHERE id = $1", delivery_id)
    assert row is not None
    return dict(row)


def assert_clean_usage_error(done: Result, flag: str) -> None:
    assert done.returncode == 64, done.output
    assert flag in done.stderr, done.stderr
    assert "Traceback" not in done.output


def test_list_and_show_say_what_became_of_each_channel(migrated_dsn: str) -> None:
    env = {"DATABASE_URL": migrated_dsn}

    async def setup(conn: Conn) -> tuple[str, str]:
        now = datetime.now(UTC)
        critical = await insert_alert(
            conn,
            severity="CRITICAL",
            title="Billing run failed",
            created_at=now - timedelta(minutes=1),
        )
        await expand(conn)
        await fail_deliveries(conn, "webhook", "HTTP 410: endpoint disabled", 410)
        info = await insert_alert(conn, severity="INFO", title="Cache warmed", created_at=now)
        await resolve_alert(conn, info)
        await expand(conn)
        return critical, info

    critical, info = on_db(migrated_dsn, setup)

    listed = run_cli("alerts", "list", env=env)
    assert listed.returncode == 0, listed.output
    lines = listed.stdout.splitlines()
    assert lines[0].split() == [
        "ID", "CREATED", "SEVERITY", "STATE", "TYPE", "DELIVERIES", "TITLE",
    ]  # fmt: skip
    # Newest first; per channel the latest delivery (resolved after firing).
    assert lines[1].startswith(info)
    assert lines[2].startswith(critical)
    assert "slack:pending webhook:failed email:pending" in lines[2]
    assert lines[2].endswith("Billing run failed")
    assert "resolved" in lines[1].split()
    # INFO is below Slack's minimum: suppressed, and so is its resolved notification.
    assert "slack:resolved:suppressed webhook:resolved:pending" in lines[1]

    unresolved = run_cli("alerts", "list", "--unresolved", "--json", env=env)
    [only] = json.loads(unresolved.stdout)
    assert only["id"] == critical
    assert only["deliveries"]["webhook"] == {"event": "firing", "reminder": 0, "status": "failed"}
    assert only["createdAt"].endswith("Z")
    assert len(json.loads(run_cli("alerts", "list", "--limit", "1", "--json", env=env).stdout)) == 1

    shown = run_cli("alerts", "show", critical, env=env)
    assert shown.returncode == 0, shown.output
    assert shown.stdout.startswith(f"{critical}: [CRITICAL] Billing run failed\n")
    rows = {line.split()[0]: line for line in shown.stdout.splitlines() if line.startswith("    ")}
    assert rows["CHANNEL"].split()[:4] == ["CHANNEL", "EVENT", "STATUS", "ATTEMPTS"]
    assert rows["webhook"].split()[1:4] == ["firing", "failed", "1"]
    assert rows["webhook"].endswith("HTTP 410: endpoint disabled")
    assert " 410 " in rows["webhook"]
    assert rows["slack"].split()[1:4] == ["firing", "pending", "0"]

    as_json = json.loads(run_cli("alerts", "show", critical, "--json", env=env).stdout)
    by_channel = {d["channel"]: d for d in as_json["deliveries"]}
    assert set(by_channel) == {"slack", "webhook", "email"}
    webhook = by_channel["webhook"]
    assert (webhook["status"], webhook["attempts"], webhook["responseStatus"]) == ("failed", 1, 410)
    assert webhook["lastError"] == "HTTP 410: endpoint disabled"
    assert webhook["id"].startswith("msg_")
    assert webhook["digestId"] is None

    missing = run_cli("alerts", "show", "no-such-alert", env=env)
    assert missing.returncode == 1
    assert "no alert 'no-such-alert'" in missing.stderr


def test_resolve_writes_like_prisma_keeps_the_app_metadata_and_records_the_event(
    migrated_dsn: str,
) -> None:
    env = {"DATABASE_URL": migrated_dsn}
    metadata = {"jobId": "emails", "ticket": "OPS-12"}
    alert_id = on_db(migrated_dsn, lambda conn: insert_alert(conn, metadata=metadata))
    before = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=1)

    done = run_cli("alerts", "resolve", alert_id, env=env)
    assert done.returncode == 0, done.output
    assert done.stdout == f"{alert_id}: resolved\n"

    async def read(conn: Conn) -> tuple[dict[str, Any], list[str]]:
        row = await conn.fetchrow("SELECT * FROM alerts WHERE id = $1", alert_id)
        assert row is not None
        events = await conn.fetch(
            "SELECT event FROM jobwarden.alert_events WHERE alert_id = $1 ORDER BY event", alert_id
        )
        return dict(row), [e["event"] for e in events]

    row, events = on_db(migrated_dsn, read)
    assert row["resolved"] is True
    # timestamp(3) holding UTC, and updatedAt moves with it
    assert before <= row["resolvedAt"] <= datetime.now(UTC).replace(tzinfo=None)
    assert row["updatedAt"] == row["resolvedAt"]
    assert row["metadata"]["jobId"] == "emails"
    assert row["metadata"]["ticket"] == "OPS-12"
    assert row["metadata"]["resolvedBy"].startswith("jobwarden-cli")
    assert events == ["firing", "resolved"]  # the trigger recorded the resolved event

    again = run_cli("alerts", "resolve", alert_id, env=env)
    assert (again.returncode, again.stdout) == (0, f"{alert_id}: was already resolved\n")
    assert on_db(migrated_dsn, read)[0]["updatedAt"] == row["updatedAt"]  # nothing rewritten

    unknown = run_cli("alerts", "resolve", "no-such-alert", env=env)
    assert unknown.returncode == 1
    assert "no alert 'no-such-alert'" in unknown.stderr


async def test_retry_puts_a_failed_delivery_back_due_now_and_wakes_the_dispatchers(
    migrated_dsn: str,
) -> None:
    env = {"DATABASE_URL": migrated_dsn}
    async with app_context(migrated_dsn) as ctx, ctx.db.connection() as conn:
        first = await insert_alert(conn, severity="CRITICAL")
        await insert_alert(conn, severity="CRITICAL")
        await expand(conn)
        failed = await fail_deliveries(conn, "webhook", "HTTP 500: down", 500)
        assert len(failed) == 2
        [sent_to_slack, *_] = await conn.fetch(
            "SELECT id FROM jobwarden.deliveries WHERE channel = 'slack'"
        )
        await conn.execute(
            "UPDATE jobwarden.deliveries SET status = 'sent' WHERE id = $1", sent_to_slack["id"]
        )

        listed = await asyncio.to_thread(run_cli, "deliveries", "list", "--failed", env=env)
        assert listed.returncode == 0, listed.output
        lines = listed.stdout.splitlines()
        assert lines[0].split()[:6] == ["ID", "UPDATED", "ALERT", "CHANNEL", "EVENT", "STATUS"]
        assert sorted(line.split()[0] for line in lines[1:]) == sorted(failed)
        assert all(line.endswith("HTTP 500: down") for line in lines[1:])
        everything = await asyncio.to_thread(run_cli, "deliveries", "list", "--json", env=env)
        assert len(json.loads(everything.stdout)) == 6

        [one] = [d for d in failed if (await delivery(conn, d))["alert_id"] == first]
        assert ctx.settings.database is not None
        listener = await asyncpg.connect(ctx.settings.database.dsn)
        woken = asyncio.Event()
        try:
            await listener.add_listener(outbox.NOTIFY_CHANNEL, lambda *_: woken.set())
            before = datetime.now(UTC)
            done = await asyncio.to_thread(run_cli, "deliveries", "retry", one, env=env)
            assert done.returncode == 0, done.output
            assert done.stdout == "1 delivery queued again\n"
            await asyncio.wait_for(woken.wait(), 5)
        finally:
            await listener.close()
        row = await delivery(conn, one)
        assert (row["status"], row["attempts"]) == ("pending", 0)
        assert before <= row["next_attempt_at"] <= datetime.now(UTC)
        assert row["created_at"] == row["next_attempt_at"]  # a fresh max-age window
        assert row["last_error"] == "HTTP 500: down"  # kept until the next attempt
        still_pending = await asyncio.to_thread(run_cli, "deliveries", "retry", one, env=env)
        assert still_pending.returncode == 1
        assert "is not failed: it is still pending" in still_pending.stderr
        not_failed = await asyncio.to_thread(
            run_cli, "deliveries", "retry", sent_to_slack["id"], env=env
        )
        assert not_failed.returncode == 1
        assert f"delivery {sent_to_slack['id']!r} is not failed: it was sent" in not_failed.stderr
        unknown = await asyncio.to_thread(run_cli, "deliveries", "retry", "msg_nope", env=env)
        assert (unknown.returncode, "no delivery 'msg_nope'" in unknown.stderr) == (1, True)

        # Due now: the dispatcher claims it at once. It fails again; both are retried.
        assert await fail_deliveries(conn, "webhook", "HTTP 502: again", 502) == [one]
        all_failed = await asyncio.to_thread(
            run_cli, "deliveries", "retry", "--all-failed", env=env
        )
        assert all_failed.returncode == 0, all_failed.output
        assert all_failed.stdout == "2 deliveries queued again\n"
        assert {(await delivery(conn, d))["status"] for d in failed} == {"pending"}
        none_left = await asyncio.to_thread(run_cli, "deliveries", "retry", "--all-failed", env=env)
        assert none_left.stdout == "0 deliveries queued again\n"


def test_bad_flags_exit_64_naming_the_flag(migrated_dsn: str) -> None:
    env = {"DATABASE_URL": migrated_dsn}
    for args, flag in (
        (("alerts", "list", "--limit", "0"), "--limit"),
        (("alerts", "list", "--limit", "1001"), "--limit"),
        (("alerts", "list", "--limit", "many"), "--limit"),
        (("deliveries", "list", "--limit", "-5"), "--limit"),
        (("alerts", "list", "--colour"), "--colour"),
        (("alerts", "test", "--channel", "pager"), "--channel"),
        (("alerts", "show"), "ID"),
        (("alerts", "resolve"), "ID"),
        (("deliveries", "retry"), "--all-failed"),
        (("deliveries", "retry", "msg_x", "--all-failed"), "--all-failed"),
        (("alerts", "frobnicate"), "frobnicate"),
    ):
        assert_clean_usage_error(run_cli(*args, env=env), flag)


def test_an_unmigrated_database_exits_65(empty_dsn: str) -> None:
    for args in (("alerts", "list"), ("deliveries", "list", "--failed")):
        done = run_cli(*args, env={"DATABASE_URL": empty_dsn})
        assert done.returncode == 65, done.output
        assert "jobwarden migrate" in done.stderr


async def test_alerts_test_sends_through_each_channel_and_says_how_it_went() -> None:
    async with SlackFake() as slack, WebhookFake() as hook:
        hook.fail_next(1, status=500, body="receiver restarting")
        env = {
            "DATABASE_URL": NO_DATABASE,
            "SLACK_WEBHOOK_URL": slack.webhook_url,
            "ALERT_WEBHOOK_URL": hook.hook_url,
        }
        done = await asyncio.to_thread(run_cli, "alerts", "test", env=env)
        assert done.returncode == 1, done.output
        lines = dict(line.split(None, 1) for line in done.stdout.splitlines())
        assert lines["slack"] == "sent (HTTP 200)"
        assert lines["webhook"] == "will retry: HTTP 500: receiver restarting"
        for secret in (slack.webhook_url, hook.hook_url, slack.path, hook.path):
            assert secret not in done.output
        [message] = slack.messages
        assert "jobwarden test notification" in json.dumps(message.json)

        # The webhook answers 204 again.
        both = await asyncio.to_thread(run_cli, "alerts", "test", env=env)
        assert both.returncode == 0, both.output
        assert both.stdout.splitlines() == ["slack    sent (HTTP 200)", "webhook  sent (HTTP 204)"]
        assert hook.messages[-1].json["type"] == "alert.firing"
        assert hook.messages[-1].json["data"]["type"] == "test"

        only = await asyncio.to_thread(run_cli, "alerts", "test", "--channel", "slack", env=env)
        assert (only.returncode, only.stdout) == (0, "slack  sent (HTTP 200)\n")
        assert len(slack.messages) == 3
        assert len(hook.messages) == 1

        email = await asyncio.to_thread(run_cli, "alerts", "test", "--channel", "email", env=env)
        assert email.returncode == 78, email.output
        assert "'email' is not configured" in email.stderr
        assert "SENDGRID_API_KEY" in email.stderr

        nothing = await asyncio.to_thread(
            run_cli, "alerts", "test", env={"DATABASE_URL": NO_DATABASE}
        )
        assert nothing.returncode == 78, nothing.output
        assert "no alert channel is configured" in nothing.stderr
