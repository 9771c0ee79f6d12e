"""`/api/dlq`: the dead-letter queue, the same operations as `jobwarden dlq ...`.

GET    /api/dlq?status=S&jobId=J&limit=N   newest first: `{"entries": [...]}`
GET    /api/dlq/stats                      counts by job and status, oldest pending, attempts
GET    /api/dlq/routes                     routes (URLs redacted), Python handlers, and
                                           whether a default URL is set: `{"routes", "defaultUrl"}`
GET    /api/dlq/{id}                       one entry with its history and schedule (404 `id`)
POST   /api/dlq/{id}/retry                 back to PENDING, due now, a fresh attempt budget;
                                           409 naming `id` (with its `status`) when
                                           PROCESSING or SUCCEEDED
POST   /api/dlq/retry                      `{"jobId": J}` (its FAILED and PENDING entries) or
                                           `{"allFailed": true}`: exactly one
POST   /api/dlq/{id}/discard               `{"reason": R}`: FAILED, never retried; 409 when
                                           PROCESSING or SUCCEEDED
PUT    /api/dlq/routes/{jobId}             `{"url": U}`: retry the job's entries there
DELETE /api/dlq/routes/{jobId}             forget the route (404 when there is none)

`status` is any case; `limit` 1 to 1000 (default 50). Bad values get a 400 naming the
field; a URL is never echoed. Writes need the token when JOBWARDEN_API_TOKEN is set.
"""

import asyncio
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from jobwarden.alerts.views import DEFAULT_LIMIT, parse_limit
from jobwarden.api.body import json_object
from jobwarden.api.errors import BadRequest, NotFound
from jobwarden.api.state import API_STATE, ApiState
from jobwarden.dlq import admin, routes
from jobwarden.dlq.admin import Refused, Retried, UnknownEntry
from jobwarden.dlq.handlers import load_entry_points
from jobwarden.dlq.routes import InvalidInput

# domain field -> the API's name for it
_FIELDS = {"job": "jobId", "url": "url", "reason": "reason", "status": "status"}


def _state(request: web.Request) -> ApiState:
    return request.app[API_STATE]


def _invalid(exc: InvalidInput) -> BadRequest:
    name = _FIELDS.get(exc.field, exc.field)
    return BadRequest(name, f"{name} {exc.message}")


def _refused(exc: Refused) -> web.Response:
    body = {"error": str(exc), "field": "id", "status": exc.status}
    return web.json_response(body, status=409)


def _by(request: web.Request) -> str:
    return f"api:{request.remote}" if request.remote else "api"


