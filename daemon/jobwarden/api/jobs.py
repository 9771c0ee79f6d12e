"""`/api/jobs/...`: the same operations as `jobwarden jobs ...`, and `/api/health/jobs`.

GET    /api/jobs                      every job seen or expected, status and cadence
GET    /api/jobs/{job}                one job in full (404 when unknown)
PUT    /api/jobs/{job}                set an expectation: JSON with any of every, cron,
                                      timezone, grace, failureThreshold, failureRate,
                                      regressionFactor, maxRuntime, minRuntime
DELETE /api/jobs/{job}                forget the expectation (404 when none)
POST   /api/jobs/{job}/pause          raise nothing for the job until resumed
POST   /api/jobs/{job}/resume         unpause, end maintenance
POST   /api/jobs/{job}/maintenance    JSON {"until": ISO time}
GET    /api/health/jobs               each job's status; 200 when none is late, failing,
                                      stuck or slow (paused and maintenance are deliberate),
                                      else 503
"""

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aiohttp import web

from jobwarden.api.body import json_object
from jobwarden.api.errors import BadRequest, NotFound
from jobwarden.api.state import API_STATE, ApiState
from jobwarden.db.pg import Conn
from jobwarden.monitoring import expectations
from jobwarden.monitoring.expectations import InvalidExpectation
from jobwarden.monitoring.model import Expectation, JobStatus
from jobwarden.monitoring.rules import iso
from jobwarden.monitoring.status import judge_jobs, list_jobs, show_job

# HTTP field name -> expectation field
_FIELDS = {
    "every": "every",
    "cron": "cron",
    "timezone": "timezone",
    "grace": "grace",
    "failureThreshold": "failure_threshold",
    "failureRate": "failure_rate",
    "regressionFactor": "regression_factor",
    "maxRuntime": "max_runtime",
    "minRuntime": "min_runtime",
}
_HTTP_NAME = {field: name for name, field in _FIELDS.items()}
_OK_STATUSES = {JobStatus.HEALTHY, JobStatus.PAUSED, JobStatus.MAINTENANCE}


def _state(request: web.Request) -> ApiState:
    return request.app[API_STATE]


def _invalid(exc: InvalidExpectation) -> BadRequest:
    field, message = exc.problems[0]
    name = _HTTP_NAME.get(field, field)
    problems = [{"field": _HTTP_NAME.get(f, f), "error": m} for f, m in exc.problems]
    return BadRequest(name, f"{name} {message}", problems=problems)


def _job(request: web.Request) -> str:
    job_id = request.match_info["job"]
    try:
        return expectations.validate_job_id(job_id)
    except InvalidExpectation as exc:
        raise _invalid(exc) from None


async def get_jobs(request: web.Request) -> web.Response:
    state = _state(request)
    async with state.ctx.db.connection() as conn:
        jobs = await list_jobs(conn, state.ctx.settings, datetime.now(UTC))
    return web.json_response({"jobs": jobs})


async def get_job(request: web.Request) -> web.Response:
    state, job_id = _state(request), _job(request)
    async with state.ctx.db.connection() as conn:
        job = await show_job(conn, state.ctx.settings, datetime.now(UTC), job_id)
    if job is None:
        raise NotFound("job", f"no job {job_id!r} has been seen or expected")
    return web.json_response(job)


async def put_job(request: web.Request) -> web.Response:
    state, job_id = _state(request), _job(request)
    body = await json_object(request)
    unknown = [name for name in body if name not in _FIELDS]
    if unknown:
        problems = [{"field": name, "error": "is not an expectation field"} for name in unknown]
        raise BadRequest(unknown[0], f"{unknown[0]} is not an expectation field", problems=problems)
    try:
        change = expectations.parse_change({_FIELDS[k]: v for k, v in body.items()})
        async with state.ctx.db.connection() as conn:
            await expectations.set_expectation(conn, job_id, change, datetime.now(UTC))
            job = await show_job(conn, state.ctx.settings, datetime.now(UTC), job_id)
    except InvalidExpectation as exc:
        raise _invalid(exc) from None
    return web.json_response(job)


async def delete_job(request: web.Request) -> web.Response:
    state, job_id = _state(request), _job(request)
    async with state.ctx.db.connection() as conn:
        if not await expectations.unset_expectation(conn, job_id):
            raise NotFound("job", f"no expectation is set for {job_id!r}")
    return web.json_response({"jobId": job_id, "expectation": None})


Change = Callable[[Conn, str, datetime], Awaitable[Expectation]]


async def _apply(request: web.Request, change: Change) -> web.Response:
    """Apply `change(conn, job, now)` to the job's expectation; answer with the job."""
    state, job_id = _state(request), _job(request)
    now = datetime.now(UTC)
    async with state.ctx.db.connection() as conn:
        await change(conn, job_id, now)
        job = await show_job(conn, state.ctx.settings, now, job_id)
    return web.json_response(job)


async def pause_job(request: web.Request) -> web.Response:
    return await _apply(request, expectations.pause)


async def resume_job(request: web.Request) -> web.Response:
    return await _apply(request, expectations.resume)


async def maintenance_job(request: web.Request) -> web.Response:
    body = await json_object(request)
    if "until" not in body:
        raise BadRequest("until", "until is required (an ISO 8601 time)")
    try:
        until = expectations.parse_until(body["until"], datetime.now(UTC))
    except InvalidExpectation as exc:
        raise _invalid(exc) from None
    return await _apply(
        request, lambda conn, job, now: expectations.maintenance(conn, job, until, now)
    )


async def health_jobs(request: web.Request) -> web.Response:
    state = _state(request)
    async with state.ctx.db.connection() as conn:
        view = await judge_jobs(conn, state.ctx.settings, datetime.now(UTC))
    jobs = [
        {
            "jobId": v.job_id,
            "status": v.status.value,
            "reason": v.reason,
            "lastExecutionAt": iso(view.facts[v.job_id].last_execution_at),
            "nextDueAt": iso(v.next_due_at),
        }
        for v in sorted(view.verdict.jobs.values(), key=lambda v: v.job_id)
    ]
    healthy = all(v.status in _OK_STATUSES for v in view.verdict.jobs.values())
    return web.json_response(
        {"status": "ok" if healthy else "error", "jobs": jobs}, status=200 if healthy else 503
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/health/jobs", health_jobs)
    app.router.add_get("/api/jobs", get_jobs)
    app.router.add_get("/api/jobs/{job}", get_job)
    app.router.add_put("/api/jobs/{job}", put_job)
    app.router.add_delete("/api/jobs/{job}", delete_job)
    app.router.add_post("/api/jobs/{job}/pause", pause_job)
    app.router.add_post("/api/jobs/{job}/resume", resume_job)
    app.router.add_post("/api/jobs/{job}/maintenance", maintenance_job)
