"""A loopback TCP server that accepts and never answers, for probe tests."""

from __future__ import annotations

import asyncio
import contextlib


class SilentServer:
    """Accepts, sends nothing, and notes when the probe's side closes.

    ``accepted`` is set when a connection arrives, ``closed`` when its
    client closes it. Use as ``async with SilentServer() as server``.
    """

    def __init__(self) -> None:
        self.accepted = asyncio.Event()
        self.closed = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.set()
        with contextlib.suppress(ConnectionError):
            await reader.read()  # returns when the probe's side closes
        self.closed.set()
        writer.close()

    async def __aenter__(self) -> SilentServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
