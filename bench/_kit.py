"""What the benches share: ports, databases, an AppContext, the daemon (its spawn,
readiness and memory), CPU by process group, percentiles.

Not a bench itself (`make bench` runs `bench/[!_]*.py`); each bench imports it from
its own directory.
"""

import asyncio
import contextlib
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from jobwarden.context import AppContext


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


# --- databases, an AppContext, a daemon, CPU ---


@contextlib.contextmanager
def postgres(tmp: Path) -> Iterator[tuple[str, int | None]]:
    """BENCH_DATABASE_URL, or else an embedded PostgreSQL in `tmp`/pg, stopped on
    leaving: a DSN of its postgres database, and its postmaster's pid (None with
    BENCH_DATABASE_URL)."""
    dsn = os.environ.get("BENCH_DATABASE_URL")
    if dsn:
        yield dsn, None
        return
    import pgserver

    server = pgserver.get_server(tmp / "pg", cleanup_mode="stop")
    try:
        yield server.get_uri("postgres"), server.get_pid()
    finally:
        server.cleanup()


async def create_database(admin_dsn: str, name: str, migrate: bool = True) -> str:
    """A fresh database `name` on the server of `admin_dsn` (dropped first if it
    exists), migrated unless `migrate` is false; its DSN."""
    from urllib.parse import urlsplit, urlunsplit

    import asyncpg

    from jobwarden.db.migrations import apply_migrations, load_migrations

    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    parts = urlsplit(admin_dsn)
    dsn = urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))
    if not migrate:
        return dsn
    conn = await asyncpg.connect(dsn, server_settings={"TimeZone": "UTC"})
    try:
        await apply_migrations(conn, load_migrations(), lock_timeout=30)
    finally:
        await conn.close()
    return dsn


async def drop_database(admin_dsn: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def app_context(dsn: str, **env: str) -> AsyncIterator["AppContext"]:
    """What the daemon hands its passes, with a pool of its own on `dsn` (closed on
    leaving); `env` sets configuration variables."""
    import aiohttp

    from jobwarden.config import load_settings
    from jobwarden.context import AppContext
    from jobwarden.db.leader import Leadership
    from jobwarden.db.migrations import load_migrations
    from jobwarden.db.pool import Database, open_pool
    from jobwarden.liveness import Liveness
    from jobwarden.sdnotify import Notifier

    settings = load_settings({"DATABASE_URL": dsn, **env})
    assert settings.database is not None
    db = Database(await open_pool(settings.database, settings), settings.database)
    try:
        async with aiohttp.ClientSession() as http:
            yield AppContext(
                settings=settings,
                db=db,
                http=http,
                notifier=Notifier(None),
                liveness=Liveness(stale_after=15),
                migrations=load_migrations(),
                leader=Leadership(None),
            )
    finally:
        await db.close()


# Settings a bench's daemon must not inherit from the shell (channels, retries).
_DAEMON_UNSET = (
    "DIRECT_URL",
    "ALERT_WEBHOOK_URL",
    "SLACK_WEBHOOK_URL",
    "SENDGRID_API_KEY",
    "ALERT_EMAIL_FROM",
    "ALERT_EMAIL_RECIPIENTS",
)


@contextlib.asynccontextmanager
async def running_daemon(
    dsn: str, state: Path, log_path: Path, port: int = 0, env: Mapping[str, str] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A `jobwarden run` on `dsn`, ready (READY=1 on its NOTIFY_SOCKET), logging at
    warning to `log_path`, its HTTP API on `port`; stopped by SIGTERM on leaving (its
    last lines printed to stderr if it did not exit cleanly)."""
    address = f"@jobwarden-bench-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + address[1:])
    sock.setblocking(False)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("JOBWARDEN_")}
    for name in _DAEMON_UNSET:
        full_env.pop(name, None)
    full_env |= {
        "DATABASE_URL": dsn,
        "NOTIFY_SOCKET": address,
        "JOBWARDEN_HTTP_PORT": str(port),
        "JOBWARDEN_STATE_DIR": str(state),
        "JOBWARDEN_LOG_LEVEL": "warning",
        **(env or {}),
    }
    proc: asyncio.subprocess.Process | None = None
    with log_path.open("wb") as log_file:
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "jobwarden", "run", env=full_env, stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            await asyncio.wait_for(wait_ready(sock, proc), 60)
            yield proc
        finally:
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 60)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            if proc is not None and proc.returncode not in (0, -signal.SIGTERM):
                _print_tail(log_path, proc.returncode)
            sock.close()


def _print_tail(log_path: Path, returncode: int | None) -> None:
    tail = log_path.read_text(errors="replace").splitlines()[-30:]
    print(f"the daemon exited with {returncode}; its last lines:", *tail, sep="\n", file=sys.stderr)


_BUSY = ("nice", "irq", "softirq")  # besides user and system, where psutil has them


class CpuMeter:
    """CPU seconds (user + system) used by each group of processes since it was made
    (or last reset), and by the rest of the machine (every CPU's busy time, less the
    groups': other processes, the kernel). A group is a function listing its processes
    when read, so server processes started meanwhile count; read before closing
    connections (a process gone is missed)."""

    REST = "rest of the machine"

    def __init__(self, groups: Mapping[str, Callable[[], list[psutil.Process]]]) -> None:
        self.groups = dict(groups)
        self.before, self.busy_before = self._read(), self._busy()

    def _read(self) -> dict[str, dict[int, float]]:
        times: dict[str, dict[int, float]] = {}
        for group, procs in self.groups.items():
            times[group] = {}
            for proc in procs():
                with contextlib.suppress(psutil.Error):
                    cpu = proc.cpu_times()
                    times[group][proc.pid] = cpu.user + cpu.system
        return times

    @staticmethod
    def _busy() -> float:
        cpu = psutil.cpu_times()  # Linux: guest time is within user time
        return float(cpu.user + cpu.system + sum(getattr(cpu, f, 0.0) for f in _BUSY))

    def reset(self) -> None:
        self.before, self.busy_before = self._read(), self._busy()

    def used(self) -> dict[str, float]:
        used = {
            group: sum(t - self.before[group].get(pid, 0.0) for pid, t in pids.items())
            for group, pids in self._read().items()
        }
        busy = self._busy() - self.busy_before
        used[self.REST] = max(0.0, busy - sum(used.values()))
        return used


def cpu_groups(
    daemon_pid: int | None, postmaster_pid: int | None
) -> dict[str, Callable[[], list[psutil.Process]]]:
    """The daemon, PostgreSQL (the postmaster and its children, when it is known: not
    with BENCH_DATABASE_URL) and this process."""
    groups: dict[str, Callable[[], list[psutil.Process]]] = {}
    if daemon_pid is not None:
        daemon = psutil.Process(daemon_pid)
        groups["daemon"] = lambda: [daemon]
    if postmaster_pid is not None:
        postmaster = psutil.Process(postmaster_pid)
        groups["PostgreSQL"] = lambda: [postmaster, *postmaster.children(recursive=True)]
    bench = psutil.Process()
    groups["bench"] = lambda: [bench]
    return groups
