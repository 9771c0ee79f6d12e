"""Runs reported over HTTP (pings and batches), in-process, on a real database."""

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from jobwarden.context import AppContext
from jobwarden.db.pg import Conn
from tests.integration.api_client import client_for
from tests.integration.conftest import app_context

TOKEN = "a-long-enough-api-token-0123456789"


async def stored_runs(conn: Conn) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT job_id, run_id, outcome, started_at, finished_at, duration_ms, error, metadata,"
        " source FROM jobwarden.runs ORDER BY id"
    )
    return [dict(r) for r in rows]  # the pool decodes jsonb


async def open_starts(conn: Conn) -> list[tuple[str, str]]:
    rows = await conn.fetch("SELECT job_id, run_key FROM jobwarden.run_starts ORDER BY 1, 2")
    return [(r["job_id"], r["run_key"]) for r in rows]


async def answer(resp: Any, status: int) -> Any:
    body = await resp.json()
    assert resp.status == status, body
    return body


async def test_a_start_and_its_success_make_one_run_with_its_duration(ctx: AppContext) -> None:
    async with ctx.db.connection() as conn, client_for(ctx) as client:
        started = await answer(await client.post("/api/jobs/nightly-report/start"), 200)
        # Pretend the run took 1.5 s: move its start back (the clock is the database's).
        await conn.execute(
            "UPDATE jobwarden.run_starts SET started_at = started_at - interval '1.5 s'"
        )
        ended = await answer(await client.post("/api/jobs/nightly-report/success"), 200)
        runs = await stored_runs(conn)
        starts = await open_starts(conn)
    assert started["jobId"] == "nightly-report"
    assert started["rid"] is None
    assert ended["status"] == "success"
    assert 1500 <= ended["durationMs"] < 3000
    [run] = runs
    assert run["outcome"] == "success"
    assert run["source"] == "ping"
    assert run["duration_ms"] == ended["durationMs"]
    assert run["started_at"] < run["finished_at"]
    assert starts == []


async def test_overlapping_runs_pair_by_rid(ctx: AppContext) -> None:
    async with ctx.db.connection() as conn, client_for(ctx) as client:
        for rid in ("a", "b"):
            await answer(await client.post(f"/api/jobs/sync/start?rid={rid}"), 200)
        await conn.execute(
            "UPDATE jobwarden.run_starts SET started_at = started_at - interval '10 minutes'"
            " WHERE run_key = 'a'"
        )
        b = await answer(await client.post("/api/jobs/sync/fail?rid=b", data=b"boom"), 200)
        a = await answer(await client.post("/api/jobs/sync/success?rid=a"), 200)
        runs = await stored_runs(conn)
    assert b["durationMs"] < 60_000
    assert a["durationMs"] >= 600_000
    assert [(r["run_id"], r["outcome"], r["error"]) for r in runs] == [
        ("b", "failure", "boom"),
        ("a", "success", None),
    ]


async def test_a_second_start_without_rid_replaces_the_first(ctx: AppContext) -> None:
    async with ctx.db.connection() as conn, client_for(ctx) as client:
        await answer(await client.post("/api/jobs/cron-1/start"), 200)
        await conn.execute("UPDATE jobwarden.run_starts SET started_at = now() - interval '1 h'")
        await answer(await client.post("/api/jobs/cron-1/start"), 200)
        ended = await answer(await client.post("/api/jobs/cron-1/success"), 200)
        starts = await open_starts(conn)
    assert ended["durationMs"] < 60_000  # from the second start, not the first
    assert starts == []


async def test_an_end_without_a_start(ctx: AppContext) -> None:
    async with ctx.db.connection() as conn, client_for(ctx) as client:
        unknown = await answer(await client.post("/api/jobs/backup/success"), 200)
        given = await answer(await client.post("/api/jobs/backup/fail?duration_ms=4200"), 200)
        runs = await stored_runs(conn)
    assert unknown["durationMs"] is None
    assert unknown["startedAt"] is None
    assert given["durationMs"] == 4200
    assert runs[0]["duration_ms"] is None
    assert runs[0]["started_at"] is None
    assert runs[1]["finished_at"] - runs[1]["started_at"] == timedelta(milliseconds=4200)