def _unknown_fields(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(unknown[0], f"{unknown[0]} is not a field of this request")


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise BadRequest(name, f"{name} is required, as a string")
    return value


def _job_param(value: str, name: str = "jobId") -> str:
    try:
        return routes.check_job_id(value, name)
    except InvalidInput as exc:
        raise BadRequest(name, f"{name} {exc.message}") from None


async def get_entries(request: web.Request) -> web.Response:
    status = request.query.get("status")
    job = request.query.get("jobId")
    limit_text = request.query.get("limit")
    try:
        status = None if status is None else admin.parse_status(status)
    except InvalidInput as exc:
        raise _invalid(exc) from None
    if job is not None:
        job = _job_param(job)
    try:
        limit = DEFAULT_LIMIT if limit_text is None else parse_limit(limit_text)
    except ValueError as exc:
        raise BadRequest("limit", f"limit {exc}") from None
    async with _state(request).ctx.db.connection() as conn:
        entries = await admin.list_entries(conn, status, job, limit)
    return web.json_response({"entries": entries})


async def get_stats(request: web.Request) -> web.Response:
    async with _state(request).ctx.db.connection() as conn:
        return web.json_response(await admin.stats(conn, datetime.now(UTC)))


async def get_entry(request: web.Request) -> web.Response:
    ctx, entry_id = _state(request).ctx, request.match_info["id"]
    async with ctx.db.connection() as conn:
        entry = await admin.show_entry(conn, entry_id, max_attempts=ctx.settings.dlq_max_attempts)
    if entry is None:
        raise NotFound("id", f"no dead-letter entry {entry_id!r}")
    return web.json_response(entry)


def _retried(retried: Retried) -> dict[str, Any]:
    return {"retried": retried.total, "failed": retried.failed, "pending": retried.pending}


async def retry_entry(request: web.Request) -> web.Response:
    entry_id = request.match_info["id"]
    async with _state(request).ctx.db.connection() as conn:
        try:
            retried = await admin.retry(
                conn, entry_id=entry_id, now=datetime.now(UTC), by=_by(request)
            )
        except UnknownEntry as exc:
            raise NotFound("id", str(exc)) from None
        except Refused as exc:
            return _refused(exc)
    return web.json_response(_retried(retried))


async def retry_many(request: web.Request) -> web.Response:
    body = await json_object(request)
    _unknown_fields(body, {"jobId", "allFailed"})
    if "jobId" in body and "allFailed" in body:
        raise BadRequest("allFailed", "give either jobId or allFailed, not both")
    if "jobId" in body:
        job: str | None = _job_param(_text(body, "jobId"))
    elif "allFailed" in body:
        if body["allFailed"] is not True:
            raise BadRequest(
                "allFailed", "allFailed must be true (to retry one: POST …/{id}/retry)"
            )
        job = None
    else:
        raise BadRequest("jobId", "give jobId (a job's FAILED and PENDING entries) or allFailed")
    async with _state(request).ctx.db.connection() as conn:
        retried = await admin.retry(
            conn, job=job, all_failed=job is None, now=datetime.now(UTC), by=_by(request)
        )
    return web.json_response(_retried(retried))


async def discard_entry(request: web.Request) -> web.Response:
    ctx, entry_id = _state(request).ctx, request.match_info["id"]
    body = await json_object(request)
    _unknown_fields(body, {"reason"})
    try:
        reason = admin.check_reason(_text(body, "reason"))
    except InvalidInput as exc:
        raise _invalid(exc) from None
    async with ctx.db.connection() as conn:
        try:
            await admin.discard(conn, entry_id, reason, datetime.now(UTC), _by(request))
        except UnknownEntry as exc:
            raise NotFound("id", str(exc)) from None
        except Refused as exc:
            return _refused(exc)
        entry = await admin.show_entry(conn, entry_id, max_attempts=ctx.settings.dlq_max_attempts)
    return web.json_response(entry)


async def get_routes(request: web.Request) -> web.Response:
    ctx = _state(request).ctx
    python_jobs = await asyncio.to_thread(load_entry_points)  # imports the handlers' modules
    async with ctx.db.connection() as conn:
        found = await routes.list_routes(conn)
    table = routes.routing_table(
        found, python_jobs, default_url=ctx.settings.dlq_retry_url is not None
    )
    return web.json_response(table)


async def put_route(request: web.Request) -> web.Response:
    job = _job_param(request.match_info["jobId"])
    body = await json_object(request)
    _unknown_fields(body, {"url"})
    try:
        url = routes.check_url(_text(body, "url"))
    except InvalidInput as exc:
        raise _invalid(exc) from None
    async with _state(request).ctx.db.connection() as conn:
        done = await routes.set_route(conn, job, url, datetime.now(UTC))
    return web.json_response({"jobId": done.job_id, "url": done.url, "created": done.created})


async def delete_route(request: web.Request) -> web.Response:
    job = _job_param(request.match_info["jobId"])
    async with _state(request).ctx.db.connection() as conn:
        removed = await routes.unset_route(conn, job)
    if not removed:
        raise NotFound("jobId", f"job {job!r} has no route")
    return web.json_response({"jobId": job, "removed": True})


def add_routes(app: web.Application) -> None:
    # The fixed paths first: /api/dlq/{id} must not take "stats", "routes" or "retry".
    app.router.add_get("/api/dlq", get_entries)
    app.router.add_get("/api/dlq/stats", get_stats)
    app.router.add_get("/api/dlq/routes", get_routes)
    app.router.add_put("/api/dlq/routes/{jobId}", put_route)
    app.router.add_delete("/api/dlq/routes/{jobId}", delete_route)
    app.router.add_post("/api/dlq/retry", retry_many)
    app.router.add_get("/api/dlq/{id}", get_entry)
    app.router.add_post("/api/dlq/{id}/retry", retry_entry)
    app.router.add_post("/api/dlq/{id}/discard", discard_entry)
