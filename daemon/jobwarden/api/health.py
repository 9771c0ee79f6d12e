"""Health endpoints.

`GET /api/health?quick=true`  liveness: the process answers; no database call.
`GET /api/health`             readiness: database reachable, migrations current,
                              scheduler alive. 200 when all are ok, else 503. Also
                              shows the channels and the dead-letter queue, which
                              never make it 503 (a restart would not help them).
`GET /api/health/database`    latency, pool size/free, applied schema version.

Every body says this replica's `role`: `leader` (runs the passes that judge and
write), `follower` (stands by), or `single` (no lock possible: assumes it is alone).

Every body has `status` ("ok" or "error") and, for the full check, one object per
check under `checks`, each with its own `status` and, when failing, `error`.
"""

import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from jobwarden import __version__
from jobwarden.alerts.channels import configured_channels
from jobwarden.alerts.notification import iso_utc
from jobwarden.alerts.testsend import CHANNEL_NAMES
from jobwarden.alerts.views import channel_health
from jobwarden.api.query import flag
from jobwarden.api.state import API_STATE, ApiState
from jobwarden.db.migrations import read_status
from jobwarden.db.pg import DATABASE_ERRORS
from jobwarden.dlq import queue as dlq_queue
from jobwarden.monitoring.evaluation import EVALUATION_JOB


def _failure(exc: BaseException) -> dict[str, Any]:
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return {"status": "error", "error": detail}


async def _database_check(state: ApiState) -> dict[str, Any]:
    try:
        latency = await state.ctx.db.ping()
    except DATABASE_ERRORS as exc:
        return _failure(exc)
    return {"status": "ok", "latencyMs": round(latency, 2)}


async def _migrations_check(state: ApiState) -> dict[str, Any]:
    try:
        async with state.ctx.db.connection() as conn:
            status = await read_status(conn, state.ctx.migrations)
    except DATABASE_ERRORS as exc:
        return _failure(exc)
    body: dict[str, Any] = {
        "status": "ok" if status.current else "error",
        "schemaVersion": status.schema_version,
        "pending": [m.filename for m in status.pending],
    }
    if not status.current:
        body["error"] = "; ".join(status.problems()) or "migrations pending"
    return body


def _scheduler_check(state: ApiState) -> dict[str, Any]:
    age = state.ctx.liveness.age()
    healthy = state.scheduler.running and state.ctx.liveness.fresh()
    body: dict[str, Any] = {
        "status": "ok" if healthy else "error",
        "running": state.scheduler.running,
        "lastHeartbeatSecondsAgo": None if age is None else round(age, 3),
        "jobs": state.scheduler.job_names,
    }
    if not healthy:
        body["error"] = "scheduler stopped" if not state.scheduler.running else "heartbeat stale"
    return body


def _evaluation_check(state: ApiState) -> dict[str, Any] | None:
    """On the leader: is the evaluation pass keeping up? A stalled pass means nobody
    is judging the jobs, so no alert can be raised."""
    job = state.scheduler.job(EVALUATION_JOB)
    if job is None:
        return None
    leader = state.ctx.leader
    if not leader.is_leader:
        return {"status": "ok", "role": leader.role}
    now = time.monotonic()
    last = state.scheduler.succeeded_at(EVALUATION_JOB)
    stale = stalled_for(last, leader.since, job.interval_seconds, now)
    body: dict[str, Any] = {
        "status": "ok" if stale is None else "error",
        "role": leader.role,
        "lastPassSecondsAgo": None if last is None else round(now - last, 3),
    }
    if stale is not None:
        body["error"] = f"no evaluation pass has finished for {stale:.0f}s (see the log)"
    return body


async def _deliveries_check(state: ApiState) -> dict[str, Any]:
    """Each channel: enabled, last success, last error, pending notifications.

    A failing channel does not make jobwarden unhealthy (restarting it would not help);
    it shows here, and each failure is logged."""
    settings = state.ctx.settings
    enabled = {c.name for c in configured_channels(settings, state.ctx.http, sandbox=False)}
    try:
        async with state.ctx.db.connection() as conn:
            known = await channel_health(conn)
    except DATABASE_ERRORS as exc:
        return _failure(exc)
    idle = {"lastSuccessAt": None, "lastError": None, "lastErrorAt": None,
            "pausedUntil": None, "pending": 0}  # fmt: skip
    channels = {
        name: {"enabled": name in enabled, **known.get(name, idle)} for name in CHANNEL_NAMES
    }
    return {"status": "ok", "channels": channels}


async def _dlq_check(state: ApiState) -> dict[str, Any]:
    """The queue (pending, processing, oldest pending, failed for good and not yet dealt
    with) and this daemon's processor. Like the channels, a stuck queue shows here and
    raises its own alerts; it never makes jobwarden unhealthy."""
    try:
        async with state.ctx.db.connection() as conn:
            queue = await dlq_queue.summary(conn)
    except DATABASE_ERRORS as exc:
        return _failure(exc)
    now = datetime.now(UTC)
    body: dict[str, Any] = {
        "status": "ok",
        "pending": queue.pending,
        "processing": queue.processing,
        "oldestPendingSeconds": None
        if queue.oldest_pending is None
        else round((now - queue.oldest_pending).total_seconds(), 3),
        "failedUnacknowledged": queue.failed_unacknowledged,
    }
    if (processor := state.dlq) is not None:
        body["processor"] = {
            "running": processor.running,
            "waiting": processor.waiting,
            "lastClaimAt": iso_utc(processor.last_claim_at),
            "lastError": processor.last_error,
            "lastErrorAt": iso_utc(processor.last_error_at),
            "totals": dict(processor.totals),
        }
    return body


def stalled_for(
    last_success: float | None, leading_since: float, interval: float, now: float
) -> float | None:
    """Seconds without a finished pass while leading, once beyond 3 intervals + 10 s."""
    age = now - max(last_success or leading_since, leading_since)
    return age if age > 3 * interval + 10 else None


async def health(request: web.Request) -> web.Response:
    state: ApiState = request.app[API_STATE]
    base = {
        "version": __version__,
        "uptimeSeconds": round(time.monotonic() - state.ctx.started_at, 3),
        "role": state.ctx.leader.role,  # leader | follower | single
    }
    if flag(request, "quick"):
        return web.json_response({"status": "ok", **base})
    checks = {
        "database": await _database_check(state),
        "migrations": await _migrations_check(state),
        "scheduler": _scheduler_check(state),
        "deliveries": await _deliveries_check(state),
        "dlq": await _dlq_check(state),
    }
    if (evaluation := _evaluation_check(state)) is not None:
        checks["evaluation"] = evaluation
    healthy = all(c["status"] == "ok" for c in checks.values())
    return web.json_response(
        {"status": "ok" if healthy else "error", **base, "checks": checks},
        status=200 if healthy else 503,
    )


async def database(request: web.Request) -> web.Response:
    state: ApiState = request.app[API_STATE]
    db = state.ctx.db
    stats = db.stats()
    body: dict[str, Any] = {
        "pool": {"size": stats.size, "free": stats.free, "min": stats.min, "max": stats.max},
        "sharedSchema": db.shared_schema,
    }
    try:
        body["latencyMs"] = round(await db.ping(), 2)
        async with db.connection() as conn:
            body["schemaVersion"] = (await read_status(conn, state.ctx.migrations)).schema_version
            body["serverVersion"] = await conn.fetchval("SHOW server_version")
    except DATABASE_ERRORS as exc:
        return web.json_response({**_failure(exc), **body}, status=503)
    return web.json_response({"status": "ok", **body})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/health/database", database)
