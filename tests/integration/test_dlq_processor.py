"""The DLQ processor against a real PostgreSQL and a local retry endpoint.

Entries are written as the web app writes them (plain SQL, only the required
columns). Passes are driven with `run_once(now)`, the clock as a parameter; the
service loops run only where replicas, wake-ups or shutdown are the point, and
the tests then wait on the endpoint's requests, never on time.
"""

import asyncio
import math
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from jobwarden.context import AppContext
from jobwarden.db.listener import Listener
from jobwarden.dlq import Entry, PermanentFailure, queue
from jobwarden.dlq.handlers import HandlerFunction, Router, load_entry_points
from jobwarden.dlq.processor import DlqProcessor
from jobwarden.dsn import parse_database_url
from tests.integration.conftest import app_context
from tests.integration.fakes.retry_endpoint import RetryEndpointFake
from tests.integration.webapp import dlq_entry, dlq_history, insert_dlq_entries, insert_dlq_entry

TOKEN = "retry-token-0123456789"


@asynccontextmanager
async def processor(
    dsn: str,
    endpoint: RetryEndpointFake | None,
    *,
    functions: Mapping[str, HandlerFunction] | None = None,
    owner: str | None = None,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[tuple[AppContext, DlqProcessor]]:
    settings = {
        "JOBWARDEN_DLQ_RETRY_URL": endpoint.retry_url if endpoint else "",
        "JOBWARDEN_DLQ_RETRY_TOKEN": TOKEN,
        "JOBWARDEN_DLQ_BACKOFF_BASE": "10s",
        "JOBWARDEN_DLQ_BACKOFF_CAP": "1m",
        "JOBWARDEN_DLQ_MAX_ATTEMPTS": "3",
        **(env or {}),
    }
    async with app_context(dsn, **settings) as ctx:
        router = Router.from_settings(ctx.settings, ctx.http, functions or {})
        yield ctx, DlqProcessor(ctx, router, owner=owner)


def soon() -> datetime:
    """A moment just after every entry inserted so far is due."""
    return datetime.now(UTC) + timedelta(seconds=1)


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_entry_written_by_the_app_is_retried_once_and_succeeds(migrated_dsn: str) -> None:
    async with (
        RetryEndpointFake(token=TOKEN) as endpoint,
        processor(migrated_dsn, endpoint) as (ctx, dlq),
    ):
        async with ctx.db.connection() as conn:
            entry_id = await insert_dlq_entry(
                conn,
                "send-invoice",
                event_data={"invoiceId": 7},
                error="SMTP 421",
                metadata={"source": "stripe", "tenant": 3},
            )
            before = await dlq_entry(conn, entry_id)
        result = await dlq.run_once(soon())
        async with ctx.db.connection() as conn:
            after = await dlq_entry(conn, entry_id)
            schedules = await conn.fetchval("SELECT count(*) FROM jobwarden.dlq_schedule")
    assert result.claimed == 1
    assert result.succeeded == 1
    [request] = endpoint.requests
    assert request.path.startswith("/jobs/send-invoice/retry?key=")
    assert request.json == {
        "dlqId": entry_id,
        "jobId": "send-invoice",
        "attempt": 1,
        "eventData": {"invoiceId": 7},
        "error": "SMTP 421",
    }
    assert request.headers["idempotency-key"] == entry_id
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert after["status"] == "SUCCEEDED"
    assert after["attempts"] == 1
    assert after["processedAt"] is not None
    assert after["lastAttemptAt"] is not None
    assert after["updatedAt"] > before["updatedAt"]
    assert after["error"] == "SMTP 421"  # the app's original error is kept
    assert after["metadata"]["source"] == "stripe"
    assert after["metadata"]["tenant"] == 3
    [attempt] = dlq_history(after)
    assert attempt["outcome"] == "succeeded"
    assert attempt["status"] == 200
    assert attempt["attempt"] == 1
    assert attempt["handler"] == "http"
    assert set(attempt) >= {"startedAt", "durationMs", "error"}
    assert schedules == 0  # nothing is kept of a SUCCEEDED entry but its row


async def test_backoff_schedule_is_honoured_with_bounded_jitter(migrated_dsn: str) -> None:
    """base 10s, factor 2, cap 30s, 4 attempts: waits of 10, 20, 30 (capped) seconds,
    each between 80 % and 100 % of that; never tried before it is due; then FAILED."""
    env = {"JOBWARDEN_DLQ_BACKOFF_CAP": "30s", "JOBWARDEN_DLQ_MAX_ATTEMPTS": "4"}
    async with (
        RetryEndpointFake(status=503) as endpoint,
        processor(migrated_dsn, endpoint, env=env) as (ctx, dlq),
    ):
        async with ctx.db.connection() as conn:
            entry_id = await insert_dlq_entry(conn)
        now = soon()
        waits = []
        for expected in (10, 20, 30):
            assert (await dlq.run_once(now)).claimed == 1
            async with ctx.db.connection() as conn:
                entry = await dlq_entry(conn, entry_id)
            assert entry["status"] == "PENDING"
            retry_at = parse_iso(dlq_history(entry)[-1]["retryAt"])
            wait = (retry_at - now).total_seconds()
            assert 0.8 * expected - 0.01 <= wait <= expected + 0.01
            waits.append(wait)
            # Not a moment before it is due.
            assert (await dlq.run_once(retry_at - timedelta(milliseconds=5))).claimed == 0
            now = retry_at
        assert (await dlq.run_once(now)).claimed == 1
        async with ctx.db.connection() as conn:
            entry = await dlq_entry(conn, entry_id)
    assert len(endpoint.requests) == 4
    assert [b["attempt"] for b in endpoint.bodies()] == [1, 2, 3, 4]
    assert entry["status"] == "FAILED"
    assert entry["attempts"] == 4
    assert entry["processedAt"] is not None
    history = dlq_history(entry)
    assert [h["outcome"] for h in history] == ["retry", "retry", "retry", "exhausted"]
    assert all(h["status"] == 503 for h in history)


async def test_retry_after_longer_than_the_backoff_wins(migrated_dsn: str) -> None:
    async with RetryEndpointFake() as endpoint:
        endpoint.fail_next(2, status=429, headers={"Retry-After": "600"})
        async with processor(migrated_dsn, endpoint) as (ctx, dlq):
            async with ctx.db.connection() as conn:
                entry_id = await insert_dlq_entry(conn)
            now = soon()
            await dlq.run_once(now)
            async with ctx.db.connection() as conn:
                entry = await dlq_entry(conn, entry_id)
    retry_at = parse_iso(dlq_history(entry)[-1]["retryAt"])
    assert (retry_at - now).total_seconds() == pytest.approx(600, abs=1)


@pytest.mark.parametrize(
    ("status", "final"),
    [(400, "FAILED"), (404, "FAILED"), (410, "FAILED"), (302, "FAILED"), (408, "PENDING"),
     (429, "PENDING"), (500, "PENDING"), (503, "PENDING")],
)  # fmt: skip
async def test_permanent_and_transient_answers(migrated_dsn: str, status: int, final: str) -> None:
    async with RetryEndpointFake() as endpoint:
        endpoint.fail_next(1, status=status, body=f"refused: reason {status}")
        async with processor(migrated_dsn, endpoint) as (ctx, dlq):
            async with ctx.db.connection() as conn:
                entry_id = await insert_dlq_entry(conn)
            await dlq.run_once(soon())
            async with ctx.db.connection() as conn:
                entry = await dlq_entry(conn, entry_id)
    assert entry["status"] == final
    [attempt] = dlq_history(entry)
    assert attempt["status"] == status
    assert f"refused: reason {status}" in attempt["error"]
    assert attempt["outcome"] == ("failed" if final == "FAILED" else "retry")
    assert (entry["processedAt"] is not None) == (final == "FAILED")


async def test_no_answer_is_retried_and_never_shows_the_url(migrated_dsn: str) -> None:
    async with RetryEndpointFake() as endpoint:
        endpoint.hang_next(1)
        env = {"JOBWARDEN_DLQ_RETRY_TIMEOUT": "200ms"}
        async with processor(migrated_dsn, endpoint, env=env) as (ctx, dlq):
            async with ctx.db.connection() as conn:
                timed_out = await insert_dlq_entry(conn)
            await dlq.run_once(soon())
            await endpoint.close()  # nothing listens any more
            async with ctx.db.connection() as conn:
                refused = await insert_dlq_entry(conn)
            await dlq.run_once(soon())
            async with ctx.db.connection() as conn:
                entries = [await dlq_entry(conn, i) for i in (timed_out, refused)]
    for entry in entries:
        assert entry["status"] == "PENDING"
        assert entry["attempts"] == 1
        [attempt] = dlq_history(entry)
        assert attempt["outcome"] == "retry"
        assert attempt["status"] is None
        assert endpoint.key not in str(entry["metadata"])
    assert "TimeoutError" in dlq_history(entries[0])[0]["error"]
    assert "cannot connect" in dlq_history(entries[1])[0]["error"]


async def test_routes_override_the_default_url(migrated_dsn: str) -> None:
    async with (
        RetryEndpointFake(token=TOKEN) as endpoint,
        processor(migrated_dsn, endpoint) as (ctx, dlq),
    ):
        async with ctx.db.connection() as conn:
            await conn.execute(
                "INSERT INTO jobwarden.dlq_routes (job_id, url) VALUES ($1, $2)",
                "sync-crm",
                endpoint.route_url("crm-{jobId}"),
            )
            routed = await insert_dlq_entry(conn, "sync-crm")
            default = await insert_dlq_entry(conn, "send-invoice")
        await dlq.run_once(soon())
        async with ctx.db.connection() as conn:
            history = dlq_history(await dlq_entry(conn, routed))
    paths = {r.json["dlqId"]: r.path for r in endpoint.requests}
    assert paths[routed] == "/routes/crm-sync-crm"
    assert paths[default].startswith("/jobs/send-invoice/retry")
    assert history[-1]["handler"] == "route"


async def test_an_unrouted_job_waits_untouched_until_it_has_a_route(migrated_dsn: str) -> None:
    async with RetryEndpointFake() as endpoint, processor(migrated_dsn, None) as (ctx, dlq):
        async with ctx.db.connection() as conn:
            entry_id = await insert_dlq_entry(conn, "orphan-job")
        assert (await dlq.run_once(soon())).claimed == 0
        async with ctx.db.connection() as conn:
            waiting = await dlq_entry(conn, entry_id)
            await conn.execute(
                "INSERT INTO jobwarden.dlq_routes (job_id, url) VALUES ($1, $2)",
                "orphan-job",
                endpoint.route_url("orphan"),
            )
        assert (await dlq.run_once(soon())).succeeded == 1
    assert waiting["status"] == "PENDING"
    assert waiting["attempts"] == 0
    assert waiting["lastAttemptAt"] is None
    assert [r.path for r in endpoint.requests] == ["/routes/orphan"]


async def test_python_handlers(migrated_dsn: str) -> None:
    seen: list[Entry] = []

    async def works(entry: Entry) -> None:
        seen.append(entry)

    async def refuses(entry: Entry) -> None:
        raise PermanentFailure("customer account closed")

    async def flaky(entry: Entry) -> None:
        raise ConnectionResetError("upstream reset")

    functions = {"works": works, "refuses": refuses, "flaky": flaky}
    async with processor(migrated_dsn, None, functions=functions) as (ctx, dlq):
        async with ctx.db.connection() as conn:
            ids = {job: await insert_dlq_entry(conn, job) for job in functions}
        await dlq.run_once(soon())
        async with ctx.db.connection() as conn:
            entries = {job: await dlq_entry(conn, i) for job, i in ids.items()}
    assert [e.id for e in seen] == [ids["works"]]
    assert seen[0].event_data == {"invoiceId": 42}
    assert seen[0].attempt == 1
    assert entries["works"]["status"] == "SUCCEEDED"
    assert entries["refuses"]["status"] == "FAILED"
    assert "customer account closed" in dlq_history(entries["refuses"])[0]["error"]
    assert entries["flaky"]["status"] == "PENDING"
    assert "ConnectionResetError: upstream reset" in dlq_history(entries["flaky"])[0]["error"]
    assert {dlq_history(e)[0]["handler"] for e in entries.values()} == {"python"}


def test_python_handlers_are_found_through_entry_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed distribution declaring `jobwarden.dlq_handlers` entry points."""
    (tmp_path / "acme_handlers.py").write_text(
        "async def resend(entry):\n    return None\n\ndef not_async(entry):\n    return None\n"
    )
    info = tmp_path / "acme_handlers-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-handlers\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[jobwarden.dlq_handlers]\n"
        "send-invoice = acme_handlers:resend\n"
        "sync-crm = acme_handlers:not_async\n"
        "broken = acme_handlers_missing:handle\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    found = load_entry_points()
    assert set(found) == {"send-invoice"}  # the other two are logged and skipped
    assert found["send-invoice"].__name__ == "resend"
    monkeypatch.delitem(sys.modules, "acme_handlers", raising=False)


async def test_a_claim_never_takes_more_than_its_limit(migrated_dsn: str) -> None:
    async with processor(migrated_dsn, None) as (ctx, _), ctx.db.connection() as conn:
        await insert_dlq_entries(conn, 10)
        claimed = await queue.claim(
            conn,
            "someone",
            soon(),
            limit=3,
            lease=60,
            routing=queue.Routing(every_job=True),
            max_attempts=5,
        )
        counts = dict(await conn.fetch("SELECT status, count(*) FROM dead_letter_queue GROUP BY 1"))
    assert len(claimed) == 3
    assert counts == {"PROCESSING": 3, "PENDING": 7}


async def test_entries_of_a_daemon_that_died_are_taken_back_after_the_lease(
    migrated_dsn: str,
) -> None:
    """A dead daemon leaves its entries PROCESSING with attempts counted and a lease."""
    async with RetryEndpointFake() as endpoint:
        env = {"JOBWARDEN_DLQ_LEASE": "5s", "JOBWARDEN_DLQ_MAX_ATTEMPTS": "2"}
        async with processor(migrated_dsn, endpoint, env=env) as (ctx, dlq):
            async with ctx.db.connection() as conn:
                first_try = await insert_dlq_entry(conn)
                last_try = await insert_dlq_entry(conn)
                await conn.execute(
                    "UPDATE dead_letter_queue SET attempts = 1 WHERE id = $1", last_try
                )
                died_at = soon()
                await queue.claim(
                    conn,
                    "dead-host:4242:abcdef",
                    died_at,
                    limit=10,
                    lease=5,
                    routing=dlq.router.routing,
                    max_attempts=2,
                )
            before_lease = await dlq.run_once(died_at + timedelta(seconds=4))
            after_lease = await dlq.run_once(died_at + timedelta(seconds=6))
            async with ctx.db.connection() as conn:
                retried = await dlq_entry(conn, first_try)
                exhausted = await dlq_entry(conn, last_try)
    assert before_lease.claimed == 0
    assert before_lease.recovered == 0
    assert after_lease.recovered == 2
    assert [b["dlqId"] for b in endpoint.bodies()] == [first_try]
    assert retried["status"] == "SUCCEEDED"
    assert retried["attempts"] == 2
    assert [h["outcome"] for h in dlq_history(retried)] == ["lease_expired", "succeeded"]
    assert "dead-host:4242:abcdef" in dlq_history(retried)[0]["error"]
    assert exhausted["status"] == "FAILED"
    assert exhausted["attempts"] == 2
    assert exhausted["processedAt"] is not None
    assert [h["outcome"] for h in dlq_history(exhausted)] == ["exhausted"]


async def test_a_retry_whose_lease_is_taken_back_is_cancelled(migrated_dsn: str) -> None:
    """Never two at once: once another daemon took the entry back, the first one's
    retry is cancelled at its next renewal and writes nothing."""
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(entry: Entry) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    env = {"JOBWARDEN_DLQ_LEASE": "5s"}
    async with processor(migrated_dsn, None, functions={"slow": slow}, owner="a", env=env) as (
        ctx,
        first,
    ):
        async with ctx.db.connection() as conn:
            entry_id = await insert_dlq_entry(conn, "slow")
        run = asyncio.create_task(first.run_once(soon()))
        await asyncio.wait_for(started.wait(), 5)
        await first.renew()  # still its own: the retry goes on
        assert not cancelled.is_set()
        router = Router.from_settings(ctx.settings, ctx.http, {})  # no handler for "slow"
        second = DlqProcessor(ctx, router, owner="b")
        taken = await second.run_once(datetime.now(UTC) + timedelta(minutes=1))
        await first.renew()
        await asyncio.wait_for(cancelled.wait(), 5)
        await asyncio.wait_for(run, 5)
        async with ctx.db.connection() as conn:
            entry = await dlq_entry(conn, entry_id)
    assert taken.recovered == 1
    assert entry["status"] == "PENDING"
    assert entry["attempts"] == 1
    assert [h["outcome"] for h in dlq_history(entry)] == ["lease_expired"]


async def test_three_processors_share_one_table(migrated_dsn: str) -> None:
    """Every entry attempted once per attempt, never twice at once, all succeeding."""
    count = 60
    async with RetryEndpointFake() as endpoint:
        endpoint.answer = lambda body: 503 if body["attempt"] == 1 else 200
        env = {"JOBWARDEN_DLQ_BACKOFF_BASE": "100ms", "JOBWARDEN_DLQ_CONCURRENCY": "4"}
        async with (
            processor(migrated_dsn, endpoint, owner="p1", env=env) as (ctx, p1),
            processor(migrated_dsn, endpoint, owner="p2", env=env) as (_, p2),
            processor(migrated_dsn, endpoint, owner="p3", env=env) as (_, p3),
        ):
            async with ctx.db.connection() as conn:
                ids = await insert_dlq_entries(conn, count)
            for p in (p1, p2, p3):
                await p.start()
            try:
                await endpoint.wait_for(count, timeout=30)
            finally:
                await asyncio.gather(*(p.stop(grace=5) for p in (p1, p2, p3)))
            async with ctx.db.connection() as conn:
                rows = await conn.fetch(
                    "SELECT status, attempts, metadata FROM dead_letter_queue"
                    " WHERE id = ANY($1::text[])",
                    ids,
                )
    attempts: dict[str, list[int]] = {}
    for body in endpoint.bodies():
        attempts.setdefault(body["dlqId"], []).append(body["attempt"])
    assert attempts == {i: [1, 2] for i in ids}
    assert endpoint.overlaps == []
    assert all(r["status"] == "SUCCEEDED" and r["attempts"] == 2 for r in rows)
    owners = {h["by"] for r in rows for h in r["metadata"]["jobwarden"]["history"]}
    assert owners <= {"p1", "p2", "p3"}


async def test_stop_hands_back_what_was_claimed_but_not_started(migrated_dsn: str) -> None:
    async with RetryEndpointFake() as endpoint:
        endpoint.gate = asyncio.Event()
        env = {"JOBWARDEN_DLQ_CONCURRENCY": "1"}
        async with processor(migrated_dsn, endpoint, env=env) as (ctx, dlq):
            async with ctx.db.connection() as conn:
                ids = await insert_dlq_entries(conn, 3)
            await dlq.start()
            [in_flight] = await endpoint.wait_for_requests(1)
            assert dlq.state.running == 1
            assert dlq.state.waiting == 2  # claimed ahead, in a batch
            stopping = asyncio.create_task(dlq.stop(grace=10))
            endpoint.gate.set()  # the retry in flight finishes within the grace period
            await asyncio.wait_for(stopping, 15)
            async with ctx.db.connection() as conn:
                entries = {i: await dlq_entry(conn, i) for i in ids}
    finished = in_flight.json["dlqId"]
    assert entries[finished]["status"] == "SUCCEEDED"
    assert len(endpoint.requests) == 1
    for entry_id, entry in entries.items():
        if entry_id != finished:
            assert entry["status"] == "PENDING"
            assert entry["attempts"] == 0
            assert dlq_history(entry) == []


async def test_a_retry_still_running_after_the_grace_period_is_handed_back(
    migrated_dsn: str,
) -> None:
    async with RetryEndpointFake() as endpoint:
        endpoint.gate = asyncio.Event()  # never opened
        async with processor(migrated_dsn, endpoint) as (ctx, dlq):
            async with ctx.db.connection() as conn:
                entry_id = await insert_dlq_entry(conn)
            await dlq.start()
            await endpoint.wait_for_requests(1)
            await dlq.stop(grace=0.2)
            async with ctx.db.connection() as conn:
                entry = await dlq_entry(conn, entry_id)
            endpoint.gate.set()
    assert entry["status"] == "PENDING"
    assert entry["attempts"] == 0  # a stop is not the retry's failure
    [attempt] = dlq_history(entry)
    assert attempt["outcome"] == "interrupted"
    assert "interrupted" in attempt["error"]


async def test_new_entries_wake_a_listening_processor(migrated_dsn: str) -> None:
    async with RetryEndpointFake() as endpoint, processor(migrated_dsn, endpoint) as (ctx, dlq):
        listener = Listener(parse_database_url(migrated_dsn))
        listener.subscribe(queue.NOTIFY_CHANNEL, dlq.wake)
        stop = asyncio.Event()
        listening = asyncio.create_task(listener.run(stop))
        await dlq.start()
        try:
            async with ctx.db.connection() as conn:
                entry_id = await insert_dlq_entry(conn)
            [request] = await endpoint.wait_for(1)
        finally:
            await dlq.stop(grace=5)
            stop.set()
            await listening
    assert request.json["dlqId"] == entry_id


async def test_the_apps_insert_never_fails_because_of_jobwarden(migrated_dsn: str) -> None:
    """A trigger that breaks is a warning; the entry is still found and retried."""
    async with RetryEndpointFake() as endpoint, processor(migrated_dsn, endpoint) as (ctx, dlq):
        async with ctx.db.connection() as conn:
            await conn.execute(
                "ALTER TABLE jobwarden.dlq_schedule ADD CONSTRAINT broken"
                " CHECK (job_id <> 'send-invoice')"
            )
            warnings: list[str] = []

            def collect(_conn: object, message: object) -> None:
                warnings.append(str(message))

            conn.add_log_listener(collect)
            entry_id = await insert_dlq_entry(conn)  # does not raise
            conn.remove_log_listener(collect)
            scheduled = await conn.fetchval(
                "SELECT count(*) FROM jobwarden.dlq_schedule WHERE dlq_id = $1", entry_id
            )
            await conn.execute("ALTER TABLE jobwarden.dlq_schedule DROP CONSTRAINT broken")
        result = await dlq.run_once(soon())
    assert scheduled == 0
    assert any("not scheduled" in w for w in warnings)
    assert result.discovered == 1
    assert result.succeeded == 1


async def test_metadata_the_app_shaped_otherwise_is_left_alone(migrated_dsn: str) -> None:
    """Not an object, or a "jobwarden" key of the app's own: no history, nothing changed."""
    async with (
        RetryEndpointFake() as endpoint,
        processor(migrated_dsn, endpoint) as (ctx, dlq),
    ):
        async with ctx.db.connection() as conn:
            listed = await insert_dlq_entry(conn)
            await conn.execute(
                "UPDATE dead_letter_queue SET metadata = '[1, 2]'::jsonb WHERE id = $1", listed
            )
            foreign = await insert_dlq_entry(conn, metadata={"jobwarden": "not ours", "a": 1})
        await dlq.run_once(soon())
        async with ctx.db.connection() as conn:
            entries = [await dlq_entry(conn, i) for i in (listed, foreign)]
    assert [e["status"] for e in entries] == ["SUCCEEDED", "SUCCEEDED"]
    assert entries[0]["metadata"] == [1, 2]
    assert entries[1]["metadata"] == {"jobwarden": "not ours", "a": 1}


async def test_history_keeps_the_latest_twenty(migrated_dsn: str) -> None:
    async with processor(migrated_dsn, None) as (ctx, _), ctx.db.connection() as conn:
        entries: list[dict[str, Any]] = [{"attempt": n} for n in range(1, 26)]
        merged = await conn.fetchval(
            "SELECT jobwarden.dlq_history('{\"app\": true}'::jsonb, $1::jsonb)", entries
        )
    assert merged["app"] is True
    assert [h["attempt"] for h in merged["jobwarden"]["history"]] == list(range(6, 26))


async def test_a_lease_shorter_than_the_retry_is_renewed(migrated_dsn: str) -> None:
    """Lease 1s, a retry that takes 2.5s: another daemon looking all along never takes
    the entry back, and it succeeds once."""
    started, done = asyncio.Event(), asyncio.Event()

    async def slow(entry: Entry) -> None:
        started.set()
        await asyncio.sleep(2.5)  # the handler's own work, not the test waiting
        done.set()

    env = {"JOBWARDEN_DLQ_LEASE": "1s"}
    async with (
        processor(migrated_dsn, None, functions={"slow": slow}, owner="a", env=env) as (ctx, a),
        processor(migrated_dsn, None, functions={"slow": slow}, owner="b", env=env) as (_, b),
    ):
        async with ctx.db.connection() as conn:
            entry_id = await insert_dlq_entry(conn, "slow")
        await a.start()
        await asyncio.wait_for(started.wait(), 10)
        await b.start()  # looks every second: it would take back an expired lease
        await asyncio.wait_for(done.wait(), 10)
        await a.stop(grace=5)
        await b.stop(grace=5)
        async with ctx.db.connection() as conn:
            entry = await dlq_entry(conn, entry_id)
    assert entry["status"] == "SUCCEEDED"
    assert entry["attempts"] == 1
    assert [h["outcome"] for h in dlq_history(entry)] == ["succeeded"]


async def test_what_the_endpoint_echoes_of_its_secrets_is_hidden(migrated_dsn: str) -> None:
    async with (
        RetryEndpointFake(token=TOKEN) as endpoint,
        processor(migrated_dsn, endpoint) as (ctx, dlq),
    ):
        endpoint.fail_next(
            1, status=400, body=f"bad api key {endpoint.key} for Authorization: Bearer {TOKEN}"
        )
        async with ctx.db.connection() as conn:
            entry_id = await insert_dlq_entry(conn)
        await dlq.run_once(soon())
        async with ctx.db.connection() as conn:
            entry = await dlq_entry(conn, entry_id)
    [attempt] = dlq_history(entry)
    assert attempt["error"] == "HTTP 400: bad api key *** for Authorization: Bearer ***"


async def test_entries_with_no_attempt_left_fail_instead_of_waiting(migrated_dsn: str) -> None:
    """JOBWARDEN_DLQ_MAX_ATTEMPTS lowered below what an entry already used."""
    async with RetryEndpointFake() as endpoint:
        env = {"JOBWARDEN_DLQ_MAX_ATTEMPTS": "3"}
        async with processor(migrated_dsn, endpoint, env=env) as (ctx, dlq):
            async with ctx.db.connection() as conn:
                entry_id = await insert_dlq_entry(conn)
                await conn.execute(
                    "UPDATE dead_letter_queue SET attempts = 3 WHERE id = $1", entry_id
                )
                due = await queue.next_due(conn, dlq.router.routing, 3)
            result = await dlq.run_once(soon())
            async with ctx.db.connection() as conn:
                entry = await dlq_entry(conn, entry_id)
                exhausted = await conn.fetchval(
                    "SELECT exhausted_at IS NOT NULL FROM jobwarden.dlq_schedule WHERE dlq_id = $1",
                    entry_id,
                )
    assert due is None  # nothing the claim would take: the loop does not spin
    assert result.claimed == 0
    assert endpoint.requests == []
    assert entry["status"] == "FAILED"
    assert entry["processedAt"] is not None
    assert [h["outcome"] for h in dlq_history(entry)] == ["exhausted"]
    assert exhausted  # raises dlq_exhausted


async def test_a_claim_taken_back_and_claimed_again_by_the_same_daemon(migrated_dsn: str) -> None:
    """The old claim's retry is cancelled, and nothing written about it lands on the new
    claim while that one runs."""
    calls: list[int] = []
    started = {1: asyncio.Event(), 2: asyncio.Event()}
    first_cancelled, finish_second = asyncio.Event(), asyncio.Event()

    async def handler(entry: Entry) -> None:
        calls.append(entry.attempt)
        started[entry.attempt].set()
        if entry.attempt == 2:
            await finish_second.wait()
            return
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            first_cancelled.set()
            raise

    env = {"JOBWARDEN_DLQ_LEASE": "5s"}
    async with processor(migrated_dsn, None, functions={"job": handler}, env=env) as (ctx, dlq):
        async with ctx.db.connection() as conn:
            entry_id = await insert_dlq_entry(conn, "job")
        first = asyncio.create_task(dlq.run_once(soon()))
        await asyncio.wait_for(started[1].wait(), 5)
        # Its lease expired unrenewed: this very daemon takes it back and claims it again.
        second = asyncio.create_task(dlq.run_once(datetime.now(UTC) + timedelta(minutes=1)))
        await asyncio.wait_for(started[2].wait(), 5)
        await asyncio.wait_for(first_cancelled.wait(), 5)
        async with ctx.db.connection() as conn:
            late = queue.Finished(entry_id, 1, "SUCCEEDED", {"outcome": "late"})
            written = await queue.record(conn, dlq.owner, [late], datetime.now(UTC))
            kept = await queue.renew(conn, dlq.owner, [(entry_id, 1)], datetime.now(UTC), 5)
            during = await dlq_entry(conn, entry_id)
        finish_second.set()
        again = await asyncio.wait_for(second, 5)
        await asyncio.wait_for(first, 5)
        async with ctx.db.connection() as conn:
            entry = await dlq_entry(conn, entry_id)
    assert written == 0  # fenced off: the first claim is dead
    assert kept == set()
    assert during["status"] == "PROCESSING"
    assert during["attempts"] == 2
    assert calls == [1, 2]
    assert again.recovered == 1
    assert again.succeeded == 1
    assert entry["status"] == "SUCCEEDED"
    assert entry["attempts"] == 2
    assert [h["outcome"] for h in dlq_history(entry)] == ["lease_expired", "succeeded"]


async def test_a_written_outcome_is_counted(migrated_dsn: str) -> None:
    async with processor(migrated_dsn, None) as (ctx, dlq), ctx.db.connection() as conn:
        entry_id = await insert_dlq_entry(conn)
        [claimed] = await queue.claim(
            conn, dlq.owner, soon(), limit=1, lease=60, routing=queue.Routing(True),
            max_attempts=5,
        )  # fmt: skip
        written = await queue.record(
            conn,
            dlq.owner,
            [queue.Finished(entry_id, claimed.entry.attempt, "SUCCEEDED", {"outcome": "ok"})],
            soon(),
        )
    assert written == 1


async def test_slow_retries_claim_no_further_ahead_than_they_run(migrated_dsn: str) -> None:
    """Claimed entries wait behind slow retries only one round, where another daemon
    could be running them."""
    release, both_running = asyncio.Event(), asyncio.Event()
    started = 0

    async def slow(entry: Entry) -> None:
        nonlocal started
        started += 1
        if started == 2:
            both_running.set()
        await release.wait()

    env = {"JOBWARDEN_DLQ_CONCURRENCY": "2"}
    async with processor(migrated_dsn, None, functions={"slow": slow}, env=env) as (ctx, dlq):
        async with ctx.db.connection() as conn:
            await insert_dlq_entries(conn, 40, job_id="slow")
        dlq._typical_seconds = 5.0  # as after a few retries of five seconds
        await dlq.start()
        try:
            await asyncio.wait_for(both_running.wait(), 5)
            async with ctx.db.connection() as conn:
                held = await conn.fetchval(
                    "SELECT count(*) FROM dead_letter_queue WHERE status = 'PROCESSING'"
                )
        finally:
            release.set()
            await dlq.stop(grace=5)
    assert held == 4  # two running, two waiting: not sixteen


async def test_retries_whose_lease_is_lost_before_they_start_free_their_slots(
    migrated_dsn: str,
) -> None:
    """A retry cancelled before its task ever ran (its lease lost the moment it was
    started) gives its slot back: the daemon goes on retrying with all its slots."""
    tried: list[str] = []

    async def handle(entry: Entry) -> None:
        tried.append(entry.id)

    env = {"JOBWARDEN_DLQ_CONCURRENCY": "2", "JOBWARDEN_DLQ_LEASE": "1s"}
    async with processor(migrated_dsn, None, functions={"job": handle}, env=env) as (ctx, dlq):
        async with ctx.db.connection() as conn:
            await insert_dlq_entries(conn, 2, job_id="job")
            runs = await dlq._claim(conn, soon, limit=2)  # their tasks made, not yet run
            dlq._renewed_at = -math.inf  # as after renewals failed for the whole lease
            dlq._check_deadline()  # no await since: cancelled before their first step
        await asyncio.gather(*(r.task for r in runs if r.task), return_exceptions=True)
        state = (dlq.state.running, dlq.state.waiting)
        # Their leases expire; the same daemon takes them back and retries them.
        later = datetime.now(UTC) + timedelta(seconds=5)
        result = await dlq.run_once(later)
    assert state == (0, 0)
    assert len(set(tried)) == 2
    assert result.recovered == 2
    assert result.succeeded == 2
