"""`GET /api/metrics`: every job's counters, baseline and recent-window figures.

`?jobId=X` answers for one job, and 404 (JSON, naming `jobId`) for an unknown one.
"""

from datetime import UTC, datetime

from aiohttp import web

from jobwarden.api.errors import BadRequest, NotFound
from jobwarden.api.state import API_STATE
from jobwarden.monitoring.status import job_metrics


async def metrics(request: web.Request) -> web.Response:
    state = request.app[API_STATE]
    job_id = request.query.get("jobId")
    if job_id is not None and not job_id.strip():
        raise BadRequest("jobId", "jobId must not be empty")
    async with state.ctx.db.connection() as conn:
        jobs = await job_metrics(conn, state.ctx.settings, datetime.now(UTC), job_id)
    if job_id is not None:
        if not jobs:
            raise NotFound("jobId", f"no job_metrics row for job {job_id!r}")
        return web.json_response(jobs[0])
    return web.json_response({"generatedAt": datetime.now(UTC).isoformat(), "jobs": jobs})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/metrics", metrics)
