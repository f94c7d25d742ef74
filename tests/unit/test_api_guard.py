"""The API's budgets and defences, in process over real loopback sockets.

A real Daemon (memory backend, not running) behind the real server: the
connection limit (idle connections shed first, busy ones answered with a
503), the request-head deadline against slowloris and idle keep-alive, the
body deadline, JSON for requests aiohttp cannot parse, bytes-exact token
comparison, the token file read off the loop (a FIFO, a file open to others,
a read that hangs), and the bind step's one-line errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
import pytest

import pulsed.api_token
from pulsed.api import bind_api, serve_api, start_api
from pulsed.api_guard import BindError
from pulsed.config import load_config
from pulsed.daemon import Daemon
from pulsed.durations import Duration
from pulsed.ipvs.memory import MemoryBackend
from tests.unit.standin import stand_in

TOKEN = b"unit-test-token-0123"
REAL = "/api/v1/reals/web/127.0.0.1:8080"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_daemon(tmp_path: Path, api_extra: str = "", token: bytes = TOKEN) -> Daemon:
    """A Daemon built from a real config file, with a token file only its owner reads."""
    token_file = tmp_path / "token"
    if not token_file.exists():
        token_file.write_bytes(token + b"\n")
        token_file.chmod(0o600)
    config_path = tmp_path / "pulsed.toml"
    config_path.write_text(
        f"""
[daemon]
state_dir = "{tmp_path / "state"}"

[api]
listen = "127.0.0.1:{free_port()}"
token_file = "{token_file}"
{api_extra}

[[service]]
name = "web"
vip = "192.0.2.10"
port = 80
[service.check]
type = "none"
[[service.real]]
address = "127.0.0.1:8080"
"""
    )
    return Daemon(config_path, MemoryBackend(), load_config(config_path))


@asynccontextmanager
async def serving(daemon: Daemon, max_connections: int | None = None):
    bound = await bind_api(daemon.config.api.listen)
    server = await serve_api(daemon, bound, max_connections=max_connections)
    try:
        yield server
    finally:
        await server.cleanup()


def port_of(server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def request(method: str, path: str, *, token: bytes | None = None, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode()
    if token is not None:
        head += b"Authorization: Bearer " + token + b"\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n".encode()
    return head + b"\r\n" + body


async def exchange(port: int, data: bytes) -> tuple[int, dict | None]:
    """Send one request (with Connection: close); the status and the JSON error, if any."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    return parse(raw)


def parse(raw: bytes) -> tuple[int, dict | None]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if status < 400:
        return status, None
    assert b"application/json" in head, raw
    doc = json.loads(body)
    assert isinstance(doc["error"], str) and "\n" not in doc["error"], doc
    return status, doc


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    got = b""
    try:
        while chunk := await reader.read(65536):
            got += chunk
    except ConnectionResetError:
        pass
    return got


def log_events(capsys) -> list[dict]:
    events = []
    for line in capsys.readouterr().err.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


# Start-up -------------------------------------------------------------------------


async def test_a_taken_port_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BindError) as caught:
            await bind_api(f"127.0.0.1:{port}")
    assert str(caught.value) == f"api.listen 127.0.0.1:{port}: address already in use"


@pytest.mark.parametrize(
    ("listen", "words"),
    [
        ("nonsense:80", "is not an IPv4 or IPv6 address"),
        ("192.0.2.77:9480", "cannot assign requested address"),
        ("127.0.0.1", "needs a port"),
    ],
)
async def test_bind_errors_name_the_address(listen, words):
    with pytest.raises(BindError) as caught:
        await bind_api(listen)
    message = str(caught.value)
    assert message.startswith(f"api.listen {listen}: ") and words in message
    assert "\n" not in message


