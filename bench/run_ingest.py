"""Runs reported over HTTP: batches and pings into a real daemon. Prints; asserts nothing.

Measures, against an embedded PostgreSQL in a temporary directory (or
BENCH_DATABASE_URL, a server where it may CREATE DATABASE), each phase in a fresh,
migrated database, the rows in `jobwarden.runs` counted after each:
  - the reference: a bare COPY of the ROWS runs (asyncpg `copy_records_to_table` into
    the partitioned `jobwarden.runs`, the columns the API writes, the same values),
    once as one COPY of all of them and once as COPYs of BATCH rows over CLIENTS
    connections (the shape of the HTTP load); rows/s. A COPY fires the statement
    trigger that fills `jobwarden.run_inbox` as the API's INSERT does (checked: the
    inbox holds every row), so the comparison is like for like. Each database is
    dropped after its COPY (its autovacuum would run beside what follows);
  - batched ingest: a `jobwarden run` daemon (default settings: JOBWARDEN_DB_POOL_SIZE
    5, a monitoring pass, which folds the inbox, every 30 s), CLIENTS aiohttp clients
    with keep-alive, each POSTing the next JSON array of BATCH runs to /api/executions
    until ROWS are in (the bodies made before the clock starts): runs/s, p50/p99 of a
    request, the CPU each process used, the ratio to the faster COPY, whether the rows
    hold the COPY's values (an order-free hash of them);
  - the fold: the daemon's next monitoring pass adds runs of the batches up into
    job_metrics (a bounded number a pass); waited for, so that it does not run beside
    the pings (the later passes do), its duration and CPU shown;
  - pings, on the same daemon, after a VACUUM (ANALYZE) of the batches' tables off the
    clock: PING_CLIENTS keep-alive connections (a bare HTTP/1.1 client, lighter than
    aiohttp's), each sending start then success with a rid of its own, PINGS pings in
    all: pings/s, p50/p99 of a ping (each answered after its commit), the CPU used.
The items look real: JOB_COUNT job ids, log-normal durations, one in FAILURE_EVERY a
failure with a short error, a small metadata object, startedAt and finishedAt.
Targets (the issue): ≥ 50,000 runs/s batched and ≥ 0.25 x a bare COPY of the same
rows; ≥ 3,000 pings/s. Printed beside the figures, never asserted. The load
generator shares the cores with the daemon and PostgreSQL: its CPU is shown, and so is
the rest of the machine's (other work running meanwhile lowers the figures).
"""

import asyncio
import json
import os
import random
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from _kit import (
    CpuMeter,
    cpu_groups,
    create_database,
    drop_database,
    free_port,
    log_findings,
    memory_text,
    percentile,
    postgres,
    running_daemon,
)

from jobwarden.db.pg import Conn
from jobwarden.logsetup import configure_logging

ROWS = 1_000_000
BATCH = 1000
CLIENTS = 4
PINGS = 50_000  # start + success pairs: PINGS / 2 runs
PING_CLIENTS = 100
JOB_COUNT = 20
FAILURE_EVERY = 20
SEED = 20_240_601
TARGET_RATE = 50_000.0
TARGET_RATIO = 0.25
TARGET_PINGS = 3000.0
REQUEST_TIMEOUT = 120.0
FOLD_TIMEOUT = 60.0  # the daemon's pass comes every 30 s (JOBWARDEN_POLL_INTERVAL)
FOLD_POLL = 0.05
FOLD_SETTLE = 1.0  # seconds without change: the pass's fold is over

COLUMNS = (
    "job_id",
    "run_id",
    "outcome",
    "started_at",
    "finished_at",
    "duration_ms",
    "error",
    "metadata",
    "source",
)
Record = tuple[str, None, str, datetime, datetime, int, str | None, str, str]

