"""grpc probes against a real gRPC server (grpcio with its health service) and hostile servers."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent import futures

import grpc
import pytest
import trustme
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from pulsed.checks.grpc import decode_status, encode_request
from tests.netns.probe_kit import free_port, run_probe

pytestmark = pytest.mark.root


class Grpcd:
    def __init__(self, tls: tuple[bytes, bytes] | None = None) -> None:
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if tls is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            creds = grpc.ssl_server_credentials([tls])
            self.port = self.server.add_secure_port("127.0.0.1:0", creds)
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self.health.set("db", health_pb2.HealthCheckResponse.SERVING)
        self.health.set("cache", health_pb2.HealthCheckResponse.NOT_SERVING)
        self.server.start()

    def stop(self) -> None:
        self.server.stop(None)


@pytest.fixture
def grpcd() -> Iterator[Grpcd]:
    server = Grpcd()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def grpcd_tls(ca) -> Iterator[Grpcd]:
    cert = ca.issue_cert("grpc.example")
    server = Grpcd((cert.private_key_pem.bytes(), cert.cert_chain_pems[0].bytes()))
    yield server
    server.stop()


async def test_whole_server_serving(grpcd) -> None:
    result = await run_probe(grpcd.port, type="grpc")
    assert result.ok, result
    assert result.reason == "SERVING"


async def test_named_service_serving(grpcd) -> None:
    assert (await run_probe(grpcd.port, type="grpc", grpc_service="db")).ok


async def test_not_serving_is_down(grpcd) -> None:
    result = await run_probe(grpcd.port, type="grpc", grpc_service="cache")
    assert not result.ok and result.category == "status"
    assert result.reason == "NOT_SERVING"


async def test_server_going_down_is_seen(grpcd) -> None:
    grpcd.health.enter_graceful_shutdown()
    result = await run_probe(grpcd.port, type="grpc")
    assert not result.ok and result.reason == "NOT_SERVING"


async def test_unknown_service_is_down(grpcd) -> None:
    result = await run_probe(grpcd.port, type="grpc", grpc_service="nope")
    assert not result.ok and result.category == "status"
    assert result.reason == "grpc-status 5 NOT_FOUND"


async def test_tls_verified(grpcd_tls, ca, tmp_path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    result = await run_probe(
        grpcd_tls.port, type="grpc", tls=True, ca_file=str(ca_file), host="grpc.example"
    )
    assert result.ok, result


async def test_tls_untrusted_is_down(grpcd_tls) -> None:
    result = await run_probe(grpcd_tls.port, type="grpc", tls=True, host="grpc.example")
    assert not result.ok and result.category == "tls"


async def test_plain_to_tls_server_is_down(grpcd_tls) -> None:
    result = await run_probe(grpcd_tls.port, type="grpc", timeout="500ms")
    assert not result.ok
    assert result.category in ("protocol", "closed", "reset"), result


async def test_refused() -> None:
    result = await run_probe(free_port(), type="grpc")
    assert not result.ok and result.category == "refused"


# --- hostile servers -------------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[int]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> int:
        async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.transport.abort()

        server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
        servers.append(server)
        return server.sockets[0].getsockname()[1]

    yield start
    for server in servers:
        server.close()


async def test_http1_garbage_is_down(serve) -> None:
    async def http1(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await reader.read()

    port = await serve(http1)
    result = await run_probe(port, type="grpc")
    assert not result.ok and result.category == "protocol"
    assert result.reason == "bad HTTP/2: an HTTP/1 response"


async def test_no_answer_is_down_at_the_timeout(serve) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    port = await serve(silent)
    result = await run_probe(port, type="grpc", timeout="300ms")
    assert not result.ok and result.category == "timeout"
    assert result.reason == "timeout after 300ms waiting for the response"


async def test_trickle_is_down_at_the_timeout(serve) -> None:
    settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # an empty SETTINGS frame

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        for byte in settings * 20:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.05)

    port = await serve(trickle)
    result = await run_probe(port, type="grpc", timeout="400ms")
    assert not result.ok and result.category == "timeout"


async def test_reset_is_down(serve) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(10)  # leaves the rest unread: closing sends RST
        writer.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        writer.transport.abort()

    port = await serve(reset)
    result = await run_probe(port, type="grpc")
    assert not result.ok and result.category == "reset"


async def test_closed_is_down(serve) -> None:
    async def bye(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.05)
        await reader.read(65536)
        writer.close()
        await writer.wait_closed()

    port = await serve(bye)
    result = await run_probe(port, type="grpc")
    assert not result.ok and result.category == "closed"
    assert result.reason == "connection closed before the response"


def test_messages() -> None:
    assert encode_request("") == b"\x00\x00\x00\x00\x00"
    request = health_pb2.HealthCheckRequest(service="db").SerializeToString()
    assert encode_request("db") == b"\x00" + struct.pack("!I", len(request)) + request
    for status in (0, 1, 2, 3):
        body = health_pb2.HealthCheckResponse(status=status).SerializeToString()
        assert decode_status(b"\x00" + struct.pack("!I", len(body)) + body) == status
    for bad in (
        b"",
        b"\x01\x00\x00\x00\x00",
        b"\x00\x00\x00\x00\x05\x08",
        b"\x00\x00\x00\x00\x01\x08",
    ):
        with pytest.raises(ValueError):
            decode_status(bad)
