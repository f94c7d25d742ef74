"""udp probes against a real datagram server on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable

import pytest

from tests.netns.probe_kit import free_port, run_probe

pytestmark = pytest.mark.root

Answer = Callable[[bytes], list[bytes]]  # what the server sends back to one datagram


class _Server:
    """A datagram server on loopback answering each datagram with ``answer(data)``
    (a plain socket: asyncio's sendto() drops empty datagrams)."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.received: list[bytes] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._ready)

    def _ready(self) -> None:
        data, addr = self.sock.recvfrom(65536)
        self.received.append(data)
        for reply in self.answer(data):
            self.sock.sendto(reply, addr)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()


@pytest.fixture
async def udp_server() -> AsyncIterator[Callable[[Answer], tuple[int, _Server]]]:
    servers: list[_Server] = []

    def start(answer: Answer) -> tuple[int, _Server]:
        servers.append(_Server(answer))
        return servers[-1].port, servers[-1]

    yield start
    for server in servers:
        server.close()


async def test_echo_reply_is_up(udp_server) -> None:
    port, server = udp_server(lambda data: [data])
    result = await run_probe(port, type="udp", payload="ping")
    assert result.ok, result
    assert result.reason == "reply of 4 bytes"
    assert server.received == [b"ping"]


async def test_empty_payload_and_empty_reply_count(udp_server) -> None:
    port, server = udp_server(lambda data: [b""])
    result = await run_probe(port, type="udp")
    assert result.ok, result
    assert server.received == [b""]


async def test_expect_regex_matches(udp_server) -> None:
    port, _ = udp_server(lambda data: [b"status: good\n"])
    result = await run_probe(port, type="udp", payload_hex="00ff", expect="status: (good|ok)")
    assert result.ok, result


async def test_wrong_answer_is_down(udp_server) -> None:
    port, _ = udp_server(lambda data: [b"status: bad\n"])
    result = await run_probe(port, type="udp", payload="x", expect="status: good")
    assert not result.ok
    assert result.category == "body"
    assert result.reason == "reply b'status: bad\\n' did not match"


async def test_expect_hex_exact(udp_server) -> None:
    port, _ = udp_server(lambda data: [bytes.fromhex("cafe")])
    assert (await run_probe(port, type="udp", expect_hex="ca fe")).ok
    result = await run_probe(port, type="udp", expect_hex="cafe00")
    assert not result.ok and result.category == "body"
    assert "is not the expected bytes" in result.reason


async def test_garbage_is_down(udp_server) -> None:
    port, _ = udp_server(lambda data: [bytes(range(256)) * 4])
    result = await run_probe(port, type="udp", expect="^PONG")
    assert not result.ok and result.category == "body"
    assert result.reason.endswith("... did not match")


async def test_silence_is_down_at_the_timeout(udp_server) -> None:
    port, server = udp_server(lambda data: [])
    result = await run_probe(port, type="udp", payload="ping", timeout="300ms")
    assert not result.ok
    assert result.category == "timeout"
    assert result.reason == "timeout after 300ms waiting for a reply"
    assert result.latency >= 0.3
    assert server.received == [b"ping"]


async def test_port_unreachable_is_down_at_once() -> None:
    port = free_port(socket.SOCK_DGRAM)
    result = await run_probe(port, type="udp", payload="ping", timeout="5s", interval="10s")
    assert not result.ok
    assert result.category == "refused"
    assert result.reason == "port unreachable"
    assert result.latency < 5  # the ICMP error, not the timeout


async def test_first_reply_judged(udp_server) -> None:
    # A server answering twice: the first datagram is the verdict.
    port, _ = udp_server(lambda data: [b"nope", b"PONG"])
    result = await run_probe(port, type="udp", expect="PONG")
    assert not result.ok and result.category == "body"
