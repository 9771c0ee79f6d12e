"""Start-up and health-endpoint figures for `jobwarden run`. Prints; asserts nothing.

Measures, against an embedded PostgreSQL in a temporary directory (or
BENCH_DATABASE_URL, a database it may migrate):
  - seconds from spawn to READY=1 on a fresh database (migrations included),
    and on an already-migrated one;
  - latency of GET /api/health?quick=true and GET /api/health (p50/p95/p99);
  - resident memory of the daemon after the requests.
"""

import asyncio
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import psutil
from _kit import free_port

REQUESTS = 500


async def _wait_ready(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    while b"READY=1" not in await loop.sock_recv(sock, 65536):
        pass


async def _latencies(url: str) -> list[float]:
    found = []
    async with aiohttp.ClientSession() as session:
        for _ in range(REQUESTS):
            started = time.perf_counter()
            async with session.get(url) as resp:
                await resp.read()
            found.append((time.perf_counter() - started) * 1000)
    return found


def _summary(name: str, values: list[float]) -> str:
    q = statistics.quantiles(values, n=100)
    return f"{name:<28} p50 {q[49]:6.2f} ms  p95 {q[94]:6.2f} ms  p99 {q[98]:6.2f} ms"


async def _one_run(dsn: str, state: Path, measure_http: bool) -> float:
    address = f"@jobwarden-bench-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + address[1:])
    sock.setblocking(False)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("JOBWARDEN_")},
        "DATABASE_URL": dsn,
        "NOTIFY_SOCKET": address,
        "JOBWARDEN_HTTP_PORT": str(port),
        "JOBWARDEN_STATE_DIR": str(state),
        "JOBWARDEN_LOG_LEVEL": "warning",
    }
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jobwarden", "run", env=env, stdout=asyncio.subprocess.DEVNULL
    )
    try:
        await asyncio.wait_for(_wait_ready(sock), 60)
        ready = time.perf_counter() - started
        if measure_http:
            base = f"http://127.0.0.1:{port}"
            print(
                _summary(
                    "GET /api/health?quick=true", await _latencies(base + "/api/health?quick=true")
                )
            )
            print(_summary("GET /api/health", await _latencies(base + "/api/health")))
            rss = psutil.Process(proc.pid).memory_info().rss / 2**20
            print(f"{'daemon resident memory':<28} {rss:.1f} MiB after {2 * REQUESTS} requests")
        return ready
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
        sock.close()


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="jobwarden-bench-") as tmp:
        dsn = os.environ.get("BENCH_DATABASE_URL")
        if not dsn:
            import pgserver

            server = pgserver.get_server(Path(tmp) / "pg", cleanup_mode="stop")
            server.psql("CREATE DATABASE bench;")
            dsn = server.get_uri("bench")
        fresh = await _one_run(dsn, Path(tmp), measure_http=False)
        print(f"{'spawn to READY=1, fresh db':<28} {fresh:.2f} s (migrations applied)")
        warm = await _one_run(dsn, Path(tmp), measure_http=True)
        print(f"{'spawn to READY=1, migrated':<28} {warm:.2f} s")


if __name__ == "__main__":
    asyncio.run(main())
