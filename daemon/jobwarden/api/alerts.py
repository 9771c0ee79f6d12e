"""`/api/alerts` and `/api/deliveries`: the same operations as `jobwarden alerts|deliveries`.

GET  /api/alerts?unresolved=true&limit=N   newest first, each with its channels' latest
                                           delivery: `{"alerts": [...]}`
GET  /api/alerts/{id}                      one alert with every delivery (404 naming `id`)
POST /api/alerts/{id}/resolve              resolve it; the alert as `alerts show` has it
POST /api/alerts/test                      `{"channel": "slack"}` optional: a test
                                           notification through each configured channel;
                                           200 when all took it, 502 when one did not
GET  /api/deliveries?failed=true&limit=N   most recently changed first: `{"deliveries": [...]}`
POST /api/deliveries/{id}/retry            a failed delivery back in the queue, due now
                                           (404 unknown, 409 when it has not failed)
POST /api/deliveries/retry                 `{"allFailed": true}`: every failed one

`limit` is 1 to 1000 (default 50); booleans are `true` or `false`. Bad values get a
400 naming the field. Writes need the token when JOBWARDEN_API_TOKEN is set.
"""

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from jobwarden.alerts import actions, testsend, views
from jobwarden.alerts.channels import configured_channels
from jobwarden.alerts.channels.base import Outcome
from jobwarden.alerts.testsend import ChannelNotConfigured
from jobwarden.api.body import json_object
from jobwarden.api.errors import BadRequest, NotFound
from jobwarden.api.query import flag
from jobwarden.api.state import API_STATE, ApiState

RESOLVED_BY = "jobwarden-api"


def _state(request: web.Request) -> ApiState:
    return request.app[API_STATE]


def _limit(request: web.Request) -> int:
    text = request.query.get("limit")
    if text is None:
        return views.DEFAULT_LIMIT
    try:
        return views.parse_limit(text)
    except ValueError as exc:
        raise BadRequest("limit", f"limit {exc}") from None


def _unknown_fields(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(unknown[0], f"{unknown[0]} is not a field of this request")


async def get_alerts(request: web.Request) -> web.Response:
    unresolved, limit = flag(request, "unresolved"), _limit(request)
    async with _state(request).ctx.db.connection() as conn:
        alerts = await views.list_alerts(conn, unresolved=unresolved, limit=limit)
    return web.json_response({"alerts": alerts})


async def get_alert(request: web.Request) -> web.Response:
    alert_id = request.match_info["id"]
    async with _state(request).ctx.db.connection() as conn:
        alert = await views.show_alert(conn, alert_id)
    if alert is None:
        raise NotFound("id", f"no alert {alert_id!r}")
    return web.json_response(alert)


async def resolve_alert(request: web.Request) -> web.Response:
    alert_id = request.match_info["id"]
    async with _state(request).ctx.db.connection() as conn:
        try:
            await actions.resolve_alert(conn, alert_id, datetime.now(UTC), RESOLVED_BY)
        except actions.UnknownAlert as exc:
            raise NotFound("id", str(exc)) from None
        alert = await views.show_alert(conn, alert_id)
    return web.json_response(alert)


async def send_test_notification(request: web.Request) -> web.Response:
    body = await json_object(request)
    _unknown_fields(body, {"channel"})
    only = body.get("channel")
    if only is not None and not isinstance(only, str):
        raise BadRequest("channel", "channel must be one of " + ", ".join(testsend.CHANNEL_NAMES))
    ctx = _state(request).ctx
    channels = configured_channels(ctx.settings, ctx.http, sandbox=ctx.settings.sendgrid_sandbox)
    try:
        results = await testsend.send_test(channels, only)
    except ChannelNotConfigured as exc:
        raise BadRequest("channel", str(exc)) from None
    ok = all(attempt.outcome is Outcome.SENT for _, attempt in results)
    return web.json_response(
        {
            "ok": ok,
            "results": [
                {
                    "channel": name,
                    "outcome": attempt.outcome.value,
                    "status": attempt.status,
                    "error": attempt.error,
                    "wait": attempt.wait,
                }
                for name, attempt in results
            ],
        },
        status=200 if ok else 502,
    )


async def get_deliveries(request: web.Request) -> web.Response:
    failed, limit = flag(request, "failed"), _limit(request)
    async with _state(request).ctx.db.connection() as conn:
        deliveries = await views.list_deliveries(conn, failed_only=failed, limit=limit)
    return web.json_response({"deliveries": deliveries})


async def retry_delivery(request: web.Request) -> web.Response:
    delivery_id = request.match_info["id"]
    async with _state(request).ctx.db.connection() as conn:
        try:
            count = await actions.retry_deliveries(conn, datetime.now(UTC), delivery_id=delivery_id)
        except actions.UnknownDelivery as exc:
            raise NotFound("id", str(exc)) from None
        except actions.NotRetryable as exc:
            body = {"error": str(exc), "field": "id", "status": exc.status}
            return web.json_response(body, status=409)
    return web.json_response({"retried": count})


async def retry_all_failed(request: web.Request) -> web.Response:
    body = await json_object(request)
    _unknown_fields(body, {"allFailed"})
    if body.get("allFailed") is not True:
        raise BadRequest("allFailed", "allFailed must be true (to retry one: POST …/{id}/retry)")
    async with _state(request).ctx.db.connection() as conn:
        count = await actions.retry_deliveries(conn, datetime.now(UTC), all_failed=True)
    return web.json_response({"retried": count})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/alerts", get_alerts)
    app.router.add_post("/api/alerts/test", send_test_notification)
    app.router.add_get("/api/alerts/{id}", get_alert)
    app.router.add_post("/api/alerts/{id}/resolve", resolve_alert)
    app.router.add_get("/api/deliveries", get_deliveries)
    app.router.add_post("/api/deliveries/retry", retry_all_failed)
    app.router.add_post("/api/deliveries/{id}/retry", retry_delivery)
