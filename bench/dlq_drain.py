"""Dead-letter drain: 50,000 pending entries to a local endpoint. Prints; asserts nothing.

Measures, against an embedded PostgreSQL in a temporary directory (or
BENCH_DATABASE_URL, a server where it may CREATE DATABASE), with a retry endpoint in a
process of its own (a bare asyncio HTTP/1.1 keep-alive responder answering 200 to
every POST at once, counting requests and distinct `Idempotency-Key`s):
  - at each concurrency of CONCURRENCIES (JOBWARDEN_DLQ_CONCURRENCY, default 8),
    each in a fresh database holding the same ENTRIES entries, inserted by one
    statement as a `createMany` writes them:
      - the fastest loop written by hand over the same table, in this process: claim
        a batch (one UPDATE … WHERE id = ANY(ARRAY(SELECT … FOR UPDATE SKIP LOCKED
        LIMIT n)) RETURNING), POST each with one aiohttp session, at most the same
        concurrency at once, and mark each batch of answered entries in one UPDATE; no
        schedule, no history, no lease. Claims, POSTs and writes overlap. Claims of up
        to 8 x concurrency, and again of up to 2 x concurrency (as deep as the daemon
        claims ahead of slow retries);
      - a `jobwarden run` daemon with JOBWARDEN_DLQ_RETRY_URL on the endpoint: the
        time from the INSERT's commit until no entry is PENDING or PROCESSING (the
        bench looks every POLL seconds), entries/s, the daemon's peak resident memory
        (VmHWM), the CPU each process used meanwhile;
    and the ratio daemon / fastest hand-written loop; whether PostgreSQL had analyzed
    the two tables by the end of the drain (the claim's plan depends on it);
  - with the daemon at the default concurrency idle after its drain, the pickup
    latency of single entries (SINGLES, each its own autocommit INSERT, the next one
    SPACING after the previous arrived): from the commit to the request's arrival at
    the endpoint (both stamped with CLOCK_MONOTONIC), p50/p99.
Targets (issue 7): ≥ 5,000 entries/s and ≥ 0.7 x the hand-written loop; an entry picked
up within a second of its commit. Printed beside the figures, never asserted.
"""

import asyncio
import contextlib
import json
import multiprocessing
import os
import socket
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil
from _kit import (
    CpuMeter,
    cpu_groups,
    create_database,
    free_port,
    log_findings,
    memory_text,
    percentile,
    postgres,
    running_daemon,
)

from jobwarden.db.pg import Conn
from jobwarden.logsetup import configure_logging

ENTRIES = 50_000
CONCURRENCIES = (8, 64)  # the daemon's default first
# The hand-written loop claims up to 8 x concurrency at a time (the fastest found: 32 x
# gains nothing), and once more up to 2 x concurrency (as deep as the daemon claims
# ahead when retries are slow), to show what the claim size costs.
HAND_CLAIMS = (8, 2)
POLL = 0.050  # seconds between the bench's looks at the table during a daemon's drain
DRAIN_TIMEOUT = 900.0
SINGLES = 50
SPACING = 0.020
SINGLE_TIMEOUT = 10.0
SETTLE = 2.0  # seconds the daemon idles after its drain before the singles
JOB_ID = "send-invoice"
SINGLE_PREFIX = "clat"  # ids of the singles: the endpoint reports their arrival
TARGET_RATE = 5000.0
TARGET_RATIO = 0.7

INSERT_ENTRIES = """
INSERT INTO dead_letter_queue (id, "jobId", "eventData", error, "updatedAt")
SELECT i, $2, jsonb_build_object('invoiceId', n, 'customerId', 'cus_' || n, 'amountCents', n * 7),
       'SMTP 421: try again later', now() AT TIME ZONE 'UTC'
FROM unnest($1::text[]) WITH ORDINALITY AS t(i, n)
"""

INSERT_ONE = """
INSERT INTO dead_letter_queue (id, "jobId", "eventData", error, "updatedAt")
VALUES ($1, $2, '{"invoiceId": 1}', 'SMTP 421: try again later', now() AT TIME ZONE 'UTC')
"""

