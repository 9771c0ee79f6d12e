"""The database itself is down: the channels are told directly, once, and once more
when it is back; the episode is then recorded without a second notification."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jobwarden.alerts.channels import configured_channels
from jobwarden.alerts.dispatcher import DeliveryDispatcher
from jobwarden.alerts.outage import DatabaseOutageWatch
from tests.integration.conftest import app_context
from tests.integration.fakes.services import Services
from tests.integration.pgcluster import Cluster, server_address, with_host
from tests.integration.tcpproxy import TcpProxy, free_port
from tests.integration.webapp import alerts


@pytest.fixture
async def proxy(cluster: Cluster) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(free_port(), server_address(cluster.admin_dsn))
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop(cut=True)


async def test_a_database_outage_is_announced_once_resolved_once_and_recorded(
    migrated_dsn: str, services: Services, proxy: TcpProxy
) -> None:
    dsn = with_host(migrated_dsn, "127.0.0.1", proxy.port)
    clock = [1000.0]
    async with app_context(dsn, **services.env(JOBWARDEN_DB_CONNECT_TIMEOUT="2s")) as ctx:
        channels = configured_channels(ctx.settings, ctx.http, sandbox=False)
        watch = DatabaseOutageWatch(ctx, channels, clock=lambda: clock[0])
        await watch.probe_once()
        assert watch.episode is None

        await proxy.stop(cut=True)
        await watch.probe_once()
        clock[0] += 59
        await watch.probe_once()
        assert services.counts() == (0, 0, 0)  # not yet a minute
        clock[0] += 2
        await watch.probe_once()
        await services.hook.wait_for(1)
        assert services.counts() == (1, 1, 1)
        clock[0] += 30
        await watch.probe_once()  # still down: nothing more is sent
        assert services.counts() == (1, 1, 1)

        await proxy.start()
        for _ in range(3):  # the pool may hand out one broken connection first
            await watch.probe_once()
            if watch.episode is None:
                break
        assert watch.episode is None
        assert services.counts() == (2, 2, 2)
        fired, resolved = services.hook.messages
        assert fired.json["type"] == "alert.firing"
        assert fired.json["data"]["severity"] == "CRITICAL"
        assert fired.json["data"]["title"] == "Database unreachable"
        assert resolved.json["type"] == "alert.resolved"
        assert services.email.messages[1].json["subject"] == "[RESOLVED] Database unreachable"

        async with ctx.db.connection() as conn:
            (row,) = await alerts(conn)
        assert (row["type"], row["severity"], row["resolved"]) == (
            "system_health",
            "CRITICAL",
            True,
        )
        assert row["id"] == fired.json["data"]["id"]
        # The outbox knows it went out: no second notification.
        dispatcher = DeliveryDispatcher(ctx, channels)
        await dispatcher.step()
        assert services.counts() == (2, 2, 2)
        async with ctx.db.connection() as conn:
            statuses = await conn.fetch(
                "SELECT channel, event, status FROM jobwarden.deliveries ORDER BY 1, 2"
            )
        assert [tuple(r) for r in statuses] == [
            ("email", "firing", "sent"), ("email", "resolved", "sent"),
            ("slack", "firing", "sent"), ("slack", "resolved", "sent"),
            ("webhook", "firing", "sent"), ("webhook", "resolved", "sent"),
        ]  # fmt: skip


async def test_a_short_blip_is_only_logged(
    migrated_dsn: str, services: Services, proxy: TcpProxy
) -> None:
    dsn = with_host(migrated_dsn, "127.0.0.1", proxy.port)
    clock = [0.0]
    async with app_context(dsn, **services.env(JOBWARDEN_DB_CONNECT_TIMEOUT="2s")) as ctx:
        channels = configured_channels(ctx.settings, ctx.http, sandbox=False)
        watch = DatabaseOutageWatch(ctx, channels, clock=lambda: clock[0])
        await proxy.stop(cut=True)
        await watch.probe_once()
        clock[0] += 30
        await watch.probe_once()
        await proxy.start()
        for _ in range(3):
            await watch.probe_once()
        assert watch.episode is None
        async with ctx.db.connection() as conn:
            assert await alerts(conn) == []
    assert services.counts() == (0, 0, 0)


async def test_a_daemon_restarted_during_an_outage_still_sends_the_resolved_notice(
    migrated_dsn: str, services: Services, proxy: TcpProxy, tmp_path: Path
) -> None:
    dsn = with_host(migrated_dsn, "127.0.0.1", proxy.port)
    state = tmp_path / "outage.json"
    clock = [0.0]
    async with app_context(dsn, **services.env(JOBWARDEN_DB_CONNECT_TIMEOUT="2s")) as ctx:
        channels = configured_channels(ctx.settings, ctx.http, sandbox=False)
        before = DatabaseOutageWatch(ctx, channels, clock=lambda: clock[0], state_file=state)
        await proxy.stop(cut=True)
        await before.probe_once()
        clock[0] += 61
        await before.probe_once()
        await services.hook.wait_for(1)
        assert state.exists()
    # The daemon restarts; the database comes back.
    await proxy.start()
    async with app_context(dsn, **services.env()) as ctx:
        channels = configured_channels(ctx.settings, ctx.http, sandbox=False)
        after = DatabaseOutageWatch(ctx, channels, state_file=state)
        assert after.episode is not None
        await after.probe_once()
        assert after.episode is None
        async with ctx.db.connection() as conn:
            (row,) = await alerts(conn)
    assert not state.exists()
    assert [m.json["type"] for m in services.hook.messages] == ["alert.firing", "alert.resolved"]
    assert row["id"] == services.hook.messages[0].json["data"]["id"]
    assert row["resolved"] is True
