"""send_expect probes against line-protocol servers on loopback (plain and TLS)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trustme

from tests.netns.probe_kit import free_port, run_probe

pytestmark = pytest.mark.root

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[int]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler, tls: ssl.SSLContext | None = None) -> int:
        async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await handler(reader, writer)
            except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.transport.abort()

        server = await asyncio.start_server(wrapped, "127.0.0.1", 0, ssl=tls)
        servers.append(server)
        return server.sockets[0].getsockname()[1]

    yield start
    for server in servers:
        server.close()


async def redis_like(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Enough of RESP for PING and INFO."""
    while line := await reader.readline():
        if line.strip().upper() == b"PING":
            writer.write(b"+PONG\r\n")
        elif line.strip().upper() == b"INFO REPLICATION":
            body = b"# Replication\r\nrole:master\r\n"
            writer.write(b"$%d\r\n%s\r\n" % (len(body), body))
        else:
            writer.write(b"-ERR unknown command\r\n")
        await writer.drain()


PING = [{"send": "PING\r\n", "expect": "^\\+PONG"}]


async def test_redis_ping_pong(serve) -> None:
    port = await serve(redis_like)
    result = await run_probe(port, type="send_expect", steps=PING)
    assert result.ok, result
    assert result.reason == "1 step done"


async def test_several_steps_and_hex(serve) -> None:
    port = await serve(redis_like)
    steps = [
        {"send_hex": "50494e470d0a", "expect": "PONG\r\n"},
        {"send": "INFO replication\r\n", "expect": "role:master"},
    ]
    result = await run_probe(port, type="send_expect", steps=steps)
    assert result.ok, result
    assert result.reason == "2 steps done"


async def test_banner_only(serve) -> None:
    async def pop3(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"+OK POP3 ready\r\n")
        await writer.drain()
        await reader.read()

    port = await serve(pop3)
    result = await run_probe(
        port, type="send_expect", steps=[{"expect": "^\\+OK"}, {"send": "QUIT\r\n"}]
    )
    assert result.ok, result


async def test_wrong_answer_then_close_is_down(serve) -> None:
    port = await serve(redis_like)
    steps = [{"send": "HELLO\r\n", "expect": "^\\+PONG"}]
    result = await run_probe(port, type="send_expect", steps=steps, timeout="500ms")
    # The server answers -ERR and keeps the connection: the step never matches.
    assert not result.ok and result.category == "timeout"
    assert result.reason == "timeout after 500ms waiting for step 1: '^\\\\+PONG'"


async def test_closed_before_match(serve) -> None:
    async def goodbye(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"-ERR go away\r\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    port = await serve(goodbye)
    result = await run_probe(port, type="send_expect", steps=PING)
    assert not result.ok and result.category == "closed"
    assert (
        result.reason
        == "step 1 ('^\\\\+PONG'): connection closed before a match, got b'-ERR go away\\r\\n'"
    )


async def test_garbage_stops_at_max_bytes(serve) -> None:
    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            writer.write(bytes(range(256)) * 64)
            await writer.drain()

    port = await serve(flood)
    result = await run_probe(port, type="send_expect", steps=PING, max_bytes=4096)
    assert not result.ok and result.category == "body"
    assert result.reason == "step 1 ('^\\\\+PONG'): no match in 4096 bytes"


async def test_trickle_is_down_at_the_timeout(serve) -> None:
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for byte in b"+PO" * 100:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.05)

    port = await serve(trickle)
    result = await run_probe(port, type="send_expect", steps=PING, timeout="400ms")
    assert not result.ok and result.category == "timeout"
    assert result.latency >= 0.4


async def test_no_answer_is_down_at_the_timeout(serve) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    port = await serve(silent)
    result = await run_probe(port, type="send_expect", steps=PING, timeout="300ms")
    assert not result.ok and result.category == "timeout"


async def test_reset_is_down(serve) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.transport.abort()  # with unread data queued the kernel sends RST

    port = await serve(reset)
    steps = [{"send": "PING\r\nPING\r\n", "expect": "^\\+PONG"}]
    result = await run_probe(port, type="send_expect", steps=steps)
    assert not result.ok
    assert result.category in ("reset", "closed"), result


async def test_refused() -> None:
    result = await run_probe(free_port(), type="send_expect", steps=PING)
    assert not result.ok and result.category == "refused"
    assert result.reason == "connect refused"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_tls(ca: trustme.CA, name: str = "db.example") -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(ctx)
    return ctx


async def test_tls_verified(serve, ca, tmp_path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    port = await serve(redis_like, server_tls(ca))
    result = await run_probe(
        port, type="send_expect", steps=PING, tls=True, ca_file=str(ca_file), host="db.example"
    )
    assert result.ok, result


async def test_tls_wrong_name_is_down(serve, ca, tmp_path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    port = await serve(redis_like, server_tls(ca))
    result = await run_probe(
        port, type="send_expect", steps=PING, tls=True, ca_file=str(ca_file), host="other.example"
    )
    assert not result.ok and result.category == "tls"
    assert "Hostname mismatch" in result.reason


async def test_tls_to_a_plain_server_is_down(serve, ca, tmp_path) -> None:
    port = await serve(redis_like)
    result = await run_probe(port, type="send_expect", steps=PING, tls=True, tls_verify=False)
    assert not result.ok
    assert result.category in ("tls", "closed", "reset"), result
