"""`/api/jobs`, `/api/health/jobs` and `/api/metrics` in-process, on a real database."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from jobwarden.api.health import stalled_for
from jobwarden.api.server import make_app
from jobwarden.context import AppContext
from jobwarden.monitoring import baselines, evaluation
from jobwarden.monitoring.evaluation import EVALUATION_JOB
from jobwarden.runtime.scheduler import JobScheduler, PeriodicJob, heartbeat_job
from tests.integration.conftest import app_context
from tests.integration.webapp import record_run, record_runs

TOKEN = "a-long-enough-api-token-0123456789"


@asynccontextmanager
async def client_for(
    ctx: AppContext, scheduler: JobScheduler | None = None
) -> AsyncIterator[TestClient[Any, Any]]:
    client = TestClient(TestServer(make_app(ctx, scheduler or JobScheduler(ctx))))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def test_health_jobs_reports_each_job_and_turns_503_when_one_fails(
    ctx: AppContext,
) -> None:
    now = datetime.now(UTC)
    async with ctx.db.connection() as conn, client_for(ctx) as client:
        await record_run(conn, "emails", now - timedelta(seconds=5))
        await record_run(conn, "billing", now - timedelta(seconds=5))
        await evaluation.run_once(ctx, now - timedelta(seconds=4))
        resp = await client.get("/api/health/jobs")
        body = await resp.json()
        assert resp.status == 200, body
        assert [(j["jobId"], j["status"]) for j in body["jobs"]] == [
            ("billing", "healthy"),
            ("emails", "healthy"),
        ]

        await record_runs(conn, "billing", now - timedelta(seconds=3), 3, ok=False)
        await evaluation.run_once(ctx, now - timedelta(seconds=2))
        resp = await client.get("/api/health/jobs")
        body = await resp.json()
        assert resp.status == 503
        billing = next(j for j in body["jobs"] if j["jobId"] == "billing")
        assert billing["status"] == "failing"
        assert "failed 3 times in a row" in billing["reason"]
        assert billing["lastExecutionAt"].endswith("Z")

        # Pausing is deliberate: the job shows as paused and health is green again.
        resp = await client.post("/api/jobs/billing/pause")
        assert resp.status == 200
        resp = await client.get("/api/health/jobs")
        assert resp.status == 200
        assert {j["jobId"]: j["status"] for j in (await resp.json())["jobs"]}["billing"] == "paused"


async def test_metrics_for_every_job_and_for_one(ctx: AppContext) -> None:
    now = datetime.now(UTC)
    async with ctx.db.connection() as conn, client_for(ctx) as client:
        await record_run(conn, "emails", now - timedelta(seconds=10), duration_ms=200)
        await evaluation.run_once(ctx, now - timedelta(seconds=9))
        await record_runs(conn, "emails", now - timedelta(seconds=5), 2, duration_ms=400)
        await record_run(conn, "emails", now - timedelta(seconds=5), ok=False, duration_ms=400)
        await evaluation.run_once(ctx, now - timedelta(seconds=4))

        resp = await client.get("/api/metrics")
        assert resp.status == 200
        [emails] = (await resp.json())["jobs"]
        assert emails["counters"]["totalExecutions"] == 4
        assert emails["counters"]["failureCount"] == 1
        assert emails["recent"]["executions"] == 3  # runs seen since jobwarden started watching
        assert emails["recent"]["failures"] == 1
        assert emails["recent"]["avgDurationMs"] == 400
        assert emails["baseline"] is None

        resp = await client.get("/api/metrics", params={"jobId": "emails"})
        assert resp.status == 200
        assert (await resp.json())["jobId"] == "emails"

        resp = await client.get("/api/metrics", params={"jobId": "nope"})
        assert resp.status == 404
        assert (await resp.json())["field"] == "jobId"


async def test_expectations_over_http_validate_and_name_the_field(ctx: AppContext) -> None:
    async with client_for(ctx) as client:
        schedule = {"cron": "0 2 * * *", "timezone": "Europe/Berlin"}
        resp = await client.put("/api/jobs/nightly", json=schedule)
        body = await resp.json()
        assert resp.status == 200, body
        assert body["schedule"] == "cron 0 2 * * * (Europe/Berlin)"
        assert body["nextDueAt"] is not None

        for payload, field in (
            ({"every": "soon"}, "every"),
            ({"failureRate": 2}, "failureRate"),
            ({"cron": "61 * * * *"}, "cron"),
            ({"timezone": "Mars/Olympus"}, "timezone"),
            ({"colour": "red"}, "colour"),
        ):
            resp = await client.put("/api/jobs/nightly", json=payload)
            assert resp.status == 400, payload
            assert (await resp.json())["field"] == field
        resp = await client.put("/api/jobs/nightly", data=b"[1, 2]")
        assert (resp.status, (await resp.json())["field"]) == (400, "body")

        resp = await client.get("/api/jobs/nightly")
        assert (await resp.json())["expectation"]["cron"] == "0 2 * * *"  # nothing bad written

        resp = await client.post("/api/jobs/nightly/maintenance", json={"until": "yesterday"})
        assert (resp.status, (await resp.json())["field"]) == (400, "until")
        until = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
        resp = await client.post("/api/jobs/nightly/maintenance", json={"until": until.isoformat()})
        body = await resp.json()
        assert (resp.status, body["status"]) == (200, "maintenance")
        assert body["expectation"]["maintenanceUntil"] == until.isoformat().replace("+00:00", "Z")
        resp = await client.post("/api/jobs/nightly/resume")
        assert (await resp.json())["status"] == "healthy"
        resp = await client.delete("/api/jobs/nightly")
        assert resp.status == 200
        resp = await client.get("/api/jobs/nightly")
        assert resp.status == 404
        resp = await client.delete("/api/jobs/nightly")
        assert resp.status == 404


async def test_writes_need_the_token_and_reads_stay_open(migrated_dsn: str) -> None:
    async with app_context(migrated_dsn, JOBWARDEN_API_TOKEN=TOKEN) as ctx, client_for(ctx) as c:
        resp = await c.put("/api/jobs/emails", json={"every": "5m"})
        assert resp.status == 401
        assert (await resp.json())["field"] == "Authorization"
        resp = await c.put(
            "/api/jobs/emails", json={"every": "5m"}, headers={"Authorization": "Bearer wrong"}
        )
        assert resp.status == 401
        resp = await c.get("/api/jobs")
        assert resp.status == 200
        assert (await resp.json())["jobs"] == []  # nothing was written

        for method, path in (("POST", "/api/jobs/emails/pause"), ("DELETE", "/api/jobs/emails")):
            resp = await c.request(method, path)
            assert resp.status == 401, (method, path)

        auth = {"Authorization": f"Bearer {TOKEN}"}
        resp = await c.put("/api/jobs/emails", json={"every": "5m"}, headers=auth)
        assert resp.status == 200
        assert (await resp.json())["schedule"] == "every 5m"
        resp = await c.post("/api/jobs/emails/pause", headers=auth)
        assert (await resp.json())["status"] == "paused"
        resp = await c.delete("/api/jobs/emails", headers=auth)
        assert resp.status == 200


async def test_health_names_this_replicas_role(ctx: AppContext) -> None:
    async with client_for(ctx) as client:
        resp = await client.get("/api/health", params={"quick": "true"})
        assert (await resp.json())["role"] == "single"


async def test_health_shows_the_evaluation_pass_keeping_up(ctx: AppContext) -> None:
    scheduler = JobScheduler(
        ctx, [heartbeat_job(), PeriodicJob(EVALUATION_JOB, 30, evaluation.run_once)]
    )
    async with client_for(ctx, scheduler) as client:
        scheduler.start()
        try:
            await scheduler.tick("heartbeat")
            await scheduler.tick(EVALUATION_JOB)
            resp = await client.get("/api/health")
            assert resp.status == 200
            check = (await resp.json())["checks"]["evaluation"]
            assert (check["status"], check["role"]) == ("ok", "single")
            assert check["lastPassSecondsAgo"] < 30
        finally:
            await scheduler.shutdown(grace=1)


def test_a_stalled_evaluation_pass_is_reported_after_three_intervals() -> None:
    assert stalled_for(last_success=100, leading_since=0, interval=30, now=199) is None
    assert stalled_for(last_success=100, leading_since=0, interval=30, now=201) == 101
    # Never finished since taking the lead: counted from then, not from start-up.
    assert stalled_for(last_success=None, leading_since=500, interval=30, now=590) is None
    assert stalled_for(last_success=None, leading_since=500, interval=30, now=601) == 101
    # A pass from before this replica last took the lead does not count.
    assert stalled_for(last_success=100, leading_since=500, interval=30, now=601) == 101


async def test_metrics_show_the_baseline_once_computed(migrated_dsn: str) -> None:
    now = datetime.now(UTC)
    env = {"JOBWARDEN_BASELINE_MIN_SAMPLES": "3"}
    async with app_context(migrated_dsn, **env) as ctx, ctx.db.connection() as conn:
        await record_run(conn, "emails", now - timedelta(hours=3))
        await evaluation.run_once(ctx, now - timedelta(hours=3))
        await record_runs(conn, "emails", now - timedelta(hours=2), 3, duration_ms=300)
        await evaluation.run_once(ctx, now - timedelta(hours=2))
        await baselines.run_once(ctx, now)  # the 1 h regression window is left out
        async with client_for(ctx) as client:
            resp = await client.get("/api/metrics", params={"jobId": "emails"})
            baseline = (await resp.json())["baseline"]
    assert (baseline["avgMs"], baseline["p95Ms"], baseline["sampleSize"]) == (300, 300, 3)
    assert baseline["updatedAt"].endswith("Z")


async def test_max_and_min_runtime_over_http(ctx: AppContext) -> None:
    async with client_for(ctx) as client:
        resp = await client.put("/api/jobs/imports", json={"maxRuntime": "2h", "minRuntime": 90})
        body = await resp.json()
        assert resp.status == 200, body
        assert (body["expectation"]["maxRuntime"], body["expectation"]["minRuntime"]) == (7200, 90)
        resp = await client.get("/api/jobs/imports")
        body = await resp.json()
        assert (body["expectation"]["maxRuntime"], body["expectation"]["minRuntime"]) == (7200, 90)
        assert (body["effective"]["maxRuntime"], body["effective"]["minRuntime"]) == (7200, 90)

        for payload, fields in (
            ({"maxRuntime": "-5m"}, ["maxRuntime"]),
            ({"maxRuntime": 0}, ["maxRuntime"]),
            ({"maxRuntime": "forever"}, ["maxRuntime"]),
            ({"maxRuntime": True}, ["maxRuntime"]),
            ({"minRuntime": -1}, ["minRuntime"]),
            ({"minRuntime": "0s"}, ["minRuntime"]),
            ({"minRuntime": "quick"}, ["minRuntime"]),
            ({"minRuntime": "367d"}, ["minRuntime"]),
            ({"minRuntime": "2h", "maxRuntime": "1h"}, ["minRuntime"]),
            ({"minRuntime": 60, "maxRuntime": 60}, ["minRuntime"]),
            ({"minRuntime": "3h"}, ["minRuntime"]),  # not below the job's max of 2h
            ({"maxRuntime": "1m"}, ["maxRuntime"]),  # not above the job's min of 90s
            ({"maxRuntime": 0, "minRuntime": "x"}, ["maxRuntime", "minRuntime"]),  # all at once
        ):
            resp = await client.put("/api/jobs/imports", json=payload)
            body = await resp.json()
            assert resp.status == 400, (payload, body)
            assert body["field"] == fields[0], (payload, body)
            assert [p["field"] for p in body["problems"]] == fields, (payload, body)

        resp = await client.get("/api/jobs/imports")
        expectation = (await resp.json())["expectation"]
        assert (expectation["maxRuntime"], expectation["minRuntime"]) == (7200, 90)  # unchanged
