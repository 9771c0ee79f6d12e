"""`jobwarden dlq ...` as an operator meets it: real subprocesses, a real database, entries
written by plain SQL as the web app writes them. An entry is made FAILED, PROCESSING or
SUCCEEDED by updating its shared row and schedule as the processor would."""

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from jobwarden.context import AppContext
from jobwarden.db.pg import Conn
from jobwarden.db.prisma import to_prisma
from jobwarden.dlq import queue
from jobwarden.dlq.queue import Routing
from tests.integration.processes import Result, run_cli
from tests.integration.webapp import dlq_entry, dlq_history, insert_dlq_entry

UTC_NOW = "now() AT TIME ZONE 'UTC'"
SECRET_URL = "https://svc:hunter2@retry.internal:8443/dlq/{jobId}?token=abc123"


async def make_failed(
    conn: Conn, entry_id: str, *, attempts: int = 5, budget_from: int = 0, exhausted: bool = True
) -> None:
    """As the processor leaves an entry that ran out of attempts: FAILED, every attempt in
    its history (the latest 20 kept), unscheduled, exhausted."""
    history: list[dict[str, Any]] = [
        {"attempt": n, "startedAt": "2026-01-01T00:00:00.000Z", "durationMs": 12,
         "outcome": "retry", "status": 503, "error": "HTTP 503: busy", "handler": "http",
         "by": "host-a:4242", "retryAt": "2026-01-01T00:01:00.000Z"}
        for n in range(1, attempts + 1)
    ]  # fmt: skip
    history[-1].update(outcome="exhausted", retryAt=None)
    await conn.execute(
        f"UPDATE dead_letter_queue SET status = 'FAILED', attempts = $2,"
        f' "lastAttemptAt" = {UTC_NOW}, "processedAt" = {UTC_NOW}, "updatedAt" = {UTC_NOW},'
        " metadata = jobwarden.dlq_history(metadata, $3::text::jsonb) WHERE id = $1",
        entry_id, attempts, json.dumps(history),
    )  # fmt: skip
    await conn.execute(
        "UPDATE jobwarden.dlq_schedule SET active = false, budget_from = $2,"
        " exhausted_at = CASE WHEN $3 THEN now() END, lease_owner = NULL, lease_until = NULL"
        " WHERE dlq_id = $1",
        entry_id, budget_from, exhausted,
    )  # fmt: skip


async def make_processing(conn: Conn, entry_id: str, owner: str = "host-a:4242") -> None:
    """As a claim leaves it: PROCESSING, attempts + 1, leased."""
    await conn.execute(
        f"UPDATE dead_letter_queue SET status = 'PROCESSING', attempts = attempts + 1,"
        f' "lastAttemptAt" = {UTC_NOW}, "updatedAt" = {UTC_NOW} WHERE id = $1',
        entry_id,
    )
    await conn.execute(
        "UPDATE jobwarden.dlq_schedule SET lease_owner = $2,"
        " lease_until = now() + interval '5 minutes' WHERE dlq_id = $1",
        entry_id, owner,
    )  # fmt: skip


async def make_succeeded(conn: Conn, entry_id: str) -> None:
    entry = json.dumps([{"attempt": 1, "outcome": "succeeded", "status": 200}])
    await conn.execute(
        f"UPDATE dead_letter_queue SET status = 'SUCCEEDED', attempts = attempts + 1,"
        f' "lastAttemptAt" = {UTC_NOW}, "processedAt" = {UTC_NOW}, "updatedAt" = {UTC_NOW},'
        " metadata = jobwarden.dlq_history(metadata, $2::text::jsonb) WHERE id = $1",
        entry_id, entry,
    )  # fmt: skip
    # The processor forgets the schedule of an entry that succeeded.
    await conn.execute("DELETE FROM jobwarden.dlq_schedule WHERE dlq_id = $1", entry_id)


async def postpone(conn: Conn, entry_id: str, attempts: int) -> None:
    """A PENDING entry waiting out its backoff after `attempts` failed retries."""
    await conn.execute(
        "UPDATE dead_letter_queue SET attempts = $2 WHERE id = $1", entry_id, attempts
    )
    await conn.execute(
        "UPDATE jobwarden.dlq_schedule SET due_at = now() + interval '1 hour' WHERE dlq_id = $1",
        entry_id,
    )


