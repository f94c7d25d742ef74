"""The agent check against a tiny agent on loopback: each keyword, and agents that misbehave.

The main check is a plain TCP connect to a listening server (always up); the
agent is a small asyncio server whose reply each test chooses. The monitor's
record and the wanted table built from it show what the agent did; an agent
that does not answer properly never takes the server down.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field

import pytest

from pulsed.checks.base import Target
from pulsed.checks.config import CheckConfig
from pulsed.checks.monitor import HealthMonitor, RealKey
from pulsed.checks.state import RealHealth
from pulsed.config import parse_config
from pulsed.desired import wanted_table
from pulsed.durations import Duration
from pulsed.keys import KeyIndex
from tests.netns.pop_daemon import TOKEN, LoopbackServer, Pulsed, free_port


@dataclass
class Agent:
    """Answers each connection with ``reply`` (bytes), or as ``mode`` says:
    "silent" (reads, never answers), "trickle" (one byte every 200 ms),
    "reset" (RST at once). Records what each client sent first."""

    reply: bytes = b"up\n"
    mode: str = "reply"
    received: list[bytes] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    async def __aenter__(self) -> Agent:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.mode == "reset":
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    self.received.append(await reader.read(100))
            if self.mode == "silent":
                await reader.read()
            elif self.mode == "trickle":
                for byte in b"drain\n":
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.2)  # the adversary's pace, not a synchronisation
            else:
                writer.write(self.reply)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


CONFIG = """
[[service]]
name = "web"
vip = "192.0.2.1"
port = 80
[[service.real]]
address = "127.0.0.1:{port}"
weight = 100
"""


async def first_agent_record(
    agent: Agent, server: LoopbackServer, **check
) -> tuple[RealHealth, int]:
    """The server's record once its agent has been heard from (or failed), and
    the server's weight in the table built from it."""
    config = parse_config(CONFIG.format(port=server.port), "t.toml")
    index = KeyIndex(config)
    key: RealKey = index.services[0].reals[0]
    fields = {
        "interval": Duration(0.05),
        "timeout": Duration(0.05),
        "rise": 1,
        "initial_state": "up",
        "agent_port": agent.port,
        "agent_interval": Duration(0.3),
        "agent_timeout": Duration(0.25),
        **check,
    }
    heard = asyncio.Event()
    seen: list[RealHealth] = []

    def on_change(_key: RealKey, health: RealHealth) -> None:
        if health.agent is not None:
            seen.append(health)
            heard.set()

    monitor = HealthMonitor(on_change)
    monitor.update({key: Target("127.0.0.1", server.port, CheckConfig(**fields))})
    await monitor.start()
    try:
        async with asyncio.timeout(10):
            await heard.wait()
    finally:
        await monitor.stop()
    health = monitor.health()[key]
    table = wanted_table(config, health={key: health}, index=index).table
    return health, next(d.weight for s in table for d in s.dests)


@pytest.fixture
def server():
    up = LoopbackServer(up=True)
    yield up
    up.close()


@pytest.mark.parametrize(
    ("reply", "serving", "weight"),
    [
        (b"up\n", True, 100),
        (b"down\n", False, 0),
        (b"drain\n", True, 0),
        (b"maint\n", True, 0),
        (b"ready\n", True, 100),
        (b"75%\n", True, 75),
        (b"up, 40%\r\n", True, 40),
        (b"down # disk full\n", False, 0),
        (b"ready 0%", True, 0),  # no line break: the connection's end ends the line
    ],
)
async def test_each_keyword(server, reply, serving, weight) -> None:
    async with Agent(reply=reply) as agent:
        health, got = await first_agent_record(agent, server)
    assert health.up  # the main check's own verdict is untouched
    assert health.serving is serving
    assert got == weight
    assert health.agent.reachable
    assert health.agent.reason == f"agent: {reply.decode().splitlines()[0].strip()}"


async def test_agent_send_is_sent_first(server) -> None:
    async with Agent(reply=b"up 20%\n") as agent:
        _, weight = await first_agent_record(agent, server, agent_send="status web\n")
    assert agent.received[0] == b"status web\n"
    assert weight == 20


async def test_unknown_words_are_ignored_with_a_reason(server) -> None:
    async with Agent(reply=b"up \x00\xff garbage 30%\n") as agent:
        health, weight = await first_agent_record(agent, server)
    assert health.serving and weight == 30
    assert "(ignored: " in health.agent.reason and "garbage" in health.agent.reason


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("silent", "agent unreachable: timeout after 250ms"),
        ("trickle", "agent unreachable: timeout after 250ms"),
        ("reset", "agent unreachable: connection reset"),
    ],
)
async def test_an_agent_that_misbehaves_never_takes_the_server_down(server, mode, reason) -> None:
    async with Agent(mode=mode) as agent:
        health, weight = await first_agent_record(agent, server)
    assert health.serving and weight == 100
    assert not health.agent.reachable
    if mode != "reset" and "router stalled" in health.agent.reason:
        reason = "agent unreachable: local error: router stalled"  # a loaded test machine
    assert health.agent.reason.startswith(reason)


async def test_no_agent_listening_changes_nothing(server) -> None:
    async with Agent() as agent:
        port = agent.port
    health, weight = await first_agent_record(Agent(port=port), server)
    assert health.serving and weight == 100
    assert health.agent.reason == "agent unreachable: connect refused"


def test_status_shows_what_the_agent_said(tmp_path, server) -> None:
    """Through the real daemon: /status carries the agent's word and its effect."""

    async def serve_agent_and_check() -> dict:
        async with Agent(reply=b"drain 50% # deploying\n") as agent:
            token = tmp_path / "token"
            token.write_text(TOKEN + "\n")
            token.chmod(0o600)
            text = f"""
[daemon]
state_dir = "{tmp_path / "state"}"
resync_interval = "200ms"
[api]
listen = "127.0.0.1:{free_port()}"
token_file = "{token}"
[[service]]
name = "web"
vip = "192.0.2.1"
port = 80
[service.check]
type = "tcp"
interval = "200ms"
timeout = "150ms"
rise = 1
agent_port = {agent.port}
agent_interval = "200ms"
agent_timeout = "150ms"
[[service.real]]
address = "127.0.0.1:{server.port}"
weight = 10
"""
            daemon = Pulsed(tmp_path, text)
            try:
                await asyncio.to_thread(daemon.start)
                return await asyncio.to_thread(
                    daemon.wait_status,
                    lambda d: (
                        d["services"][0]["reals"][0]["agent"] is not None
                        and d["services"][0]["reals"][0]["health"] == "up"
                        and not d["reconcile"]["pending"]
                    ),
                )
            finally:
                await asyncio.to_thread(daemon.close)

    doc = asyncio.run(serve_agent_and_check())
    real = doc["services"][0]["reals"][0]
    assert real["agent"]["admin"] == "drain" and real["agent"]["weight_pct"] == 50
    assert real["agent"]["reason"] == "agent: drain 50% # deploying"
    assert (real["health"], real["effective_weight"]) == ("up", 0)
    assert real["reason"].startswith("drained by its agent (drain); agent: drain 50%")
