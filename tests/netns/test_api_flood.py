"""A flood on the API never reaches the probes: the 1,100-connection flood and slowloris.

The real daemon (memory backend) probes two real loopback servers, one up
and one refusing, with its descriptor soft limit at 1,024 as under a unit
without LimitNOFILE. Then the API is flooded. No real server may change
state, /healthz must answer during the flood, the daemon must stay under
its descriptor limit, and the connections it cannot keep must be closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import selectors
import socket
import time

import pytest

from tests.netns.pop_daemon import TOKEN, Pulsed, config_text, free_port, real_of

FLOOD = 1100
SOFT_LIMIT = 1024


def raise_own_limit(wanted: int) -> None:
    """This test process holds the flood's client ends: give it the descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, wanted), hard))


@pytest.fixture
def start_daemon(tmp_path, servers):
    """The daemon with ``api_extra`` lines in its [api] table, at a soft limit of 1,024."""
    up, down = servers
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    started = []

    def start(api_extra: str = "") -> Pulsed:
        text = config_text(tmp_path / "state", free_port(), token_file, [up.port, down.port])
        text = text.replace('status_refresh = "1s"\n', f'status_refresh = "1s"\n{api_extra}\n')
        process = Pulsed(tmp_path, text).start()
        started.append(process)
        assert process.proc is not None
        # As under a unit with no LimitNOFILE: a soft limit of 1,024.
        _, hard = resource.prlimit(process.proc.pid, resource.RLIMIT_NOFILE)
        resource.prlimit(process.proc.pid, resource.RLIMIT_NOFILE, (SOFT_LIMIT, hard))
        return process

    yield start
    for process in started:
        process.close()


def settled(up: int, down: int):
    def check(doc: dict) -> bool:
        a, b = real_of(doc, up), real_of(doc, down)
        return a["health"] == "up" and b["health"] == "down" and b["last_check"] is not None

    return check


def probe_count(daemon: Pulsed) -> float:
    """Probe results so far, over both servers (from /metrics)."""
    total = 0.0
    for line in daemon.metrics().splitlines():
        if line.startswith("pulsed_real_probe_results_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_closed(socks: list[socket.socket], wanted: int, timeout: float = 120.0) -> int:
    """How many of ``socks`` the server closed (EOF or reset), waiting until ``wanted``."""
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    closed = 0
    deadline = time.monotonic() + timeout
    while closed < wanted and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1.0):
            sock = key.fileobj
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                sel.unregister(sock)
                closed += 1
    sel.close()
    return closed


def log_events(daemon: Pulsed, since: int) -> list[dict]:
    events = []
    for line in (daemon.workdir / "pulsed.log").read_text().splitlines()[since:]:
        with contextlib.suppress(ValueError):
            events.append(json.loads(line))
    return events


def log_length(daemon: Pulsed) -> int:
    return len((daemon.workdir / "pulsed.log").read_text().splitlines())


def assert_no_blame(daemon: Pulsed, since: int) -> None:
    text = "\n".join((daemon.workdir / "pulsed.log").read_text().splitlines()[since:])
    assert not re.search(r"too many open files|EMFILE|Traceback", text, re.I), text[-3000:]
    moved = [e for e in log_events(daemon, since) if e.get("event") in ("probe.up", "probe.down")]
    assert moved == [], moved


def test_an_idle_flood_of_1100_connections_moves_no_server(start_daemon, servers):
    up, down = servers
    raise_own_limit(FLOOD + 200)
    daemon = start_daemon()  # the default budget: 256 connections, 10 s for a head
    before = daemon.wait_status(settled(up.port, down.port))
    since = log_length(daemon)
    port = int(daemon.url.rsplit(":", 1)[1])
    baseline = open_fds(daemon.proc.pid)

    flood = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(FLOOD)]
    try:
        # The daemon keeps at most api.max_connections (256): the rest are closed.
        closed = wait_closed(flood, FLOOD - 256)
        assert closed >= FLOOD - 256
        assert open_fds(daemon.proc.pid) <= baseline + 256 + 16
        # /healthz answers while the flood holds its connections.
        assert daemon.json("GET", "/healthz") == (200, {"status": "ok"})
        # Probes keep running through it: wait for a few more rounds of results.
        start = probe_count(daemon)
        deadline = time.monotonic() + 60
        while probe_count(daemon) < start + 20:
            assert time.monotonic() < deadline, "probes stopped during the flood"
            time.sleep(0.2)
        after = daemon.status()
        for port_ in (up.port, down.port):
            assert real_of(after, port_)["health"] == real_of(before, port_)["health"]
            assert (
                real_of(after, port_)["effective_weight"]
                == real_of(before, port_)["effective_weight"]
            )
    finally:
        for s in flood:
            s.close()
    assert_no_blame(daemon, since)
    # The daemon says what it shed (a summary at most every 10 s).
    deadline = time.monotonic() + 60
    while True:
        shed = [e for e in log_events(daemon, since) if e.get("event") == "api.connections_shed"]
        if shed and shed[-1]["evicted_idle"] + shed[-1]["refused"] >= FLOOD - 256:
            break
        assert time.monotonic() < deadline, shed
        time.sleep(0.5)


async def _slowloris(port: int, count: int) -> int:
    """``count`` connections trickling a never-ending head; how many the daemon closed."""
    head = b"GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100_000

    async def one() -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for byte in head:
                writer.write(bytes([byte]))
                try:
                    got = await asyncio.wait_for(reader.read(1024), 0.2)
                except TimeoutError:
                    continue
                # EOF (or a 503 as the connection is shed): closed by the daemon.
                return got == b"" or b" 503 " in got
            return False
        except ConnectionError:
            return True
        finally:
            writer.close()

    results = await asyncio.gather(*(one() for _ in range(count)))
    return sum(results)


def test_slowloris_connections_are_closed(start_daemon, servers):
    up, down = servers
    raise_own_limit(1000)
    daemon = start_daemon('header_timeout = "2s"')
    before = daemon.wait_status(settled(up.port, down.port))
    since = log_length(daemon)
    port = int(daemon.url.rsplit(":", 1)[1])
    # Each head would take 100,000 x 0.2 s to send: only the daemon can end them.
    assert asyncio.run(_slowloris(port, 500)) == 500
    assert daemon.json("GET", "/healthz") == (200, {"status": "ok"})
    after = daemon.status()
    for port_ in (up.port, down.port):
        assert real_of(after, port_)["health"] == real_of(before, port_)["health"]
    assert_no_blame(daemon, since)
