"""Runs reported over HTTP: pings and batches (see monitoring/runs.py).

POST /api/jobs/{job}/start     a run started (`?rid=` pairs it with its end)
POST /api/jobs/{job}/success   a run ended well (`?rid=`, `?duration_ms=`)
POST /api/jobs/{job}/fail      a run failed; the body (at most 10 KiB) is its error
POST /api/executions           one run object or an array of up to 1,000: all or nothing

Each answers once its write is committed: 200 with the run (pings), 201 with the
count (batches); bad input is a 400 naming the field, and nothing is written.
"""

import json
from datetime import UTC, datetime

from aiohttp import web

from jobwarden.alerts.notification import iso_utc
from jobwarden.api.body import capped_body
from jobwarden.api.errors import BadRequest
from jobwarden.api.state import API_STATE
from jobwarden.monitoring import runs
from jobwarden.monitoring.runs import InvalidRun

BATCH_BODY_LIMIT = 4 * 1024**2  # 1,000 runs with a few KiB of error and metadata each


def _bad(exc: InvalidRun) -> BadRequest:
    return BadRequest(exc.field, exc.message)


async def _ping(request: web.Request) -> tuple[str, str | None, bytes]:
    """The ping's job, rid and body (validated, read whole)."""
    body = await capped_body(request, runs.MAX_TEXT_BYTES)
    try:
        return (
            runs.job_id(request.match_info["job"]),
            runs.run_id(request.query.get("rid")),
            body,
        )
    except InvalidRun as exc:
        raise _bad(exc) from None


async def ping_start(request: web.Request) -> web.Response:
    job, rid, _ = await _ping(request)
    now = datetime.now(UTC)
    async with request.app[API_STATE].ctx.db.connection() as conn:
        await runs.start(conn, job, rid, now)
    return web.json_response({"jobId": job, "rid": rid, "startedAt": iso_utc(now)})


async def _ping_end(request: web.Request, outcome: str) -> web.Response:
    job, rid, body = await _ping(request)
    given = request.query.get("duration_ms")
    try:
        duration = None if given is None else runs.duration_text(given)
        error = runs.error_text(body, "body") if outcome == "failure" else None
    except InvalidRun as exc:
        raise _bad(exc) from None
    async with request.app[API_STATE].ctx.db.connection() as conn:
        run = await runs.finish(
            conn, job, rid, outcome, datetime.now(UTC), duration=duration, error=error
        )
    return web.json_response(run.as_json())


async def ping_success(request: web.Request) -> web.Response:
    return await _ping_end(request, "success")


async def ping_fail(request: web.Request) -> web.Response:
    return await _ping_end(request, "failure")


async def post_executions(request: web.Request) -> web.Response:
    raw = await capped_body(request, BATCH_BODY_LIMIT)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested thousands deep
        raise BadRequest("body", "the body must be valid JSON") from None
    try:
        parsed = runs.parse_batch(body, datetime.now(UTC))
    except InvalidRun as exc:
        raise _bad(exc) from None
    async with request.app[API_STATE].ctx.db.connection() as conn:
        recorded = await runs.record_runs(conn, parsed)
    return web.json_response({"recorded": recorded}, status=201)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/jobs/{job}/start", ping_start)
    app.router.add_post("/api/jobs/{job}/success", ping_success)
    app.router.add_post("/api/jobs/{job}/fail", ping_fail)
    app.router.add_post("/api/executions", post_executions)