# Probes along the status index (see _wait_drained).
UNFINISHED = """
SELECT EXISTS (SELECT 1 FROM dead_letter_queue WHERE status = 'PENDING')
    OR EXISTS (SELECT 1 FROM dead_letter_queue WHERE status = 'PROCESSING')
"""

OUTCOMES = """
SELECT status, count(*) AS entries, min(attempts) AS least, max(attempts) AS most
FROM dead_letter_queue WHERE id = ANY($1::text[]) GROUP BY status ORDER BY status
"""

# The hand-written loop: what the daemon's CLAIM and RECORD do to the shared table,
# and nothing else.
HAND_CLAIM = """
UPDATE dead_letter_queue q
SET status = 'PROCESSING', attempts = q.attempts + 1,
    "lastAttemptAt" = now() AT TIME ZONE 'UTC', "updatedAt" = now() AT TIME ZONE 'UTC'
WHERE q.id = ANY(ARRAY(
    SELECT c.id FROM dead_letter_queue c WHERE c.status = 'PENDING'
    LIMIT $1 FOR UPDATE SKIP LOCKED
)) AND q.status = 'PENDING'
RETURNING q.id, q."jobId" AS job_id, q."eventData"::text AS event_data, q.error, q.attempts
"""

HAND_FINISH = """
UPDATE dead_letter_queue
SET status = $2, "processedAt" = now() AT TIME ZONE 'UTC', "updatedAt" = now() AT TIME ZONE 'UTC'
WHERE id = ANY($1::text[]) AND status = 'PROCESSING'
"""


# --- the endpoint, in a process of its own ------------------------------------------------


@dataclass
class _Tally:
    report: socket.socket  # datagrams to the bench: b"ready", b"<single id> <monotonic>"
    requests: int = 0
    first: float = 0.0
    last: float = 0.0
    keys: set[bytes] = field(default_factory=set)

    def stats(self) -> bytes:
        rate = (self.requests - 1) / (self.last - self.first) if self.last > self.first else 0
        return json.dumps(
            {"requests": self.requests, "distinct": len(self.keys), "rate": rate}
        ).encode()


class _Responder(asyncio.Protocol):
    """HTTP/1.1 keep-alive: 200 and an empty body to every POST; GET /stats, GET /reset."""

    def __init__(self, tally: _Tally) -> None:
        self.tally = tally
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        replies: list[bytes] = []
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(self.buffer[:end]).lower()
            length = 0
            if (at := head.find(b"\r\ncontent-length:")) >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop >= 0 else None])
            if len(self.buffer) < end + 4 + length:
                break
            del self.buffer[: end + 4 + length]
            replies.append(self._answer(head))
        if replies and self.transport is not None:
            self.transport.write(b"".join(replies))

    def _answer(self, head: bytes) -> bytes:
        tally = self.tally
        if head.startswith(b"get "):
            body = tally.stats()
            if head.startswith(b"get /reset"):
                tally.requests, tally.keys = 0, set()
            return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        arrived = time.monotonic()
        tally.requests += 1
        if tally.requests == 1:
            tally.first = arrived
        tally.last = arrived
        if (at := head.find(b"\r\nidempotency-key:")) >= 0:
            stop = head.find(b"\r\n", at + 2)
            key = head[at + 18 : stop if stop >= 0 else None].strip()
            tally.keys.add(key)
            if key.startswith(SINGLE_PREFIX.encode()):
                with contextlib.suppress(OSError):
                    tally.report.send(b"%s %r" % (key, arrived))
        return b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


async def _endpoint(port: int, report_address: str) -> None:
    report = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    report.connect("\0" + report_address)
    tally = _Tally(report)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Responder(tally), "127.0.0.1", port, backlog=1024)
    async with server:
        report.send(b"ready")
        await server.serve_forever()


def _endpoint_main(port: int, report_address: str) -> None:
    asyncio.run(_endpoint(port, report_address))