async def test_bound_before_serving_then_answers(tmp_path):
    daemon = make_daemon(tmp_path)
    bound = await bind_api(daemon.config.api.listen)
    port = bound.sock.getsockname()[1]
    # Connected while only bound: held in the backlog, answered once serving starts.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request("GET", "/healthz"))
    server = await serve_api(daemon, bound)
    try:
        status, _ = parse(await asyncio.wait_for(reader.read(), 30))
        assert status == 200
    finally:
        writer.close()
        await server.cleanup()


async def test_start_api_serves_a_socket_the_daemon_bound(tmp_path):
    daemon = make_daemon(tmp_path)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    server = await start_api(daemon, sock=sock, max_connections=8)
    try:
        assert server.url == f"http://127.0.0.1:{sock.getsockname()[1]}"
        assert server.guard._budget().max_connections == 8  # the cap under api.max_connections
        assert (await exchange(port_of(server), request("GET", "/healthz")))[0] == 200
    finally:
        await server.cleanup()


# Connection budget -------------------------------------------------------------------


async def test_idle_connections_are_shed_for_a_new_request(tmp_path):
    daemon = make_daemon(tmp_path)
    async with serving(daemon, max_connections=4) as server:
        port = port_of(server)
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
        # Seen by the server: a request on one more connection is what shows it.
        assert (await exchange(port, request("GET", "/healthz")))[0] == 200
        assert server.guard.evicted >= 1 and server.guard.open <= 4
        # The oldest idle connection was closed to make room.
        assert await asyncio.wait_for(closed_by_server(idle[0][0]), 30) == b""
        for _, writer in idle:
            writer.close()


async def test_over_the_limit_with_every_connection_busy_gets_a_503(tmp_path):
    daemon = make_daemon(tmp_path, 'body_timeout = "1h"')
    async with serving(daemon, max_connections=3) as server:
        port = port_of(server)
        busy = []
        for _ in range(3):
            # A head with a body still to come: the handler is busy waiting for it.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"PUT {REAL}/weight HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ".encode()
                + TOKEN
                + b"\r\nContent-Length: 20\r\n\r\n{"
            )
            await writer.drain()
            busy.append((reader, writer))
        while server.guard.open < 3 or server.guard._waiting:
            await asyncio.sleep(0.01)
        status, doc = await exchange(port, request("GET", "/healthz"))
        assert status == 503 and "too many API connections" in doc["error"]
        assert server.guard.refused == 1 and server.guard.open == 3
        # The busy ones still finish.
        reader, writer = busy[0]
        writer.write(b'"weight": 3}' + b" " * 7)
        assert parse(await reader.readuntil(b"}"))[0] == 200
        for _, writer in busy:
            writer.close()


# Deadlines -----------------------------------------------------------------------------


async def test_slowloris_heads_are_closed(tmp_path):
    daemon = make_daemon(tmp_path, 'header_timeout = "300ms"')
    async with serving(daemon) as server:
        port = port_of(server)
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(50)]
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000

        async def trickle(writer: asyncio.StreamWriter) -> None:
            for byte in head:
                if writer.is_closing():
                    return
                writer.write(bytes([byte]))
                await asyncio.sleep(0.05)

        trickling = [asyncio.create_task(trickle(w)) for _, w in conns]
        try:
            # Closed while still trickling (the head would take 500 s), with no answer.
            for reader, _ in conns:
                assert await asyncio.wait_for(closed_by_server(reader), 60) == b""
        finally:
            for task in trickling:
                task.cancel()
            for _, writer in conns:
                writer.close()
        assert server.guard.timed_out == 50 and server.guard.open == 0


async def test_idle_keep_alive_connection_is_closed(tmp_path):
    daemon = make_daemon(tmp_path, 'header_timeout = "300ms"')
    async with serving(daemon) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive
        got = await asyncio.wait_for(closed_by_server(reader), 60)
        writer.close()
        assert got.startswith(b"HTTP/1.1 200") and got.endswith(b'{"status": "ok"}')


