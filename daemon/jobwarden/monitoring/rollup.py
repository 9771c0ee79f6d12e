"""Reported runs added up into the web app's `job_metrics`, each exactly once.

The runs not yet counted wait in `jobwarden.run_inbox` (a trigger on `runs` puts them
there, sql/0005). One statement takes a batch of them out and adds them to their
jobs' rows, so a daemon killed mid-pass counts nothing (its transaction is undone).
Folds are serialized by a transaction-level advisory lock, so replicas folding at
once take turns. The update adds to the counters and keeps the newest times; it never
overwrites what the web app counts in the same row. The cost follows the new runs.

The same statement keeps `jobwarden.run_jobs`, what the rules judge such a job by: its
newest run, success and failure, the latest success's duration and the failures
since it. Runs may arrive out of order (a batch of older runs): a failure counts
toward the streak when it finished after the newest success; a success newer than
the known one restarts the count from the failures that finished after it.
"""

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from jobwarden.db.pg import Conn
from jobwarden.db.prisma import to_prisma

FOLD_BATCH = 5000
# Seconds a pass spends folding at most (one batch at least): a pass folds several
# hundred thousand runs a second, so ingest at 50,000 runs/s is kept up with, and a
# backlog after an outage is worked off over passes while alerts go on.
FOLD_TIME_LIMIT = 10.0
FOLD_ATTEMPTS = 3  # a job's row created by the web app mid-fold, or a deadlock with it
FOLD_LOCK_KEY = 0x4A57464F4C44524E  # "JWFOLDRN"

