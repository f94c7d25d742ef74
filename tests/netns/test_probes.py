"""Probes against real servers on loopback: each gives the right verdict and reason.

The servers are small asyncio servers started inside each test. Bounds on
elapsed time are generous (timeout + 3 s): they only prove the verdict
arrives at the timeout rather than never; speed is measured in benchmarks.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
import pytest
import trustme

from pulsed.checks.base import ProbeResult, Target
from pulsed.checks.config import CheckConfig
from pulsed.checks.probes import make_probe
from pulsed.durations import Duration, parse_duration

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
MARGIN = 3.0  # generous: the verdict must come at the timeout, not much later


def check(**fields: object) -> CheckConfig:
    """A CheckConfig as the config loader would build it from TOML values."""

    def dec_hook(tp: type, obj: object) -> object:
        if tp is Duration:
            return Duration(parse_duration(obj))  # type: ignore[arg-type]
        raise NotImplementedError

    return msgspec.convert(fields, CheckConfig, dec_hook=dec_hook)


async def run_probe(real_port: int, address: str = "127.0.0.1", **fields: object) -> ProbeResult:
    cfg = check(**fields)
    start = time.monotonic()
    result = await make_probe(Target(address, real_port, cfg)).probe()
    assert time.monotonic() - start < cfg.timeout + MARGIN
    return result


class Server:
    """An asyncio server on loopback running ``handler`` for each connection."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.outcome: asyncio.Future[str] | None = None

    async def start(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> int:
        self.outcome = asyncio.get_running_loop().create_future()

        async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await handler(reader, writer)
                result = "done"
            except (ConnectionError, ssl.SSLError) as exc:
                result = type(exc).__name__
            finally:
                writer.transport.abort()
            if not self.outcome.done():
                self.outcome.set_result(result)

        self.server = await asyncio.start_server(wrapped, "127.0.0.1", 0, ssl=ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    try:
        yield srv
    finally:
        if srv.server is not None:
            srv.server.close()


def reply(status: str = "200 OK", body: bytes = b"ok", headers: str = "") -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
        writer.write(head.encode() + body)
        await writer.drain()

    return handler


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- tcp ---------------------------------------------------------------------


async def test_tcp_connects(server: Server) -> None:
    port = await server.start(reply())
    result = await run_probe(port, type="tcp")
    assert (result.ok, result.reason) == (True, "connected")


async def test_tcp_connection_refused() -> None:
    result = await run_probe(free_port(), type="tcp")
    assert (result.ok, result.reason, result.category) == (False, "connect refused", "refused")


async def test_tcp_check_port_overrides_real_port(server: Server) -> None:
    port = await server.start(reply())
    result = await run_probe(free_port(), type="tcp", port=port)
    assert result.ok


# --- http: verdicts ----------------------------------------------------------


async def test_http_up_on_expected_status(server: Server) -> None:
    port = await server.start(reply())
    result = await run_probe(port, type="http")
    assert (result.ok, result.reason) == (True, "status 200")


async def test_http_connection_refused() -> None:
    result = await run_probe(free_port(), type="http")
    assert (result.ok, result.reason) == (False, "connect refused")


async def test_http_wrong_status(server: Server) -> None:
    port = await server.start(reply("503 Service Unavailable"))
    result = await run_probe(port, type="http")
    assert (result.ok, result.reason, result.category) == (False, "status 503", "status")


async def test_http_expected_status_list_and_ranges(server: Server) -> None:
    port = await server.start(reply("404 Not Found"))
    assert (await run_probe(port, type="http", expect_status=[404])).ok
    assert (await run_probe(port, type="http", expect_status=["4xx"])).ok
    assert not (await run_probe(port, type="http", expect_status=["200-299", 301])).ok


async def test_http_body_does_not_match(server: Server) -> None:
    port = await server.start(reply(body=b"status: degraded"))
    result = await run_probe(port, type="http", body_regex="status: (ok|good)")
    assert (result.ok, result.reason, result.category) == (False, "body did not match", "body")


async def test_http_body_matches(server: Server) -> None:
    port = await server.start(reply(body=b"status: good"))
    result = await run_probe(port, type="http", body_regex="status: (ok|good)")
    assert (result.ok, result.reason) == (True, "status 200")


async def test_http_chunked_body_matches(server: Server) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"5\r\nall g\r\n")
        await writer.drain()
        writer.write(b"3;ext=1\r\nood\r\n0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(30)  # keep the connection open: framing, not EOF, ends it

    port = await server.start(handler)
    result = await run_probe(port, type="http", body_regex="all good")
    assert (result.ok, result.reason) == (True, "status 200")


async def test_http_request_carries_method_path_host_and_headers(server: Server) -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()

    port = await server.start(handler)
    result = await run_probe(
        port,
        type="http",
        method="HEAD",
        path="/healthz?deep=1",
        host="app.example",
        headers={"X-Probe": "pulsed"},
    )
    assert result.ok
    request = seen[0].decode()
    assert request.startswith("HEAD /healthz?deep=1 HTTP/1.1\r\n")
    assert f"Host: app.example:{port}\r\n" in request
    assert "X-Probe: pulsed\r\n" in request


async def test_http_dynamic_weight_header(server: Server) -> None:
    port = await server.start(reply(headers="X-Pulsed-Weight: 40%\r\n"))
    result = await run_probe(port, type="http", weight_header="X-Pulsed-Weight")
    assert (result.ok, result.weight_pct) == (True, 40)


async def test_http_bad_weight_header_is_ignored_with_a_note(server: Server) -> None:
    port = await server.start(reply(headers="X-Pulsed-Weight: lots\r\n"))
    result = await run_probe(port, type="http", weight_header="X-Pulsed-Weight")
    assert result.ok and result.weight_pct is None
    assert result.reason == "status 200 (ignored bad weight 'lots')"


async def test_http_not_http_at_all(server: Server) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await writer.drain()

    port = await server.start(handler)
    result = await run_probe(port, type="http")
    assert (result.ok, result.reason) == (False, "bad status line")


async def test_http_closed_before_response(server: Server) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    port = await server.start(handler)
    result = await run_probe(port, type="http")
    assert (result.ok, result.reason) == (False, "connection closed before response")


# --- http: misbehaving servers -------------------------------------------------


async def test_http_reset_in_the_middle_of_the_response(server: Server) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Le")
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # abort() in the wrapper closes the socket: with linger 0 that sends RST

    port = await server.start(handler)
    result = await run_probe(port, type="http")
    assert (result.ok, result.reason, result.category) == (False, "connection reset", "reset")


async def test_http_reset_in_the_middle_of_the_body(server: Server) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nstatus: go")
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    port = await server.start(handler)
    result = await run_probe(port, type="http", body_regex="status: good")
    assert (result.ok, result.reason) == (False, "connection reset")


async def test_http_accept_and_never_answer(server: Server) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    port = await server.start(handler)
    result = await run_probe(port, type="http", timeout="1s")
    assert (result.ok, result.reason, result.category) == (False, "timeout after 1.0s", "timeout")


async def test_http_trickle_one_byte_per_second(server: Server) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok":
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(1)

    port = await server.start(handler)
    result = await run_probe(port, type="http", timeout="1500ms", interval="2s")
    assert (result.ok, result.reason) == (False, "timeout after 1.5s")


async def test_http_ten_megabyte_body_stops_at_the_byte_cap(server: Server) -> None:
    body_size = 10 * 1024 * 1024
    sent = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {body_size}\r\n\r\n".encode())
        chunk = b"status: good\n" + b"x" * (65536 - 13)
        while sent < body_size:
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)

    port = await server.start(handler)
    result = await run_probe(port, type="http", body_regex="status: good", max_bytes=65536)
    assert (result.ok, result.reason) == (True, "status 200")
    # The probe closed the connection after its cap, so the server could not
    # deliver the 10 MB: its write failed with a reset or broken pipe.
    assert await asyncio.wait_for(server.outcome, 5) in ("ConnectionResetError", "BrokenPipeError")
    assert sent < body_size


async def test_http_match_beyond_the_byte_cap_is_not_seen(server: Server) -> None:
    port = await server.start(reply(body=b"x" * 100_000 + b"status: good"))
    result = await run_probe(port, type="http", body_regex="status: good", max_bytes=4096)
    assert (result.ok, result.reason) == (False, "body did not match")


async def test_http_endless_headers_hit_the_byte_cap(server: Server) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n")
        while True:
            writer.write(b"X-Filler: " + b"y" * 1000 + b"\r\n")
            await writer.drain()

    port = await server.start(handler)
    result = await run_probe(port, type="http", max_bytes=8192)
    assert (result.ok, result.reason) == (False, "response headers larger than 8192 bytes")


# --- https -------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def server_context(cert: trustme.LeafCert, client_ca: trustme.CA | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    if client_ca is not None:
        client_ca.configure_trust(ctx)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


async def test_https_up_with_the_right_ca_and_name(
    server: Server, ca: trustme.CA, ca_file: str
) -> None:
    port = await server.start(reply(), server_context(ca.issue_cert("app.example")))
    result = await run_probe(port, type="https", host="app.example", ca_file=ca_file)
    assert (result.ok, result.reason) == (True, "status 200")


async def test_https_certificate_from_unknown_ca(server: Server, ca_file: str) -> None:
    other_ca = trustme.CA()
    port = await server.start(reply(), server_context(other_ca.issue_cert("app.example")))
    result = await run_probe(port, type="https", host="app.example", ca_file=ca_file)
    assert (result.ok, result.category) == (False, "tls")
    assert result.reason == "tls: unable to get local issuer certificate"


async def test_https_expired_certificate(server: Server, ca: trustme.CA, ca_file: str) -> None:
    now = datetime.datetime.now(datetime.UTC)
    expired = ca.issue_cert(
        "app.example",
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )
    port = await server.start(reply(), server_context(expired))
    result = await run_probe(port, type="https", host="app.example", ca_file=ca_file)
    assert (result.ok, result.reason) == (False, "tls: certificate has expired")


async def test_https_wrong_hostname(server: Server, ca: trustme.CA, ca_file: str) -> None:
    port = await server.start(reply(), server_context(ca.issue_cert("other.example")))
    result = await run_probe(port, type="https", host="app.example", ca_file=ca_file)
    assert not result.ok
    assert result.reason.startswith("tls: Hostname mismatch")
    assert "app.example" in result.reason


async def test_https_verification_off_accepts_any_certificate(server: Server) -> None:
    port = await server.start(reply(), server_context(trustme.CA().issue_cert("x.example")))
    result = await run_probe(port, type="https", host="app.example", tls_verify=False)
    assert (result.ok, result.reason) == (True, "status 200")


async def test_https_client_certificate(
    server: Server, ca: trustme.CA, ca_file: str, tmp_path: os.PathLike
) -> None:
    client_ca = trustme.CA()
    client = client_ca.issue_cert("pulsed.example")
    cert_path = os.path.join(tmp_path, "client.pem")
    client.private_key_and_cert_chain_pem.write_to_path(cert_path)
    port = await server.start(reply(), server_context(ca.issue_cert("app.example"), client_ca))
    result = await run_probe(
        port, type="https", host="app.example", ca_file=ca_file, client_cert=cert_path
    )
    assert (result.ok, result.reason) == (True, "status 200")


async def test_https_accept_and_never_handshake(server: Server, ca_file: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    port = await server.start(handler)  # plain TCP: the TLS handshake never completes
    result = await run_probe(port, type="https", ca_file=ca_file, timeout="500ms")
    assert (result.ok, result.reason) == (False, "timeout after 500ms")


# --- exec --------------------------------------------------------------------


async def test_exec_exit_zero_is_up() -> None:
    result = await run_probe(80, type="exec", command=["true"])
    assert (result.ok, result.reason, result.weight_pct) == (True, "exit 0", None)


async def test_exec_non_zero_exit_is_down() -> None:
    result = await run_probe(80, type="exec", command=["sh", "-c", "exit 3"])
    assert (result.ok, result.reason, result.category) == (False, "exit 3", "exit")


async def test_exec_prints_a_dynamic_weight_and_gets_address_and_port() -> None:
    script = 'test "$1" = 127.0.0.1 && test "$2" = 8080 && echo "$PULSED_PORT" >&2; echo 35%'
    result = await run_probe(
        8080, type="exec", command=["sh", "-c", script, "sh", "{address}", "{port}"]
    )
    assert (result.ok, result.weight_pct) == (True, 35)


async def test_exec_missing_command() -> None:
    result = await run_probe(80, type="exec", command=["/nonexistent/pulsed-check"])
    assert not result.ok
    assert result.reason == "cannot run /nonexistent/pulsed-check: no such file or directory"


async def test_exec_hangs_and_its_process_group_is_killed(tmp_path: os.PathLike) -> None:
    pid_file = os.path.join(tmp_path, "child.pid")
    # The helper starts a child and hangs; both must be gone after the timeout.
    script = f"sleep 60 & echo $! > {pid_file}; wait"
    result = await run_probe(80, type="exec", command=["sh", "-c", script], timeout="500ms")
    assert (result.ok, result.reason) == (False, "timeout after 500ms")
    with open(pid_file) as f:
        child = int(f.read())
    assert _ends(child)


def _ends(pid: int) -> bool:
    """Whether ``pid`` ends: SIGKILL is delivered when the process next runs, so
    wait for its exit on a pidfd (an event, bounded only against a hang)."""
    import select

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], 30)
    finally:
        os.close(fd)
    return bool(readable) or not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (killed, not yet reaped by its dead parent's reaper) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


async def test_none_is_always_up() -> None:
    result = await run_probe(1, type="none")
    assert (result.ok, result.reason) == (True, "no check")


async def test_https_with_a_ca_file_that_is_not_a_certificate(tmp_path: os.PathLike) -> None:
    from pulsed.checks.monitor import HealthMonitor

    bad_ca = os.path.join(tmp_path, "ca.pem")
    with open(bad_ca, "w") as f:
        f.write("not a certificate\n")
    results: list[ProbeResult] = []
    got = asyncio.Event()

    def on_result(k: object, r: ProbeResult) -> None:
        results.append(r)
        got.set()

    monitor = HealthMonitor(lambda k, h: None, on_result=on_result)
    cfg = check(type="https", ca_file=bad_ca, jitter="0s")
    monitor.update({("svc", "real"): Target("127.0.0.1", free_port(), cfg)})  # type: ignore[dict-item]
    await monitor.start()
    try:
        await asyncio.wait_for(got.wait(), 5)
    finally:
        await monitor.stop()
    assert results[0].reason.startswith("bad check setup: ")


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
async def test_http_over_ipv6() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handler, "::1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        result = await run_probe(port, address="::1", type="http")
        assert (result.ok, result.reason) == (True, "status 200")
        assert f"Host: [::1]:{port}\r\n".encode() in seen[0]
        assert (await run_probe(port, address="::1", type="tcp")).ok
    finally:
        server.close()