async def test_a_body_that_never_comes_gets_a_408(tmp_path):
    daemon = make_daemon(tmp_path, 'body_timeout = "300ms"')
    async with serving(daemon) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
        writer.write(
            f"PUT {REAL}/weight HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ".encode()
            + TOKEN
            + b'\r\nContent-Length: 50\r\n\r\n{"weight":'
        )
        raw = await asyncio.wait_for(closed_by_server(reader), 60)
        writer.close()
        status, doc = parse(raw)
        assert status == 408 and "body not received" in doc["error"]


# Inputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # TLS to the HTTP port
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad\x01Name: 1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n",
    ],
)
async def test_requests_aiohttp_cannot_parse_get_a_json_4xx(tmp_path, capsys, raw):
    daemon = make_daemon(tmp_path)
    async with serving(daemon) as server:
        status, doc = await exchange(port_of(server), raw)
    assert 400 <= status < 500 and doc["error"].startswith("malformed request")
    assert "Traceback" not in capsys.readouterr().err


async def test_non_ascii_token_bytes_are_compared_as_bytes(tmp_path, capsys):
    token = "jeton-été-\u2603".encode()
    daemon = make_daemon(tmp_path, token=token)
    async with serving(daemon) as server:
        port = port_of(server)
        assert (await exchange(port, request("POST", REAL + "/drain", token=token)))[0] == 200
        for wrong in (
            b"\xff\xfe\x80",
            "jeton-été".encode(),
            token.decode().encode("latin-1", "replace"),
        ):
            status, doc = await exchange(port, request("POST", REAL + "/drain", token=wrong))
            assert (status, doc["error"]) == (403, "wrong token")
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"[" * 2000 + b"]" * 2000, "nested too deeply"),
        (b'{"weight": ' + b"[" * 2000 + b"]" * 2000 + b"}", "nested too deeply"),
        (b'{"weight": 1' + b"0" * 4000 + b"}", "out of range"),
        (b'{"weight": 1e999}', "an integer"),
        (b'{"weight": NaN}', "an integer"),
        (b'{"weight": 5', "must be JSON"),
        (b"\xff\xfe{\x00", "must be JSON"),
        (b'"weight"', "an integer"),
    ],
)
async def test_hostile_bodies_get_a_400(tmp_path, capsys, body, words):
    daemon = make_daemon(tmp_path)
    async with serving(daemon) as server:
        status, doc = await exchange(
            port_of(server), request("PUT", REAL + "/weight", token=TOKEN, body=body)
        )
    assert status == 400 and words in doc["error"] and len(doc["error"]) < 300, doc
    assert "Traceback" not in capsys.readouterr().err


# Token file ----------------------------------------------------------------------------------


async def test_fifo_token_file_fails_the_call_not_the_loop(tmp_path):
    daemon = make_daemon(tmp_path)
    # Replaced after the config was checked (check-config refuses a FIFO too).
    fifo = tmp_path / "token"
    fifo.unlink()
    os.mkfifo(fifo, 0o600)
    async with serving(daemon) as server:
        port = port_of(server)
        status, doc = await exchange(port, request("POST", REAL + "/drain", token=TOKEN))
        assert status == 503 and "is a FIFO" in doc["error"]
        assert (await exchange(port, request("GET", "/healthz")))[0] == 200


async def test_token_file_open_to_others_is_refused_and_logged_once(tmp_path, capsys):
    daemon = make_daemon(tmp_path)
    (tmp_path / "token").chmod(0o644)
    async with serving(daemon) as server:
        port = port_of(server)
        for _ in range(3):
            status, doc = await exchange(port, request("POST", REAL + "/drain", token=TOKEN))
            assert status == 503 and "open to others (mode 0644)" in doc["error"]
        (tmp_path / "token").chmod(0o600)
        assert (await exchange(port, request("POST", REAL + "/drain", token=TOKEN)))[0] == 200
    errors = [e for e in log_events(capsys) if e["event"] == "api.token_unusable"]
    assert len(errors) == 1 and errors[0]["level"] == "error"
    assert "chmod 600" in errors[0]["reason"]


