"""HealthMonitor against real servers on loopback: down when one dies, up when it returns."""

from __future__ import annotations

import asyncio
import time

from pulsed.checks.base import Target
from pulsed.checks.config import CheckConfig
from pulsed.checks.monitor import HealthMonitor, RealKey
from pulsed.checks.state import RealHealth
from pulsed.config import parse_config
from pulsed.daemon import health_targets
from pulsed.durations import Duration
from pulsed.keys import KeyIndex
from pulsed.model import DestKey, ServiceKey
from tests.support.silent_server import SilentServer

SVC = ServiceKey.for_address("tcp", "192.0.2.1", 80)


async def http_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def test_monitor_follows_a_real_server_down_and_up() -> None:
    server = await asyncio.start_server(http_ok, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    key: RealKey = (SVC, DestKey("127.0.0.1", port))
    check = CheckConfig(type="http", interval=Duration(0.1), timeout=Duration(0.1), rise=2, fall=2)
    changes: asyncio.Queue[RealHealth] = asyncio.Queue()
    monitor = HealthMonitor(lambda k, h: changes.put_nowait(h))
    monitor.update({key: Target("127.0.0.1", port, check)})
    await monitor.start()
    try:
        async with asyncio.timeout(10):
            went_up = await changes.get()
            assert (went_up.up, went_up.reason) == (True, "status 200")

            server.close()
            await server.wait_closed()
            went_down = await changes.get()
            assert (went_down.up, went_down.reason) == (False, "connect refused")
            assert went_down.consecutive_fail == 2

            # A reload with the same check keeps the state (still down, same counts or more).
            monitor.update({key: Target("127.0.0.1", port, check)})
            assert monitor.health()[key].went_down_at == went_down.went_down_at

            server = await asyncio.start_server(http_ok, "127.0.0.1", port)
            back = await changes.get()
            assert (back.up, back.reason) == (True, "status 200")
            assert back.went_up_at > went_down.went_down_at
    finally:
        await monitor.stop()
        server.close()


async def test_stop_closes_probe_connections_in_flight() -> None:
    async with SilentServer() as server:
        key: RealKey = (SVC, DestKey("127.0.0.1", server.port))
        check = CheckConfig(
            type="http", interval=Duration(30), timeout=Duration(30), jitter=Duration(0)
        )
        monitor = HealthMonitor(lambda k, h: None)
        monitor.update({key: Target("127.0.0.1", server.port, check)})
        await monitor.start()
        try:
            async with asyncio.timeout(10):
                await server.accepted.wait()
                assert monitor.in_flight == 1
                await monitor.stop()
                assert monitor.in_flight == 0
                await server.closed.wait()
        finally:
            await monitor.stop()


async def test_changed_check_replaces_the_probe_in_flight() -> None:
    server = await asyncio.start_server(http_ok, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    key: RealKey = (SVC, DestKey("127.0.0.1", port))
    changes: asyncio.Queue[RealHealth] = asyncio.Queue()
    monitor = HealthMonitor(lambda k, h: changes.put_nowait(h))
    tcp = CheckConfig(type="tcp", interval=Duration(0.05), timeout=Duration(0.05), rise=1)
    monitor.update({key: Target("127.0.0.1", port, tcp)})
    await monitor.start()
    try:
        async with asyncio.timeout(10):
            assert (await changes.get()).reason == "connected"
            http = CheckConfig(type="http", interval=Duration(0.05), timeout=Duration(0.05), rise=1)
            monitor.update({key: Target("127.0.0.1", port, http)})
            assert not monitor.health()[key].up  # a changed check starts afresh
            again = await changes.get()
            assert (again.up, again.reason) == (True, "status 200")
            assert monitor.in_flight <= 1
    finally:
        await monitor.stop()
        server.close()


async def test_fast_retry_takes_a_dead_server_down_in_fall_probes_not_fall_intervals() -> None:
    requests: list[bytes] = []

    async def http_503(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            requests.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(http_503, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    key: RealKey = (SVC, DestKey("127.0.0.1", port))
    # At a 30 s interval three failures would take a minute: the test's
    # timeout is 10 s, so the server can only go down through the retries.
    check = CheckConfig(
        type="http",
        interval=Duration(30),
        timeout=Duration(0.5),
        retry_interval=Duration(0.5),
        fall=3,
        initial_state="up",
        jitter=Duration(0),
    )
    changes: asyncio.Queue[RealHealth] = asyncio.Queue()
    monitor = HealthMonitor(lambda k, h: changes.put_nowait(h))
    monitor.update({key: Target("127.0.0.1", port, check)})
    await monitor.start()
    try:
        async with asyncio.timeout(10):
            down = await changes.get()
        assert (down.up, down.reason, down.consecutive_fail) == (False, "status 503", 3)
        assert len(requests) == 3  # one probe per step of fall, none in between
        entry = monitor._entries[key]
        assert entry.scheduled and entry.deadline - time.monotonic() > 25  # the interval again
    finally:
        await monitor.stop()
        server.close()


async def test_two_services_with_one_real_server_probe_it_once() -> None:
    connections = [0]

    async def counting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections[0] += 1
        await http_ok(reader, writer)

    server = await asyncio.start_server(counting, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    service = """
[[service]]
name = "{name}"
vip = "192.0.2.{n}"
port = 80
[service.check]
type = "http"
interval = "50ms"
timeout = "50ms"
[[service.real]]
address = "127.0.0.1:{port}"
"""
    text = service.format(name="web", n=1, port=port) + service.format(name="api", n=2, port=port)
    index = KeyIndex(parse_config(text, "t.toml"))
    targets = health_targets(index)
    web, api = targets
    seen: dict[RealKey, int] = {web: 0, api: 0}
    at_tenth: list[int] = []
    tenth = asyncio.Event()

    def on_result(key: RealKey, result) -> None:
        seen[key] += 1
        if key == web and seen[web] == 10:
            at_tenth.append(connections[0])
            tenth.set()

    monitor = HealthMonitor(lambda k, h: None, on_result=on_result)
    monitor.update(targets)
    await monitor.start()
    try:
        async with asyncio.timeout(10):
            await tenth.wait()
    finally:
        await monitor.stop()
        server.close()
    # Ten probes fed both services: ten connections, not twenty.
    assert at_tenth == [10]
    assert seen[api] == 10
    assert monitor.shared() == {web: (web, api), api: (web, api)}
