"""The DLQ processor: a service that retries due dead-letter entries, on every replica.

One loop claims what is due (woken by NOTIFY from the trigger, by a finished retry,
or by its own tick), and starts each claimed entry's retry; at most
`JOBWARDEN_DLQ_CONCURRENCY` retries run at once, and more wait claimed for a free
slot: up to 15 times as many while retries answer within 100 ms (fewer, larger
claims), as many as run when they are slower. Each retry runs with no
transaction open; its outcome is written by the loop, batched with the others that
finish within WRITE_DELAY_SECONDS (at once when no other retry is left):

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
import functools
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from jobwarden.alerts.notification import iso_utc
from jobwarden.backoff import BackoffPolicy
from jobwarden.context import AppContext
from jobwarden.db.pg import DATABASE_ERRORS, Conn
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
# claimed entry waits long behind slow retries while another daemon could run it. The
# loop claims again once half of that room is free, or when the slots are about to
# run out of entries.
PREFETCH_QUICK, PREFETCH_SLOW = 16, 2
QUICK_RETRY_SECONDS = 0.1  # typical duration (moving average) under which retries are quick
# Outcomes are written in batches: each statement costs PostgreSQL about as much to
# plan and start as to write dozens of rows. A batch goes when it is this large, when
# its first outcome is this old, or when no other retry is left to wait for.
WRITE_BATCH = 64
WRITE_DELAY_SECONDS = 0.05
RECOVER_EVERY_SECONDS = 1.0  # also how often the tables' statistics are checked
# ... and as soon as entries arrive (a NOTIFY), at most this often: a burst is claimed
# with plans made for tables nearly empty (a scan of the whole queue per claim) until
# they are analyzed.
ARRIVAL_STATISTICS_SECONDS = 0.1
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
    clock: Clock
    task: "asyncio.Task[None] | None" = None  # once started
    lost: bool = False  # the lease went to another daemon: no outcome is written

    @property
    def started(self) -> bool:
        return self.task is not None

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
        self._runs: dict[str, _Run] = {}  # claimed and not yet finished
        self._waiting: deque[_Run] = deque()  # claimed, not started: in claim order
        self._done: list[queue.Finished] = []  # finished, not yet written
        self._done_since = 0.0  # monotonic when the first of them finished
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._renew_task: asyncio.Task[None] | None = None
        self._renewed_at = time.monotonic()  # when the last renewal that held was sent
        # Writing outcomes, renewing leases: one at a time (their rows overlap). Taken
        # after a connection, held only for the statement.
        self._writing = asyncio.Lock()
        self._discover_every = DISCOVER_EVERY_SECONDS
        self._last = {
            "recover": -math.inf,
            "statistics": -math.inf,
            "discover": -math.inf,
            "prune": -math.inf,
        }
        self._arrived = False  # entries may have arrived since the statistics were checked
        self._pass = PassResult()
        self.state = ProcessorState()
        self._typical_seconds = 0.0  # moving average of a retry's duration

    # --- one pass, for tests and tools --------------------------------------------------

    async def run_once(self, now: datetime | None = None) -> PassResult:
        """Take back expired leases, schedule what the trigger missed, claim what is due
        at `now`, run it all to the end and write the outcomes."""
        clock = services.clock(now)
        self._pass = PassResult()
        async with self._ctx.db.connection() as conn:
            await self._housekeeping(conn, clock(), force=True)
            runs = await self._claim(conn, clock, limit=self._concurrency)
        # A retry cancelled because its lease was lost ends cancelled: not this pass's end.
        await asyncio.gather(*(r.task for r in runs if r.task is not None), return_exceptions=True)
        async with self._ctx.db.connection() as conn:
            await self._write(conn, clock())
        return self._pass

    def wake(self) -> None:
        """Look for due entries now (a NOTIFY arrived, or the listener reconnected)."""
        self._arrived = True
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
        self._stopping.set()  # claimed entries not started yet never start now
        self._wake.set()
        if self._loop_task is not None:
            done, _ = await asyncio.wait([self._loop_task], timeout=grace)
            if not done:  # stuck on the database: stop claiming all the same
                self._loop_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._loop_task
        running = [r.task for r in self._runs.values() if r.task is not None]
        if running:
            log.info("waiting for dead-letter retries in flight", count=len(running), grace_s=grace)
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

    async def _write_at_stop(self) -> None:
        for attempt in range(RECORD_RETRIES):
            try:
                async with self._ctx.db.connection() as conn:
                    await self._write(conn, services.now())
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
                    async with asyncio.timeout(wait):
                        await self._wake.wait()

    async def _step(self) -> float:
        """One turn of the loop; seconds to sleep before the next (0: go on at once).
        A turn with nothing to write, look after or claim takes no connection."""
        room = self._room()
        if not (room or self._write_due() or self._housekeeping_due()):
            return self._write_wait(IDLE_TICK_SECONDS)  # a finished retry wakes the loop
        async with self._ctx.db.connection() as conn:
            now = services.now()
            if self._write_due():
                await self._write(conn, now)
            await self._housekeeping(conn, now)
            if not room:
                return self._write_wait(IDLE_TICK_SECONDS)
            runs = await self._claim(conn, services.now, limit=room)
            if len(runs) == room:
                return 0.0  # there may be more due
            due = await queue.next_due(conn, self.router.routing, self._max_attempts)
        if due is None:
            return self._write_wait(IDLE_TICK_SECONDS)
        until = (due - services.now()).total_seconds()
        return self._write_wait(min(IDLE_TICK_SECONDS, max(until, MIN_SLEEP_SECONDS)))

    def _room(self) -> int:
        """How many entries to claim now: none while at least half the room ahead is
        taken and the slots have enough waiting (fewer, larger claims)."""
        depth = PREFETCH_QUICK if self._typical_seconds < QUICK_RETRY_SECONDS else PREFETCH_SLOW
        window = depth * self._concurrency
        room = window - len(self._runs)
        waiting = len(self._runs) - self.state.running
        if room < window / 2 and waiting >= self._concurrency:
            return 0
        return room

    def _write_due(self) -> bool:
        """Whether the outcomes gathered so far make a batch."""
        return bool(self._done) and (
            len(self._done) >= WRITE_BATCH
            or len(self._runs) == 0
            or time.monotonic() - self._done_since >= WRITE_DELAY_SECONDS
        )

    def _write_wait(self, wait: float) -> float:
        """`wait`, or less when gathered outcomes are to be written sooner."""
        if not self._done:
            return wait
        left = self._done_since + WRITE_DELAY_SECONDS - time.monotonic()
        return max(0.0, min(wait, left))

    def _loop_backoff(self, errors: int, exc: Exception) -> float:
        self.state.last_error = f"{type(exc).__name__}: {exc}"
        self.state.last_error_at = services.now()
        return loop_failure_delay(log, errors, "processing the dead-letter queue", exc)

    # --- claiming, running, writing -------------------------------------------------------

    def _housekeeping_due(self) -> bool:
        return self._recover_due(time.monotonic()) or self._statistics_due(time.monotonic())

    def _recover_due(self, tick: float) -> bool:
        return tick - self._last["recover"] >= RECOVER_EVERY_SECONDS

    def _statistics_due(self, tick: float) -> bool:
        return self._recover_due(tick) or (
            self._arrived and tick - self._last["statistics"] >= ARRIVAL_STATISTICS_SECONDS
        )

    async def _housekeeping(self, conn: Conn, now: datetime, *, force: bool = False) -> None:
        """Every RECOVER_EVERY_SECONDS, the others at their own, slower cadence; the
        statistics also when entries arrived (before they are claimed)."""
        tick = time.monotonic()
        recover = force or self._recover_due(tick)
        if recover or self._statistics_due(tick):
            self._last["statistics"], self._arrived = tick, False
            if await queue.refresh_statistics(conn):
                log.info("analyzed the dead-letter tables: the queue outgrew their statistics")
        if recover:
            self._last["recover"] = tick
            recovered = await queue.recover(conn, now, max_attempts=self._max_attempts)
            self._log_recovered(recovered)
        if force or tick - self._last["discover"] >= self._discover_every:
            self._last["discover"] = tick
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

    async def _claim(self, conn: Conn, clock: Clock, *, limit: int) -> list[_Run]:
        now = clock()
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
            run = _Run(item, handler, clock)
            if (old := self._runs.get(item.entry.id)) is not None:
                # Taken back from this very daemon and claimed again: the old claim
                # is dead (its writes are fenced off); its retry must not go on.
                self._lose(old, "claimed again after its lease expired")
            self._runs[item.entry.id] = run
            self._waiting.append(run)
            runs.append(run)
        self._start_waiting()
        if unrouted:
            await queue.release(conn, self.owner, unrouted, clock())
        return runs

    def _start_waiting(self) -> None:
        """Start claimed entries, in claim order, while a slot is free (not at stop:
        those are handed back)."""
        while (
            self._waiting and self.state.running < self._concurrency and not self._stopping.is_set()
        ):
            run = self._waiting.popleft()
            if not run.lost:
                self.state.running += 1
                run.task = asyncio.create_task(self._run(run))
                # Also when the task is cancelled before its first step (its lease
                # lost at once): a `finally` inside it would never run then.
                run.task.add_done_callback(functools.partial(self._ended, run))
        self._update_counts()

    async def _run(self, run: _Run) -> None:
        entry, clock = run.claimed.entry, run.clock
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

    def _ended(self, run: _Run, _task: "asyncio.Task[None]") -> None:
        """A retry's task is done (finished, failed or cancelled): free its slot."""
        self.state.running -= 1
        if self._runs.get(run.claimed.entry.id) is run:
            del self._runs[run.claimed.entry.id]
        self._start_waiting()
        if self._room() or self._write_due():  # else the loop has nothing to do yet
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
        self._keep(
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
        self._keep(finished)

    def _keep(self, finished: queue.Finished) -> None:
        if not self._done:  # the loop's sleep may be longer than WRITE_DELAY_SECONDS
            self._done_since = time.monotonic()
            self._wake.set()
        self._done.append(finished)

    def _count(self, outcome: str) -> None:
        setattr(self._pass, outcome, getattr(self._pass, outcome) + 1)
        self.state.totals[outcome] += 1

    async def _write(self, conn: Conn, now: datetime) -> None:
        """Write the outcomes gathered so far; kept for the next turn if the database is
        away (their leases are renewed meanwhile)."""
        if not self._done:
            return
        done = list(self._done)
        try:
            async with self._writing:
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
        self._done_since = time.monotonic()  # those that finished meanwhile
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
                async with self._ctx.db.connection() as conn, self._writing:
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
        if run.lost:
            return
        run.lost = True
        if run.task is not None:
            run.task.cancel()
        elif self._runs.get(run.claimed.entry.id) is run:  # waiting: it never starts
            del self._runs[run.claimed.entry.id]
            self._update_counts()
            self._wake.set()  # room to claim
        log.warning(
            "dead-letter retry cancelled: another daemon may take the entry back",
            dlq_id=run.claimed.entry.id,
            reason=why,
        )


def _to_millisecond(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