async def test_a_batch_is_recorded_whole(ctx: AppContext) -> None:
    batch = [
        {"jobId": "etl", "status": "success", "durationMs": 1200},
        {
            "jobId": "etl",
            "status": "failure",
            "durationMs": 80,
            "startedAt": "2026-11-26T10:00:00Z",
            "error": "disk full",
            "metadata": {"host": "worker-3"},
        },
    ]
    async with ctx.db.connection() as conn, client_for(ctx) as client:
        body = await answer(await client.post("/api/executions", json=batch), 201)
        single = {"jobId": "etl", "status": "success", "durationMs": 5}
        await answer(await client.post("/api/executions", json=single), 201)
        runs = await stored_runs(conn)
    assert body == {"recorded": 2}
    assert [r["outcome"] for r in runs] == ["success", "failure", "success"]
    failed = runs[1]
    assert failed["started_at"] == datetime(2026, 11, 26, 10, tzinfo=UTC)
    assert failed["finished_at"] == datetime(2026, 11, 26, 10, 0, 0, 80_000, tzinfo=UTC)
    assert failed["error"] == "disk full"
    assert failed["metadata"] == {"host": "worker-3"}
    assert all(r["source"] == "batch" for r in runs)


GOOD = {"jobId": "etl", "status": "success", "durationMs": 10}


def nested(depth: int) -> Any:
    return 1 if depth == 0 else [nested(depth - 1)]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**GOOD, "status": "done"}, "status"),
        ({**GOOD, "durationMs": -1}, "durationMs"),
        ({**GOOD, "durationMs": 1.5}, "durationMs"),
        ({**GOOD, "durationMs": "10"}, "durationMs"),
        ({**GOOD, "durationMs": True}, "durationMs"),
        ({**GOOD, "durationMs": 2**31}, "durationMs"),
        ({**GOOD, "jobId": "-leading-dash"}, "jobId"),
        ({**GOOD, "jobId": "has space"}, "jobId"),
        ({**GOOD, "jobId": "x" * 129}, "jobId"),
        ({**GOOD, "startedAt": "yesterday"}, "startedAt"),
        ({**GOOD, "finishedAt": "9999-12-31T23:00:00Z"}, "finishedAt"),  # the future
        ({**GOOD, "finishedAt": "0001-01-01T00:00:00Z"}, "finishedAt"),
        ({**GOOD, "startedAt": "0001-01-01T00:30:00+01:00"}, "startedAt"),
        ({**GOOD, "metadata": {"deep": nested(40)}}, "metadata"),
        ({**GOOD, "metadata": {"k": "nul\x00"}}, "metadata"),
        ({**GOOD, "metadata": [1]}, "metadata"),
        ({**GOOD, "error": 3}, "error"),
        ({**GOOD, "duration": 3}, "duration"),
        ({"jobId": "etl", "status": "success"}, "durationMs"),
        ([GOOD, {**GOOD, "status": "nope"}], "[1].status"),
        ([], "body"),
        ([GOOD] * 1001, "body"),
        ("a string", "body"),
    ],
)
async def test_bad_batches_name_the_field_and_write_nothing(
    ctx: AppContext, body: Any, field: str
) -> None:
    async with ctx.db.connection() as conn, client_for(ctx) as client:
        error = await answer(await client.post("/api/executions", json=body), 400)
        runs = await stored_runs(conn)
    assert error["field"] == field
    assert field.split(".")[-1] in error["error"]
    assert runs == []


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"jobId": "a", "status": "success", "durationMs": 1, "metadata": {"x": NaN}}',
         "metadata"),
        (b'{"jobId": "a", "status": "success", "durationMs": 1, "metadata": {"x": "\\ud800"}}',
         "metadata"),
        (b"[" * 100_000 + b"]" * 100_000, "body"),  # nested deeper than Python parses
    ],
)  # fmt: skip
async def test_json_postgresql_would_refuse_is_a_400(
    ctx: AppContext, raw: bytes, field: str
) -> None:
    async with ctx.db.connection() as conn, client_for(ctx) as client:
        error = await answer(await client.post("/api/executions", data=raw), 400)
        runs = await stored_runs(conn)
    assert error["field"] == field
    assert runs == []


async def test_unusual_text_is_kept_not_refused(ctx: AppContext) -> None:
    """A lone surrogate in an error becomes a replacement character; text that merely
    looks like an escaped NUL is kept as it is."""
    body = (
        b'{"jobId": "a", "status": "failure", "durationMs": 1, "error": "bad \\ud800 byte",'
        b' "metadata": {"k": "a\\\\u0000"}}'
    )
    async with ctx.db.connection() as conn, client_for(ctx) as client:
        await answer(await client.post("/api/executions", data=body), 201)
        [run] = await stored_runs(conn)
    assert run["error"] == "bad ? byte"
    assert run["metadata"] == {"k": "a\\u0000"}


