"""Sampling `job_metrics`: what happened to each job since the previous pass.

The web app's runner keeps one row per job and increments its counters. Each pass
reads every row, compares it with the previous sample kept in
`jobwarden.job_samples`, and records the difference (executions, successes,
failures, duration of the new runs, a grown maximum, the newest execution) in
`jobwarden.job_history`, only for jobs where something happened.

A counter that went down, or a row deleted and created again (another `id`), is
a reset: the new reading becomes the sample and nothing is recorded, so no false
alert follows. A job seen for the first time is sampled the same way. The last
execution, success and failure times never go back: a reset row's empty times do
not make a job look as if it never ran. The sample of a row that disappeared is
kept while the job has an expectation (it is still expected to run), and
forgotten otherwise.

Jobs that report their runs to jobwarden (`jobwarden.run_jobs`) are judged from
those runs (monitoring/runfacts.py), not from their counters: they are not sampled.

The whole pass runs in one transaction under a transaction-level advisory lock,
so two evaluators racing each other cannot both record the same runs.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jobwarden.db.pg import Conn
from jobwarden.db.prisma import from_prisma

# Transaction advisory lock key: ASCII "JWSAMPLE".
SAMPLING_LOCK_KEY = 0x4A5753414D504C45
# Waiting longer than this for another evaluator means it is stuck: fail this pass.
SAMPLING_LOCK_TIMEOUT = "30s"

READ_METRICS = """
SELECT "jobId" AS job_id, id AS row_id, "createdAt" AS row_created_at,
       "totalExecutions" AS total_executions, "successCount" AS success_count,
       "failureCount" AS failure_count, "totalDurationMs" AS total_duration_ms,
       "maxDurationMs" AS max_duration_ms, "lastExecutionAt" AS last_execution_at,
       "lastSuccessAt" AS last_success_at, "lastFailureAt" AS last_failure_at
FROM job_metrics m
WHERE NOT EXISTS (SELECT 1 FROM jobwarden.run_jobs r WHERE r.job_id = m."jobId")
"""

READ_SAMPLES = """
SELECT job_id, row_id, row_created_at, total_executions, success_count, failure_count,
       total_duration_ms, max_duration_ms, last_execution_at, last_success_at,
       last_failure_at, failure_streak, first_seen_at, sampled_at, resets
FROM jobwarden.job_samples
"""

WRITE_SAMPLES = """
INSERT INTO jobwarden.job_samples AS s (
    job_id, row_id, row_created_at, total_executions, success_count, failure_count,
    total_duration_ms, max_duration_ms, last_execution_at, last_success_at, last_failure_at,
    failure_streak, first_seen_at, sampled_at, resets)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::int[], $5::int[], $6::int[],
                     $7::bigint[], $8::int[], $9::timestamptz[], $10::timestamptz[],
                     $11::timestamptz[], $12::int[], $13::timestamptz[], $14::timestamptz[],
                     $15::int[])
ON CONFLICT (job_id) DO UPDATE SET
    row_id = excluded.row_id, row_created_at = excluded.row_created_at,
    total_executions = excluded.total_executions, success_count = excluded.success_count,
    failure_count = excluded.failure_count, total_duration_ms = excluded.total_duration_ms,
    max_duration_ms = excluded.max_duration_ms, last_execution_at = excluded.last_execution_at,
    last_success_at = excluded.last_success_at, last_failure_at = excluded.last_failure_at,
    failure_streak = excluded.failure_streak, sampled_at = excluded.sampled_at,
    resets = excluded.resets
"""

WRITE_HISTORY = """
INSERT INTO jobwarden.job_history AS h (
    job_id, sampled_at, executions, successes, failures, duration_ms, max_duration_ms,
    last_execution_at)
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::int[], $4::int[], $5::int[],
                     $6::bigint[], $7::int[], $8::timestamptz[])
ON CONFLICT (job_id, sampled_at) DO UPDATE SET
    executions = h.executions + excluded.executions,
    successes = h.successes + excluded.successes,
    failures = h.failures + excluded.failures,
    duration_ms = h.duration_ms + excluded.duration_ms,
    max_duration_ms = greatest(h.max_duration_ms, excluded.max_duration_ms),
    last_execution_at = greatest(h.last_execution_at, excluded.last_execution_at)
