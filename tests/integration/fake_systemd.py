"""A fake systemd notify socket: receives sd_notify datagrams as systemd would."""

import asyncio
import socket
import uuid


def _parse(datagram: bytes) -> dict[str, str]:
    """`KEY=VALUE` lines of one sd_notify datagram."""
    return dict(line.split("=", 1) for line in datagram.decode().splitlines() if "=" in line)


class FakeNotifySocket:
    """Bound in the abstract namespace (`@name`), as systemd may hand it out."""

    def __init__(self) -> None:
        self.address = f"@jobwarden-test-{uuid.uuid4().hex}"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind("\0" + self.address[1:])
        self._sock.setblocking(False)
        self.messages: list[dict[str, str]] = []

    def close(self) -> None:
        self._sock.close()

    async def _receive(self) -> dict[str, str]:
        data = await asyncio.get_running_loop().sock_recv(self._sock, 65536)
        message = _parse(data)
        self.messages.append(message)
        return message

    async def expect(
        self, key: str, value: str | None = None, *, prefix: str = "", timeout: float = 30
    ) -> dict[str, str]:
        """Wait for the next message whose `key` equals `value` (or starts with `prefix`)."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self._receive()
                got = message.get(key)
                if got is not None and (value is None or got == value) and got.startswith(prefix):
                    return message

    def pending(self) -> list[dict[str, str]]:
        """Datagrams already queued, without waiting."""
        found: list[dict[str, str]] = []
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                return found
            found.append(_parse(data))