async def test_bad_json_and_oversized_bodies(ctx: AppContext) -> None:
    async with ctx.db.connection() as conn, client_for(ctx) as client:
        not_json = await answer(await client.post("/api/executions", data=b"{nope"), 400)
        huge = json.dumps([{**GOOD, "error": "x" * 10_000}] * 500).encode()  # over 4 MiB
        too_large = await answer(await client.post("/api/executions", data=huge), 400)
        long_fail = await answer(await client.post("/api/jobs/a/fail", data=b"e" * 10241), 400)
        runs = await stored_runs(conn)
    assert not_json["field"] == "body"
    assert "JSON" in not_json["error"]
    assert too_large["field"] == "body"
    assert long_fail["field"] == "body"
    assert runs == []


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/jobs/bad%20job/start", "jobId"),
        ("/api/jobs/ok/success?duration_ms=-5", "duration_ms"),
        ("/api/jobs/ok/success?duration_ms=1.5", "duration_ms"),
        ("/api/jobs/ok/success?duration_ms=%C2%B2", "duration_ms"),  # a superscript two
        ("/api/jobs/ok/success?duration_ms=" + "9" * 5000, "duration_ms"),
        ("/api/jobs/ok/start?rid=has%20space", "rid"),
    ],
)
async def test_bad_pings_name_the_field(ctx: AppContext, path: str, field: str) -> None:
    async with ctx.db.connection() as conn, client_for(ctx) as client:
        error = await answer(await client.post(path), 400)
        runs, starts = await stored_runs(conn), await open_starts(conn)
    assert error["field"] == field
    assert runs == []
    assert starts == []


async def test_writes_need_the_token_when_one_is_set(migrated_dsn: str) -> None:
    async with (
        app_context(migrated_dsn, JOBWARDEN_API_TOKEN=TOKEN) as ctx,
        client_for(ctx) as client,
        ctx.db.connection() as conn,
    ):
        refused = [
            (await client.post("/api/jobs/a/start")).status,
            (await client.post("/api/jobs/a/success")).status,
            (await client.post("/api/executions", json=GOOD)).status,
        ]
        before = await stored_runs(conn)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        accepted = (await client.post("/api/executions", json=GOOD, headers=auth)).status
        after = await stored_runs(conn)
    assert refused == [401, 401, 401]
    assert before == []
    assert accepted == 201
    assert len(after) == 1


async def test_a_ping_is_answered_after_its_commit(ctx: AppContext, migrated_dsn: str) -> None:
    """Another session sees the run as soon as the answer arrives."""
    other = await asyncpg.connect(migrated_dsn)
    try:
        async with client_for(ctx) as client:
            for n in range(20):
                await answer(await client.post(f"/api/jobs/j{n}/fail", data=b"x"), 200)
                seen = await other.fetchval(
                    "SELECT count(*) FROM jobwarden.runs WHERE job_id = $1", f"j{n}"
                )
                assert seen == 1
    finally:
        await other.close()


async def test_the_app_may_insert_runs_by_sql(ctx: AppContext) -> None:
    """The statement the README documents; the table holds it to the same rules."""
    async with ctx.db.connection() as conn:
        await conn.execute(
            "INSERT INTO jobwarden.runs (job_id, outcome, started_at, finished_at, duration_ms)"
            " VALUES ('invoices', 'success', now() - interval '2 s', now(), 2000)"
        )
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO jobwarden.runs (job_id, outcome, finished_at, duration_ms)"
                " VALUES ('invoices', 'success', now(), -1)"
            )
        with pytest.raises(asyncpg.CheckViolationError):  # would hold a job due for ever
            await conn.execute(
                "INSERT INTO jobwarden.runs (job_id, outcome, finished_at)"
                " VALUES ('invoices', 'success', 'infinity')"
            )
        runs = await stored_runs(conn)
        queued = await conn.fetchval("SELECT count(*) FROM jobwarden.run_inbox")
    assert [(r["job_id"], r["source"]) for r in runs] == [("invoices", "sql")]
    assert queued == 1  # waiting to be added to job_metrics


async def test_concurrent_pings_each_make_one_run(ctx: AppContext) -> None:
    async with ctx.db.connection() as conn, client_for(ctx) as client:
        answers = await asyncio.gather(
            *(client.post(f"/api/jobs/fan/success?rid=r{n}") for n in range(50))
        )
        runs = await stored_runs(conn)
    assert {a.status for a in answers} == {200}
    assert sorted(r["run_id"] for r in runs) == sorted(f"r{n}" for n in range(50))
