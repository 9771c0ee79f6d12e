"""sd_notify(3) with the standard library: one datagram to `$NOTIFY_SOCKET`.

Outside systemd (no socket) every call is a no-op, so callers never check.
"""

import socket

from jobwarden.logsetup import get_logger

log = get_logger(__name__)


class Notifier:
    def __init__(self, address: str | None) -> None:
        self._address = address

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *assignments: str) -> None:
        """Send `KEY=VALUE` lines, e.g. notify("READY=1", "STATUS=Serving")."""
        if self._address is None:
            return
        address = self._address
        if address.startswith("@"):  # abstract namespace socket
            address = "\0" + address[1:]
        message = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, address)
        except OSError as exc:
            # systemd not listening is not a reason to stop watching jobs.
            log.warning("sd_notify failed", error=str(exc), message=assignments[0])

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def stopping(self, status: str = "Stopping") -> None:
        self.notify("STOPPING=1", f"STATUS={status}")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> None:
        """Ask for more start-up (or shutdown) time while making visible progress."""
        self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")
