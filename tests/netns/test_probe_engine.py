"""The socket probe engine against real sockets on loopback.

A probe sends its request right after connect() when the connection is
already up (as on loopback); these tests also force the other path, a
handshake still under way, by filling a listener's accept queue so that the
kernel drops the probe's SYN until the queue drains. Timeouts of different
lengths share one engine and must each expire on their own.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from pulsed.checks.base import ProbeResult, Target
from pulsed.checks.config import CheckConfig
from pulsed.checks.probes import make_probe
from pulsed.checks.sockio import ProbeEngine
from pulsed.durations import Duration
from tests.support.silent_server import SilentServer

MARGIN = 3.0  # generous: the verdict must come at the timeout, not much later


@pytest.fixture
def full_listener() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A listener whose accept queue is full (backlog 0, one connection waiting):
    the kernel drops further SYNs, so their handshakes stay under way."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname())
    try:
        yield listener, filler
    finally:
        filler.close()
        listener.close()


@pytest.mark.parametrize("kind", ["http", "tcp"])
async def test_handshake_that_never_completes_times_out(
    full_listener: tuple[socket.socket, socket.socket], kind: str
) -> None:
    port = full_listener[0].getsockname()[1]
    check = CheckConfig(type=kind, timeout=Duration(0.5))
    start = time.monotonic()
    result = await make_probe(Target("127.0.0.1", port, check)).probe()
    assert (result.ok, result.reason, result.category) == (False, "timeout after 500ms", "timeout")
    assert 0.5 <= result.latency < 0.5 + MARGIN
    assert time.monotonic() - start < 0.5 + MARGIN


async def test_request_waits_for_a_slow_handshake(
    full_listener: tuple[socket.socket, socket.socket],
) -> None:
    """The SYN is dropped until the queue drains; the kernel retransmits it
    (after about 1 s) and the request goes out once the connection is up."""
    listener, _ = full_listener
    port = listener.getsockname()[1]
    loop = asyncio.get_running_loop()
    engine = ProbeEngine(loop)
    probing: asyncio.Future[ProbeResult] = loop.create_future()
    check = CheckConfig(type="http", timeout=Duration(5))
    # open() has sent the SYN (and loopback has dropped it) when it returns.
    make_probe(Target("127.0.0.1", port, check)).start(engine, lambda t, r: probing.set_result(r))
    listener.setblocking(False)
    waiting, _ = await loop.sock_accept(listener)  # drain the queue
    waiting.close()
    conn, _ = await loop.sock_accept(listener)  # the probe's retransmitted SYN
    with conn:
        request = b""
        while b"\r\n\r\n" not in request:
            request += await loop.sock_recv(conn, 4096)
        assert request.startswith(b"GET / HTTP/1.1\r\n")
        await loop.sock_sendall(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        try:
            result = await asyncio.wait_for(probing, 5 + MARGIN)
        finally:
            engine.close()
    assert (result.ok, result.reason) == (True, "status 200")


async def test_each_timeout_expires_on_its_own() -> None:
    """Exchanges with different timeouts on one engine, against a server that
    accepts and never answers: each fails at its own timeout."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    engine = ProbeEngine(loop)
    results: dict[str, asyncio.Future[ProbeResult]] = {}
    try:
        for name, timeout in [("long", 0.6), ("short", 0.2), ("mid", 0.4), ("short2", 0.2)]:
            check = CheckConfig(type="http", timeout=Duration(timeout))
            results[name] = loop.create_future()
            probe = make_probe(Target("127.0.0.1", port, check))
            probe.start(engine, lambda token, r: results[token].set_result(r), name)
        async with asyncio.timeout(0.6 + MARGIN):
            order = []
            for done in asyncio.as_completed(results.values()):
                order.append((await done).reason)
        assert order == [
            "timeout after 200ms",
            "timeout after 200ms",
            "timeout after 400ms",
            "timeout after 600ms",
        ]
        for name, timeout in [("long", 0.6), ("short", 0.2), ("mid", 0.4)]:
            assert timeout <= results[name].result().latency < timeout + MARGIN
    finally:
        engine.close()
        for writer in accepted:
            writer.close()
        server.close()


async def test_close_cancels_without_reporting_and_closes_the_sockets() -> None:
    async with SilentServer() as server:
        engine = ProbeEngine(asyncio.get_running_loop())
        reports: list[ProbeResult] = []
        check = CheckConfig(type="http", timeout=Duration(0.3))
        probe = make_probe(Target("127.0.0.1", server.port, check))
        probe.start(engine, lambda t, r: reports.append(r))
        try:
            engine.close()
            async with asyncio.timeout(MARGIN):
                await server.closed.wait()
            # Absence of a report can only be seen by waiting past the timeout.
            await asyncio.sleep(0.5)
            assert reports == []
        finally:
            engine.close()
