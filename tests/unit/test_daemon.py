"""The daemon's reload and admin paths, with the kernel-faithful fake table."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pulsed.config import load_config
from pulsed.daemon import Daemon
from pulsed.ipvs.memory import MemoryBackend
from pulsed.model import DestKey, OpKind, ServiceKey

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
weight = {weight}
[[service.real]]
address = "10.0.0.3:80"
"""
SVC = ServiceKey.for_address("tcp", "192.0.2.100", 80)
A, B = DestKey("10.0.0.2", 80), DestKey("10.0.0.3", 80)


class Running:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.backend = MemoryBackend()
        self.daemon = Daemon(path, self.backend, load_config(path))
        self.passes: asyncio.Queue = asyncio.Queue()
        self.daemon.pass_observers.append(lambda result, _elapsed: self.passes.put_nowait(result))

    async def next_pass_with_ops(self):
        while True:
            result = await asyncio.wait_for(self.passes.get(), 30)
            if result.ops:
                return result

    def weights(self) -> dict[DestKey, int]:
        return {d.key: d.weight for d in self.backend.table().get(SVC).dests}


@pytest.fixture
async def running(tmp_path):
    path = tmp_path / "pulsed.toml"
    path.write_text(CONFIG.format(state=tmp_path / "state", weight=100))
    r = Running(path)
    task = asyncio.create_task(r.daemon.run())
    await r.next_pass_with_ops()
    yield r
    r.daemon.request_stop()
    await asyncio.wait_for(task, 30)


async def test_start_programs_the_table(running):
    assert running.weights() == {A: 100, B: 1}


async def test_unchanged_reload_writes_nothing(running):
    writes = running.backend.writes
    health = dict(running.daemon.monitor.health())
    assert await running.daemon.reload()
    assert running.daemon.reload_status.last_changed is False
    await running.daemon.reconciler.reconcile_once()
    assert running.backend.writes == writes
    assert dict(running.daemon.monitor.health()) == health


async def test_changed_reload_applies_only_the_difference_and_keeps_health(running, tmp_path):
    before = running.daemon.monitor.health()[(SVC, B)]
    running.path.write_text(CONFIG.format(state=tmp_path / "state", weight=5))
    assert await running.daemon.reload()
    result = await running.next_pass_with_ops()
    assert [(op.kind, op.dest.key) for op in result.ops] == [(OpKind.SET_DEST, A)]
    assert running.weights() == {A: 5, B: 1}
    assert running.daemon.monitor.health()[(SVC, B)] is before
    assert running.daemon.reload_status.generation == 2


async def test_broken_reload_keeps_the_old_config(running):
    config = running.daemon.config
    running.path.write_text("[[service]]\nname = 'web'\nvip = 'not-an-ip'\nport = 80\n")
    assert not await running.daemon.reload()
    assert running.daemon.config is config
    status = running.daemon.reload_status
    assert (status.last_ok, status.generation) == (False, 1)
    assert 'service[0].vip = "not-an-ip": not an IPv4 or IPv6 address' in status.last_error
    assert running.weights() == {A: 100, B: 1}


async def test_admin_drain_disable_and_weight(running):
    running.daemon.set_mode((SVC, A), "drain")
    await running.next_pass_with_ops()
    assert running.weights() == {A: 0, B: 1}
    running.daemon.set_mode((SVC, B), "disable")
    await running.next_pass_with_ops()
    assert running.weights() == {A: 0}
    running.daemon.set_mode((SVC, A), "enabled")
    running.daemon.set_mode((SVC, B), "enabled")
    running.daemon.set_weight((SVC, B), 9)
    await running.next_pass_with_ops()
    assert running.weights() == {A: 100, B: 9}


async def test_sorry_server_and_fail_open_are_logged_once(tmp_path):
    from structlog.testing import capture_logs

    path = tmp_path / "pulsed.toml"
    path.write_text(
        CONFIG.format(state=tmp_path / "state", weight=1)
        .replace('type = "none"', 'type = "tcp"\ninterval = "1h"')
        .replace(
            "port = 80\n[service.check]", 'port = 80\nsorry_server = "10.0.0.9:80"\n[service.check]'
        )
    )
    r = Running(path)
    with capture_logs() as logs:
        await r.daemon.reconciler.reconcile_once()
        await r.daemon.reconciler.reconcile_once()
    assert [e["event"] for e in logs if e["event"].startswith("pool.")] == ["pool.sorry_server_on"]
    # Not yet checked, so quiesced; the sorry server takes the traffic.
    assert r.weights() == {A: 0, B: 0, DestKey("10.0.0.9", 80): 1}


async def test_start_up_objects_are_not_kept_and_keys_are_shared(tmp_path):
    # The first pass's operations (one per server at a cold start) must not
    # stay referenced for the life of the process, and the monitor, the memo
    # and the plans use one DestKey object per configured server.
    import gc

    from pulsed.model import Op

    path = tmp_path / "pulsed.toml"
    path.write_text(CONFIG.format(state=tmp_path / "state", weight=100))
    ready = asyncio.Event()
    daemon = Daemon(
        path, MemoryBackend(), load_config(path), notify=lambda m: "READY=1" in m and ready.set()
    )
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(ready.wait(), 30)
        gc.unfreeze()  # the daemon froze start-up objects: get_objects() would not list them
        gc.collect()
        assert not [o for o in gc.get_objects() if isinstance(o, Op)]
        monitored = {key[1]: key[1] for key in daemon.monitor.health()}
        planned = daemon.wanted.pools[SVC].weights
        assert monitored and all(monitored[k] is k for k in planned)
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 30)


def test_a_reload_keeps_the_probe_targets_of_unchanged_services(tmp_path):
    from pulsed.config import ParseCache, parse_config
    from pulsed.daemon import health_targets
    from pulsed.keys import KeyIndex

    other = '\n[[service]]\nname = "api"\nvip = "192.0.2.101"\nport = 80\n'
    other += '[[service.real]]\naddress = "10.0.0.4:80"\n'
    cache = ParseCache()
    old = KeyIndex(parse_config(CONFIG.format(state=tmp_path, weight=1) + other, "a", cache))
    known = health_targets(old)
    new = KeyIndex(parse_config(CONFIG.format(state=tmp_path, weight=2) + other, "b", cache), old)
    targets = health_targets(new, old, known)
    api = (ServiceKey.for_address("tcp", "192.0.2.101", 80), DestKey("10.0.0.4", 80))
    assert targets[api] is known[api]  # "api" is unchanged: same objects
    assert targets[(SVC, A)] is not known[(SVC, A)]  # "web" changed: made anew
    assert targets == known  # ... and equal, as no check changed