JOBS = [
    f"{name}-{n:02d}"
    for n, name in enumerate(
        ["nightly-report", "sync-customers", "send-invoices", "rebuild-search", "backup-db"]
        * (JOB_COUNT // 5),
        start=1,
    )
]
ERRORS = (
    "TimeoutError: upstream did not answer within 30s",
    "ConnectionResetError: [Errno 104] Connection reset by peer",
    "psycopg.errors.UniqueViolation: duplicate key value violates unique constraint",
    "HTTP 503 from https://api.example.com/v2/orders",
)
HOSTS = tuple(f"worker-{n}" for n in range(1, 9))

FOLDED = 'SELECT coalesce(sum("totalExecutions"), 0) FROM job_metrics'

COUNTS = """
SELECT (SELECT count(*) FROM jobwarden.runs) AS runs,
       (SELECT count(*) FROM jobwarden.runs WHERE source = 'batch') AS batch,
       (SELECT count(*) FROM jobwarden.runs WHERE source = 'ping') AS ping,
       (SELECT count(*) FROM jobwarden.run_inbox) AS inbox,
       (SELECT count(*) FROM jobwarden.run_starts) AS open_starts,
       (SELECT coalesce(sum("totalExecutions"), 0) FROM job_metrics) AS folded,
       (SELECT coalesce(sum(hashtext(concat_ws('|', job_id, run_id, outcome, started_at,
               finished_at, duration_ms, error, metadata))), 0)
        FROM jobwarden.runs WHERE source = 'batch') AS fingerprint
"""


# --- the rows ------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _make_rows() -> tuple[list[Record], list[bytes]]:
    """ROWS runs as COPY records and as the JSON bodies of BATCH runs each, the same
    values (millisecond times, metadata as the daemon serializes it)."""
    rng = random.Random(SEED)
    now = datetime.now(UTC).replace(microsecond=0)
    records: list[Record] = []
    bodies: list[bytes] = []
    for first in range(0, ROWS, BATCH):
        items: list[dict[str, Any]] = []
        for n in range(first, min(first + BATCH, ROWS)):
            job = JOBS[n % len(JOBS)]
            duration = min(int(rng.lognormvariate(8.5, 1.2)), 3_600_000)
            finished = now - timedelta(milliseconds=rng.randrange(3_600_000))
            started = finished - timedelta(milliseconds=duration)
            failed = rng.randrange(FAILURE_EVERY) == 0
            meta = {"host": rng.choice(HOSTS), "attempt": 1 + failed, "version": "2.14.0"}
            item: dict[str, Any] = {
                "jobId": job,
                "status": "failure" if failed else "success",
                "durationMs": duration,
                "startedAt": _iso(started),
                "finishedAt": _iso(finished),
                "metadata": meta,
            }
            error = rng.choice(ERRORS) if failed else None
            if error is not None:
                item["error"] = error
            items.append(item)
            records.append(
                (job, None, item["status"], started, finished, duration, error,
                 json.dumps(meta), "batch")
            )  # fmt: skip
        bodies.append(json.dumps(items).encode())
    return records, bodies


# --- measuring -----------------------------------------------------------------------------


def _cpu_text(used: dict[str, float], seconds: float) -> str:
    """Each group's CPU, its share of the bench's (the rest of the machine apart), and
    how busy the cores were."""
    ours = sum(v for k, v in used.items() if k != CpuMeter.REST)
    shown = ", ".join(
        f"{group} {cpu:.1f} s" + ("" if group == CpuMeter.REST else f" ({cpu / ours:.0%})")
        for group, cpu in used.items()
    )
    cores = os.cpu_count() or 1
    busy = sum(used.values()) / (seconds * cores)
    return f"{shown}; the {cores} cores {busy:.0%} busy"


def _latency_text(values: list[float]) -> str:
    return (
        "  ".join(f"p{round(q * 100)} {percentile(values, q):.1f} ms" for q in (0.5, 0.99))
        + f"  max {max(values):.1f} ms"
    )


async def _counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn, server_settings={"TimeZone": "UTC"})
    try:
        row = await conn.fetchrow(COUNTS)
        assert row is not None
        return {key: int(value) for key, value in row.items()}
    finally:
        await conn.close()


def _check(counts: dict[str, int], expected: int) -> str:
    verdict = "as sent" if counts["runs"] == expected else f"MISMATCH: {expected:,} sent"
    return f"jobwarden.runs holds {counts['runs']:,} rows ({verdict})"


@dataclass
class Copy:
    label: str
    rate: float
    lines: list[str]
    fingerprint: int  # of the rows' values, in any order (COUNTS)


