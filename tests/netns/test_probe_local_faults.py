"""Faults on the router are not failures of the servers, against real servers on loopback.

Each test brings real servers up first, then makes the router itself fail:
socket creation or connect() refused with the errnos of a full descriptor
table, a kernel short of memory or a sandbox; the process really out of
descriptors (RLIMIT_NOFILE at 1,024 and a flood of idle connections, as in
issue 12); a real seccomp filter; the event loop blocked longer than the
probe's timeout. The servers must stay up with their weight, and the local
errors must be counted.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import ssl
import sys
import time
from pathlib import Path

import pytest
import trustme

from pulsed.checks import sockio
from pulsed.checks.base import ProbeResult, Target
from pulsed.checks.config import CheckConfig
from pulsed.checks.monitor import HealthMonitor, RealKey
from pulsed.durations import Duration
from pulsed.model import DestKey, ServiceKey
from tests.support.silent_server import SilentServer

SVC = ServiceKey.for_address("tcp", "192.0.2.1", 80)
REPO = Path(__file__).resolve().parents[2]


LOOPS = ["asyncio", "uvloop"]


def run_on(loop: str, coro) -> None:
    """Run a test body on one of the loops the daemon may run on: their order of
    timers and I/O after a stall differs (asyncio runs ready I/O first, libuv
    its timers)."""
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            coro.close()
            pytest.skip("uvloop is not installed")
        uvloop.run(coro)
    else:
        asyncio.run(coro)


class HttpServer:
    """A loopback HTTP server that reports weight 50; ``stall`` makes the next
    requests block the event loop (a blocking call on the router's loop) before
    answering at once."""

    def __init__(self) -> None:
        self.stall = 0.0
        self.stalls_left = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> HttpServer:
        if self.server is None:
            self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            if self.stalls_left:
                self.stalls_left -= 1
                time.sleep(self.stall)  # the loop is blocked: nothing else runs
                await asyncio.sleep(0)  # the answer goes out right after
            writer.write(b"HTTP/1.1 200 OK\r\nX-Weight: 50\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


class Watch:
    """Health changes and probe results of one monitor, awaited by condition."""

    def __init__(self) -> None:
        self.changes: list[tuple[RealKey, bool]] = []
        self.results: list[ProbeResult] = []
        self._changed = asyncio.Condition()

    def on_change(self, key, health) -> None:
        self.changes.append((key, health.up))
        self._poke()

    def on_result(self, key, result) -> None:
        self.results.append(result)
        self._poke()

    def _poke(self) -> None:
        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        asyncio.get_running_loop().create_task(notify())

    async def until(self, predicate) -> None:
        async with asyncio.timeout(30):
            async with self._changed:
                await self._changed.wait_for(predicate)


def http_check(**overrides) -> CheckConfig:
    fields = {
        "type": "http",
        "interval": Duration(0.05),
        "timeout": Duration(0.5),
        "rise": 1,
        "fall": 1,
        "weight_header": "X-Weight",
    }
    return CheckConfig(**{**fields, **overrides})


async def started(server: HttpServer, check: CheckConfig) -> tuple[HealthMonitor, Watch, RealKey]:
    """A monitor of ``server`` that has seen it come up."""
    watch = Watch()
    key = (SVC, DestKey("127.0.0.1", server.port))
    monitor = HealthMonitor(watch.on_change, on_result=watch.on_result, max_tick=0.0)
    monitor.update({key: Target("127.0.0.1", server.port, check)})
    await monitor.start()
    await watch.until(lambda: watch.changes == [(key, True)])
    assert monitor.health()[key].weight_pct == 50
    return monitor, watch, key


def refusing_socket(code: int):
    """Stands in for socket.socket: creation fails with ``code``."""

    def make(*_args, **_kwargs):
        raise OSError(code, os.strerror(code))

    return make


def refusing_connect(code: int):
    """A real socket whose connect() fails with ``code`` (a sandbox refusing it)."""

    class Refusing(socket.socket):
        def connect_ex(self, _address) -> int:
            return code

    return Refusing


@pytest.mark.parametrize(
    ("code", "fault", "where"),
    [
        (errno.EMFILE, "emfile", "socket"),
        (errno.ENFILE, "enfile", "socket"),
        (errno.ENOBUFS, "enobufs", "socket"),
        (errno.ENOMEM, "enomem", "socket"),
        (errno.EPERM, "eperm", "socket"),
        (errno.EACCES, "eacces", "socket"),
        # systemd's RestrictAddressFamilies= refuses socket() with this.
        (errno.EAFNOSUPPORT, "socket", "socket"),
        (errno.EPERM, "eperm", "connect"),
        (errno.EADDRNOTAVAIL, "eaddrnotavail", "connect"),
    ],
)
@pytest.mark.parametrize("loop", LOOPS)
def test_a_refused_socket_keeps_an_up_server_up(monkeypatch, loop, code, fault, where) -> None:
    run_on(loop, refused_socket(monkeypatch, code, fault, where))


async def refused_socket(monkeypatch, code: int, fault: str, where: str) -> None:
    async with HttpServer() as server:
        monitor, watch, key = await started(server, http_check())
        try:
            before = len(watch.results)
            make = refusing_socket(code) if where == "socket" else refusing_connect(code)
            monkeypatch.setattr(sockio, "_RawSocket", make)
            await watch.until(lambda: monitor.local_faults().totals[fault] >= 5)
            during = watch.results[before:]
            assert {r.category for r in during} == {"local"}
            monkeypatch.undo()
            seen = len(watch.results)
            await watch.until(lambda: any(r.ok for r in watch.results[seen:]))

            assert watch.changes == [(key, True)]  # never down
            health = monitor.health()[key]
            assert health.up and health.weight_pct == 50 and health.consecutive_fail == 0
            assert health.local_errors >= 5
            assert errno.errorcode[code] in health.local_error
        finally:
            await monitor.stop()


async def test_https_keeps_an_up_server_up_when_socket_creation_fails(monkeypatch) -> None:
    """HTTPS probes run on asyncio's transports, not the probe engine: the same
    rule. (On asyncio's loop only: uvloop makes its sockets in C, where
    socket.socket cannot be swapped.)"""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    tls = HttpServer()
    tls.server = await asyncio.start_server(tls._handle, "127.0.0.1", 0, ssl=context)
    tls.port = tls.server.sockets[0].getsockname()[1]
    async with tls:
        monitor, watch, key = await started(tls, http_check(type="https", tls_verify=False))
        try:
            monkeypatch.setattr(socket, "socket", refusing_socket(errno.EMFILE))
            await watch.until(lambda: monitor.local_faults().totals["emfile"] >= 3)
            monkeypatch.undo()
            seen = len(watch.results)
            await watch.until(lambda: any(r.ok for r in watch.results[seen:]))
            assert watch.changes == [(key, True)]
            health = monitor.health()[key]
            assert health.up and health.weight_pct == 50 and health.consecutive_fail == 0
        finally:
            await monitor.stop()


@pytest.mark.parametrize("loop", LOOPS)
def test_a_blocked_loop_does_not_fail_the_servers(loop) -> None:
    run_on(loop, blocked_loop())


async def blocked_loop() -> None:
    """The loop is blocked for four times the timeout while probes are in flight
    (a blocking call in a callback); the server answered at once, the router
    was not listening: the timeouts are local errors ("saturated")."""
    async with HttpServer() as server:
        monitor, watch, key = await started(server, http_check(timeout=Duration(0.1)))
        try:
            server.stall, server.stalls_left = 0.4, 3
            seen = len(watch.results)
            await watch.until(
                lambda: server.stalls_left == 0 and any(r.ok for r in watch.results[seen + 3 :])
            )
            assert watch.changes == [(key, True)]
            # The probes in flight during the stalls timed out, on the router's account.
            assert monitor.local_faults().totals["saturated"] >= 1
            health = monitor.health()[key]
            assert health.up and health.weight_pct == 50
            assert "router stalled" in health.local_error
        finally:
            await monitor.stop()


@pytest.mark.parametrize("loop", LOOPS)
def test_a_silent_server_still_goes_down_on_timeout(loop) -> None:
    run_on(loop, silent_server())


async def silent_server() -> None:
    """The stall rule does not hide a server that does not answer while the
    router is attentive."""
    async with SilentServer() as silent:
        watch = Watch()
        key = (SVC, DestKey("127.0.0.1", silent.port))
        check = http_check(timeout=Duration(0.1), initial_state="up")
        monitor = HealthMonitor(watch.on_change, on_result=watch.on_result, max_tick=0.0)
        monitor.update({key: Target("127.0.0.1", silent.port, check)})
        await monitor.start()
        try:
            await watch.until(lambda: watch.changes == [(key, False)])
            assert monitor.health()[key].category == "timeout"
            assert monitor.local_faults().total == 0
        finally:
            await monitor.stop()


async def run_child(mode: str, loop: str = "asyncio") -> dict:
    """local_fault_child in a process of its own, against two real servers here."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # a TCP check connects and closes
        writer.close()

    async with HttpServer() as http:
        tcp = await asyncio.start_server(hold, "127.0.0.1", 0)
        tcp_port = tcp.sockets[0].getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.netns.local_fault_child",
            mode,
            str(tcp_port),
            str(http.port),
            loop,
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(90):
                out, err = await proc.communicate()
        finally:
            tcp.close()
    assert proc.returncode == 0, err.decode()[-2000:]
    return json.loads(out.decode().strip().splitlines()[-1])


@pytest.mark.parametrize("loop", LOOPS)
async def test_running_out_of_descriptors_fails_no_server(loop) -> None:
    """Issue 12: RLIMIT_NOFILE at 1,024 and a flood of idle connections took every
    descriptor; both servers were marked down. Now no server changes state."""
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    report = await run_child("emfile", loop)
    assert report["flood"] > 900
    assert report["changes"] == []
    assert report["categories"] == {"tcp": ["local"], "http": ["local"]}
    assert report["local_totals"]["emfile"] >= 10
    for name, health in report["health"].items():
        assert health["up"], name
        assert health["consecutive_fail"] == 0
        assert health["local_errors"] >= 5
        assert "EMFILE" in health["local_error"]
    assert report["health"]["http"]["weight_pct"] == 50


@pytest.mark.parametrize("syscall", ["connect", "socket"])
async def test_a_sandbox_refusing_the_probe_fails_no_server(syscall) -> None:
    """A real seccomp filter (what systemd's SystemCallFilter= installs) refuses
    connect() or socket() with EPERM."""
    report = await run_child(f"seccomp-{syscall}")
    assert report["changes"] == []
    assert report["categories"] == {"tcp": ["local"], "http": ["local"]}
    assert report["local_totals"] == {
        "eperm": sum(h["local_errors"] for h in report["health"].values())
    }
    for health in report["health"].values():
        assert health["up"] and health["consecutive_fail"] == 0
    assert report["health"]["http"]["weight_pct"] == 50