# $1 batch size, $2 now as Prisma stores it, $3 now. Rows are written in job order.
# A new job_metrics row looks like Prisma's: a generated "c…" id, updatedAt.
FOLD = """
WITH taken AS (
    DELETE FROM jobwarden.run_inbox i
    WHERE i.id = ANY(ARRAY(
        SELECT x.id FROM jobwarden.run_inbox x ORDER BY x.id LIMIT $1 FOR UPDATE SKIP LOCKED
    ))
    RETURNING i.job_id, i.outcome, i.finished_at, i.duration_ms
), per_job AS (
    SELECT job_id,
           count(*)::integer AS runs,
           count(*) FILTER (WHERE outcome = 'success')::integer AS successes,
           count(*) FILTER (WHERE outcome = 'failure')::integer AS failures,
           coalesce(sum(duration_ms), 0)::bigint AS total_ms,
           min(duration_ms)::integer AS min_ms,
           max(duration_ms)::integer AS max_ms,
           max(finished_at) AS last_at,
           max(finished_at) FILTER (WHERE outcome = 'success') AS last_success_at,
           max(finished_at) FILTER (WHERE outcome = 'failure') AS last_failure_at,
           (array_agg(duration_ms ORDER BY finished_at DESC)
               FILTER (WHERE outcome = 'success'))[1] AS last_success_ms,
           coalesce(array_agg(finished_at) FILTER (WHERE outcome = 'failure'), '{}')
               AS failed_at
    FROM taken
    GROUP BY job_id
), counted AS (  -- the rows that exist: added to
    UPDATE job_metrics m
    SET "totalExecutions" = m."totalExecutions" + p.runs,
        "successCount" = m."successCount" + p.successes,
        "failureCount" = m."failureCount" + p.failures,
        "totalDurationMs" = m."totalDurationMs" + p.total_ms,
        -- no duration known among the new runs: the minimum stays. A row with no
        -- duration counted yet (no run, or runs of unknown duration: 0 and 0) holds
        -- the default 0, not a minimum.
        "minDurationMs" = CASE
            WHEN p.min_ms IS NULL THEN m."minDurationMs"
            WHEN m."totalExecutions" = 0 OR m."minDurationMs" = 0 AND m."maxDurationMs" = 0
                THEN p.min_ms
            ELSE least(m."minDurationMs", p.min_ms) END,
        "maxDurationMs" = greatest(m."maxDurationMs", coalesce(p.max_ms, 0)),
        "lastExecutionAt" = greatest(m."lastExecutionAt", p.last_at AT TIME ZONE 'UTC'),
        "lastSuccessAt" = greatest(m."lastSuccessAt", p.last_success_at AT TIME ZONE 'UTC'),
        "lastFailureAt" = greatest(m."lastFailureAt", p.last_failure_at AT TIME ZONE 'UTC'),
        "updatedAt" = $2
    FROM per_job p
    WHERE m."jobId" = p.job_id
    RETURNING 1
), created AS (  -- the others: a row as Prisma would write it (a generated "c…" id)
    INSERT INTO job_metrics (
        id, "jobId", "totalExecutions", "successCount", "failureCount", "totalDurationMs",
        "minDurationMs", "maxDurationMs", "lastExecutionAt", "lastSuccessAt", "lastFailureAt",
        "createdAt", "updatedAt")
    SELECT 'c' || substr(md5(random()::text || clock_timestamp()::text || p.job_id), 1, 24),
           p.job_id, p.runs, p.successes, p.failures, p.total_ms,
           coalesce(p.min_ms, 0), coalesce(p.max_ms, 0),
           p.last_at AT TIME ZONE 'UTC', p.last_success_at AT TIME ZONE 'UTC',
           p.last_failure_at AT TIME ZONE 'UTC', $2, $2
    FROM per_job p
    WHERE NOT EXISTS (SELECT 1 FROM job_metrics x WHERE x."jobId" = p.job_id)
    ORDER BY p.job_id
    ON CONFLICT ("jobId") DO NOTHING  -- the web app made it meanwhile: the fold is redone
    RETURNING 1
), judged AS (
    UPDATE jobwarden.run_jobs j
    SET last_run_at = greatest(j.last_run_at, p.last_at),
        last_failure_at = greatest(j.last_failure_at, p.last_failure_at),
        last_success_at = greatest(j.last_success_at, p.last_success_at),
        last_success_ms = CASE WHEN p.last_success_at > coalesce(j.last_success_at, '-infinity')
                               THEN p.last_success_ms ELSE j.last_success_ms END,
        failure_streak = CASE
            WHEN p.last_success_at > coalesce(j.last_success_at, '-infinity') THEN
                -- a newer success: the failures that finished after it, those counted
                -- before (only when one finished that late) and the new ones
                CASE WHEN j.last_failure_at > p.last_success_at THEN (
                    SELECT count(*) FROM jobwarden.runs r
                    WHERE r.job_id = j.job_id AND r.outcome = 'failure'
                      AND r.finished_at > p.last_success_at
                      AND NOT EXISTS (SELECT 1 FROM jobwarden.run_inbox i WHERE i.id = r.id))
                ELSE 0 END
                + (SELECT count(*) FROM unnest(p.failed_at) f WHERE f > p.last_success_at)
            ELSE j.failure_streak + (SELECT count(*) FROM unnest(p.failed_at) f
                                     WHERE f > coalesce(j.last_success_at, '-infinity'))
            END,
        updated_at = $3
    FROM per_job p
    WHERE j.job_id = p.job_id
), first_seen AS (
    INSERT INTO jobwarden.run_jobs (job_id, last_run_at, last_success_at, last_failure_at,
                                    last_success_ms, failure_streak, created_at, updated_at)
    SELECT p.job_id, p.last_at, p.last_success_at, p.last_failure_at, p.last_success_ms,
           (SELECT count(*) FROM unnest(p.failed_at) f
            WHERE f > coalesce(p.last_success_at, '-infinity')),
           $3, $3
    FROM per_job p
    WHERE NOT EXISTS (SELECT 1 FROM jobwarden.run_jobs j WHERE j.job_id = p.job_id)
)
SELECT (SELECT count(*) FROM taken) AS runs, (SELECT count(*) FROM per_job) AS jobs,
       (SELECT count(*) FROM counted) + (SELECT count(*) FROM created) AS written
"""


@dataclass(frozen=True)
class FoldResult:
    runs: int = 0
    jobs: int = 0  # job_metrics rows written (a job may count in several batches)


class _RowAppeared(Exception):
    """The web app created a job's row while the fold ran: undo the fold, fold again."""


async def fold_runs(
    conn: Conn, now: datetime, *, batch: int = FOLD_BATCH, time_limit: float = FOLD_TIME_LIMIT
) -> FoldResult:
    """Add the runs waiting in the inbox to job_metrics, a batch per transaction, until
    none is left or `time_limit` seconds have passed (the rest at the next pass)."""
    runs = jobs = 0
    deadline = time.monotonic() + time_limit
    while True:
        row: Any = None
        for attempt in range(FOLD_ATTEMPTS):
            try:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", FOLD_LOCK_KEY)
                    row = await conn.fetchrow(FOLD, batch, to_prisma(now), now)
                    assert row is not None
                    if row["written"] < row["jobs"]:
                        raise _RowAppeared
                break
            except (_RowAppeared, asyncpg.DeadlockDetectedError):
                if attempt == FOLD_ATTEMPTS - 1:
                    raise
        runs, jobs = runs + row["runs"], jobs + row["jobs"]
        if row["runs"] < batch or time.monotonic() >= deadline:
            return FoldResult(runs, jobs)
