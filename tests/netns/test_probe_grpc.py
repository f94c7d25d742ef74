"""grpc probes against a real gRPC server (grpcio with its health service) and hostile servers."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent import futures

import grpc
import hpack
import pytest
import trustme
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
)

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


# --- servers written frame by frame ----------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    frame, length = Frame.parse_frame_header(memoryview(await reader.readexactly(9)))
    frame.parse_body(memoryview(await reader.readexactly(length)))
    return frame


async def read_request(reader: asyncio.StreamReader) -> list[Frame]:
    """The client's preface and frames, up to its DATA with END_STREAM."""
    assert await reader.readexactly(len(PREFACE)) == PREFACE
    frames = [await read_frame(reader)]
    while not (isinstance(frames[-1], DataFrame) and "END_STREAM" in frames[-1].flags):
        frames.append(await read_frame(reader))
    return frames


def block(fields: list[tuple[bytes, bytes]], encoder: hpack.Encoder | None = None) -> bytes:
    return (encoder or hpack.Encoder()).encode(fields)


def health_message(status: int) -> bytes:
    body = health_pb2.HealthCheckResponse(status=status).SerializeToString()
    return b"\x00" + struct.pack("!I", len(body)) + body


SETTINGS = SettingsFrame(0, {SettingsFrame.MAX_CONCURRENT_STREAMS: 100}).serialize()


def respond(*frames: bytes, trickle: bool = False) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        data = b"".join(frames)
        for piece in [data[i : i + 1] for i in range(len(data))] if trickle else [data]:
            writer.write(piece)
            await writer.drain()
        await reader.read()

    return handler


def serving_response(encoder: hpack.Encoder) -> list[bytes]:
    return [
        HeadersFrame(
            1,
            block([(b":status", b"200"), (b"content-type", b"application/grpc")], encoder),
            flags=("END_HEADERS",),
        ).serialize(),
        DataFrame(1, health_message(1)).serialize(),
        HeadersFrame(
            1, block([(b"grpc-status", b"0")], encoder), flags=("END_HEADERS", "END_STREAM")
        ).serialize(),
    ]


async def test_request_is_a_health_check(serve) -> None:
    seen: list[list[Frame]] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(SETTINGS + b"".join(serving_response(hpack.Encoder())))
        await writer.drain()
        await reader.read()

    port = await serve(record)
    assert (await run_probe(port, type="grpc", grpc_service="db")).ok
    settings, headers, data = seen[0]
    assert isinstance(settings, SettingsFrame) and settings.settings[SettingsFrame.ENABLE_PUSH] == 0
    assert isinstance(headers, HeadersFrame) and headers.stream_id == 1
    assert dict(hpack.Decoder().decode(headers.data, raw=True)) == {
        b":method": b"POST",
        b":scheme": b"http",
        b":path": b"/grpc.health.v1.Health/Check",
        b":authority": f"127.0.0.1:{port}".encode(),
        b"content-type": b"application/grpc",
        b"te": b"trailers",
        b"user-agent": b"pulsed-check",
    }
    assert isinstance(data, DataFrame) and data.data == encode_request("db")


async def test_continuation_and_padding(serve) -> None:
    encoder = hpack.Encoder()
    head = block([(b":status", b"200"), (b"content-type", b"application/grpc")], encoder)
    tail = block([(b"grpc-status", b"0"), (b"grpc-message", b"")], encoder)
    port = await serve(
        respond(
            SETTINGS,
            HeadersFrame(1, head[:3], pad_length=7, flags=("PADDED",)).serialize(),
            ContinuationFrame(1, head[3:5]).serialize(),
            ContinuationFrame(1, head[5:], flags=("END_HEADERS",)).serialize(),
            DataFrame(1, health_message(1)[:4], pad_length=3, flags=("PADDED",)).serialize(),
            DataFrame(1, health_message(1)[4:], pad_length=0, flags=("PADDED",)).serialize(),
            HeadersFrame(1, tail[:2], flags=("END_STREAM",)).serialize(),
            ContinuationFrame(1, tail[2:], flags=("END_HEADERS",)).serialize(),
        )
    )
    result = await run_probe(port, type="grpc")
    assert result.ok and result.reason == "SERVING", result


async def test_byte_by_byte(serve) -> None:
    port = await serve(respond(SETTINGS, *serving_response(hpack.Encoder()), trickle=True))
    result = await run_probe(port, type="grpc", timeout="2s")
    assert result.ok and result.reason == "SERVING", result


