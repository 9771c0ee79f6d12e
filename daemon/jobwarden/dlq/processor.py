"""The DLQ processor: a service that retries due dead-letter entries, on every replica.

One loop claims what is due (woken by NOTIFY from the trigger, by a finished retry,
or by its own tick), and starts each claimed entry's retry; at most
`JOBWARDEN_DLQ_CONCURRENCY` retries run at once, and more wait claimed for a free
slot: up to 7 times as many while retries answer within 100 ms (fewer, larger
claims), as many as run when they are slower. Each retry runs with no
transaction open; its outcome is written by the loop, batched with the others that
finished meanwhile:

- succeeded                  -> SUCCEEDED, processedAt
- failed for good (4xx, PermanentFailure) -> FAILED, processedAt (dlq_exhausted)
- failed, attempts left      -> PENDING, due after capped exponential backoff with
                                jitter (a longer Retry-After wins)
- failed, last attempt       -> FAILED, processedAt (dlq_exhausted)

Leases: a claimed entry is leased for `JOBWARDEN_DLQ_LEASE`, renewed while its retry
runs or waits; a retry whose lease is lost (another daemon took the entry back) is
cancelled, so an entry is never handled by two daemons at once. The loop also takes
back entries whose daemon died (lease expired), and schedules entries the trigger
missed. On stop, retries in flight get the grace period; one that does not finish,
like the entries claimed but not started, goes back to PENDING without using an
attempt (written as interrupted).

`run_once(now)` claims, runs and writes one batch with the clock as a parameter:
tests drive it directly.
"""

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from jobwarden.alerts.notification import iso_utc
from jobwarden.backoff import BackoffPolicy
from jobwarden.context import AppContext
from jobwarden.db.pg import DATABASE_ERRORS
from jobwarden.dlq import queue
from jobwarden.dlq.handlers import Handler, Outcome, Router, Verdict
from jobwarden.logsetup import get_logger
from jobwarden.runtime import services
from jobwarden.runtime.services import RETRY_RECORDING, Clock, default_owner, loop_failure_delay

log = get_logger(__name__)
_STDLIB_LOG = logging.getLogger(__name__)  # what `log` ends in: its level decides

JITTER = 0.2  # a retry waits between 80 % and 100 % of its backoff
IDLE_TICK_SECONDS = 1.0  # longest the loop sleeps without a wake-up
MIN_SLEEP_SECONDS = 0.05  # when something is due but could not be claimed
# Entries claimed (running and waiting for a slot), in units of concurrency: deep while
# retries answer quickly (fewer, larger claims), shallow when they are slow, so no
# claimed entry waits long behind slow retries while another daemon could run it.
PREFETCH_QUICK, PREFETCH_SLOW = 8, 2
QUICK_RETRY_SECONDS = 0.1  # typical duration (moving average) under which retries are quick
RECOVER_EVERY_SECONDS = 1.0  # also how often the tables' statistics are checked
DISCOVER_EVERY_SECONDS = 15.0  # the trigger schedules new entries; this catches the rest
DISCOVER_WITHOUT_TRIGGER_SECONDS = 1.0
PRUNE_EVERY_SECONDS = 600.0
RECORD_RETRIES = 3  # writes of outcomes tried at stop before giving up to the lease
TRIGGER_PRESENT = (
    "SELECT count(*) = 1 FROM pg_trigger WHERE tgrelid = 'dead_letter_queue'::regclass"
    " AND tgname = 'jobwarden_dlq_inserted' AND tgenabled <> 'D'"
)


@dataclass
class _Run:
    claimed: queue.Claimed
    handler: Handler
    task: "asyncio.Task[None] | None" = None
    started: bool = False
    lost: bool = False  # the lease went to another daemon: no outcome is written

    @property
    def claim(self) -> queue.Claim:
        return (self.claimed.entry.id, self.claimed.entry.attempt)


