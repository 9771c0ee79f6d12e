"""Builds the aiohttp application and serves it on JOBWARDEN_HTTP_HOST:PORT."""

from aiohttp import web

from jobwarden.api import alerts, dlq, health, jobs, metrics, runs
from jobwarden.api.auth import require_token_for_writes
from jobwarden.api.errors import json_errors
from jobwarden.api.state import API_STATE, ApiState
from jobwarden.context import AppContext
from jobwarden.dlq.processor import ProcessorState
from jobwarden.runtime.scheduler import JobScheduler


def make_app(
    ctx: AppContext, scheduler: JobScheduler, dlq_state: ProcessorState | None = None
) -> web.Application:
    app = web.Application(
        middlewares=[json_errors, require_token_for_writes(ctx.settings.api_token)],
        client_max_size=1024**2,
    )
    app[API_STATE] = ApiState(ctx, scheduler, dlq_state)
    health.add_routes(app)
    jobs.add_routes(app)
    metrics.add_routes(app)
    alerts.add_routes(app)
    dlq.add_routes(app)
    runs.add_routes(app)
    return app


async def start_server(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start listening; return the runner (for cleanup) and the bound port."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    return runner, int(bound)
