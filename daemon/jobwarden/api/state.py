"""What the HTTP handlers reach through `request.app[API_STATE]`."""

from dataclasses import dataclass

from aiohttp import web

from jobwarden.context import AppContext
from jobwarden.runtime.scheduler import JobScheduler


@dataclass(frozen=True)
class ApiState:
    ctx: AppContext
    scheduler: JobScheduler


API_STATE = web.AppKey("jobwarden", ApiState)
