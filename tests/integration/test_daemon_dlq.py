"""`jobwarden run` retrying the dead-letter queue: an entry the web app writes is
retried at once; a daemon killed mid-retry leaves nothing behind for good."""

import asyncio
from pathlib import Path

import asyncpg

from tests.integration.fakes.retry_endpoint import RetryEndpointFake
from tests.integration.test_daemon import daemon
from tests.integration.webapp import dlq_entry, dlq_history, insert_dlq_entries, insert_dlq_entry

TOKEN = "retry-token-0123456789"


async def test_an_entry_written_by_the_web_app_is_retried(
    migrated_dsn: str, state_dir: Path
) -> None:
    async with RetryEndpointFake(token=TOKEN) as endpoint:
        env = {
            "DATABASE_URL": migrated_dsn,
            "JOBWARDEN_DLQ_RETRY_URL": endpoint.retry_url,
            "JOBWARDEN_DLQ_RETRY_TOKEN": TOKEN,
        }
        async with daemon(env, state_dir) as d:
            await d.notify.expect("READY", "1")
            conn = await asyncpg.connect(migrated_dsn)
            try:
                entry_id = await insert_dlq_entry(conn, metadata={"requestId": "r-1"})
                [request] = await endpoint.wait_for(1, timeout=15)
                await d.expect_log("dead-letter retry succeeded")
                status, health = await d.get("/api/health")
                code, output = await d.terminate()  # the outcome is written by then
                entry = await dlq_entry(conn, entry_id)
            finally:
                await conn.close()
    assert code == 0
    assert status == 200
    assert "dlq-alerts" in health["checks"]["scheduler"]["jobs"]
    queue = health["checks"]["dlq"]
    assert queue["status"] == "ok"
    assert queue["pending"] == 0
    assert queue["processor"]["totals"]["succeeded"] == 1
    assert request.json["dlqId"] == entry_id
    assert entry["status"] == "SUCCEEDED"
    assert entry["metadata"]["requestId"] == "r-1"
    assert endpoint.key not in output
    assert TOKEN not in output


async def test_a_daemon_killed_mid_retry_loses_nothing(migrated_dsn: str, state_dir: Path) -> None:
    """Its claimed entries come back after the lease, their attempt counted; another
    daemon retries them, and every entry ends SUCCEEDED."""
    async with RetryEndpointFake() as endpoint:
        endpoint.gate = asyncio.Event()  # the first daemon's retries get no answer
        env = {
            "DATABASE_URL": migrated_dsn,
            "JOBWARDEN_DLQ_RETRY_URL": endpoint.retry_url,
            "JOBWARDEN_DLQ_LEASE": "1s",
            "JOBWARDEN_LOG_LEVEL": "warning",
        }
        conn = await asyncpg.connect(migrated_dsn)
        try:
            ids = await insert_dlq_entries(conn, 150)
            async with daemon(env, state_dir) as first:
                await first.notify.expect("READY", "1")
                await endpoint.wait_for_requests(8, timeout=15)  # its 8 slots are busy
                first.proc.kill()
                await first.proc.wait()
            endpoint.gate.set()
            held = await conn.fetchval(
                "SELECT count(*) FROM dead_letter_queue WHERE status = 'PROCESSING'"
            )
            async with daemon(env, state_dir) as second:
                await second.notify.expect("READY", "1")
                await endpoint.wait_until(
                    lambda: len({m.json["dlqId"] for m in endpoint.messages}) == 150, timeout=30
                )
                code, _ = await second.terminate()
            entries = [await dlq_entry(conn, i) for i in ids]
        finally:
            await conn.close()
    assert code == 0
    assert held == 128  # 8 running and 120 claimed ahead (16 x concurrency in all)
    assert all(e["status"] == "SUCCEEDED" for e in entries)
    taken_back = [e for e in entries if e["attempts"] == 2]
    assert len(taken_back) == 128
    for entry in taken_back:
        assert [h["outcome"] for h in dlq_history(entry)] == ["lease_expired", "succeeded"]