"""

FORGET_SAMPLES = """
DELETE FROM jobwarden.job_samples s
WHERE s.job_id = ANY($1::text[])
  AND NOT EXISTS (SELECT 1 FROM jobwarden.job_expectations e WHERE e.job_id = s.job_id)
RETURNING s.job_id
"""


@dataclass(frozen=True, slots=True)
class Reading:
    """One `job_metrics` row as read, timestamps aware UTC."""

    job_id: str
    row_id: str
    row_created_at: datetime
    total_executions: int
    success_count: int
    failure_count: int
    total_duration_ms: int
    max_duration_ms: int
    last_execution_at: datetime | None
    last_success_at: datetime | None
    last_failure_at: datetime | None


@dataclass(frozen=True, slots=True)
class Sample(Reading):
    """The last reading of a job, with what jobwarden derived from the readings so far."""

    failure_streak: int
    first_seen_at: datetime
    sampled_at: datetime
    resets: int = 0


@dataclass(frozen=True)
class Delta:
    """What happened to one job between two passes."""

    job_id: str
    executions: int
    successes: int
    failures: int
    duration_ms: int
    max_duration_ms: int | None  # the new maximum, when it grew
    last_execution_at: datetime | None


@dataclass(frozen=True)
class SamplingResult:
    samples: dict[str, Sample]  # job id -> the sample after this pass
    deltas: list[Delta]
    resets: list[str]  # job ids whose counters were reset
    new_jobs: list[str]


def _is_reset(previous: Sample, reading: Reading) -> bool:
    return previous.row_id != reading.row_id or any(
        now < before
        for now, before in (
            (reading.total_executions, previous.total_executions),
            (reading.success_count, previous.success_count),
            (reading.failure_count, previous.failure_count),
            (reading.total_duration_ms, previous.total_duration_ms),
        )
    )


def _streak(previous: Sample, reading: Reading, successes: int, failures: int) -> int:
    """Failures since the last success, as far as counters can tell (a lower bound).

    When successes and failures both happened since the last pass, their order is
    unknown: the last failure after the last success means at least one.
    """
    if successes == 0:
        return previous.failure_streak + failures
    failed_last = (
        failures > 0
        and reading.last_failure_at is not None
        and (reading.last_success_at is None or reading.last_failure_at > reading.last_success_at)
    )
    return 1 if failed_last else 0


def later(before: datetime | None, now: datetime | None) -> datetime | None:
    """The later of two instants, either of which may be unknown."""
    return before if now is None or (before is not None and before > now) else now


def _sample(
    r: Reading,
    previous: Sample | None,
    failure_streak: int,
    first_seen_at: datetime,
    now: datetime,
    resets: int,
) -> Sample:
    p = previous
    return Sample(
        r.job_id, r.row_id, r.row_created_at, r.total_executions, r.success_count,
        r.failure_count, r.total_duration_ms, r.max_duration_ms,
        later(p.last_execution_at, r.last_execution_at) if p else r.last_execution_at,
        later(p.last_success_at, r.last_success_at) if p else r.last_success_at,
        later(p.last_failure_at, r.last_failure_at) if p else r.last_failure_at,
        failure_streak, first_seen_at, now, resets,
    )  # fmt: skip


def compare(
    previous: Sample | None, reading: Reading, now: datetime
) -> tuple[Sample, Delta | None]:
    """The new sample of a job and what happened since `previous` (None: nothing known)."""
    if previous is None:
        return _sample(reading, None, 0, now, now, 0), None
    if _is_reset(previous, reading):
        resets = previous.resets + 1
        return _sample(reading, previous, 0, previous.first_seen_at, now, resets), None
    successes = reading.success_count - previous.success_count
    failures = reading.failure_count - previous.failure_count
    executions = max(reading.total_executions - previous.total_executions, successes + failures)
    streak = _streak(previous, reading, successes, failures)
    sample = _sample(reading, previous, streak, previous.first_seen_at, now, previous.resets)
    if executions == 0:
        return sample, None
    return sample, Delta(
        job_id=reading.job_id,
        executions=executions,
        successes=successes,
        failures=failures,
        duration_ms=reading.total_duration_ms - previous.total_duration_ms,
        max_duration_ms=(
            reading.max_duration_ms if reading.max_duration_ms > previous.max_duration_ms else None
        ),
        last_execution_at=reading.last_execution_at,
    )


def _reading(r: Sequence[Any]) -> Reading:
    """A row of READ_METRICS, its naive UTC timestamps made aware."""
    return Reading(
        r[0], r[1], r[2].replace(tzinfo=UTC), r[3], r[4], r[5], r[6], r[7],
        from_prisma(r[8]), from_prisma(r[9]), from_prisma(r[10]),
    )  # fmt: skip


def _changed(before: Sample | None, after: Sample) -> bool:
    """Whether the stored sample must be rewritten (`sampled_at` alone does not count)."""
    return before is None or _state(before) != _state(after)


def _state(s: Sample) -> tuple[object, ...]:
    return (
        s.row_id, s.total_executions, s.success_count, s.failure_count, s.total_duration_ms,
        s.max_duration_ms, s.last_execution_at, s.last_success_at, s.last_failure_at,
        s.failure_streak, s.resets,
    )  # fmt: skip


async def read_samples(conn: Conn) -> dict[str, Sample]:
    """The latest sample of every job, as the last pass left it."""
    return {r[0]: Sample(*r) for r in await conn.fetch(READ_SAMPLES)}


async def sample_jobs(conn: Conn, now: datetime) -> SamplingResult:
    """Read every job_metrics row, record what happened since the last pass, in one transaction."""
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{SAMPLING_LOCK_TIMEOUT}'")
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SAMPLING_LOCK_KEY)
        readings = [_reading(r) for r in await conn.fetch(READ_METRICS)]
        previous = await read_samples(conn)
        samples: dict[str, Sample] = {}
        deltas: list[Delta] = []
        resets: list[str] = []
        new_jobs: list[str] = []
        changed: list[Sample] = []
        for reading in readings:
            before = previous.get(reading.job_id)
            sample, delta = compare(before, reading, now)
            samples[reading.job_id] = sample
            if before is None:
                new_jobs.append(reading.job_id)
            elif sample.resets != before.resets:
                resets.append(reading.job_id)
            if delta is not None:
                deltas.append(delta)
            if _changed(before, sample):
                changed.append(sample)
        if changed:
            await _write_samples(conn, changed)
        if deltas:
            await _write_history(conn, deltas, now)
        if vanished := list(previous.keys() - samples.keys()):  # rows deleted from job_metrics
            forgotten = {r[0] for r in await conn.fetch(FORGET_SAMPLES, vanished)}
            samples.update((j, previous[j]) for j in vanished if j not in forgotten)
    return SamplingResult(samples=samples, deltas=deltas, resets=resets, new_jobs=new_jobs)


async def _write_samples(conn: Conn, samples: Sequence[Sample]) -> None:
    await conn.execute(
        WRITE_SAMPLES,
        [s.job_id for s in samples],
        [s.row_id for s in samples],
        [s.row_created_at for s in samples],
        [s.total_executions for s in samples],
        [s.success_count for s in samples],
        [s.failure_count for s in samples],
        [s.total_duration_ms for s in samples],
        [s.max_duration_ms for s in samples],
        [s.last_execution_at for s in samples],
        [s.last_success_at for s in samples],
        [s.last_failure_at for s in samples],
        [s.failure_streak for s in samples],
        [s.first_seen_at for s in samples],
        [s.sampled_at for s in samples],
        [s.resets for s in samples],
    )


async def _write_history(conn: Conn, deltas: Sequence[Delta], now: datetime) -> None:
    await conn.execute(
        WRITE_HISTORY,
        [d.job_id for d in deltas],
        [now] * len(deltas),
        [d.executions for d in deltas],
        [d.successes for d in deltas],
        [d.failures for d in deltas],
        [d.duration_ms for d in deltas],
        [d.max_duration_ms for d in deltas],
        [d.last_execution_at for d in deltas],
    )