async def test_trailers_only_response(serve) -> None:
    fields = [
        (b":status", b"200"),
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"12"),
        (b"grpc-message", b"unknown service grpc.health.v1.Health"),
    ]
    frame = HeadersFrame(1, block(fields), flags=("END_HEADERS", "END_STREAM"))
    port = await serve(respond(SETTINGS, frame.serialize()))
    result = await run_probe(port, type="grpc")
    assert not result.ok and result.category == "status"
    assert result.reason == "grpc-status 12 UNIMPLEMENTED: unknown service grpc.health.v1.Health"


async def test_settings_and_ping_are_acknowledged(serve) -> None:
    async def strict(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SETTINGS + PingFrame(0, b"12345678").serialize())
        await writer.drain()
        acks = [await read_frame(reader), await read_frame(reader)]
        assert isinstance(acks[0], SettingsFrame) and "ACK" in acks[0].flags
        assert isinstance(acks[1], PingFrame) and "ACK" in acks[1].flags
        assert acks[1].opaque_data == b"12345678"
        writer.write(b"".join(serving_response(hpack.Encoder())))
        await writer.drain()
        await reader.read()

    port = await serve(strict)
    result = await run_probe(port, type="grpc")
    assert result.ok, result  # a server that saw no acknowledgements never answers


async def test_goaway_is_down(serve) -> None:
    goaway = GoAwayFrame(0, last_stream_id=0, error_code=11).serialize()  # ENHANCE_YOUR_CALM
    port = await serve(respond(SETTINGS, goaway))
    result = await run_probe(port, type="grpc")
    assert not result.ok and result.category == "closed"
    assert result.reason == "connection closed by GOAWAY (HTTP/2 error 11)"


async def test_graceful_goaway_still_answers(serve) -> None:
    goaway = GoAwayFrame(0, last_stream_id=1, error_code=0).serialize()
    port = await serve(respond(SETTINGS, goaway, *serving_response(hpack.Encoder())))
    result = await run_probe(port, type="grpc")
    assert result.ok and result.reason == "SERVING", result


async def test_stream_reset_is_down(serve) -> None:
    port = await serve(respond(SETTINGS, RstStreamFrame(1, error_code=7).serialize()))
    result = await run_probe(port, type="grpc")
    assert not result.ok and result.category == "reset"
    assert result.reason == "stream reset (HTTP/2 error 7)"


def _headers(fields: list[tuple[bytes, bytes]], stream: int = 1, end: bool = False) -> bytes:
    flags = ("END_HEADERS", "END_STREAM") if end else ("END_HEADERS",)
    return HeadersFrame(stream, block(fields), flags=flags).serialize()


OK_HEADERS = [(b":status", b"200"), (b"content-type", b"application/grpc")]


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([DataFrame(1, health_message(1)).serialize()], "DATA before the response headers"),
        ([_headers(OK_HEADERS, stream=3)], "HEADERS on stream 3, never opened"),
        ([ContinuationFrame(1, b"\x88", flags=("END_HEADERS",)).serialize()], "CONTINUATION"),
        (
            [HeadersFrame(1, b"\x88").serialize(), PingFrame(0, b"x" * 8).serialize()],
            "PING inside a header block",
        ),
        ([HeadersFrame(1, b"\xff\x80\x01", flags=("END_HEADERS",)).serialize()], "header block"),
        ([_headers([(b"content-type", b"application/grpc")])], "without :status"),
        ([_headers(OK_HEADERS), _headers([(b"grpc-status", b"0")])], "trailers without END"),
        ([b"\x00\x40\x01\x00\x00\x00\x00\x00\x01"], "more than 16384"),
        ([PushPromiseFrame(1, promised_stream_id=2).serialize()], "PUSH_PROMISE"),
        ([SettingsFrame(0, {SettingsFrame.ENABLE_PUSH: 2}).serialize()], "ENABLE_PUSH 2"),
        ([b"\x00\x00\x05\x06\x00\x00\x00\x00\x00abcde"], "bad HTTP/2"),  # a PING of 5 bytes
        (
            [_headers(OK_HEADERS)] + [DataFrame(1, b"\0" * 16384).serialize()] * 5,
            "flow-control window",
        ),
    ],
    ids=[
        "data-first",
        "other-stream",
        "stray-continuation",
        "interleaved",
        "bad-hpack",
        "no-status",
        "trailers-open",
        "huge-frame",
        "push",
        "bad-setting",
        "short-ping",
        "window",
    ],
)
async def test_protocol_violations_are_down(serve, frames: list[bytes], reason: str) -> None:
    port = await serve(respond(SETTINGS, *frames))
    result = await run_probe(port, type="grpc", max_bytes=131072)
    assert not result.ok and result.category == "protocol", result
    assert result.reason.startswith("bad HTTP/2") and reason in result.reason, result
