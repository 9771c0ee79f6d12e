"""What the benches share: ports, the daemon's readiness and memory, percentiles.

Not a bench itself (`make bench` runs `bench/[!_]*.py`); each bench imports it from
its own directory.
"""

import asyncio
import socket
from pathlib import Path

import psutil


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_ready(sock: socket.socket, proc: asyncio.subprocess.Process) -> None:
    loop = asyncio.get_running_loop()
    exited = asyncio.ensure_future(proc.wait())
    try:
        while True:
            received = asyncio.ensure_future(loop.sock_recv(sock, 65536))
            await asyncio.wait({received, exited}, return_when=asyncio.FIRST_COMPLETED)
            if not received.done():
                received.cancel()
                raise RuntimeError(f"the daemon exited ({proc.returncode}) before READY=1")
            if b"READY=1" in received.result():
                return
    finally:
        exited.cancel()


def memory(pid: int) -> tuple[float, float | None]:
    """Resident memory and its peak so far (VmHWM, Linux only), MiB."""
    try:
        fields = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        )
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        return psutil.Process(pid).memory_info().rss / 2**20, None


def memory_text(pid: int) -> str:
    rss, peak = memory(pid)
    return f"{rss:.1f} MiB" + ("" if peak is None else f" (peak {peak:.1f} MiB)")


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile: the smallest value with `share` of all at or below it."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(share * len(ordered) + 0.5) - 1))]


def log_findings(log_path: Path) -> str:
    """The daemon's warnings and errors (it logs at warning): none expected."""
    lines = log_path.read_text(errors="replace").splitlines()
    found = [line for line in lines if "level=warning" in line or "level=error" in line]
    shown = "".join(f"\n    {line[:200]}" for line in found[:5])
    return f"daemon log: {len(found)} warning or error lines{shown}"
