"""dns probes against dnsmasq (a real DNS server, UDP and TCP) and hostile servers."""

from __future__ import annotations

import asyncio
import shutil
import socket
import struct
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator

import dns.flags
import dns.message
import pytest

from tests.netns.probe_kit import check, free_port, run_probe

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="needs dnsmasq (make deps)"),
]

BIG_TXT = "x" * 200  # three of these do not fit a 512-byte UDP answer


@pytest.fixture(scope="module")
def dnsmasq() -> Iterator[int]:
    """dnsmasq answering for the zone "test" on loopback, UDP and TCP, nothing upstream."""
    port = free_port()
    proc = subprocess.Popen(
        [
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--pid-file=",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            f"--port={port}",
            "--local=/test/",
            "--host-record=www.test,192.0.2.10",
            "--mx-host=test,mail.test,10",
            *(f"--txt-record=big.test,{BIG_TXT}{i}" for i in range(3)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_answering(port, proc)
        yield port
    finally:
        proc.terminate()
        proc.wait()


def _wait_answering(port: int, proc: subprocess.Popen) -> None:
    query = dns.message.make_query("www.test", "A").to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        for _ in range(50):
            if proc.poll() is not None:
                raise RuntimeError(f"dnsmasq exited: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
            s.sendto(query, ("127.0.0.1", port))
            try:
                s.recv(512)
                return
            except (TimeoutError, ConnectionRefusedError):
                continue
    raise RuntimeError("dnsmasq did not answer")


async def test_a_record_up(dnsmasq) -> None:
    result = await run_probe(dnsmasq, type="dns", query_name="www.test")
    assert result.ok, result
    assert result.reason == "NOERROR, 1 answer"


async def test_answer_matches(dnsmasq) -> None:
    result = await run_probe(
        dnsmasq, type="dns", query_name="www.test", expect_answer="^192\\.0\\.2\\.10$"
    )
    assert result.ok, result


async def test_mx_over_tcp_only(dnsmasq) -> None:
    result = await run_probe(
        dnsmasq,
        type="dns",
        query_name="test.",
        query_type="MX",
        dns_transport="tcp",
        expect_answer="mail\\.test",
    )
    assert result.ok, result
    assert result.reason == "NOERROR, 1 answer over TCP"


async def test_truncated_answer_retried_over_tcp(dnsmasq) -> None:
    result = await run_probe(
        dnsmasq, type="dns", query_name="big.test", query_type="TXT", expect_answer='x2"'
    )
    assert result.ok, result
    assert result.reason == "NOERROR, 3 answers over TCP"


async def test_wrong_rcode_is_down(dnsmasq) -> None:
    result = await run_probe(dnsmasq, type="dns", query_name="nowhere.test")
    assert not result.ok and result.category == "status"
    assert result.reason == "rcode NXDOMAIN, expected NOERROR"


async def test_expected_nxdomain_is_up(dnsmasq) -> None:
    result = await run_probe(
        dnsmasq, type="dns", query_name="nowhere.test", expect_rcode="NXDOMAIN"
    )
    assert result.ok, result


async def test_wrong_answer_is_down(dnsmasq) -> None:
    result = await run_probe(dnsmasq, type="dns", query_name="www.test", expect_answer="^10\\.")
    assert not result.ok and result.category == "body"
    assert result.reason == "no answer matched (1 answers, got 192.0.2.10)"


# --- hostile servers -------------------------------------------------------------

Answer = Callable[[bytes], list[bytes]]


@pytest.fixture
async def udp_server() -> AsyncIterator[Callable[[Answer], int]]:
    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = []

    def start(answer: Answer) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)

        def ready() -> None:
            data, addr = sock.recvfrom(65536)
            for reply in answer(data):
                sock.sendto(reply, addr)

        loop.add_reader(sock.fileno(), ready)
        socks.append(sock)
        return sock.getsockname()[1]

    yield start
    for sock in socks:
        loop.remove_reader(sock.fileno())
        sock.close()


def answer_with(mutate: Callable[[dns.message.Message], None]) -> Answer:
    def answer(data: bytes) -> list[bytes]:
        reply = dns.message.make_response(dns.message.from_wire(data))
        mutate(reply)
        return [reply.to_wire()]

    return answer


async def test_garbage_is_down(udp_server) -> None:
    port = udp_server(lambda data: [b"\x00\x01garbage"])
    result = await run_probe(port, type="dns", query_name="www.test")
    assert not result.ok and result.category == "protocol"
    assert result.reason.startswith("bad DNS reply: ")


async def test_reply_with_another_id_is_down(udp_server) -> None:
    def wrong_id(reply: dns.message.Message) -> None:
        reply.id ^= 1

    port = udp_server(answer_with(wrong_id))
    result = await run_probe(port, type="dns", query_name="www.test")
    assert not result.ok and result.category == "protocol"
    assert result.reason == "reply is not for this query (ID)"


async def test_servfail_is_down(udp_server) -> None:
    def servfail(reply: dns.message.Message) -> None:
        reply.set_rcode(dns.rcode.SERVFAIL)

    port = udp_server(answer_with(servfail))
    result = await run_probe(port, type="dns", query_name="www.test")
    assert not result.ok and result.category == "status"
    assert result.reason == "rcode SERVFAIL, expected NOERROR"


async def test_no_answer_is_down_at_the_timeout(udp_server) -> None:
    port = udp_server(lambda data: [])
    result = await run_probe(port, type="dns", query_name="www.test", timeout="300ms")
    assert not result.ok and result.category == "timeout"
    assert result.reason == "timeout after 300ms waiting for the DNS reply"


async def test_port_unreachable_is_down_at_once() -> None:
    port = free_port(socket.SOCK_DGRAM)
    result = await run_probe(port, type="dns", query_name="www.test", timeout="5s", interval="10s")
    assert not result.ok and result.category == "refused"
    assert result.reason == "port unreachable"


async def test_truncated_then_tcp_refused(udp_server) -> None:
    def truncated(reply: dns.message.Message) -> None:
        reply.flags |= dns.flags.TC

    port = udp_server(answer_with(truncated))  # nothing listens on TCP
    result = await run_probe(port, type="dns", query_name="www.test")
    assert not result.ok and result.category == "refused"
    assert result.reason == "connect refused"


async def test_tcp_trickle_is_down_at_the_timeout() -> None:
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
        query = dns.message.from_wire(await reader.readexactly(length))
        wire = dns.message.make_response(query).to_wire()
        try:
            for byte in struct.pack("!H", len(wire)) + wire:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.05)
        except ConnectionError:
            pass

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await run_probe(
            port, type="dns", query_name="www.test", dns_transport="tcp", timeout="400ms"
        )
    finally:
        server.close()
    assert not result.ok and result.category == "timeout"
    assert result.reason == "timeout after 400ms waiting for the DNS reply over TCP"


async def test_tcp_reset_is_down() -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(2)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(reset, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await run_probe(port, type="dns", query_name="www.test", dns_transport="tcp")
    finally:
        server.close()
    assert not result.ok and result.category == "reset"
    assert result.reason == "connection reset"


def test_validation() -> None:
    from pulsed.checks.config import CheckConfig, check_problems

    problems = check_problems(
        CheckConfig(type="dns", query_type="BOGUS", expect_rcode="MAYBE", expect_answer="(")
    )
    keys = [key for key, _, _ in problems]
    assert keys == ["query_name", "query_type", "expect_rcode", "expect_answer"]
    assert check(type="dns", query_name="example.org", query_type="aaaa").query_type == "aaaa"