async def schedule(conn: Conn, entry_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM jobwarden.dlq_schedule WHERE dlq_id = $1", entry_id)
    return None if row is None else dict(row)


async def snapshot(conn: Conn) -> list[Any]:
    """Everything an operator's command could write."""
    return [
        [tuple(r) for r in await conn.fetch(query)]
        for query in (
            'SELECT id, status, attempts, metadata::text, "processedAt", "updatedAt"'
            " FROM dead_letter_queue ORDER BY id",
            "SELECT * FROM jobwarden.dlq_schedule ORDER BY dlq_id",
            "SELECT * FROM jobwarden.dlq_routes ORDER BY job_id",
        )
    ]


async def cli(*args: str, env: dict[str, str]) -> Result:
    return await asyncio.to_thread(run_cli, *args, env=env)


def assert_clean_usage_error(done: Result, flag: str) -> None:
    assert done.returncode == 64, done.output
    assert flag in done.stderr, done.stderr
    assert "Traceback" not in done.output


async def test_retry_puts_a_failed_entry_back_due_now_with_a_fresh_budget_and_its_history(
    ctx: AppContext, migrated_dsn: str
) -> None:
    env = {"DATABASE_URL": migrated_dsn}
    assert ctx.settings.database is not None
    async with ctx.db.connection() as conn:
        entry = await insert_dlq_entry(conn, metadata={"tenant": "acme", "traceId": "t-1"})
        await make_failed(conn, entry, attempts=5)
        before = datetime.now(UTC)

        listener = await asyncpg.connect(ctx.settings.database.dsn)
        woken = asyncio.Event()
        try:
            await listener.add_listener(queue.NOTIFY_CHANNEL, lambda *_: woken.set())
            done = await cli("dlq", "retry", entry, env=env)
            assert done.returncode == 0, done.output
            assert done.stdout == "1 entry requeued, due now\n"
            await asyncio.wait_for(woken.wait(), 5)  # running daemons hear it at once
        finally:
            await listener.close()
        after = datetime.now(UTC)

        row = await dlq_entry(conn, entry)
        assert (row["status"], row["attempts"], row["processedAt"]) == ("PENDING", 5, None)
        assert to_prisma(before) <= row["updatedAt"] <= to_prisma(after)
        assert (row["metadata"]["tenant"], row["metadata"]["traceId"]) == ("acme", "t-1")
        history = dlq_history(row)
        assert [h["outcome"] for h in history] == ["retry"] * 4 + ["exhausted", "requeued"]
        requeued = history[-1]
        assert set(requeued) == {"outcome", "at", "by"}
        assert requeued["by"].startswith("cli:")
        assert requeued["at"].endswith("Z")
        sched = await schedule(conn, entry)
        assert sched is not None
        assert sched["active"] is True
        assert before <= sched["due_at"] <= after
        assert (sched["budget_from"], sched["exhausted_at"], sched["lease_owner"]) == (
            5,
            None,
            None,
        )

        # Due now and a whole new budget: the processor claims it as attempt 6, 1st of 5.
        [claimed] = await queue.claim(
            conn, "test-daemon", datetime.now(UTC), limit=10, lease=60,
            routing=Routing(every_job=True), max_attempts=5,
        )  # fmt: skip
        assert (claimed.entry.id, claimed.entry.attempt, claimed.budget_attempt) == (entry, 6, 1)

        # In flight now: refused, and nothing is written.
        untouched = await snapshot(conn)
        running = await cli("dlq", "retry", entry, env=env)
        assert running.returncode == 1, running.output
        assert f"cannot retry dead-letter entry {entry!r}" in running.stderr
        assert "running right now" in running.stderr
        assert await snapshot(conn) == untouched

        done_entry = await insert_dlq_entry(conn, "send-receipt")
        await make_succeeded(conn, done_entry)
        succeeded = await cli("dlq", "retry", done_entry, env=env)
        assert succeeded.returncode == 1, succeeded.output
        assert "it has SUCCEEDED: there is nothing to retry" in succeeded.stderr
        assert (await dlq_entry(conn, done_entry))["status"] == "SUCCEEDED"

        unknown = await cli("dlq", "retry", "c-no-such-entry", env=env)
        assert (unknown.returncode, unknown.stdout) == (1, "")
        assert "no dead-letter entry 'c-no-such-entry'" in unknown.stderr

        # A PENDING entry waiting out its backoff: due now, and a fresh budget.
        waiting = await insert_dlq_entry(conn, "send-receipt")
        await postpone(conn, waiting, attempts=3)
        done = await cli("dlq", "retry", waiting, env=env)
        assert (done.returncode, done.stdout) == (0, "1 entry requeued, due now\n")
        sched = await schedule(conn, waiting)
        assert sched is not None
        assert sched["due_at"] <= datetime.now(UTC)
        assert sched["budget_from"] == 3
        assert (await dlq_entry(conn, waiting))["attempts"] == 3


async def test_retry_a_job_or_every_failed_entry(ctx: AppContext, migrated_dsn: str) -> None:
    env = {"DATABASE_URL": migrated_dsn}
    async with ctx.db.connection() as conn:
        a_failed = await insert_dlq_entry(conn, "A")
        await make_failed(conn, a_failed, attempts=5)
        a_pending = await insert_dlq_entry(conn, "A")
        await postpone(conn, a_pending, attempts=2)
        a_processing = await insert_dlq_entry(conn, "A")
        await make_processing(conn, a_processing)
        a_succeeded = await insert_dlq_entry(conn, "A")
        await make_succeeded(conn, a_succeeded)
        b_failed = await insert_dlq_entry(conn, "B")
        await make_failed(conn, b_failed, attempts=4)
        # Never scheduled (the trigger missed it): retrying schedules it.
        await conn.execute("DELETE FROM jobwarden.dlq_schedule WHERE dlq_id = $1", b_failed)

        done = await cli("dlq", "retry", "--job", "A", env=env)
        assert done.returncode == 0, done.output
        assert done.stdout == "2 entries requeued, due now (1 failed, 1 pending)\n"
        statuses = {e: (await dlq_entry(conn, e))["status"] for e in (
            a_failed, a_pending, a_processing, a_succeeded, b_failed)}  # fmt: skip
        assert statuses == {
            a_failed: "PENDING", a_pending: "PENDING", a_processing: "PROCESSING",
            a_succeeded: "SUCCEEDED", b_failed: "FAILED",
        }  # fmt: skip
        for entry, attempts in ((a_failed, 5), (a_pending, 2)):
            sched = await schedule(conn, entry)
            assert sched is not None
            assert (sched["active"], sched["budget_from"]) == (True, attempts)
            assert sched["due_at"] <= datetime.now(UTC)
        processing = await schedule(conn, a_processing)
        assert processing is not None
        assert processing["lease_owner"] == "host-a:4242"  # its lease is left alone

        done = await cli("dlq", "retry", "--all-failed", env=env)
        assert (done.returncode, done.stdout) == (0, "1 entry requeued, due now\n")
        row = await dlq_entry(conn, b_failed)
        assert (row["status"], row["attempts"]) == ("PENDING", 4)
        sched = await schedule(conn, b_failed)
        assert sched is not None
        assert (sched["job_id"], sched["active"], sched["budget_from"]) == ("B", True, 4)

        none_left = await cli("dlq", "retry", "--all-failed", env=env)
        assert none_left.returncode == 0, none_left.output
        assert none_left.stdout == "0 entries requeued: none was FAILED or PENDING\n"


async def test_discard_gives_an_entry_up_with_the_reason_in_its_history(
    ctx: AppContext, migrated_dsn: str
) -> None:
    env = {"DATABASE_URL": migrated_dsn}
    async with ctx.db.connection() as conn:
        pending = await insert_dlq_entry(conn, metadata={"tenant": "acme"})
        before = datetime.now(UTC)
        done = await cli("dlq", "discard", pending, "--reason", "duplicate of INV-42", env=env)
        assert done.returncode == 0, done.output
        assert done.stdout.startswith(f"{pending}: discarded (was PENDING)")
        row = await dlq_entry(conn, pending)
        assert row["status"] == "FAILED"
        assert to_prisma(before) <= row["processedAt"] == row["updatedAt"]
        assert row["metadata"]["tenant"] == "acme"
        [discarded] = dlq_history(row)
        assert discarded["outcome"] == "discarded"
        assert discarded["reason"] == "duplicate of INV-42"
        assert discarded["by"].startswith("cli:")
        sched = await schedule(conn, pending)
        assert sched is not None
        assert (sched["active"], sched["lease_owner"]) == (False, None)

        # An exhausted entry: discarding acknowledges it (no exhaustion left to alert on),
        # and it keeps the time it failed.
        exhausted = await insert_dlq_entry(conn)
        await make_failed(conn, exhausted, attempts=5)
        failed_at = (await dlq_entry(conn, exhausted))["processedAt"]
        done = await cli("dlq", "discard", exhausted, "--reason", "customer refunded", env=env)
        assert done.returncode == 0, done.output
        row = await dlq_entry(conn, exhausted)
        assert (row["status"], row["processedAt"]) == ("FAILED", failed_at)
        assert dlq_history(row)[-1]["outcome"] == "discarded"
        assert len(dlq_history(row)) == 6
        sched = await schedule(conn, exhausted)
        assert sched is not None
        assert (sched["active"], sched["exhausted_at"]) == (False, None)

        in_flight = await insert_dlq_entry(conn)
        await make_processing(conn, in_flight)
        succeeded = await insert_dlq_entry(conn)
        await make_succeeded(conn, succeeded)
        untouched = await snapshot(conn)
        refused = await cli("dlq", "discard", in_flight, "--reason", "stop it", env=env)
        assert refused.returncode == 1, refused.output
        assert "running right now; try again once it has finished" in refused.stderr
        refused = await cli("dlq", "discard", succeeded, "--reason", "stop it", env=env)
        assert refused.returncode == 1, refused.output
        assert "it has SUCCEEDED: there is nothing to discard" in refused.stderr
        unknown = await cli("dlq", "discard", "c-nope", "--reason", "x", env=env)
        assert (unknown.returncode, "no dead-letter entry 'c-nope'" in unknown.stderr) == (1, True)
        assert await snapshot(conn) == untouched


async def test_list_show_and_stats(ctx: AppContext, migrated_dsn: str) -> None:
    env = {"DATABASE_URL": migrated_dsn}
    async with ctx.db.connection() as conn:
        pending = await insert_dlq_entry(conn, "A", error="SMTP 421: try again later")
        failed = await insert_dlq_entry(conn, "A", metadata={"tenant": "acme"})
        await make_failed(conn, failed, attempts=25, budget_from=20)  # requeued before
        succeeded = await insert_dlq_entry(conn, "B")
        await make_succeeded(conn, succeeded)
        processing = await insert_dlq_entry(conn, "B")
        await make_processing(conn, processing)
        for hours, entry in ((4, pending), (3, failed), (2, succeeded), (1, processing)):
            await conn.execute(
                f'UPDATE dead_letter_queue SET "createdAt" = {UTC_NOW} - $2::interval'
                " WHERE id = $1",
                entry, timedelta(hours=hours),
            )  # fmt: skip

        listed = await cli("dlq", "list", env=env)
        assert listed.returncode == 0, listed.output
        lines = listed.stdout.splitlines()
        assert lines[0].split() == [
            "ID", "CREATED", "JOB", "STATUS", "ATTEMPTS", "NEXT", "TRY", "LAST", "OUTCOME",
            "ERROR",
        ]  # fmt: skip
        assert [line.split()[0] for line in lines[1:]] == [processing, succeeded, failed, pending]
        assert lines[3].split()[4:7] == ["FAILED", "25", "-"]
        assert "exhausted (HTTP 503)" in lines[3]
        assert lines[4].endswith("SMTP 421: try again later")

        only_failed = await cli("dlq", "list", "--status", "failed", env=env)
        assert [line.split()[0] for line in only_failed.stdout.splitlines()[1:]] == [failed]
        job_b = json.loads((await cli("dlq", "list", "--job", "B", "--json", env=env)).stdout)
        assert [e["id"] for e in job_b] == [processing, succeeded]
        assert job_b[0]["status"] == "PROCESSING"
        newest = json.loads((await cli("dlq", "list", "--limit", "1", "--json", env=env)).stdout)
        assert [e["id"] for e in newest] == [processing]
        [first] = json.loads(
            (await cli("dlq", "list", "--status", "Pending", "--json", env=env)).stdout
        )
        assert first["id"] == pending
        assert str(first["dueAt"]).endswith("Z")
        assert first["lastOutcome"] is None
        nothing = await cli("dlq", "list", "--job", "nobody", env=env)
        assert nothing.stdout.splitlines()[-1] == "(no entries)"

        shown = await cli("dlq", "show", failed, env=env)
        assert shown.returncode == 0, shown.output
        text = shown.stdout
        assert text.startswith(f"{failed}: A, FAILED\n")
        assert "the latest 20 are kept; 5 earlier attempts not kept" in text
        assert "budget:      5 of 5 used since attempt 20; ran out 20" in text
        assert "schedule:    not scheduled (finished)" in text
        assert 'metadata:    {"tenant": "acme"}' in text
        history = [line.split() for line in text.splitlines() if line.startswith("    ")]
        assert history[0] == ["TIME", "OUTCOME", "ATTEMPT", "DETAILS"]
        assert history[1][2:4] == ["retry", "6"]  # attempts 1-5 are no longer kept
        assert " ".join(history[-2][2:]) == (
            "retry 24 12 ms, via http, next try 2026-01-01 00:01:00Z, by host-a:4242,"
            " HTTP 503: busy"
        )
        assert (
            " ".join(history[-1][2:])
            == "exhausted 25 12 ms, via http, by host-a:4242, HTTP 503: busy"
        )

        as_json = json.loads((await cli("dlq", "show", failed, "--json", env=env)).stdout)
        assert len(as_json["history"]) == 20
        assert as_json["earlierAttemptsNotKept"] == 5
        assert as_json["schedule"]["attemptsLeft"] == 0
        assert as_json["schedule"]["exhaustedAt"] is not None
        assert as_json["eventData"] == {"invoiceId": 42}
        assert as_json["metadata"] == {"tenant": "acme"}  # the history is under "history"

        running = await cli("dlq", "show", processing, env=env)
        assert "schedule:    running on host-a:4242, lease until " in running.stdout
        assert "earlier attempt" not in running.stdout  # the attempt in flight is not lost
        missing = await cli("dlq", "show", "c-nope", env=env)
        assert (missing.returncode, "no dead-letter entry 'c-nope'" in missing.stderr) == (1, True)

        stats = json.loads((await cli("dlq", "stats", "--json", env=env)).stdout)
        assert stats["byStatus"] == {"PENDING": 1, "PROCESSING": 1, "SUCCEEDED": 1, "FAILED": 1}
        assert stats["total"] == 4
        assert stats["jobs"] == [
            {"jobId": "A", "counts": {"PENDING": 1, "PROCESSING": 0, "SUCCEEDED": 0, "FAILED": 1},
             "total": 2},
            {"jobId": "B", "counts": {"PENDING": 0, "PROCESSING": 1, "SUCCEEDED": 1, "FAILED": 0},
             "total": 2},
        ]  # fmt: skip
        oldest = stats["oldestPending"]
        assert (oldest["id"], oldest["jobId"]) == (pending, "A")
        assert 4 * 3600 - 60 < oldest["ageSeconds"] < 4 * 3600 + 60
        assert stats["attempts"] == [
            {"attempts": 0, "entries": 1}, {"attempts": 1, "entries": 2},
            {"attempts": 25, "entries": 1},
        ]  # fmt: skip

        text = (await cli("dlq", "stats", env=env)).stdout
        rows = [line.split() for line in text.splitlines()]
        assert rows[0] == ["JOB", "PENDING", "PROCESSING", "SUCCEEDED", "FAILED", "TOTAL"]
        assert rows[1] == ["A", "1", "0", "0", "1", "2"]
        assert rows[3] == ["(all)", "1", "1", "1", "1", "4"]
        assert f"oldest pending: {pending} (A), created" in text
        assert " 4h 0m ago" in text or " 3h 59m ago" in text


async def test_bad_flags_exit_64_naming_the_flag_and_write_nothing(
    ctx: AppContext, migrated_dsn: str
) -> None:
    env = {"DATABASE_URL": migrated_dsn}
    async with ctx.db.connection() as conn:
        entry = await insert_dlq_entry(conn)
        failed = await insert_dlq_entry(conn)
        await make_failed(conn, failed)
        before = await snapshot(conn)
    cases = [
        (("dlq", "list", "--status", "DONE"), "--status"),
        (("dlq", "list", "--limit", "0"), "--limit"),
        (("dlq", "list", "--limit", "lots"), "--limit"),
        (("dlq", "list", "--colour"), "--colour"),
        (("dlq", "show"), "ID"),
        (("dlq", "retry"), "--all-failed"),
        (("dlq", "retry", failed, "--all-failed"), "--all-failed"),
        (("dlq", "retry", failed, "--job", "A"), "--job"),
        (("dlq", "retry", "--job", "A", "--all-failed"), "--job"),
        (("dlq", "retry", "--job", " "), "--job"),
        (("dlq", "discard", entry), "--reason"),
        (("dlq", "discard", entry, "--reason", "  "), "--reason"),
        (("dlq", "discard", entry, "--reason", "x" * 501), "--reason"),
        (("dlq", "route", "set", "A", "ftp://files.example/x"), "URL"),
        (("dlq", "route", "set", "A", "https://u:hunter2@/nohost"), "URL"),
        (("dlq", "route", "set", "A", "https://h.example/{jobid}?k=hunter2"), "URL"),
        (("dlq", "route", "set", "A"), "URL"),
        (("dlq", "route", "unset"), "JOB"),
        (("dlq", "route", "frob"), "frob"),
        (("dlq", "frobnicate"), "frobnicate"),
    ]
    results = await asyncio.gather(*(cli(*args, env=env) for args, _ in cases))
    for (args, flag), done in zip(cases, results, strict=True):
        assert_clean_usage_error(done, flag)
        assert "hunter2" not in done.output, args
    async with ctx.db.connection() as conn:
        assert await snapshot(conn) == before


def _install_python_handlers(tmp_path: Path) -> str:
    """A distribution on PYTHONPATH with two entry points in `jobwarden.dlq_handlers`,
    as `pip install` would leave it."""
    (tmp_path / "shop_dlq_handlers.py").write_text(
        "async def resend(entry):\n    return None\n\n\n"
        "async def rebuild(entry):\n    return None\n"
    )
    info = tmp_path / "shop_dlq_handlers-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shop-dlq-handlers\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[jobwarden.dlq_handlers]\n"
        "send-invoice = shop_dlq_handlers:resend\n"
        "nightly-report = shop_dlq_handlers:rebuild\n"
    )
    return str(tmp_path)


