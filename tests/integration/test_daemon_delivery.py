"""`jobwarden run` delivering alerts: picked up at commit, never sent twice, even when
killed in the middle of a burst and started again."""

from pathlib import Path

import asyncpg

from tests.integration.fakes.services import SECRET, Services
from tests.integration.test_daemon import daemon
from tests.integration.webapp import insert_alert


async def test_an_alert_written_by_the_web_app_reaches_every_channel(
    migrated_dsn: str, services: Services, state_dir: Path
) -> None:
    env = {"DATABASE_URL": migrated_dsn, **services.env()}
    async with daemon(env, state_dir) as d:
        await d.notify.expect("READY", "1")
        conn = await asyncpg.connect(migrated_dsn)
        try:
            alert_id = await insert_alert(conn, severity="CRITICAL", title="Invoices stuck")
        finally:
            await conn.close()
        (hook,) = await services.hook.wait_for(1, timeout=15)
        await services.slack.wait_for(1, timeout=15)
        await services.email.wait_for(1, timeout=15)
        status, health = await d.get("/api/health")
        code, output = await d.terminate()
    assert status == 200
    channels = health["checks"]["deliveries"]["channels"]
    assert set(channels) == {"slack", "webhook", "email"}
    assert all(c["enabled"] for c in channels.values())
    assert channels["webhook"]["lastError"] is None
    assert code == 0
    assert hook.json["data"]["id"] == alert_id
    assert 'event="notification sent"' in output
    assert services.hook.hook_url not in output
    assert services.slack.token not in output


async def test_a_daemon_killed_mid_burst_and_restarted_sends_every_notification(
    migrated_dsn: str, services: Services, state_dir: Path
) -> None:
    env = {
        "DATABASE_URL": migrated_dsn,
        "ALERT_WEBHOOK_URL": services.hook.hook_url,
        "JOBWARDEN_WEBHOOK_SECRET": SECRET,
        "JOBWARDEN_HTTP_CLIENT_TIMEOUT": "1s",  # leases of a killed daemon expire in 7 s
        "JOBWARDEN_LOG_LEVEL": "warning",  # nobody reads the pipe until the end
    }
    services.hook.go_down(hang=True)  # the first daemon's sends never get an answer
    async with daemon(env, state_dir) as first:
        await first.notify.expect("READY", "1")
        conn = await asyncpg.connect(migrated_dsn)
        try:
            await conn.execute(
                'INSERT INTO alerts (id, type, severity, title, message, "updatedAt")'
                " SELECT 'burst-' || n, 'job_failure', 'ERROR', 'job ' || n, 'failed',"
                " now() AT TIME ZONE 'UTC' FROM generate_series(1, 300) AS n"
            )
        finally:
            await conn.close()
        await services.hook.wait_for_requests(10, timeout=15)
        first.proc.kill()  # mid-send: its claims stay leased until the lease expires
        await first.proc.wait()
    services.hook.come_back()
    async with daemon(env, state_dir) as second:
        await second.notify.expect("READY", "1")
        await services.hook.wait_for(300, timeout=60)
        code, _ = await second.terminate()
    assert code == 0
    assert sorted(m.json["data"]["id"] for m in services.hook.messages) == sorted(
        f"burst-{n}" for n in range(1, 301)
    )
    # Whatever the killed daemon had in flight went out once, under the key it had.
    assert len(set(services.hook.ids)) == 300
    in_flight = {r.headers["webhook-id"] for r in services.hook.requests if r.status == 0}
    assert in_flight
    assert in_flight <= set(services.hook.ids)
