"""Alert fan-out to a local webhook receiver: latency and a burst. Prints; asserts nothing.

Measures, against an embedded PostgreSQL in a temporary directory (or
BENCH_DATABASE_URL, a database it may migrate and write alerts to), with a
`jobwarden run` daemon whose only channel is a Standard Webhooks receiver running
in this process (aiohttp, answers 204, notes the arrival of each alert by its id):
  - commit-to-receipt latency of single alerts: SINGLES inserts, each its own
    autocommit INSERT (only the columns the web app sets), the next one SPACING
    after the previous arrived; p50/p90/p99/max and the share within the targets;
  - the time to drain a burst of BURST alerts inserted by one statement (one
    commit) to the receiver, notifications per second, and whether each arrived
    exactly once (distinct `webhook-id`s, duplicates);
  - the daemon's resident memory (VmRSS, and the peak VmHWM) after each.
Targets (issue 6): half of all notifications within 50 ms of the commit, 99 % within
250 ms. They are printed beside the figures, never asserted.
"""

import asyncio
import contextlib
import os
import statistics
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from _kit import CpuMeter, free_port, log_findings, memory_text, percentile, running_daemon
from aiohttp import web

from jobwarden.db.pg import Conn

SINGLES = 500
SPACING = 0.020  # seconds between one single alert's arrival and the next INSERT
SINGLE_TIMEOUT = 10.0  # longer than the daemon's 2 s idle tick: a lost wake-up still shows
BURST = 10_000
BURST_TIMEOUT = 600.0
SETTLE = 3.0  # seconds to wait for repeats after the last arrival, before counting
SINGLE_PREFIX = "bench-single-"
TARGETS_MS = ((0.50, 50.0), (0.99, 250.0))  # share of notifications, within ms of commit

INSERT_ONE = """
INSERT INTO alerts (id, type, severity, title, message, "updatedAt")
VALUES ($1, 'bench', 'WARNING', 'Bench alert', 'one single alert', now() AT TIME ZONE 'UTC')
"""

INSERT_BURST = """
INSERT INTO alerts (id, type, severity, title, message, "updatedAt")
SELECT $1 || g, 'bench', 'WARNING', 'Bench burst ' || g, 'one of a burst',
       now() AT TIME ZONE 'UTC'
FROM generate_series(1, $2) AS g
"""


@dataclass
class Receiver:
    """The webhook endpoint: first arrival (perf_counter) by alert id, every request seen."""

    arrivals: dict[str, float] = field(default_factory=dict)
    waiting: dict[str, asyncio.Event] = field(default_factory=dict)
    received: list[tuple[str, str]] = field(default_factory=list)  # (alert id, webhook-id)
    burst_prefix: str = "\0"  # ids of the burst start with it
    burst_target: int = 0
    burst_seen: int = 0
    burst_done: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        arrived = time.perf_counter()
        body: dict[str, Any] = await request.json()
        alert_id = str(body["data"]["id"])
        self.received.append((alert_id, request.headers.get("webhook-id", "")))
        if alert_id not in self.arrivals:
            self.arrivals[alert_id] = arrived
            if alert_id.startswith(self.burst_prefix):
                self.burst_seen += 1
                if self.burst_seen >= self.burst_target:
                    self.burst_done.set()
            if (event := self.waiting.get(alert_id)) is not None:
                event.set()
        return web.Response(status=204)

    def tally(self, prefix: str) -> str:
        """Requests for alerts whose id starts with `prefix`: each alert should come once."""
        mine = [r for r in self.received if r[0].startswith(prefix)]
        alerts, ids = len({a for a, _ in mine}), len({w for _, w in mine})
        repeats = Counter(w for _, w in mine)
        return (
            f"{len(mine):,} webhook requests, {alerts:,} distinct alerts, {ids:,} distinct "
            f"webhook-ids, duplicates {len(mine) - alerts} "
            f"({sum(n - 1 for n in repeats.values())} under the same webhook-id)"
        )


async def _start_receiver(receiver: Receiver) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/hook"


async def _singles(conn: Conn, receiver: Receiver) -> tuple[list[float], int]:
    """Commit-to-receipt ms of each single alert that arrived; how many never did."""
    latencies: list[float] = []
    lost = 0
    for n in range(SINGLES):
        alert_id = f"{SINGLE_PREFIX}{n:04d}-{uuid.uuid4().hex[:8]}"
        arrived = receiver.waiting[alert_id] = asyncio.Event()
        await conn.execute(INSERT_ONE, alert_id)
        committed = time.perf_counter()
        try:
            await asyncio.wait_for(arrived.wait(), SINGLE_TIMEOUT)
            latencies.append((receiver.arrivals[alert_id] - committed) * 1000)
        except TimeoutError:
            lost += 1
        del receiver.waiting[alert_id]
        await asyncio.sleep(SPACING)
    return latencies, lost


@dataclass
class Burst:
    inserted_in: float  # seconds the INSERT took (10,000 trigger calls included)
    committed: float  # perf_counter when it returned
    arrivals: list[float]  # perf_counter of each first arrival, in order
    cpu: str  # CPU used by each process from the commit to the last arrival


async def _burst(
    conn: Conn, receiver: Receiver, prefix: str, processes: dict[str, list[Any]]
) -> Burst:
    """BURST alerts inserted by one statement, one commit; wait for all to arrive."""
    receiver.burst_prefix, receiver.burst_target = prefix, BURST
    started = time.perf_counter()
    await conn.execute(INSERT_BURST, prefix, BURST)
    committed = time.perf_counter()
    # The processes listed before the INSERT: those started since are not counted.
    meter = CpuMeter({group: partial(list, procs) for group, procs in processes.items()})
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(receiver.burst_done.wait(), BURST_TIMEOUT)
    cpu_used = _cpu_text(meter.used())
    arrivals = sorted(t for k, t in receiver.arrivals.items() if k.startswith(prefix))
    return Burst(committed - started, committed, arrivals, cpu_used)


