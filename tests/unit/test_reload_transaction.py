"""A reload is a transaction, and start-up fails before it touches anything.

Whatever goes wrong in a reload (a refused config, a failure while the new
config is built, a bug), the old config and its runtime stay as they were,
the kernel table is intact, ``reload_status`` says why, and RELOADING=1 is
followed by READY=1. A start-up check that fails stops the daemon before its
first kernel write.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pulsed.config import load_config
from pulsed.daemon import Daemon, StartupError
from pulsed.ipvs.memory import MemoryBackend
from pulsed.model import DestKey, ServiceKey

REPO = Path(__file__).resolve().parents[2]
CONFIG = """
[daemon]
state_dir = "{state}"
[api]
enabled = false
[[service]]
name = "web"
vip = "192.0.2.100"
port = 80
[service.check]
type = "none"
[[service.real]]
address = "10.0.0.2:80"
weight = 7
"""
SVC = ServiceKey.for_address("tcp", "192.0.2.100", 80)
A = DestKey("10.0.0.2", 80)


class Running:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.backend = MemoryBackend()
        self.messages: list[str] = []
        self.ready = asyncio.Event()
        self.daemon = Daemon(path, self.backend, load_config(path), notify=self._notify)

    def _notify(self, message: str) -> None:
        self.messages.append(message)
        if message.startswith("READY=1"):
            self.ready.set()

    def table(self):
        return self.backend.table()


@pytest.fixture
async def running(tmp_path):
    path = tmp_path / "pulsed.toml"
    path.write_text(CONFIG.format(state=tmp_path / "state"))
    r = Running(path)
    task = asyncio.create_task(r.daemon.run())
    await asyncio.wait_for(r.ready.wait(), 30)
    yield r
    r.daemon.request_stop()
    await asyncio.wait_for(task, 30)


def assert_refused_and_intact(r: Running, config, table, words: str) -> None:
    status = r.daemon.reload_status
    assert not status.last_ok and words in status.last_error
    assert "\n" not in status.last_error
    assert status.generation == 1
    assert r.daemon.config is config
    assert r.table() == table
    # Every RELOADING=1 is followed by a READY=1.
    reloading = [i for i, m in enumerate(r.messages) if m.startswith("RELOADING=1")]
    assert reloading and all(
        any(m.startswith("READY=1") for m in r.messages[i + 1 :]) for i in reloading
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "empty"),
        ("  \n\n", "empty"),
        ("# truncated\n[daemon]\n", "service = []"),
        ("x = " + "[" * 500 + "]" * 500 + "\n", "nested deeper"),
        ('service = []\n[daemon]\nresync_interval = "' + "9" * 400 + 's"\n', "resync_interval"),
    ],
)
async def test_a_refused_config_leaves_everything_as_it_was(running, text, words):
    config, table = running.daemon.config, running.table()
    assert table.get(SVC) is not None
    running.path.write_text(text)
    assert not await running.daemon.reload()
    assert_refused_and_intact(running, config, table, words)


async def test_a_failure_while_building_the_new_checks_puts_the_monitor_back(running, monkeypatch):
    config, table = running.daemon.config, running.table()
    targets = dict(running.daemon.monitor.targets())
    running.path.write_text(CONFIG.replace("7", "8").format(state=running.path.parent / "state"))
    monitor = running.daemon.monitor
    real_update = monitor.update
    calls = []

    def failing_once(new_targets, *args, **kwargs):
        calls.append(new_targets)
        if len(calls) == 1:
            real_update(new_targets, *args, **kwargs)  # half done, then fails
            raise OverflowError("cannot convert float infinity to integer")
        return real_update(new_targets, *args, **kwargs)

    monkeypatch.setattr(monitor, "update", failing_once)
    assert not await running.daemon.reload()
    assert_refused_and_intact(running, config, table, "cannot start the new checks")
    assert dict(monitor.targets()) == targets


async def test_a_bug_in_a_reload_is_one_line_and_ready_follows(running, monkeypatch):
    import pulsed.daemon as daemon_module

    config, table = running.daemon.config, running.table()

    def broken(*_args, **_kwargs):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(daemon_module, "load_with_source", broken)
    assert not await running.daemon.reload()
    assert_refused_and_intact(running, config, table, "internal error: RecursionError")


async def test_a_sighup_reload_that_fails_leaves_no_task_exception(running, monkeypatch):
    import pulsed.daemon as daemon_module

    loop = asyncio.get_running_loop()
    errors: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))

    def broken(*_args, **_kwargs):
        raise ValueError("boom")

    monkeypatch.setattr(daemon_module, "load_with_source", broken)
    running.ready.clear()
    running.daemon._spawn(running.daemon.reload())  # what the SIGHUP handler does
    await asyncio.wait_for(running.ready.wait(), 30)
    while running.daemon._tasks:
        await asyncio.gather(*running.daemon._tasks, return_exceptions=True)
    assert not errors
    assert running.daemon.reload_status.last_ok is False


async def test_status_reports_the_failed_reload(running):
    from pulsed.status_view import status_chunks

    running.path.write_text("")
    assert not await running.daemon.reload()
    import json

    body = json.loads(b"".join(status_chunks(running.daemon.snapshot())))
    text = json.dumps(body)
    assert '"last_reload_ok": false' in text and "empty" in text


async def test_a_good_reload_after_a_refused_one_applies(running):
    running.path.write_text("")
    assert not await running.daemon.reload()
    running.path.write_text(CONFIG.replace("7", "9").format(state=running.path.parent / "state"))
    assert await running.daemon.reload()
    assert running.daemon.reload_status.generation == 2
    assert running.daemon.reload_status.last_ok


# Start-up --------------------------------------------------------------------------------


def taken_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


async def test_a_taken_api_port_stops_the_start_before_any_kernel_write(tmp_path):
    holder = taken_port()
    try:
        port = holder.getsockname()[1]
        path = tmp_path / "pulsed.toml"
        text = CONFIG.format(state=tmp_path / "state")
        path.write_text(text.replace("enabled = false", f'listen = "127.0.0.1:{port}"'))
        backend = MemoryBackend()
        daemon = Daemon(path, backend, load_config(path))
        with pytest.raises(StartupError) as exc:
            await daemon.run()
        assert f"127.0.0.1:{port}" in str(exc.value) and "in use" in str(exc.value)
        assert backend.writes == 0 and not backend.table().services
    finally:
        holder.close()


async def test_a_state_dir_that_is_a_file_stops_the_start_before_any_kernel_write(tmp_path):
    state = tmp_path / "state"
    state.write_text("not a directory")
    path = tmp_path / "pulsed.toml"
    path.write_text(CONFIG.format(state=state))
    backend = MemoryBackend()
    daemon = Daemon(path, backend, load_config(path))
    with pytest.raises(StartupError) as exc:
        await daemon.run()
    assert "daemon.state_dir" in str(exc.value)
    assert backend.writes == 0


def test_pulsed_run_with_a_taken_port_is_one_line_and_exit_1(tmp_path):
    holder = taken_port()
    try:
        port = holder.getsockname()[1]
        path = tmp_path / "pulsed.toml"
        text = CONFIG.format(state=tmp_path / "state")
        path.write_text(text.replace("enabled = false", f'listen = "127.0.0.1:{port}"'))
        result = subprocess.run(
            [sys.executable, "-m", "pulsed.cli", "run", "--backend", "memory", "-c", str(path)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
    finally:
        holder.close()
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("pulsed:")]
    assert lines == [f"pulsed: cannot start: api.listen 127.0.0.1:{port}: address already in use"]


# The API listener follows a reload ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthz(port: int) -> int:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
        return response.status


async def test_a_reload_moves_the_api_listener_after_binding_the_new_one(tmp_path):
    first, second = free_port(), free_port()
    path = tmp_path / "pulsed.toml"
    text = CONFIG.format(state=tmp_path / "state")
    path.write_text(text.replace("enabled = false", f'listen = "127.0.0.1:{first}"'))
    r = Running(path)
    task = asyncio.create_task(r.daemon.run())
    try:
        await asyncio.wait_for(r.ready.wait(), 30)
        assert await asyncio.to_thread(healthz, first) == 200
        path.write_text(text.replace("enabled = false", f'listen = "127.0.0.1:{second}"'))
        assert await r.daemon.reload(), r.daemon.reload_status.last_error
        assert await asyncio.to_thread(healthz, second) == 200
        with pytest.raises(OSError):
            await asyncio.to_thread(healthz, first)
    finally:
        r.daemon.request_stop()
        await asyncio.wait_for(task, 30)


async def test_a_reload_to_a_taken_api_port_is_refused_and_the_old_listener_stays(tmp_path):
    first, holder = free_port(), taken_port()
    try:
        path = tmp_path / "pulsed.toml"
        text = CONFIG.format(state=tmp_path / "state")
        path.write_text(text.replace("enabled = false", f'listen = "127.0.0.1:{first}"'))
        r = Running(path)
        task = asyncio.create_task(r.daemon.run())
        try:
            await asyncio.wait_for(r.ready.wait(), 30)
            config, table = r.daemon.config, r.table()
            taken = holder.getsockname()[1]
            path.write_text(text.replace("enabled = false", f'listen = "127.0.0.1:{taken}"'))
            assert not await r.daemon.reload()
            assert_refused_and_intact(r, config, table, "address already in use")
            assert await asyncio.to_thread(healthz, first) == 200
        finally:
            r.daemon.request_stop()
            await asyncio.wait_for(task, 30)
    finally:
        holder.close()


async def test_a_reload_that_moves_the_state_dir_is_refused(running, tmp_path):
    config, table = running.daemon.config, running.table()
    running.path.write_text(CONFIG.format(state=tmp_path / "elsewhere"))
    assert not await running.daemon.reload()
    assert_refused_and_intact(running, config, table, "needs a restart")
