"""The dead-letter queue's alerts against a real PostgreSQL: exhausted, backlog, unrouted.

Entries are written by plain SQL as the web app writes them; an entry is made exhausted
as the processor leaves it (shared row FAILED, its schedule's `exhausted_at` set).
The clock is a parameter: every pass is driven directly with its own `now`.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobwarden.alerts.store import Signal, sync_alerts
from jobwarden.context import AppContext
from jobwarden.db.pg import Conn
from jobwarden.db.prisma import to_prisma
from jobwarden.dlq import alerting
from jobwarden.dlq.alerting import DLQ_RULES, DlqAlertsResult, sync_dlq_alerts
from jobwarden.dlq.queue import Routing
from jobwarden.monitoring import evaluation
from tests.integration.conftest import app_context
from tests.integration.webapp import (
    alerts,
    insert_dlq_entries,
    insert_dlq_entry,
    open_alerts,
    record_run,
    record_runs,
    resolve_alert,
)

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
JOB = "send-invoice"
EVERY_JOB = Routing(every_job=True)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def dlq_pass(
    conn: Conn,
    now: datetime,
    *,
    routing: Routing = EVERY_JOB,
    threshold: int = 100,
    max_age: float = 3600.0,
) -> DlqAlertsResult:
    return await sync_dlq_alerts(
        conn,
        now,
        routing=routing,
        backlog_threshold=threshold,
        backlog_max_age=max_age,
        resolve_after=2,
    )


async def exhaust(conn: Conn, entry_id: str, when: datetime, error: str = "HTTP 503") -> None:
    """As the processor leaves an entry that ran out of attempts."""
    await conn.execute(
        """
        UPDATE dead_letter_queue
        SET status = 'FAILED', attempts = 5, "processedAt" = $2, "updatedAt" = $2,
            metadata = jobwarden.dlq_history(metadata, jsonb_build_array(
                jsonb_build_object('attempt', 5, 'outcome', 'exhausted', 'error', $3::text)))
        WHERE id = $1
        """,
        entry_id,
        to_prisma(when),
        error,
    )
    await conn.execute(
        """
        INSERT INTO jobwarden.dlq_schedule (dlq_id, job_id, active, due_at, exhausted_at)
        SELECT id, "jobId", false, $2, $2 FROM dead_letter_queue WHERE id = $1
        ON CONFLICT (dlq_id) DO UPDATE
        SET active = false, exhausted_at = $2, lease_owner = NULL, lease_until = NULL
        """,
        entry_id,
        when,
    )


async def exhausted_entry(conn: Conn, job_id: str, when: datetime, error: str = "HTTP 503") -> str:
    entry_id = await insert_dlq_entry(conn, job_id)
    await exhaust(conn, entry_id, when, error)
    return entry_id


async def retry_job(conn: Conn, job_id: str, when: datetime) -> None:
    """What `jobwarden dlq retry --job J` leaves: PENDING again, exhaustion cleared."""
    await conn.execute(
        "UPDATE dead_letter_queue SET status = 'PENDING', \"updatedAt\" = $2"
        " WHERE \"jobId\" = $1 AND status = 'FAILED'",
        job_id,
        to_prisma(when),
    )
    await conn.execute(
        "UPDATE jobwarden.dlq_schedule SET active = true, due_at = $2, exhausted_at = NULL"
        " WHERE job_id = $1 AND exhausted_at IS NOT NULL",
        job_id,
        when,
    )


async def pending_entries(
    conn: Conn, count: int, created_at: datetime, job_id: str = JOB
) -> list[str]:
    ids = await insert_dlq_entries(conn, count, job_id)
    await conn.execute(
        'UPDATE dead_letter_queue SET "createdAt" = $2 WHERE id = ANY($1::text[])',
        ids,
        to_prisma(created_at),
    )
    return ids


async def succeed(conn: Conn, ids: list[str]) -> None:
    await conn.execute(
        "UPDATE dead_letter_queue SET status = 'SUCCEEDED' WHERE id = ANY($1::text[])", ids
    )


async def only(conn: Conn, **where: Any) -> dict[str, Any]:
    [alert] = await alerts(conn, **where)
    return alert


# -- dlq_exhausted -------------------------------------------------------------------


async def test_exhausted_entries_raise_one_alert_per_job_with_count_and_newest_error(
    ctx: AppContext,
) -> None:
    long_error = "HTTP 410: " + "gone " * 200
    async with ctx.db.connection() as conn:
        await exhausted_entry(conn, JOB, at(0), "HTTP 500: boom")
        newest = await exhausted_entry(conn, JOB, at(20), long_error)
        await exhausted_entry(conn, JOB, at(10), "HTTP 502: bad gateway")
        await exhausted_entry(conn, "sync-crm", at(5), "PermanentFailure: no such account")
        # Failed but dealt with (discarded: exhaustion cleared), or still pending: not counted.
        discarded = await insert_dlq_entry(conn, JOB)
        await exhaust(conn, discarded, at(1))
        await conn.execute(
            "UPDATE jobwarden.dlq_schedule SET exhausted_at = NULL WHERE dlq_id = $1", discarded
        )
        await insert_dlq_entry(conn, JOB)

        result = await dlq_pass(conn, at(30))

        assert [e.job_id for e in result.exhausted] == [JOB, "sync-crm"]
        assert len(await alerts(conn)) == 2  # one per job, not one per entry
        alert = await only(
            conn, type="dlq_exhausted", title=f"{JOB}: dead-letter entries failed for good"
        )
        assert (alert["severity"], alert["resolved"]) == ("ERROR", False)
        meta = alert["metadata"]
        assert meta["fingerprint"] == f"dlq_exhausted:{JOB}"
        assert meta["jobId"] == JOB
        assert meta["count"] == 3
        assert meta["newestEntryId"] == newest
        assert meta["newestError"].startswith("HTTP 410: gone gone")
        assert len(meta["newestError"]) == 300
        assert meta["newestError"].endswith("…")
        message = alert["message"]
        assert message.startswith(f"3 dead-letter entries of {JOB} have run out of retry")
        assert meta["newestError"] in message
        assert f"jobwarden dlq list --job {JOB} --status FAILED" in message
        assert f"jobwarden dlq retry --job {JOB}" in message
        assert "jobwarden dlq discard" in message

        other = await only(
            conn, type="dlq_exhausted", title="sync-crm: dead-letter entries failed for good"
        )
        assert other["metadata"]["count"] == 1
        assert other["metadata"]["newestError"] == "PermanentFailure: no such account"
        assert other["message"].startswith("1 dead-letter entry of sync-crm has run out")


async def test_the_count_grows_in_the_open_alert(ctx: AppContext) -> None:
    async with ctx.db.connection() as conn:
        await exhausted_entry(conn, JOB, at(0))
        await dlq_pass(conn, at(10))
        newest = await exhausted_entry(conn, JOB, at(15), "HTTP 504: gateway timeout")
        await exhausted_entry(conn, JOB, at(12))
        await dlq_pass(conn, at(20))

        [alert] = await alerts(conn)
        assert alert["resolved"] is False
        meta = alert["metadata"]
        assert (meta["count"], meta["occurrences"]) == (3, 2)
        assert meta["newestEntryId"] == newest
        assert meta["newestError"] == "HTTP 504: gateway timeout"
        assert meta["lastSeenAt"] == "2026-11-26T10:00:20.000Z"


async def test_a_retried_job_resolves_its_alert_after_healthy_passes(ctx: AppContext) -> None:
    async with ctx.db.connection() as conn:
        await exhausted_entry(conn, JOB, at(0))
        await exhausted_entry(conn, JOB, at(1))
        await dlq_pass(conn, at(10))
        await retry_job(conn, JOB, at(15))

        first = await dlq_pass(conn, at(20))
        assert first.exhausted == ()
        assert len(await open_alerts(conn)) == 1  # one healthy pass: not yet
        second = await dlq_pass(conn, at(30))
        [alert] = await alerts(conn)
        assert [ref.id for ref in second.alerts.resolved] == [alert["id"]]
        assert alert["resolved"] is True
        assert alert["resolvedAt"] == at(30).replace(tzinfo=None)
        assert alert["metadata"]["resolvedBy"] == "jobwarden"

        # Failing for good again later: a new alert.
        await exhaust(conn, (await alerts(conn))[0]["metadata"]["newestEntryId"], at(40))
        await dlq_pass(conn, at(50))
        assert len(await alerts(conn)) == 2
        assert len(await open_alerts(conn)) == 1


async def test_resolving_by_hand_acknowledges_and_a_later_exhaustion_raises_anew(
    ctx: AppContext,
) -> None:
    async with ctx.db.connection() as conn:
        await exhausted_entry(conn, JOB, at(0))
        await exhausted_entry(conn, JOB, at(1))
        await exhausted_entry(conn, "sync-crm", at(2))
        await dlq_pass(conn, at(10))
        first = await only(conn, title=f"{JOB}: dead-letter entries failed for good")
        await resolve_alert(conn, first["id"])  # on-call saw it and dealt with it

        result = await dlq_pass(conn, at(20))
        assert [(a.job_id, a.alert_id, a.entries) for a in result.acknowledged] == [
            (JOB, first["id"], 2)
        ]
        assert [e.job_id for e in result.exhausted] == ["sync-crm"]  # the other job untouched
        cleared = await conn.fetchval(
            "SELECT count(*) FROM jobwarden.dlq_schedule WHERE job_id = $1"
            " AND exhausted_at IS NULL",
            JOB,
        )
        assert cleared == 2
        for second in (30, 40, 50):
            await dlq_pass(conn, at(second))
        assert [a["metadata"]["jobId"] for a in await open_alerts(conn)] == ["sync-crm"]

        # A later exhaustion is news again: a new alert, counting only the new entry.
        newest = await exhausted_entry(conn, JOB, at(55), "HTTP 500: still broken")
        await dlq_pass(conn, at(60))
        [again] = [a for a in await open_alerts(conn) if a["metadata"]["jobId"] == JOB]
        assert again["id"] != first["id"]
        assert again["metadata"]["count"] == 1
        assert again["metadata"]["newestEntryId"] == newest


async def test_an_exhaustion_after_the_hand_resolve_is_not_acknowledged(ctx: AppContext) -> None:
    async with ctx.db.connection() as conn:
        await exhausted_entry(conn, JOB, at(0))
        await dlq_pass(conn, at(10))
        [first] = await alerts(conn)
        await conn.execute(
            'UPDATE alerts SET resolved = true, "resolvedAt" = $2, "updatedAt" = $2 WHERE id = $1',
            first["id"],
            to_prisma(at(12)),
        )
        later = await exhausted_entry(conn, JOB, at(15))  # after the resolve, before a pass

        result = await dlq_pass(conn, at(20))
        assert [a.entries for a in result.acknowledged] == [1]
        [again] = await open_alerts(conn)
        assert again["id"] != first["id"]
        assert (again["metadata"]["count"], again["metadata"]["newestEntryId"]) == (1, later)


async def test_a_deleted_alert_acknowledges_too(ctx: AppContext) -> None:
    async with ctx.db.connection() as conn:
        await exhausted_entry(conn, JOB, at(0))
        await dlq_pass(conn, at(10))
        await conn.execute("DELETE FROM alerts")
        result = await dlq_pass(conn, at(20))
        assert [a.entries for a in result.acknowledged] == [1]
        assert await alerts(conn) == []


# -- dlq_backlog ---------------------------------------------------------------------


async def test_a_backlog_by_count_raises_a_warning_that_resolves_itself(ctx: AppContext) -> None:
    async with ctx.db.connection() as conn:
        first = await pending_entries(conn, 3, at(0))
        await pending_entries(conn, 1, at(0), job_id="sync-crm")
        await dlq_pass(conn, at(60), threshold=4)
        assert await alerts(conn) == []  # 4 pending: not above the threshold

        more = await pending_entries(conn, 1, at(30))
        result = await dlq_pass(conn, at(60), threshold=4)
        assert result.pending == 5
        alert = await only(conn, type="dlq_backlog")
        assert (alert["severity"], alert["title"]) == (
            "WARNING",
            "Dead-letter backlog: 5 entries pending",
        )
        assert alert["message"].startswith(
            "5 dead-letter entries are pending; the oldest has waited 1m "
            "(limits: more than 4 pending, or the oldest older than 1h)."
        )
        meta = alert["metadata"]
        assert meta["fingerprint"] == "dlq_backlog"
        assert meta["jobId"] is None
        assert (meta["pending"], meta["threshold"], meta["maxAgeSeconds"]) == (5, 4, 3600.0)
        assert meta["oldestPendingAt"] == "2026-11-26T10:00:00.000Z"
        assert meta["oldestAgeSeconds"] == 60.0

        await succeed(conn, first + more)  # drained
        await dlq_pass(conn, at(70), threshold=4)
        assert len(await open_alerts(conn)) == 1
        await dlq_pass(conn, at(80), threshold=4)
        assert await open_alerts(conn) == []
        assert (await only(conn, type="dlq_backlog"))["metadata"]["resolvedBy"] == "jobwarden"


async def test_a_backlog_by_age_raises_a_warning_that_resolves_itself(ctx: AppContext) -> None:
    async with ctx.db.connection() as conn:
        [old] = await pending_entries(conn, 1, at(0))
        await pending_entries(conn, 1, at(1800))
        await dlq_pass(conn, at(3600))
        assert await alerts(conn) == []  # exactly the maximum age: not older

        await dlq_pass(conn, at(3600 + 61))
        alert = await only(conn, type="dlq_backlog")
        assert alert["title"] == "Dead-letter backlog: 2 entries pending"
        assert "the oldest has waited 1h 1m" in alert["message"]
        assert alert["metadata"]["oldestAgeSeconds"] == 3661.0

        await succeed(conn, [old])  # the next oldest is 31 minutes old
        await dlq_pass(conn, at(3600 + 70))
        await dlq_pass(conn, at(3600 + 80))
        assert await open_alerts(conn) == []


async def test_the_pass_reads_its_thresholds_from_the_settings(migrated_dsn: str) -> None:
    env = {"JOBWARDEN_DLQ_BACKLOG_THRESHOLD": "2", "JOBWARDEN_DLQ_BACKLOG_MAX_AGE": "10m"}
    async with app_context(migrated_dsn, **env) as ctx, ctx.db.connection() as conn:
        run_once = alerting.alerts_pass(EVERY_JOB)
        await pending_entries(conn, 2, at(0))
        assert (await run_once(ctx, at(599))).alerts.raised == []
        result = await run_once(ctx, at(601))  # older than 10m
        assert len(result.alerts.raised) == 1
        fields = result.log_fields()
        assert fields["pending"] == 2
        assert fields["raised"] == 1
        assert fields["oldest_pending_s"] == 601.0
        assert (await only(conn, type="dlq_backlog"))["metadata"]["threshold"] == 2


# -- dlq_unrouted --------------------------------------------------------------------


async def test_unrouted_jobs_raise_one_warning_each_resolved_once_routed(
    ctx: AppContext,
) -> None:
    routing = Routing(every_job=False, handled_jobs=("python-job",))
    async with ctx.db.connection() as conn:
        await pending_entries(conn, 3, at(0), job_id="orphan-a")
        orphans_b = await pending_entries(conn, 1, at(0), job_id="orphan-b")
        await pending_entries(conn, 1, at(0), job_id="python-job")
        await pending_entries(conn, 1, at(0), job_id="routed")
        await conn.execute(
            "INSERT INTO jobwarden.dlq_routes (job_id, url) VALUES ('routed', 'http://x/')"
        )
        # Exhausted entries are not pending: their job is not reported unrouted.
        await exhausted_entry(conn, "failed-only", at(0))

        result = await dlq_pass(conn, at(10), routing=routing)
        assert [p.job_id for p in result.unrouted] == ["orphan-a", "orphan-b"]
        warnings = sorted(
            await alerts(conn, type="dlq_unrouted"), key=lambda w: str(w["metadata"]["jobId"])
        )
        assert [w["metadata"]["jobId"] for w in warnings] == ["orphan-a", "orphan-b"]
        a = warnings[0]
        assert a["severity"] == "WARNING"
        assert a["metadata"]["fingerprint"] == "dlq_unrouted:orphan-a"
        assert a["metadata"]["pending"] == 3
        assert "jobwarden dlq route set orphan-a URL" in a["message"]
        assert "JOBWARDEN_DLQ_RETRY_URL" in a["message"]

        # Routed: resolved after the healthy passes; orphan-b still waits.
        await conn.execute(
            "INSERT INTO jobwarden.dlq_routes (job_id, url) VALUES ('orphan-a', 'http://x/')"
        )
        await dlq_pass(conn, at(20), routing=routing)
        await dlq_pass(conn, at(30), routing=routing)
        still = [
            w["metadata"]["jobId"] for w in await open_alerts(conn) if w["type"] == "dlq_unrouted"
        ]
        assert still == ["orphan-b"]

        # No pending entries left: resolved as well.
        await succeed(conn, orphans_b)
        await dlq_pass(conn, at(40), routing=routing)
        await dlq_pass(conn, at(50), routing=routing)
        assert [w for w in await open_alerts(conn) if w["type"] == "dlq_unrouted"] == []


async def test_nothing_is_unrouted_with_a_default_url(ctx: AppContext) -> None:
    async with ctx.db.connection() as conn:
        await pending_entries(conn, 3, at(0), job_id="orphan-a")
        result = await dlq_pass(conn, at(10), routing=Routing(every_job=True))
        assert result.unrouted == ()
        assert await alerts(conn) == []


# -- one store, two passes ---------------------------------------------------------


async def test_the_dlq_and_monitoring_passes_never_resolve_each_others_alerts(
    ctx: AppContext,
) -> None:
    async with ctx.db.connection() as conn:
        await record_run(conn, "nightly-export", at(0))
        await evaluation.run_once(ctx, at(1))
        await record_runs(conn, "nightly-export", at(10), 3, ok=False)
        await exhausted_entry(conn, JOB, at(10))
        for second in (11, 21, 31, 41):  # each pass sees only its own alert firing
            await evaluation.run_once(ctx, at(second))
            await dlq_pass(conn, at(second + 1))
        assert sorted(a["type"] for a in await open_alerts(conn)) == [
            "dlq_exhausted",
            "job_failure",
        ]
        assert len(await alerts(conn)) == 2

        # The DLQ condition clears: only the DLQ pass resolves its alert.
        await retry_job(conn, JOB, at(45))
        for second in (51, 61, 71):
            await evaluation.run_once(ctx, at(second))
        assert len(await open_alerts(conn)) == 2
        await dlq_pass(conn, at(72))
        await dlq_pass(conn, at(82))
        assert [a["type"] for a in await open_alerts(conn)] == ["job_failure"]

        # The job recovers: only the monitoring pass resolves its alert.
        await exhausted_entry(conn, JOB, at(85))
        await dlq_pass(conn, at(86))
        await record_run(conn, "nightly-export", at(90))
        for second in (91, 101, 111):
            await dlq_pass(conn, at(second))
        assert sorted(a["type"] for a in await open_alerts(conn)) == [
            "dlq_exhausted",
            "job_failure",
        ]
        await evaluation.run_once(ctx, at(121))
        await evaluation.run_once(ctx, at(131))
        assert [a["type"] for a in await open_alerts(conn)] == ["dlq_exhausted"]


async def test_a_pass_may_not_fire_signals_of_rules_it_does_not_own(ctx: AppContext) -> None:
    stray = Signal("job_failure:x", "job_failure", "ERROR", "t", "m", "x")
    async with ctx.db.connection() as conn:
        with pytest.raises(ValueError, match="job_failure"):
            await sync_alerts(conn, [stray], (), at(0), rules=DLQ_RULES, resolve_after=2)
        assert await alerts(conn) == []


def test_ages_are_said_in_their_two_largest_units() -> None:
    assert [alerting.age(s) for s in (0.5, 45, 725, 3600, 3661, 93784)] == [
        "0.5s",
        "45s",
        "12m 5s",
        "1h",
        "1h 1m",
        "1d 2h",
    ]