def _cpu_text(used: dict[str, float]) -> str:
    shown = ", ".join(
        f"{group} {seconds:.1f} s" for group, seconds in used.items() if group != CpuMeter.REST
    )
    return f"{shown} ({os.cpu_count()} cores)"


def _processes(daemon_pid: int, postmaster_pid: int | None) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {
        "daemon": [psutil.Process(daemon_pid)],
        "receiver (this process)": [psutil.Process()],
    }
    if postmaster_pid is not None:
        postmaster = psutil.Process(postmaster_pid)
        found["PostgreSQL"] = [postmaster, *postmaster.children(recursive=True)]
    return found


def _report_singles(latencies: list[float], lost: int, receiver: Receiver) -> list[str]:
    lines = []
    if latencies:
        figures = "  ".join(
            f"p{round(q * 100)} {percentile(latencies, q):6.1f} ms" for q in (0.5, 0.9, 0.99)
        )
        lines.append(f"single alerts ({len(latencies)} of {SINGLES} arrived, {lost} lost "
                     f"after {SINGLE_TIMEOUT:g} s): {figures}  max {max(latencies):6.1f} ms  "
                     f"mean {statistics.fmean(latencies):6.1f} ms")  # fmt: skip
    for share, limit in TARGETS_MS:
        within = sum(v <= limit for v in latencies) / SINGLES  # a lost one is not within
        verdict = "met" if within >= share else "MISSED"
        lines.append(
            f"  within {limit:g} ms of the commit: {within:.1%}  (target {share:.0%}: {verdict})"
        )
    lines.append(f"  {receiver.tally(SINGLE_PREFIX)}")
    return lines


def _report_burst(burst: Burst, receiver: Receiver, prefix: str) -> list[str]:
    inserted = f"the INSERT of {BURST:,} rows took {burst.inserted_in * 1000:.0f} ms"
    if not burst.arrivals:
        return [f"burst of {BURST:,}: nothing arrived within {BURST_TIMEOUT:g} s ({inserted})"]
    since = [t - burst.committed for t in burst.arrivals]
    drain = since[-1]
    lines = [
        f"burst of {BURST:,} in one commit: {len(since):,} arrived; first after "
        f"{since[0] * 1000:.0f} ms, half after {since[len(since) // 2]:.2f} s, "
        f"{'all' if len(since) == BURST else 'the last seen'} after {drain:.2f} s "
        f"({len(since) / drain:,.0f} notifications/s)",
        f"  {inserted}",
    ]
    for share, limit in TARGETS_MS:
        within = sum(t * 1000 <= limit for t in since) / BURST
        lines.append(f"  within {limit:g} ms of the commit: {within:.1%}  (the target, "
                     f"{share:.0%}, is for single alerts)")  # fmt: skip
    lines.append(f"  {receiver.tally(prefix)} ({SETTLE:g} s after the last)")
    lines.append(f"  CPU from the commit to the last arrival: {burst.cpu}")
    return lines


async def _run(dsn: str, state: Path, postmaster_pid: int | None) -> list[str]:
    receiver = Receiver()
    runner, hook_url = await _start_receiver(receiver)
    env = {
        "ALERT_WEBHOOK_URL": hook_url,
        "JOBWARDEN_WEBHOOK_MIN_SEVERITY": "INFO",
    }  # the daemon logs at warning: an info line per delivery would slow the burst
    log_path = state / "daemon.log"
    summary: list[str] = []
    try:
        async with running_daemon(dsn, state, log_path, env=env) as proc:
            summary.append(f"daemon resident memory when ready: {memory_text(proc.pid)}")
            conn = await asyncpg.connect(dsn, timeout=10, server_settings={"TimeZone": "UTC"})
            try:
                latencies, lost = await _singles(conn, receiver)
                await asyncio.sleep(SETTLE)
                summary += _report_singles(latencies, lost, receiver)
                summary.append(f"  daemon resident memory after them: {memory_text(proc.pid)}")
                for line in summary:
                    print(line, flush=True)
                shown = len(summary)

                prefix = f"bench-burst-{uuid.uuid4().hex[:8]}-"
                burst = await _burst(conn, receiver, prefix, _processes(proc.pid, postmaster_pid))
                await asyncio.sleep(SETTLE)
                summary += _report_burst(burst, receiver, prefix)
                summary.append(f"  daemon resident memory after it: {memory_text(proc.pid)}")
                summary.append(log_findings(log_path))
                for line in summary[shown:]:
                    print(line, flush=True)
            finally:
                await conn.close(timeout=10)
    finally:
        await runner.cleanup()
    return summary


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="jobwarden-bench-") as tmp:
        dsn = os.environ.get("BENCH_DATABASE_URL")
        server = None
        if not dsn:
            import pgserver

            server = pgserver.get_server(Path(tmp) / "pg", cleanup_mode="stop")
            server.psql("CREATE DATABASE bench;")
            dsn = server.get_uri("bench")
        try:
            summary = await _run(dsn, Path(tmp), None if server is None else server.get_pid())
        finally:
            if server is not None:
                server.cleanup()
    print("\nsummary (targets: 50 % within 50 ms, 99 % within 250 ms of the commit)")
    for line in summary:
        print(f"  {line}")


if __name__ == "__main__":
    asyncio.run(main())