@dataclass
class Endpoint:
    """The endpoint's process, as the bench sees it."""

    url: str
    process: Any  # multiprocessing's SpawnProcess
    report: socket.socket
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    arrivals: dict[str, float] = field(default_factory=dict)  # single id -> monotonic
    waiting: dict[str, asyncio.Event] = field(default_factory=dict)

    async def listen(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            message = await loop.sock_recv(self.report, 4096)
            if message == b"ready":
                self.ready.set()
                continue
            key, _, stamp = message.decode().partition(" ")
            if key not in self.arrivals:
                self.arrivals[key] = float(stamp)
                if (event := self.waiting.get(key)) is not None:
                    event.set()

    async def stats(self, http: aiohttp.ClientSession, reset: bool = False) -> dict[str, Any]:
        async with http.get(self.url.replace("/retry", "/reset" if reset else "/stats")) as r:
            found: dict[str, Any] = json.loads(await r.read())
            return found


async def _start_endpoint() -> tuple[Endpoint, "asyncio.Task[None]"]:
    address = f"jobwarden-bench-endpoint-{uuid.uuid4().hex}"
    report = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    report.bind("\0" + address)
    report.setblocking(False)
    port = free_port()
    process = multiprocessing.get_context("spawn").Process(
        target=_endpoint_main, args=(port, address), daemon=True
    )
    process.start()
    endpoint = Endpoint(f"http://127.0.0.1:{port}/retry", process, report)
    listening = asyncio.create_task(endpoint.listen())
    await asyncio.wait_for(endpoint.ready.wait(), 30)
    return endpoint, listening


# --- measuring ----------------------------------------------------------------------------


# The groups in the order the CPU lines list them (the rest of the machine left out).
_CPU_ORDER = ("daemon", "bench", "endpoint", "PostgreSQL")


def _cpu_groups(
    endpoint: Endpoint, postmaster_pid: int | None, daemon_pid: int | None = None
) -> dict[str, Callable[[], list[Any]]]:
    groups = cpu_groups(daemon_pid, postmaster_pid)
    endpoint_proc = psutil.Process(endpoint.process.pid)
    groups["endpoint"] = lambda: [endpoint_proc]
    return groups


def _cpu_text(used: dict[str, float]) -> str:
    shown = ", ".join(f"{group} {used[group]:.1f} s" for group in _CPU_ORDER if group in used)
    return f"{shown} ({os.cpu_count()} cores)"


async def _outcomes(conn: Conn, ids: list[str]) -> str:
    rows = await conn.fetch(OUTCOMES, ids)
    return ", ".join(
        f"{row['entries']:,} {row['status']} (attempts {row['least']}"
        + ("" if row["least"] == row["most"] else f"-{row['most']}")
        + ")"
        for row in rows
    )


def _endpoint_text(stats: dict[str, Any]) -> str:
    return (
        f"endpoint: {stats['requests']:,} requests, {stats['distinct']:,} distinct "
        f"Idempotency-Keys, sustained {stats['rate']:,.0f} requests/s"
    )


async def _insert(conn: Conn, ids: list[str]) -> tuple[float, float]:
    """The entries in one statement, one commit: (seconds it took, monotonic at commit)."""
    started = time.monotonic()
    await conn.execute(INSERT_ENTRIES, ids, JOB_ID)
    committed = time.monotonic()
    return committed - started, committed


# --- the hand-written loop ----------------------------------------------------------------


@dataclass
class Drain:
    seconds: float
    lines: list[str]
    label: str = ""

    @property
    def rate(self) -> float:
        return ENTRIES / self.seconds


async def _hand_loop(
    dsn: str, url: str, concurrency: int, batch: int, meter: CpuMeter
) -> tuple[float, int, str]:
    """Drain every PENDING entry; (monotonic when the last outcome was written, claims,
    the CPU used), the CPU read before the loop's connections close (the meter would
    miss their server processes)."""
    claim_conn = await asyncpg.connect(dsn)
    write_conn = await asyncpg.connect(dsn)
    work: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()
    room, answered = asyncio.Event(), asyncio.Event()
    outcomes: dict[str, list[str]] = {"SUCCEEDED": [], "FAILED": []}
    claims = 0
    workers_left = concurrency

    async def claimer() -> None:
        nonlocal claims
        while True:
            while work.qsize() >= batch:
                room.clear()
                await room.wait()
            rows = await claim_conn.fetch(HAND_CLAIM, batch)
            claims += 1
            if not rows:
                break
            for row in rows:
                body = (
                    f'{{"dlqId": {json.dumps(row["id"])}, "jobId": {json.dumps(row["job_id"])}, '
                    f'"attempt": {row["attempts"]}, "eventData": {row["event_data"]}, '
                    f'"error": {json.dumps(row["error"])}}}'
                ).encode()
                work.put_nowait((row["id"], body))
        for _ in range(concurrency):
            work.put_nowait(None)

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal workers_left
        while (item := await work.get()) is not None:
            if work.qsize() < batch:
                room.set()
            entry_id, body = item
            headers = {"Content-Type": "application/json", "Idempotency-Key": entry_id}
            try:
                async with http.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    ok = 200 <= resp.status < 300
            except (aiohttp.ClientError, OSError):
                ok = False
            outcomes["SUCCEEDED" if ok else "FAILED"].append(entry_id)
            answered.set()
        workers_left -= 1
        answered.set()

    async def writer() -> float:
        while True:
            await answered.wait()
            answered.clear()
            for status, ids in outcomes.items():
                if ids:
                    taken = ids[:]
                    ids.clear()
                    await write_conn.execute(HAND_FINISH, taken, status)
            if workers_left == 0 and not any(outcomes.values()):
                return time.monotonic()

    try:
        async with aiohttp.ClientSession() as http:
            tasks = [asyncio.create_task(worker(http)) for _ in range(concurrency)]
            claiming = asyncio.create_task(claimer())
            finished = await writer()
            await asyncio.gather(claiming, *tasks)
            cpu = _cpu_text(meter.used())
    finally:
        await claim_conn.close()
        await write_conn.close()
    return finished, claims, cpu


async def _hand_run(
    dsn: str,
    endpoint: Endpoint,
    concurrency: int,
    batch: int,
    ids: list[str],
    postmaster_pid: int | None,
) -> Drain:
    conn = await asyncpg.connect(dsn, server_settings={"TimeZone": "UTC"})
    try:
        async with aiohttp.ClientSession() as http:
            await endpoint.stats(http, reset=True)
            meter = CpuMeter(_cpu_groups(endpoint, postmaster_pid))
            inserted_in, committed = await _insert(conn, ids)
            finished, claims, cpu = await _hand_loop(dsn, endpoint.url, concurrency, batch, meter)
            stats = await endpoint.stats(http)
        seconds = finished - committed
        lines = [
            f"hand-written loop, {concurrency} POSTs at once, claims of up to {batch}: "
            f"{ENTRIES:,} in {seconds:.2f} s: {ENTRIES / seconds:,.0f} entries/s "
            f"({claims:,} claims)",
            f"  {await _outcomes(conn, ids)}; the INSERT took {inserted_in * 1000:.0f} ms",
            f"  {_endpoint_text(stats)}",
            f"  CPU meanwhile: {cpu}",
        ]
    finally:
        await conn.close()
    return Drain(seconds, lines, f"the loop claiming up to {batch}")


# --- the daemon ---------------------------------------------------------------------------


async def _wait_drained(dsn: str, proc: asyncio.subprocess.Process) -> float:
    """Monotonic of the first look that found no entry PENDING or PROCESSING.

    The looks go along the status index: planned freely they scan the table from its
    start, through every entry already done (1.4 million rows read in one drain), on
    the CPU the daemon is measured with."""
    conn = await asyncpg.connect(dsn, server_settings={"enable_seqscan": "off"})
    try:
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while time.monotonic() < deadline and proc.returncode is None:
            if not await conn.fetchval(UNFINISHED):
                return time.monotonic()
            await asyncio.sleep(POLL)
    finally:
        await conn.close()
    raise RuntimeError("the daemon did not drain the queue (it exited, or timed out)")


async def _singles(conn: Conn, endpoint: Endpoint) -> tuple[list[float], int]:
    """Commit-to-arrival ms of each single entry that arrived; how many never did."""
    latencies: list[float] = []
    lost = 0
    for _ in range(SINGLES):
        entry_id = f"{SINGLE_PREFIX}{uuid.uuid4().hex[:20]}"
        arrived = endpoint.waiting[entry_id] = asyncio.Event()
        await conn.execute(INSERT_ONE, entry_id, JOB_ID)
        committed = time.monotonic()
        try:
            await asyncio.wait_for(arrived.wait(), SINGLE_TIMEOUT)
            latencies.append((endpoint.arrivals[entry_id] - committed) * 1000)
        except TimeoutError:
            lost += 1
        del endpoint.waiting[entry_id]
        await asyncio.sleep(SPACING)
    return latencies, lost


ANALYZED = """
SELECT relname, greatest(last_analyze, last_autoanalyze) AS analyzed
FROM pg_stat_user_tables
WHERE relid IN ('dead_letter_queue'::regclass, 'jobwarden.dlq_schedule'::regclass)
ORDER BY relname
"""


async def _analyzed(conn: Conn, committed: float) -> str:
    """When PostgreSQL last analyzed the two tables, from the INSERT's commit."""
    now_db = await conn.fetchval("SELECT clock_timestamp()")
    now_mono = time.monotonic()
    shown = []
    for row in await conn.fetch(ANALYZED):
        if row["analyzed"] is None:
            shown.append(f"{row['relname']} never")
            continue
        after = (row["analyzed"] - now_db).total_seconds() + now_mono - committed
        when = f"{after:.1f} s after the commit" if after >= 0 else "before the INSERT"
        shown.append(f"{row['relname']} {when}")
    return "statistics (the claim's plan depends on them): last analyzed: " + ", ".join(shown)


async def _daemon_run(
    dsn: str,
    state: Path,
    endpoint: Endpoint,
    concurrency: int,
    ids: list[str],
    postmaster_pid: int | None,
    singles: bool,
) -> tuple[Drain, list[str]]:
    env = {
        "JOBWARDEN_DLQ_RETRY_URL": endpoint.url,
        "JOBWARDEN_DLQ_CONCURRENCY": str(concurrency),
    }  # the daemon logs at warning: an info line per retry would slow the drain
    log_path = state / f"daemon-{concurrency}.log"
    latency: list[str] = []
    async with running_daemon(dsn, state, log_path, env=env) as proc:
        ready_memory = memory_text(proc.pid)
        conn = await asyncpg.connect(dsn, server_settings={"TimeZone": "UTC"})
        try:
            async with aiohttp.ClientSession() as http:
                await endpoint.stats(http, reset=True)
                meter = CpuMeter(_cpu_groups(endpoint, postmaster_pid, proc.pid))
                inserted_in, committed = await _insert(conn, ids)
                drained = await _wait_drained(dsn, proc)
                cpu = _cpu_text(meter.used())
                stats = await endpoint.stats(http)
            seconds = drained - committed
            drain_memory = memory_text(proc.pid)
            lines = [
                f"daemon, JOBWARDEN_DLQ_CONCURRENCY={concurrency}: {ENTRIES:,} in {seconds:.2f} s:"
                f" {ENTRIES / seconds:,.0f} entries/s (seen every {POLL * 1000:.0f} ms)",
                f"  {await _outcomes(conn, ids)}; the INSERT took {inserted_in * 1000:.0f} ms",
                f"  {_endpoint_text(stats)}",
                f"  CPU meanwhile: {cpu}",
                f"  daemon resident memory: ready {ready_memory}, after the drain {drain_memory}",
                f"  {await _analyzed(conn, committed)}",
            ]
            if singles:
                await asyncio.sleep(SETTLE)
                values, lost = await _singles(conn, endpoint)
                latency = _report_singles(values, lost, concurrency)
            lines.append(f"  {log_findings(log_path)}")
        finally:
            await conn.close(timeout=10)
    return Drain(seconds, lines), latency


def _report_singles(latencies: list[float], lost: int, concurrency: int) -> list[str]:
    lines = [
        f"pickup latency, idle daemon (JOBWARDEN_DLQ_CONCURRENCY={concurrency}, "
        f"{ENTRIES:,} SUCCEEDED entries in the table), {SINGLES} single INSERTs: "
        f"{len(latencies)} arrived, {lost} lost after {SINGLE_TIMEOUT:g} s"
    ]
    if latencies:
        figures = "  ".join(
            f"p{round(q * 100)} {percentile(latencies, q):.1f} ms" for q in (0.5, 0.99)
        )
        within = sum(v <= 1000 for v in latencies) / SINGLES
        lines.append(f"  commit to arrival: {figures}  max {max(latencies):.1f} ms  mean "
                     f"{statistics.fmean(latencies):.1f} ms; within 1 s: {within:.0%}")  # fmt: skip
    return lines


# --- the run ------------------------------------------------------------------------------


async def _run(admin_dsn: str, state: Path, postmaster_pid: int | None) -> list[str]:
    endpoint, listening = await _start_endpoint()
    ids = [f"c{uuid.uuid4().hex[:24]}" for _ in range(ENTRIES)]
    summary: list[str] = []
    try:
        for concurrency in CONCURRENCIES:
            hands: list[Drain] = []
            for per_slot in HAND_CLAIMS:
                name = f"jobwarden_bench_dlq_hand_{concurrency}_{per_slot}"
                dsn = await create_database(admin_dsn, name)
                batch = per_slot * concurrency
                drain = await _hand_run(dsn, endpoint, concurrency, batch, ids, postmaster_pid)
                hands.append(drain)
                for line in drain.lines:
                    print(line, flush=True)
            hand = max(hands, key=lambda h: h.rate)
            dsn = await create_database(admin_dsn, f"jobwarden_bench_dlq_daemon_{concurrency}")
            daemon, latency = await _daemon_run(
                dsn, state, endpoint, concurrency, ids, postmaster_pid,
                singles=concurrency == CONCURRENCIES[0],
            )  # fmt: skip
            ratio = daemon.rate / hand.rate
            daemon.lines.insert(
                1,
                f"  {ratio:.2f} x the fastest hand-written loop (target {TARGET_RATIO:g}: "
                f"{'met' if ratio >= TARGET_RATIO else 'MISSED'}), "
                + ", ".join(f"{daemon.rate / h.rate:.2f} x {h.label}"
                            for h in hands if h is not hand)
                + f"; {TARGET_RATE:,.0f} entries/s target: "
                f"{'met' if daemon.rate >= TARGET_RATE else 'MISSED'}",
            )  # fmt: skip
            for line in daemon.lines + latency:
                print(line, flush=True)
            summary += [h.lines[0] for h in hands]
            summary += [*daemon.lines[:2], *daemon.lines[-4:-1], *latency]
    finally:
        listening.cancel()
        endpoint.process.terminate()
        endpoint.process.join(10)
        endpoint.report.close()
    return summary


async def main() -> None:
    configure_logging(level="warning")  # the migrations of each fresh database: figures only
    with (
        tempfile.TemporaryDirectory(prefix="jobwarden-bench-") as tmp,
        postgres(Path(tmp)) as (dsn, postmaster_pid),
    ):
        summary = await _run(dsn, Path(tmp), postmaster_pid)
    print(
        f"\nsummary (targets: ≥ {TARGET_RATE:,.0f} entries/s and ≥ {TARGET_RATIO:g} x the "
        "hand-written loop; pickup within 1 s)"
    )
    for line in summary:
        print(f"  {line}")


if __name__ == "__main__":
    asyncio.run(main())
