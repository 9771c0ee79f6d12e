"""`jobwarden run` as systemd runs it: a fake NOTIFY_SOCKET, signals, a real PostgreSQL."""

import asyncio
import signal
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from jobwarden.db.migrations import load_migrations
from tests.integration.fake_systemd import FakeNotifySocket
from tests.integration.pgcluster import Cluster, server_address, with_host, with_params
from tests.integration.processes import clean_env, command
from tests.integration.tcpproxy import TcpProxy, free_port
from tests.integration.webapp import record_run, record_runs


class RunningDaemon:
    def __init__(self, proc: asyncio.subprocess.Process, notify: FakeNotifySocket, port: int):
        self.proc = proc
        self.notify = notify
        self.base = f"http://127.0.0.1:{port}"

    async def get(self, path: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as session, session.get(self.base + path) as resp:
            return resp.status, await resp.json()

    async def expect_log(self, *fragments: str, timeout: float = 30) -> str:
        """Read log lines until one holds every fragment; return it."""

        async def find() -> str:
            assert self.proc.stdout is not None
            while line := (await self.proc.stdout.readline()).decode():
                if all(f in line for f in fragments):
                    return line
            raise AssertionError(f"the daemon exited before logging {fragments}")

        return await asyncio.wait_for(find(), timeout)

    async def terminate(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(self.proc.communicate(), 30)
        assert self.proc.returncode is not None
        return self.proc.returncode, out.decode()


@asynccontextmanager
async def daemon(env: Mapping[str, str], state_dir: Path) -> AsyncIterator[RunningDaemon]:
    notify = FakeNotifySocket()
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *command("run"),
        env=clean_env(
            {
                "NOTIFY_SOCKET": notify.address,
                "JOBWARDEN_HTTP_PORT": str(port),
                "JOBWARDEN_STATE_DIR": str(state_dir),
                **env,
            }
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        yield RunningDaemon(proc, notify, port)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        notify.close()


async def applied_versions(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT version FROM jobwarden.schema_migrations ORDER BY 1")
        return [r["version"] for r in rows]
    finally:
        await conn.close()


async def test_run_is_ready_after_migrating_pings_the_watchdog_and_stops_on_sigterm(
    empty_dsn: str, state_dir: Path
) -> None:
    env = {"DATABASE_URL": empty_dsn, "WATCHDOG_USEC": "200000"}
    async with daemon(env, state_dir) as d:
        await d.notify.expect("READY", "1")
        statuses = [m["STATUS"] for m in d.notify.messages if "STATUS" in m]
        assert statuses[:2] == ["Connecting to the database", "Applying migrations"]
        assert await applied_versions(empty_dsn) == [m.version for m in load_migrations()]

        await d.notify.expect("WATCHDOG", "1")
        await d.notify.expect("WATCHDOG", "1")

        status, quick = await d.get("/api/health?quick=true")
        assert (status, quick["status"]) == (200, "ok")
        status, full = await d.get("/api/health")
        assert status == 200, full
        assert {name: c["status"] for name, c in full["checks"].items()} == {
            "database": "ok",
            "migrations": "ok",
            "scheduler": "ok",
            "evaluation": "ok",
            "deliveries": "ok",
            "dlq": "ok",
        }
        status, db = await d.get("/api/health/database")
        assert status == 200
        assert db["schemaVersion"] == load_migrations()[-1].version
        assert db["pool"]["max"] == 5
        assert db["pool"]["size"] >= 1
        assert db["latencyMs"] >= 0

        code, output = await d.terminate()
        assert any(m.get("STOPPING") == "1" for m in d.notify.messages + d.notify.pending())
        assert code == 0, output
        assert "Traceback" not in output


async def test_run_waits_for_the_database_and_becomes_ready_when_it_comes_up(
    migrated_dsn: str, cluster: Cluster, state_dir: Path
) -> None:
    db_port = free_port()
    env = {
        "DATABASE_URL": with_host(migrated_dsn, "127.0.0.1", db_port),
        "JOBWARDEN_DB_RETRY_MAX_DELAY": "1s",
    }
    proxy = TcpProxy(db_port, server_address(cluster.admin_dsn))
    async with daemon(env, state_dir) as d:
        await d.notify.expect("STATUS", prefix="Waiting for the database (attempt 1")
        await d.notify.expect("EXTEND_TIMEOUT_USEC")
        await d.notify.expect("STATUS", prefix="Waiting for the database (attempt 2")
        await proxy.start()
        try:
            await d.notify.expect("READY", "1")
            status, _ = await d.get("/api/health")
            assert status == 200
            code, output = await d.terminate()
        finally:
            await proxy.stop()
    assert code == 0
    assert 'event="database unreachable; will retry" attempt=1' in output
    assert 'event="database connected" attempt=' in output


async def test_sigterm_while_waiting_for_the_database_exits_cleanly(
    migrated_dsn: str, state_dir: Path
) -> None:
    env = {"DATABASE_URL": with_host(migrated_dsn, "127.0.0.1", free_port())}
    async with daemon(env, state_dir) as d:
        await d.notify.expect("STATUS", prefix="Waiting for the database")
        code, _ = await d.terminate()
    assert code == 0


async def test_a_prisma_database_url_with_schema_and_connection_limit_works(
    empty_dsn: str, state_dir: Path
) -> None:
    prisma_url = with_params(
        empty_dsn,
        schema="webapp",
        connection_limit="3",
        pool_timeout="10",
        connect_timeout="5",
        socket_timeout="30",
        pgbouncer="false",
        sslaccept="strict",
    )
    async with daemon({"DATABASE_URL": prisma_url}, state_dir) as d:
        await d.notify.expect("READY", "1")
        status, db = await d.get("/api/health/database")
        assert status == 200, db
        assert db["pool"]["max"] == 3
        assert db["sharedSchema"] == "webapp"
        code, output = await d.terminate()
    assert code == 0, output

    conn = await asyncpg.connect(empty_dsn)
    try:
        rows = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_name IN ('job_metrics', 'performance_baselines', "
            "'dead_letter_queue', 'alerts') ORDER BY 2"
        )
    finally:
        await conn.close()
    assert [(r["table_schema"], r["table_name"]) for r in rows] == [
        ("webapp", "alerts"),
        ("webapp", "dead_letter_queue"),
        ("webapp", "job_metrics"),
        ("webapp", "performance_baselines"),
    ]


async def test_the_running_daemon_polls_raises_an_alert_and_hands_over_leadership(
    migrated_dsn: str, tmp_path: Path
) -> None:
    env = {"DATABASE_URL": migrated_dsn, "JOBWARDEN_POLL_INTERVAL": "1s"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    conn = await asyncpg.connect(migrated_dsn)
    try:
        await record_run(conn, "emails", datetime.now(UTC))
        async with daemon(env, tmp_path / "a") as first:
            await first.notify.expect("READY", "1")
            await first.expect_log("pass finished", "job=evaluate")
            async with daemon(env, tmp_path / "b") as second:
                await second.notify.expect("READY", "1")
                roles = {
                    (await d.get("/api/health?quick=true"))[1]["role"] for d in (first, second)
                }
                assert roles == {"leader", "follower"}

                await record_runs(conn, "emails", datetime.now(UTC), 3, ok=False)
                raised = await first.expect_log("alert raised", "fingerprint=job_failure:emails")
                assert "level=warning" in raised
                assert "emails failed 3 times in a row" in raised
                await first.expect_log("pass finished", "job=evaluate", "raised=1")
                [alert] = await conn.fetch("SELECT type, resolved FROM alerts")
                assert (alert["type"], alert["resolved"]) == ("job_failure", False)
                status, body = await second.get("/api/health/jobs")
                assert (status, body["jobs"][0]["status"]) == (503, "failing")

                first.proc.kill()  # the leader dies without a word
                await second.expect_log("this replica is now the leader", timeout=15)
                await record_run(conn, "emails", datetime.now(UTC))
                await second.expect_log("alert resolved", "fingerprint=job_failure:emails")
                await second.expect_log("pass finished", "job=evaluate", "resolved=1")
                code, _ = await second.terminate()
                assert code == 0
    finally:
        await conn.close()