async def test_a_hung_token_read_fails_calls_while_healthz_answers(tmp_path, monkeypatch):
    release = threading.Event()
    real_read = pulsed.api_token.read_file

    def hung_read(*args, **kwargs):  # a read stuck in the kernel, as on a dead NFS mount
        reads.append(args[0])
        release.wait(60)
        return real_read(*args, **kwargs)

    reads: list[str] = []
    monkeypatch.setattr(pulsed.api_token, "read_file", hung_read)
    daemon = make_daemon(tmp_path)
    async with serving(daemon) as server:
        port = port_of(server)
        call = asyncio.create_task(exchange(port, request("POST", REAL + "/drain", token=TOKEN)))
        # The loop is free while the read hangs.
        assert (await exchange(port, request("GET", "/healthz")))[0] == 200
        status, doc = await call
        assert status == 503 and "could not be read in 2s" in doc["error"]
        # Still stuck: the next call waits on the same read, not on a second thread.
        status, doc = await exchange(port, request("POST", REAL + "/drain", token=TOKEN))
        assert status == 503 and "could not be read in 2s" in doc["error"]
        assert len(reads) == 1
        release.set()
        assert (await exchange(port, request("POST", REAL + "/drain", token=TOKEN)))[0] == 200


@pytest.mark.parametrize(
    ("setting", "words"),
    [("", "api.token_file is not set"), ("empty", "is empty")],
)
async def test_unset_or_empty_token_turns_admin_off(tmp_path, setting, words):
    daemon = make_daemon(tmp_path)
    path = ""
    if setting == "empty":
        path = str(tmp_path / "empty-token")
        Path(path).touch(mode=0o600)
    api = msgspec.structs.replace(daemon.config.api, token_file=path)
    daemon.config = msgspec.structs.replace(daemon.config, api=api)
    async with serving(daemon) as server:
        status, doc = await exchange(port_of(server), request("POST", REAL + "/drain", token=TOKEN))
    assert status == 503 and doc["error"].startswith("admin calls are off: ")
    assert words in doc["error"]


async def test_a_client_that_stops_reading_is_cut_off(tmp_path, capsys):
    daemon = stand_in(tmp_path, services=100, reals=50)  # /metrics of several MB
    api = msgspec.structs.replace(daemon.config.api, response_timeout=Duration(0.5))
    daemon.config = msgspec.structs.replace(daemon.config, api=api)
    bound = await bind_api(f"127.0.0.1:{free_port()}")
    server = await serve_api(daemon, bound)
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port_of(server)))
        sock.send(request("GET", "/metrics"))
        # Not reading: the daemon's writes stall until the deadline drops the connection.
        while server.guard.open:
            await asyncio.sleep(0.05)
        got = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := await asyncio.get_running_loop().sock_recv(sock, 1 << 20):
                got += chunk
        sock.close()
        assert got.startswith(b"HTTP/1.1 200") and not got.endswith(b"\r\n0\r\n\r\n")
    finally:
        await server.cleanup()
    events = log_events(capsys)
    assert any(e["event"] == "api.response_timeout" for e in events)


async def test_a_client_leaving_mid_body_is_not_an_error(tmp_path, capsys):
    daemon = make_daemon(tmp_path)
    async with serving(daemon) as server:
        port = port_of(server)
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"PUT {REAL}/weight HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ".encode()
            + TOKEN
            + b'\r\nContent-Length: 50\r\n\r\n{"weight":'
        )
        await writer.drain()
        while not server.guard.open or server.guard._waiting:  # the handler reads the body
            await asyncio.sleep(0.01)
        writer.close()
        while server.guard.open:
            await asyncio.sleep(0.01)
        assert (await exchange(port, request("GET", "/healthz")))[0] == 200
    err = capsys.readouterr().err
    assert "Traceback" not in err and '"api.error"' not in err, err
