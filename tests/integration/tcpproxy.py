"""A TCP proxy in front of PostgreSQL, started late to play a database that is down."""

import asyncio
import contextlib
import socket

from tests.integration.pgcluster import TcpTarget, UnixTarget


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class TcpProxy:
    def __init__(self, port: int, target: UnixTarget | TcpTarget) -> None:
        self.port = port
        self.target = target
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self, *, cut: bool = False) -> None:
        """Stop accepting; with `cut`, also break every connection open through it."""
        if self._server is not None:
            self._server.close()
            if cut:
                for writer in list(self._writers):
                    writer.transport.abort()
            await self._server.wait_closed()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if isinstance(self.target, UnixTarget):
            server_r, server_w = await asyncio.open_unix_connection(self.target.path)
        else:
            server_r, server_w = await asyncio.open_connection(self.target.host, self.target.port)
        self._writers |= {client_w, server_w}
        try:
            await asyncio.gather(_pipe(client_r, server_w), _pipe(server_r, client_w))
        finally:
            self._writers -= {client_w, server_w}