async def _copy(
    admin_dsn: str,
    name: str,
    records: list[Record],
    chunk: int,
    connections: int,
    postmaster_pid: int | None,
) -> Copy:
    """The records into a fresh database by COPY, `chunk` rows a statement over
    `connections` connections; the database dropped afterwards."""
    dsn = await create_database(admin_dsn, name)
    conns: list[Conn] = [
        await asyncpg.connect(dsn, server_settings={"TimeZone": "UTC"}) for _ in range(connections)
    ]
    try:
        meter = CpuMeter(cpu_groups(None, postmaster_pid))
        chunks = iter(range(0, len(records), chunk))

        async def copier(conn: Conn) -> None:
            for first in chunks:
                await conn.copy_records_to_table(
                    "runs", schema_name="jobwarden", columns=COLUMNS,
                    records=records[first : first + chunk],
                )  # fmt: skip

        started = time.perf_counter()
        await asyncio.gather(*(copier(conn) for conn in conns))
        seconds = time.perf_counter() - started
        cpu = meter.used()  # before the connections close: their server processes count
    finally:
        for conn in conns:
            await conn.close()
    counts = await _counts(dsn)
    await drop_database(admin_dsn, name)
    rate = len(records) / seconds
    label = (
        "one COPY"
        if chunk >= len(records)
        else f"COPYs of {chunk:,} over {connections} connections"
    )
    lines = [
        f"bare {label}: {len(records):,} rows in {seconds:.2f} s: {rate:,.0f} rows/s",
        f"  {_check(counts, len(records))}; jobwarden.run_inbox {counts['inbox']:,} "
        + (
            "(the statement trigger fired for the COPY, as for the API's INSERT)"
            if counts["inbox"] == len(records)
            else "(NOT every row: the comparison is not like for like)"
        ),
        f"  CPU: {_cpu_text(cpu, seconds)}",
    ]
    return Copy(label, rate, lines, counts["fingerprint"])


async def _batches(
    base: str, bodies: list[bytes], meter: CpuMeter
) -> tuple[float, list[float], int, dict[str, float]]:
    """POST every body, CLIENTS at once: (seconds, ms of each request, failures, CPU)."""
    latencies: list[float] = []
    failures = 0
    queue = iter(bodies)
    headers = {"Content-Type": "application/json"}
    url = f"{base}/api/executions"

    async def client(http: aiohttp.ClientSession) -> None:
        nonlocal failures
        for body in queue:
            started = time.perf_counter()
            async with http.post(url, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 201:
                    failures += 1
            latencies.append((time.perf_counter() - started) * 1000)

    connector = aiohttp.TCPConnector(limit=CLIENTS)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        meter.reset()
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(CLIENTS)))
        seconds = time.perf_counter() - started
        cpu = meter.used()
    return seconds, latencies, failures, cpu


