"""https probes on pulsed.checks.tls give the verdicts asyncio's SSL transport gave.

Servers on loopback: a TLS server for the cases after the handshake, a plain
one for peers that close or reset during it. No root needed.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trustme

from pulsed.checks.base import ProbeResult, Target
from pulsed.checks.config import CheckConfig
from pulsed.checks.probes import make_probe
from pulsed.durations import Duration

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(scope="module")
def tls_server_context() -> ssl.SSLContext:
    cert = trustme.CA().issue_cert("127.0.0.1")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    return ctx


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[int]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler, ctx: ssl.SSLContext | None = None) -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ctx)
        servers.append(server)
        return server.sockets[0].getsockname()[1]

    yield start
    for server in servers:
        server.close()


async def probe(port: int, **fields: object) -> ProbeResult:
    check = CheckConfig(type="https", tls_verify=False, timeout=Duration(5.0), **fields)
    return await make_probe(Target("127.0.0.1", port, check)).probe()


async def _request(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


async def test_a_response_ended_by_closing_without_close_notify(serve, tls_server_context) -> None:
    async def handler(reader, writer) -> None:
        await _request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-W: 40\r\n\r\nall ok")
        await writer.drain()
        writer.transport.abort()  # no close_notify

    port = await serve(handler, tls_server_context)
    result = await probe(port, body_regex="ok$", weight_header="X-W")
    assert (result.ok, result.reason, result.weight_pct) == (True, "status 200", 40)


async def test_reads_stop_at_max_bytes(serve, tls_server_context) -> None:
    async def handler(reader, writer) -> None:
        await _request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 999999\r\n\r\n" + b"a" * 300_000)
        writer.write(b"needle")
        await writer.drain()
        writer.close()

    port = await serve(handler, tls_server_context)
    result = await probe(port, body_regex="needle", max_bytes=4096)
    assert (result.ok, result.reason) == (False, "body did not match")


async def test_peer_closes_during_the_handshake(serve) -> None:
    async def handler(reader, writer) -> None:
        await reader.read(100)  # the ClientHello
        writer.close()

    port = await serve(handler)
    result = await probe(port)
    assert (result.ok, result.reason, result.category) == (False, "connection reset", "reset")


async def test_peer_resets_during_the_handshake(serve) -> None:
    async def handler(reader, writer) -> None:
        await reader.read(100)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    port = await serve(handler)
    result = await probe(port)
    assert (result.ok, result.category) == (False, "reset")


async def test_a_plain_http_server_is_a_tls_error(serve) -> None:
    async def handler(reader, writer) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        writer.close()

    port = await serve(handler)
    result = await probe(port)
    assert (result.ok, result.category) == (False, "tls")


async def test_reset_after_part_of_the_response(serve, tls_server_context) -> None:
    async def handler(reader, writer) -> None:
        await _request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nok")
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    port = await serve(handler, tls_server_context)
    result = await probe(port, body_regex="ok")
    assert (result.ok, result.reason, result.category) == (False, "connection reset", "reset")
