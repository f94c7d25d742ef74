"""smtp probes against aiosmtpd (a real SMTP server, with STARTTLS) and hostile servers."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
import trustme
from aiosmtpd.controller import Controller

from tests.netns.probe_kit import free_port, run_probe

pytestmark = pytest.mark.root


class _Sink:
    async def handle_DATA(self, server, session, envelope) -> str:
        return "250 OK"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca, tmp_path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def _controller(tls: ssl.SSLContext | None = None) -> Controller:
    port = free_port()
    kwargs = {"tls_context": tls} if tls is not None else {}
    controller = Controller(_Sink(), hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return controller


@pytest.fixture
def smtpd() -> Iterator[Controller]:
    controller = _controller()
    yield controller
    controller.stop()


@pytest.fixture
def smtpd_tls(ca) -> Iterator[Controller]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mail.example").configure_cert(ctx)
    controller = _controller(ctx)
    yield controller
    controller.stop()


async def test_ehlo_accepted(smtpd) -> None:
    result = await run_probe(smtpd.port, type="smtp", helo_name="probe.example")
    assert result.ok, result
    assert result.reason == "EHLO accepted"


async def test_starttls_verified(smtpd_tls, ca_file) -> None:
    result = await run_probe(
        smtpd_tls.port, type="smtp", starttls=True, ca_file=ca_file, host="mail.example"
    )
    assert result.ok, result
    assert result.reason == "EHLO accepted over TLS"


async def test_starttls_wrong_name_is_down(smtpd_tls, ca_file) -> None:
    result = await run_probe(
        smtpd_tls.port, type="smtp", starttls=True, ca_file=ca_file, host="other.example"
    )
    assert not result.ok and result.category == "tls"
    assert "Hostname mismatch" in result.reason


async def test_starttls_untrusted_is_down(smtpd_tls) -> None:
    result = await run_probe(smtpd_tls.port, type="smtp", starttls=True, host="mail.example")
    assert not result.ok and result.category == "tls"
    assert "certificate" in result.reason


async def test_starttls_not_offered_is_down(smtpd) -> None:
    result = await run_probe(smtpd.port, type="smtp", starttls=True, tls_verify=False)
    assert not result.ok and result.category == "tls"
    assert result.reason == "STARTTLS not offered"


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


def saying(*lines: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for line in lines:
            if line == b"<read>":
                await reader.readline()
            else:
                writer.write(line)
        await writer.drain()
        await reader.read()

    return handler


async def test_wrong_banner_is_down(serve) -> None:
    port = await serve(saying(b"554 5.3.2 no service here\r\n"))
    result = await run_probe(port, type="smtp")
    assert not result.ok and result.category == "status"
    assert result.reason == "banner 554 5.3.2 no service here"


async def test_multiline_banner_and_ehlo_refused(serve) -> None:
    port = await serve(saying(b"220-mail.example\r\n220 ready\r\n", b"<read>", b"550 not you\r\n"))
    result = await run_probe(port, type="smtp")
    assert not result.ok and result.category == "status"
    assert result.reason == "EHLO reply 550 not you"


async def test_garbage_is_down(serve) -> None:
    port = await serve(saying(b"SSH-2.0-OpenSSH_9.2\r\n"))
    result = await run_probe(port, type="smtp")
    assert not result.ok and result.category == "protocol"
    assert result.reason == "bad reply to banner: b'SSH-2.0-OpenSSH_9.2'"


async def test_endless_reply_stops_at_max_bytes(serve) -> None:
    port = await serve(saying(b"220-" + b"x" * 10000 + b"\r\n"))
    result = await run_probe(port, type="smtp", max_bytes=4096)
    assert not result.ok and result.category == "protocol"
    assert result.reason == "more than 4096 bytes without a reply"


async def test_no_banner_is_down_at_the_timeout(serve) -> None:
    port = await serve(saying())
    result = await run_probe(port, type="smtp", timeout="300ms")
    assert not result.ok and result.category == "timeout"
    assert result.reason == "timeout after 300ms waiting for the banner"


async def test_trickle_is_down_at_the_timeout(serve) -> None:
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for byte in b"220 slowly, very slowly\r\n":
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.05)

    port = await serve(trickle)
    result = await run_probe(port, type="smtp", timeout="400ms")
    assert not result.ok and result.category == "timeout"
    assert result.reason == "timeout after 400ms waiting for the banner"


async def test_reset_after_ehlo_is_down(serve) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 hi\r\n")
        await writer.drain()
        await reader.readline()
        writer.transport.abort()

    port = await serve(reset)
    result = await run_probe(port, type="smtp")
    assert not result.ok and result.category in ("reset", "closed"), result


async def test_closed_after_banner(serve) -> None:
    async def bye(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 hi\r\n")
        await writer.drain()
        await reader.readline()
        writer.close()
        await writer.wait_closed()

    port = await serve(bye)
    result = await run_probe(port, type="smtp")
    assert not result.ok and result.category == "closed"
    assert result.reason == "connection closed before the EHLO reply"


async def test_refused() -> None:
    result = await run_probe(free_port(), type="smtp")
    assert not result.ok and result.category == "refused"
