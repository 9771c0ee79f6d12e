"""sd_notify datagrams and the watchdog, against a real unix datagram socket."""

import asyncio
import contextlib
import socket
import uuid
from pathlib import Path

from jobwarden.sdnotify import Notifier
from jobwarden.watchdog import run_watchdog


def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + address[1:] if address.startswith("@") else address)
    sock.settimeout(5)
    return sock


def test_notify_reaches_a_path_socket(tmp_path: Path) -> None:
    address = str(tmp_path / "notify")
    with _receiver(address) as sock:
        Notifier(address).ready("Watching jobs")
        assert sock.recv(4096) == b"READY=1\nSTATUS=Watching jobs"


def test_notify_reaches_an_abstract_socket() -> None:
    address = f"@jobwarden-{uuid.uuid4().hex}"
    with _receiver(address) as sock:
        Notifier(address).stopping()
        assert sock.recv(4096) == b"STOPPING=1\nSTATUS=Stopping"


def test_without_systemd_notify_does_nothing_and_a_dead_socket_is_not_fatal(
    tmp_path: Path,
) -> None:
    Notifier(None).ready("x")
    Notifier(str(tmp_path / "nobody-listens")).watchdog()


async def test_watchdog_pings_only_while_healthy() -> None:
    address = f"@jobwarden-{uuid.uuid4().hex}"
    sock = _receiver(address)
    sock.setblocking(False)
    health: list[str | None] = ["scheduler heartbeat stale"]
    checks = 0
    checked_thrice = asyncio.Event()

    def problem() -> str | None:
        nonlocal checks
        checks += 1
        if checks == 3:
            checked_thrice.set()
        return health[0]

    task = asyncio.create_task(run_watchdog(Notifier(address), 20_000, problem))
    try:
        await asyncio.wait_for(checked_thrice.wait(), 5)
        with contextlib.suppress(BlockingIOError):
            assert sock.recv(4096) == b"", "pinged while unhealthy"
        health[0] = None
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 4096), 5)
        assert data == b"WATCHDOG=1"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()
