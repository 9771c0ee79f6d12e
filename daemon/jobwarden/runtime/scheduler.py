"""Periodic passes and the APScheduler that runs them.

Each pass is a plain `async def run_once(ctx, now)`; tests call it directly with
any `now`, and APScheduler only decides when. `daemon.py` registers them. A pass
marked `leader_only` runs only on the replica that holds leadership; on the
others its tick is skipped. Each pass ends in one log line with its outcome and
duration (and the figures of its result's `log_fields()`); a pass that raises is
logged the same way and the next tick runs as usual. Passes in flight are tracked
so shutdown can let them finish within the grace period.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from jobwarden.context import AppContext
from jobwarden.logsetup import get_logger

log = get_logger(__name__)

HEARTBEAT_SECONDS = 5.0


@runtime_checkable
class PassResult(Protocol):
    def log_fields(self) -> dict[str, object]: ...


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    interval_seconds: float
    run_once: Callable[[AppContext, datetime], Awaitable[object]]
    quiet: bool = False  # log successful passes at debug only
    leader_only: bool = False  # judges and writes: one replica at a time


async def heartbeat(ctx: AppContext, now: datetime) -> None:
    """Proves the scheduler is alive: health and the systemd watchdog read it."""
    ctx.liveness.beat()


def heartbeat_job() -> PeriodicJob:
    return PeriodicJob("heartbeat", HEARTBEAT_SECONDS, heartbeat, quiet=True)


class JobScheduler:
    def __init__(self, ctx: AppContext, jobs: list[PeriodicJob] | None = None) -> None:
        self._ctx = ctx
        self._jobs = jobs if jobs is not None else [heartbeat_job()]
        self._in_flight: dict[asyncio.Task[object], str] = {}  # task -> job name
        self._succeeded_at: dict[str, float] = {}  # job name -> monotonic time of last success
        self._scheduler = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
        )
        for job in self._jobs:
            self._scheduler.add_job(
                self._run,
                IntervalTrigger(seconds=job.interval_seconds, timezone=UTC),
                args=[job],
                id=job.name,
                name=job.name,
                next_run_time=datetime.now(UTC),
            )

    @property
    def job_names(self) -> list[str]:
        return [job.name for job in self._jobs]

    def job(self, name: str) -> PeriodicJob | None:
        return next((job for job in self._jobs if job.name == name), None)

    def succeeded_at(self, name: str) -> float | None:
        """Monotonic time the named pass last finished without error, if ever."""
        return self._succeeded_at.get(name)

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def start(self) -> None:
        self._scheduler.start()

    async def shutdown(self, grace: float) -> None:
        """Stop starting passes, wait up to `grace` seconds for those running, then stop.

        The scheduler is paused rather than shut down first: APScheduler's shutdown
        cancels coroutine jobs still running, which is what the grace period avoids.
        """
        if not self._scheduler.running:
            return
        self._scheduler.pause()
        if self._in_flight:
            log.info("waiting for passes in flight", count=len(self._in_flight), grace_s=grace)
            _, pending = await asyncio.wait(set(self._in_flight), timeout=grace)
            for task in pending:
                log.warning(
                    "pass did not finish within the grace period; cancelling",
                    job=self._in_flight.get(task),
                    grace_s=grace,
                )
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        self._scheduler.shutdown(wait=False)

    async def tick(self, name: str) -> None:
        """Run the named pass once, exactly as a scheduled tick would."""
        job = self.job(name)
        if job is None:
            raise KeyError(name)
        await self._run(job)

    async def _run(self, job: PeriodicJob) -> None:
        if job.leader_only and not self._ctx.leader.is_leader:
            log.debug("skipping pass: another replica leads", job=job.name)
            return
        task = asyncio.current_task()
        if task is not None:
            self._in_flight[task] = job.name
        started = time.monotonic()
        try:
            result = await job.run_once(self._ctx, datetime.now(UTC))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "pass failed",
                job=job.name,
                duration_ms=round((time.monotonic() - started) * 1000),
            )
        else:
            self._succeeded_at[job.name] = time.monotonic()
            fields = result.log_fields() if isinstance(result, PassResult) else {}
            (log.debug if job.quiet else log.info)(
                "pass finished",
                job=job.name,
                duration_ms=round((time.monotonic() - started) * 1000),
                **fields,
            )
        finally:
            if task is not None:
                self._in_flight.pop(task, None)