class _PingClient(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time: a bare client, so the
    load generator takes little of the CPU it shares with the daemon and PostgreSQL
    (aiohttp's client costs about 0.15 ms a request here)."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(exc or ConnectionError("the daemon closed the connection"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.answer is None:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : stop if stop >= 0 else None]) if at >= 0 else 0
        if len(self.buffer) >= end + 4 + length:
            del self.buffer[: end + 4 + length]
            self.answer.set_result(int(head[9:12]))

    async def post(self, target: str) -> int:
        """The status of a POST to `target`, its body read whole."""
        assert self.transport is not None
        self.answer = asyncio.get_running_loop().create_future()
        self.transport.write(
            f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n".encode()
        )
        return await self.answer


async def _pings(port: int, meter: CpuMeter) -> tuple[float, list[float], int, dict[str, float]]:
    """PINGS pings, start then success, over PING_CLIENTS connections at once:
    (seconds, ms of each ping, failures, CPU)."""
    latencies: list[float] = []
    failures = 0
    pairs = iter(range(PINGS // 2))
    prefix = uuid.uuid4().hex[:8]
    loop = asyncio.get_running_loop()

    async def client(conn: _PingClient) -> None:
        nonlocal failures
        for n in pairs:
            job = JOBS[n % len(JOBS)]
            for step in ("start", "success"):
                started = time.perf_counter()
                status = await asyncio.wait_for(
                    conn.post(f"/api/jobs/{job}/{step}?rid={prefix}-{n}"), REQUEST_TIMEOUT
                )
                latencies.append((time.perf_counter() - started) * 1000)
                failures += status != 200

    conns = [
        (await loop.create_connection(_PingClient, "127.0.0.1", port))[1]
        for _ in range(PING_CLIENTS)
    ]
    try:
        meter.reset()
        started = time.perf_counter()
        await asyncio.gather(*(client(conn) for conn in conns))
        seconds = time.perf_counter() - started
        cpu = meter.used()
    finally:
        for conn in conns:
            if conn.transport is not None:
                conn.transport.close()
    return seconds, latencies, failures, cpu


async def _daemon_phases(
    admin_dsn: str, state: Path, bodies: list[bytes], copies: list[Copy], postmaster_pid: int | None
) -> list[str]:
    """Batched ingest, the fold, then pings, on one daemon: the lines for the summary."""
    dsn = await create_database(admin_dsn, "jobwarden_bench_ingest_http")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = state / "daemon.log"
    async with running_daemon(dsn, state, log_path, port) as proc:
        ready_memory = memory_text(proc.pid)
        meter = CpuMeter(cpu_groups(proc.pid, postmaster_pid))

        seconds, latencies, failures, cpu = await _batches(base, bodies, meter)
        counts = await _counts(dsn)
        rate = ROWS / seconds
        best = max(copies, key=lambda c: c.rate)
        ratio = rate / best.rate
        others = "".join(f"; {rate / c.rate:.2f} x the {c.label}" for c in copies if c is not best)
        batched = [
            f"HTTP batches: {len(bodies):,} POSTs of {BATCH:,} runs, {CLIENTS} clients: "
            f"{ROWS:,} runs in {seconds:.2f} s: {rate:,.0f} runs/s "
            f"(target {TARGET_RATE:,.0f}: {_verdict(rate, TARGET_RATE)})",
            f"  {ratio:.2f} x the {best.label}, the faster (target {TARGET_RATIO:g}: "
            f"{_verdict(ratio, TARGET_RATIO)}){others}",
            f"  per request: {_latency_text(latencies)}; {failures} not 201",
            f"  {_check(counts, ROWS)}, "
            + ("the COPY's values" if counts["fingerprint"] == best.fingerprint else "OTHER values")
            + f"; jobwarden.run_inbox {counts['inbox']:,}, "
            f"{counts['folded']:,} folded into job_metrics meanwhile",
            f"  CPU: {_cpu_text(cpu, seconds)}",
            f"  daemon resident memory: ready {ready_memory}, after {memory_text(proc.pid)}",
        ]
        for line in batched:
            print(line, flush=True)

        # The daemon's next pass folds runs of the batches, and autovacuum follows: both
        # would run beside the pings. Waited for, measured, then a VACUUM off the clock.
        folding = await _wait_folded(dsn, meter)
        print(folding, flush=True)
        settled = await _vacuum(dsn)
        seconds, latencies, failures, cpu = await _pings(port, meter)
        counts = await _counts(dsn)
        rate = PINGS / seconds
        pinged = [
            f"pings: {PINGS:,} (start then success, a rid each), {PING_CLIENTS} connections: "
            f"{seconds:.2f} s: {rate:,.0f} pings/s (target {TARGET_PINGS:,.0f}: "
            f"{_verdict(rate, TARGET_PINGS)})",
            f"  per ping (answered after its commit): {_latency_text(latencies)}; "
            f"{failures} not 200",
            f"  {_check(counts, ROWS + PINGS // 2)} ({counts['batch']:,} from the batches, "
            f"{counts['ping']:,} from pings); "
            f"{counts['open_starts']:,} starts left unpaired; "
            f"{counts['folded']:,} runs folded into job_metrics so far",
            f"  CPU: {_cpu_text(cpu, seconds)}",
            f"  daemon resident memory after: {memory_text(proc.pid)}; before the pings, "
            f"VACUUM (ANALYZE) of the batches' tables took {settled:.1f} s (off the clock)",
            f"  {log_findings(log_path)}",
        ]
        for line in pinged:
            print(line, flush=True)
    await drop_database(admin_dsn, "jobwarden_bench_ingest_http")
    return batched[:3] + batched[4:5] + folding.splitlines()[:1] + pinged[:2] + pinged[3:4]


async def _wait_folded(dsn: str, meter: CpuMeter) -> str:
    """Wait for the daemon's next monitoring pass to fold runs of the batches into
    job_metrics (it takes a bounded number a pass, the rest at the next ones): when it
    came, how many it took, in how long, the CPU used from the last look before it
    until its count stopped growing for FOLD_SETTLE."""
    conn = await asyncpg.connect(dsn)
    try:
        waited = time.perf_counter()
        deadline = waited + FOLD_TIMEOUT
        before = changed = waited  # the last look that saw nothing folded; the last change
        folded = 0
        while (now := time.perf_counter()) < deadline:
            seen = int(await conn.fetchval(FOLDED))
            if seen == 0:
                meter.reset()
                before = now
            elif seen != folded:
                folded, changed = seen, now
            elif now - changed >= FOLD_SETTLE or folded >= ROWS:
                break
            await asyncio.sleep(FOLD_POLL)
        cpu = meter.used()
        seconds = time.perf_counter() - before
    finally:
        await conn.close()
    if folded == 0:
        return f"fold: nothing added up into job_metrics within {FOLD_TIMEOUT:g} s"
    took = max(changed - before, FOLD_POLL)
    rest = (
        "all of them"
        if folded >= ROWS
        else f"the other {ROWS - folded:,} wait for the next passes (every 30 s)"
    )
    return (
        f"fold: the daemon's next monitoring pass, {before - waited:.1f} s after the last "
        f"batch, added {folded:,} runs up into job_metrics in at most {took:.2f} s "
        f"(≥ {folded / took:,.0f} runs/s); {rest}\n"
        f"  CPU from the look before it to {FOLD_SETTLE:g} s after: {_cpu_text(cpu, seconds)}"
    )


async def _vacuum(dsn: str) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        await conn.execute("VACUUM (ANALYZE) jobwarden.runs, jobwarden.run_inbox")
        return time.perf_counter() - started
    finally:
        await conn.close()


def _verdict(value: float, target: float) -> str:
    return "met" if value >= target else f"MISSED by {1 - value / target:.0%}"


async def _run(admin_dsn: str, state: Path, postmaster_pid: int | None) -> list[str]:
    made = time.perf_counter()
    records, bodies = _make_rows()
    size = sum(map(len, bodies)) / len(bodies) / 1024
    print(
        f"{ROWS:,} runs made in {time.perf_counter() - made:.1f} s: {len(bodies):,} bodies of "
        f"{BATCH:,} (~{size:.0f} KiB each), {JOB_COUNT} jobs, "
        f"{sum(r[6] is not None for r in records):,} failures",
        flush=True,
    )
    copies: list[Copy] = []
    shapes: list[tuple[int, int]] = [(ROWS, 1), (BATCH, CLIENTS)]
    for n, (chunk, connections) in enumerate(shapes):
        name = f"jobwarden_bench_ingest_copy_{n}"
        copy = await _copy(admin_dsn, name, records, chunk, connections, postmaster_pid)
        copies.append(copy)
        for line in copy.lines:
            print(line, flush=True)
    del records
    summary = await _daemon_phases(admin_dsn, state, bodies, copies, postmaster_pid)
    return [c.lines[0] for c in copies] + summary


async def main() -> None:
    configure_logging(level="warning")  # the migrations of each fresh database: figures only
    with (
        tempfile.TemporaryDirectory(prefix="jobwarden-bench-") as tmp,
        postgres(Path(tmp)) as (dsn, postmaster_pid),
    ):
        summary = await _run(dsn, Path(tmp), postmaster_pid)
    print(
        f"\nsummary (targets: ≥ {TARGET_RATE:,.0f} runs/s batched and ≥ {TARGET_RATIO:g} x a "
        f"bare COPY of the same rows; ≥ {TARGET_PINGS:,.0f} pings/s)"
    )
    for line in summary:
        print(f"  {line}")


if __name__ == "__main__":
    asyncio.run(main())