@dataclass
class PassResult:
    claimed: int = 0
    succeeded: int = 0
    retrying: int = 0
    failed: int = 0
    recovered: int = 0
    discovered: int = 0

    def log_fields(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class ProcessorState:
    """What `/api/health` shows of this daemon's processor."""

    running: int = 0
    waiting: int = 0
    last_claim_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    totals: dict[str, int] = field(
        default_factory=lambda: {"succeeded": 0, "retrying": 0, "failed": 0, "recovered": 0}
    )


class DlqProcessor:
    def __init__(self, ctx: AppContext, router: Router, owner: str | None = None) -> None:
        settings = ctx.settings
        self._ctx = ctx
        self.router = router
        self.owner = owner or default_owner()
        self._concurrency = settings.dlq_concurrency
        self._lease = settings.dlq_lease
        self._max_attempts = settings.dlq_max_attempts
        self.backoff = BackoffPolicy(
            initial=settings.dlq_backoff_base,
            factor=settings.dlq_backoff_factor,
            maximum=settings.dlq_backoff_cap,
            jitter=JITTER,
        )
        self._slots = asyncio.Semaphore(self._concurrency)
        self._runs: dict[str, _Run] = {}  # claimed and not yet finished
        self._done: list[queue.Finished] = []  # finished, not yet written
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._renew_task: asyncio.Task[None] | None = None
        self._renewed_at = time.monotonic()  # when the last renewal that held was sent
        self._writing = asyncio.Lock()  # renewals and outcomes: one at a time, no deadlock
        self._discover_every = DISCOVER_EVERY_SECONDS
        self._last = {"recover": -math.inf, "discover": -math.inf, "prune": -math.inf}
        self._pass = PassResult()
        self.state = ProcessorState()
        self._typical_seconds = 0.0  # moving average of a retry's duration

    # --- one pass, for tests and tools --------------------------------------------------

    async def run_once(self, now: datetime | None = None) -> PassResult:
        """Take back expired leases, schedule what the trigger missed, claim what is due
        at `now`, run it all to the end and write the outcomes."""
        clock = services.clock(now)
        self._pass = PassResult()
        await self._housekeeping(clock(), force=True)
        runs = await self._claim(clock, limit=self._concurrency)
        # A retry cancelled because its lease was lost ends cancelled: not this pass's end.
        await asyncio.gather(*(r.task for r in runs if r.task is not None), return_exceptions=True)
        await self._write(clock())
        return self._pass

    def wake(self) -> None:
        """Look for due entries now (a NOTIFY arrived, or the listener reconnected)."""
        self._wake.set()

    # --- the service ----------------------------------------------------------------------

    async def start(self) -> None:
        async with self._ctx.db.connection() as conn:
            if not await conn.fetchval(TRIGGER_PRESENT):
                self._discover_every = DISCOVER_WITHOUT_TRIGGER_SECONDS
                log.warning(
                    "jobwarden's trigger on dead_letter_queue is missing or disabled: new entries"
                    f" are found by polling every {DISCOVER_WITHOUT_TRIGGER_SECONDS:g}s"
                )
        if not self.router.has_default and not self.router.python_jobs:
            # Info, not a warning: many installations never use the queue. Entries that
            # do wait for want of a route raise a dlq_unrouted alert.
            log.info(
                "JOBWARDEN_DLQ_RETRY_URL is unset and no Python handler is installed: only jobs"
                " with a route (jobwarden dlq route set) are retried"
            )
        self._loop_task = asyncio.create_task(self._loop(), name="dlq-processor")
        self._renew_task = asyncio.create_task(self._renew_loop(), name="dlq-leases")

    async def stop(self, grace: float) -> None:
        """Stop claiming; retries in flight get `grace` seconds; hand back the rest."""
        self._stopping.set()
        self._wake.set()
        self._cancel_waiting()
        if self._loop_task is not None:
            done, _ = await asyncio.wait([self._loop_task], timeout=grace)
            if not done:  # stuck on the database: stop claiming all the same
                self._loop_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._loop_task
        self._cancel_waiting()  # and those the loop's last turn claimed
        running = [r.task for r in self._runs.values() if r.task is not None]
        if running:
            started = sum(1 for r in self._runs.values() if r.started)
            if started:
                log.info("waiting for dead-letter retries in flight", count=started, grace_s=grace)
            _, pending = await asyncio.wait(running, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                log.warning(
                    "dead-letter retries did not finish within the grace period; written as"
                    " interrupted",
                    count=len(pending),
                )
                await asyncio.wait(pending, timeout=5)
        unstarted = [r.claim for r in self._runs.values() if not r.started and not r.lost]
        try:
            await self._write_at_stop()
        except DATABASE_ERRORS as exc:
            log.warning(
                "could not write dead-letter outcomes; their leases will expire",
                error=f"{type(exc).__name__}: {exc}",
            )
        try:
            if unstarted:
                async with self._ctx.db.connection() as conn:
                    released = await queue.release(conn, self.owner, unstarted, services.now())
                log.info("handed back claimed dead-letter entries", count=released)
        except DATABASE_ERRORS as exc:
            log.warning(
                "could not hand back claimed dead-letter entries; their leases will expire",
                error=f"{type(exc).__name__}: {exc}",
            )
        finally:
            if self._renew_task is not None:
                self._renew_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._renew_task

    def _cancel_waiting(self) -> None:
        """Claimed, still waiting for a slot: they never start (handed back at stop)."""
        for run in self._runs.values():
            if not run.started and run.task is not None:
                run.task.cancel()

    async def _write_at_stop(self) -> None:
        for attempt in range(RECORD_RETRIES):
            try:
                await self._write(services.now())
                return
            except DATABASE_ERRORS:
                if attempt == RECORD_RETRIES - 1:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))  # a short outage at stop: try again

    async def _loop(self) -> None:
        errors = 0
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                wait = await self._step()
                errors = 0
            except Exception as exc:  # noqa: BLE001  the loop outlives any one failure (logged)
                errors += 1
                wait = self._loop_backoff(errors, exc)
            if wait > 0 and not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)

    async def _step(self) -> float:
        """One turn of the loop; seconds to sleep before the next (0: go on at once)."""
        now = services.now()
        await self._write(now)
        await self._housekeeping(now)
        waiting = len(self._runs) - self.state.running
        depth = PREFETCH_QUICK if self._typical_seconds < QUICK_RETRY_SECONDS else PREFETCH_SLOW
        room = depth * self._concurrency - len(self._runs)
        if room <= 0 or (room < self._concurrency and waiting >= self._concurrency):
            return IDLE_TICK_SECONDS  # a finished retry wakes the loop
        runs = await self._claim(services.now, limit=room)
        if len(runs) == room:
            return 0.0  # there may be more due
        async with self._ctx.db.connection() as conn:
            due = await queue.next_due(conn, self.router.routing, self._max_attempts)
        if due is None:
            return IDLE_TICK_SECONDS
        until = (due - services.now()).total_seconds()
        return min(IDLE_TICK_SECONDS, max(until, MIN_SLEEP_SECONDS))

    def _loop_backoff(self, errors: int, exc: Exception) -> float:
        self.state.last_error = f"{type(exc).__name__}: {exc}"
        self.state.last_error_at = services.now()
        return loop_failure_delay(log, errors, "processing the dead-letter queue", exc)

    # --- claiming, running, writing -------------------------------------------------------

    async def _housekeeping(self, now: datetime, *, force: bool = False) -> None:
        tick = time.monotonic()
        if force or tick - self._last["recover"] >= RECOVER_EVERY_SECONDS:
            self._last["recover"] = tick
            async with self._ctx.db.connection() as conn:
                if await queue.refresh_statistics(conn):
                    log.info("analyzed the dead-letter tables: the queue outgrew their statistics")
                recovered = await queue.recover(conn, now, max_attempts=self._max_attempts)
            self._log_recovered(recovered)
        if force or tick - self._last["discover"] >= self._discover_every:
            self._last["discover"] = tick
            async with self._ctx.db.connection() as conn:
                self._pass.discovered += await queue.discover(conn, now)
                spent = await queue.exhaust(conn, now, max_attempts=self._max_attempts)
            for entry in spent:
                log.error(
                    "dead-letter entry has no attempt left (JOBWARDEN_DLQ_MAX_ATTEMPTS): FAILED",
                    dlq_id=entry.id,
                    job_id=entry.job_id,
                )
        if tick - self._last["prune"] >= PRUNE_EVERY_SECONDS:
            self._last["prune"] = tick
            async with self._ctx.db.connection() as conn:
                await queue.prune(conn)

    def _log_recovered(self, recovered: list[queue.Recovered]) -> None:
        for entry in recovered:
            self._pass.recovered += 1
            self.state.totals["recovered"] += 1
            fields = {"dlq_id": entry.id, "job_id": entry.job_id}
            if entry.status == "FAILED":
                log.error(
                    "dead-letter entry taken back after its lease expired, out of attempts: FAILED",
                    **fields,
                )
            else:
                log.warning(
                    "dead-letter entry taken back after its lease expired; retrying", **fields
                )
        if recovered:
            self._wake.set()

    async def _claim(self, clock: Clock, *, limit: int) -> list[_Run]:
        now = clock()
        async with self._ctx.db.connection() as conn:
            claimed = await queue.claim(
                conn,
                self.owner,
                now,
                limit=limit,
                lease=self._lease,
                routing=self.router.routing,
                max_attempts=self._max_attempts,
            )
        self.state.last_claim_at = now
        self._pass.claimed += len(claimed)
        runs: list[_Run] = []
        unrouted: list[queue.Claim] = []
        for item in claimed:
            handler = self.router.handler_for(item)
            if handler is None:  # its route was removed since the claim read it
                unrouted.append((item.entry.id, item.entry.attempt))
                continue
            run = _Run(item, handler)
            if (old := self._runs.get(item.entry.id)) is not None:
                # Taken back from this very daemon and claimed again: the old claim
                # is dead (its writes are fenced off); its retry must not go on.
                self._lose(old, "claimed again after its lease expired")
            self._runs[item.entry.id] = run
            run.task = asyncio.create_task(self._run(run, clock), name=f"dlq-{item.entry.id}")
            runs.append(run)
        if unrouted:
            async with self._ctx.db.connection() as conn:
                await queue.release(conn, self.owner, unrouted, clock())
        self._update_counts()
        return runs

    async def _run(self, run: _Run, clock: Clock) -> None:
        entry = run.claimed.entry
        try:
            async with self._slots:
                if self._stopping.is_set():
                    return  # stopping: never started, handed back by stop()
                run.started = True
                self.state.running += 1
                self._update_counts()
                started_at, began = clock(), time.monotonic()
                try:
                    outcome = await run.handler(entry)
                except asyncio.CancelledError:
                    if not run.lost:
                        self._interrupted(run, started_at, time.monotonic() - began, clock())
                    raise
                except Exception as exc:
                    log.exception("dead-letter handler raised", dlq_id=entry.id)
                    outcome = Outcome(Verdict.RETRY, error=f"internal error: {type(exc).__name__}")
                self._finish(run, outcome, started_at, time.monotonic() - began, clock())
        finally:
            if run.started:
                self.state.running -= 1
            if (run.started or run.lost) and self._runs.get(entry.id) is run:
                del self._runs[entry.id]
            self._update_counts()
            self._wake.set()

    def _history(
        self, run: _Run, outcome: Outcome, started_at: datetime, seconds: float
    ) -> dict[str, Any]:
        """This attempt's entry in metadata.jobwarden.history."""
        return {
            "attempt": run.claimed.entry.attempt,
            "startedAt": iso_utc(started_at),
            "durationMs": round(seconds * 1000),
            "outcome": outcome.verdict.value,
            "status": outcome.status,
            "error": outcome.error,
            "handler": run.handler.kind,
            "by": self.owner,
        }

    def _interrupted(self, run: _Run, started_at: datetime, seconds: float, now: datetime) -> None:
        """Still running when the grace period ended: back to PENDING, due now, and the
        attempt is not counted (a stop is not the retry's failure; the endpoint tells a
        repeat by its Idempotency-Key)."""
        entry = run.claimed.entry
        error = "interrupted: jobwarden stopped before the retry finished"
        history = self._history(run, Outcome(Verdict.RETRY, error=error), started_at, seconds)
        history["outcome"] = "interrupted"
        self._done.append(
            queue.Finished(entry.id, entry.attempt, "PENDING", history, due_at=now, refund=True)
        )
        log.warning(
            "dead-letter retry interrupted by the stop; handed back",
            dlq_id=entry.id,
            job_id=entry.job_id,
            attempt=entry.attempt,
        )

    def _finish(
        self, run: _Run, outcome: Outcome, started_at: datetime, seconds: float, now: datetime
    ) -> None:
        claimed, entry = run.claimed, run.claimed.entry
        self._typical_seconds += 0.1 * (seconds - self._typical_seconds)
        history = self._history(run, outcome, started_at, seconds)
        fields = {
            "dlq_id": entry.id,
            "job_id": entry.job_id,
            "attempt": entry.attempt,
            "handler": run.handler.kind,
            "status": outcome.status,
            "duration_ms": history["durationMs"],
        }
        if outcome.verdict is Verdict.SUCCEEDED:
            finished = queue.Finished(entry.id, entry.attempt, "SUCCEEDED", history)
            self._count("succeeded")
            if _STDLIB_LOG.isEnabledFor(logging.INFO):  # the hot path: skip it when filtered
                log.info("dead-letter retry succeeded", **fields)
        elif outcome.verdict is Verdict.FAILED:
            finished = queue.Finished(entry.id, entry.attempt, "FAILED", history, exhausted=True)
            self._count("failed")
            log.error("dead-letter entry failed for good", error=outcome.error, **fields)
        elif claimed.budget_attempt >= self._max_attempts:
            history["outcome"] = "exhausted"
            finished = queue.Finished(entry.id, entry.attempt, "FAILED", history, exhausted=True)
            self._count("failed")
            log.error("dead-letter entry out of attempts: FAILED", error=outcome.error, **fields)
        else:
            delay = self.backoff.delay(claimed.budget_attempt, outcome.wait)
            retry_at = _to_millisecond(now + timedelta(seconds=delay))  # as the history says
            history["retryAt"] = iso_utc(retry_at)
            finished = queue.Finished(entry.id, entry.attempt, "PENDING", history, due_at=retry_at)
            self._count("retrying")
            log.warning(
                "dead-letter retry failed; will retry",
                error=outcome.error,
                retry_in_s=round(delay, 3),
                **fields,
            )
        self._done.append(finished)

    def _count(self, outcome: str) -> None:
        setattr(self._pass, outcome, getattr(self._pass, outcome) + 1)
        self.state.totals[outcome] += 1

    async def _write(self, now: datetime) -> None:
        """Write the outcomes gathered so far; kept for the next turn if the database is
        away (their leases are renewed meanwhile)."""
        if not self._done:
            return
        done = list(self._done)
        async with self._writing, self._ctx.db.connection() as conn:
            try:
                written = await queue.record(conn, self.owner, done, now)
            except asyncpg.PostgresError as exc:
                if isinstance(exc, RETRY_RECORDING):
                    raise  # the database is away: keep them, write them when it is back
                # Writing these again cannot work: the lease gives them back instead.
                del self._done[: len(done)]
                log.error(
                    "could not write dead-letter outcomes; their leases will expire",
                    count=len(done),
                    error=f"{type(exc).__name__}: {exc}",
                )
                return
        del self._done[: len(done)]
        if written < len(done):
            log.warning(
                "dead-letter outcomes not written: their lease was taken back meanwhile",
                count=len(done) - written,
            )

    def _update_counts(self) -> None:
        self.state.waiting = max(0, len(self._runs) - self.state.running)

    # --- leases -------------------------------------------------------------------------

    async def _renew_loop(self) -> None:
        interval = max(self._lease / 3, 0.1)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.renew()
            except Exception:  # the renewals outlive any one failure (logged)
                log.exception("error while renewing dead-letter leases")
            self._check_deadline()

    async def renew(self) -> None:
        """Extend the leases of every claim this daemon holds; cancel the retries whose
        entries were taken back. A renewal gets a third of the lease to answer."""
        runs = {run.claim: run for run in self._runs.values() if not run.lost}
        held = list(runs) + [(f.id, f.attempt) for f in self._done]
        sent = time.monotonic()
        if not held:
            self._renewed_at = sent
            return
        try:
            async with asyncio.timeout(max(self._lease / 3, 0.1)):
                async with self._writing, self._ctx.db.connection() as conn:
                    kept = await queue.renew(conn, self.owner, held, services.now(), self._lease)
        except DATABASE_ERRORS as exc:
            log.warning("could not renew dead-letter leases", error=f"{type(exc).__name__}: {exc}")
            return
        self._renewed_at = sent
        for claim, run in runs.items():
            if claim not in kept and self._runs.get(claim[0]) is run:
                self._lose(run, "another daemon took the entry back")

    def _check_deadline(self) -> None:
        """Leases not renewed for most of their length may be taken back any moment:
        cancel those retries before another daemon starts the same entries."""
        if time.monotonic() - self._renewed_at <= 0.8 * self._lease:
            return
        for run in list(self._runs.values()):
            self._lose(run, "its lease could not be renewed in time")

    def _lose(self, run: _Run, why: str) -> None:
        if run.lost or run.task is None:
            return
        run.lost = True
        run.task.cancel()
        log.warning(
            "dead-letter retry cancelled: another daemon may take the entry back",
            dlq_id=run.claimed.entry.id,
            reason=why,
        )


def _to_millisecond(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
