"""Shutdown lets passes in flight finish within the grace period, and no longer."""

import asyncio
from datetime import datetime

from jobwarden.context import AppContext
from jobwarden.runtime.scheduler import JobScheduler, PeriodicJob


async def test_shutdown_waits_for_a_pass_in_flight_to_finish(ctx: AppContext) -> None:
    started, release, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow_pass(_: AppContext, __: datetime) -> None:
        started.set()
        await release.wait()
        finished.set()

    scheduler = JobScheduler(ctx, [PeriodicJob("slow", 3600, slow_pass)])
    scheduler.start()
    await asyncio.wait_for(started.wait(), 10)
    stopping = asyncio.create_task(scheduler.shutdown(grace=30))
    await asyncio.sleep(0)  # let shutdown begin waiting
    assert not stopping.done()
    release.set()
    await asyncio.wait_for(stopping, 10)
    assert finished.is_set()
    assert not scheduler.running


async def test_a_pass_outliving_the_grace_period_is_cancelled(ctx: AppContext) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def stuck_pass(_: AppContext, __: datetime) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    scheduler = JobScheduler(ctx, [PeriodicJob("stuck", 3600, stuck_pass)])
    scheduler.start()
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.wait_for(scheduler.shutdown(grace=0.05), 10)
    assert cancelled.is_set()


async def test_a_failing_pass_is_logged_and_the_scheduler_keeps_running(
    ctx: AppContext,
) -> None:
    attempted = asyncio.Event()

    async def failing_pass(_: AppContext, __: datetime) -> None:
        attempted.set()
        raise RuntimeError("boom")

    scheduler = JobScheduler(ctx, [PeriodicJob("failing", 3600, failing_pass)])
    scheduler.start()
    try:
        await asyncio.wait_for(attempted.wait(), 10)
        await asyncio.sleep(0)
        assert scheduler.running
    finally:
        await scheduler.shutdown(grace=1)
