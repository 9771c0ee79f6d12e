"""What the HTTP handlers reach through `request.app[API_STATE]`."""

from dataclasses import dataclass

from aiohttp import web

from jobwarden.context import AppContext
from jobwarden.dlq.processor import ProcessorState
from jobwarden.runtime.scheduler import JobScheduler


@dataclass(frozen=True)
class ApiState:
    ctx: AppContext
    scheduler: JobScheduler
    dlq: ProcessorState | None = None  # this daemon's DLQ processor, when it runs one


API_STATE = web.AppKey("jobwarden", ApiState)