async def test_routes_are_set_listed_and_unset_and_never_show_a_credential(
    ctx: AppContext, migrated_dsn: str, tmp_path: Path
) -> None:
    env = {"DATABASE_URL": migrated_dsn, "PYTHONPATH": _install_python_handlers(tmp_path)}
    redacted = "https://retry.internal:8443/***"

    done = await cli("dlq", "route", "set", "send-invoice", SECRET_URL, env=env)
    assert done.returncode == 0, done.output
    assert done.stdout == f"send-invoice: routed to {redacted}\n"
    changed = await cli("dlq", "route", "set", "send-invoice", SECRET_URL + "&v=2", env=env)
    assert changed.stdout == f"send-invoice: route changed to {redacted}\n"
    async with ctx.db.connection() as conn:
        stored = await conn.fetchval(
            "SELECT url FROM jobwarden.dlq_routes WHERE job_id = 'send-invoice'"
        )
    assert stored == SECRET_URL + "&v=2"  # kept as given: the retry needs it

    listed = await cli("dlq", "route", "list", env=env)
    assert listed.returncode == 0, listed.output
    rows = [line.split(None, 2) for line in listed.stdout.splitlines()]
    assert rows[:4] == [
        ["JOB", "SOURCE", "WHERE"],
        ["nightly-report", "python", "entry point jobwarden.dlq_handlers"],
        ["send-invoice", "route", redacted],
        ["send-invoice", "python", "entry point jobwarden.dlq_handlers (overridden by the route"
         " above)"],
    ]  # fmt: skip
    assert "JOBWARDEN_DLQ_RETRY_URL): not set" in listed.stdout

    default = "https://user:topsecret@default.example/retry/{jobId}"
    as_json = await cli(
        "dlq", "route", "list", "--json", env={**env, "JOBWARDEN_DLQ_RETRY_URL": default}
    )
    assert as_json.returncode == 0, as_json.output
    table = json.loads(as_json.stdout)
    assert table["defaultUrl"] is True
    assert [(r["jobId"], r["source"], r["inEffect"]) for r in table["routes"]] == [
        ("nightly-report", "python", True),
        ("send-invoice", "route", True),
        ("send-invoice", "python", False),
    ]
    assert table["routes"][1]["url"] == redacted
    for result in (done, changed, listed, as_json):
        for secret in ("hunter2", "abc123", "svc:", "topsecret", "default.example"):
            assert secret not in result.output

    removed = await cli("dlq", "route", "unset", "send-invoice", env=env)
    assert (removed.returncode, removed.stdout) == (0, "send-invoice: route removed\n")
    again = await cli("dlq", "route", "unset", "send-invoice", env=env)
    assert (again.returncode, again.stdout) == (0, "send-invoice: had no route\n")
    listed = await cli("dlq", "route", "list", "--json", env={"DATABASE_URL": migrated_dsn})
    assert json.loads(listed.stdout) == {"routes": [], "defaultUrl": False}
