"""The read side tells the truth: one snapshot, no lost results, no stale or dipping weights."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from pathlib import Path

import pytest

from pulsed.checks.base import ProbeResult, Target
from pulsed.checks.monitor import HealthMonitor
from pulsed.config import load_config
from pulsed.daemon import Daemon
from pulsed.ipvs.memory import MemoryBackend
from pulsed.keys import KeyIndex
from pulsed.model import DestKey, ServiceKey
from pulsed.readmodel import Snapshot
from pulsed.status_view import status_chunks

SVC = ServiceKey.for_address("tcp", "192.0.2.100", 80)
OK = ProbeResult(True, "ok", 0.0001, "ok")


def config_text(state: Path, reals: int, extra: str = "", interval: str = "10ms") -> str:
    lines = [
        f'[daemon]\nstate_dir = "{state}"\n[api]\nenabled = false\n',
        f'[[service]]\nname = "web"\nvip = "192.0.2.100"\nport = 80\n{extra}',
        f'[service.check]\ntype = "tcp"\ninterval = "{interval}"\ntimeout = "5ms"\nrise = 2\n',
    ]
    for i in range(reals):
        lines.append(f'[[service.real]]\naddress = "10.0.0.{i + 1}:80"\nweight = 100\n')
    return "\n".join(lines)


class Passing:
    """A probe that passes at once, every time (no socket: the test is about the monitor)."""

    def __init__(self, target: Target) -> None:
        self.target = target

    async def probe(self) -> ProbeResult:
        return OK


def daemon_with_passing_probes(path: Path) -> Daemon:
    daemon = Daemon(path, MemoryBackend(), load_config(path))
    daemon.monitor = HealthMonitor(
        on_change=daemon._on_health_change,
        on_result=daemon._on_probe_result,
        probe_factory=Passing,
    )
    return daemon


async def test_the_heartbeat_reads_without_losing_a_result(tmp_path):
    """The VRRP heartbeat's thread asks for healthy fractions while the loop
    records results: every result is still in the folded health, and the
    monitor is read from the loop's thread only."""
    path = tmp_path / "pulsed.toml"
    path.write_text(config_text(tmp_path / "state", reals=20))
    daemon = daemon_with_passing_probes(path)
    counted: Counter = Counter()
    enough = asyncio.Event()

    def on_result(key, result) -> None:
        counted[key] += 1
        if sum(counted.values()) >= 4000:
            enough.set()

    daemon.probe_observers.append(on_result)
    readers: set[int] = set()
    real_health = daemon.monitor.health

    def health():
        readers.add(threading.get_ident())
        return real_health()

    daemon.monitor.health = health  # type: ignore[method-assign]
    stop_reading = threading.Event()
    fractions: list[float | None] = []

    def heartbeat() -> None:
        while not stop_reading.is_set():
            fractions.append(daemon.healthy_fraction("web"))

    task = asyncio.create_task(daemon.run())
    reader = threading.Thread(target=heartbeat)
    reader.start()
    try:
        await asyncio.wait_for(enough.wait(), 60)
    finally:
        stop_reading.set()
        reader.join()
        daemon.request_stop()
        await asyncio.wait_for(task, 30)
    folded = real_health()
    assert len(counted) == 20
    # All passed from the first: each result is one more consecutive pass.
    assert {key: folded[key].consecutive_ok for key in counted} == dict(counted)
    assert readers == {threading.get_ident()}
    assert fractions and set(fractions) <= {None, 0.0, 1.0} | {i / 20 for i in range(21)}
    assert fractions[-1] == 1.0


async def test_kernel_weights_in_status_are_read_after_the_writes(tmp_path):
    path = tmp_path / "pulsed.toml"
    text = config_text(tmp_path / "state", reals=2)
    path.write_text(text.replace('type = "tcp"', 'type = "none"'))
    daemon = Daemon(path, MemoryBackend(), load_config(path))
    passes: asyncio.Queue = asyncio.Queue()
    daemon.pass_observers.append(lambda result, _elapsed: passes.put_nowait(result))
    task = asyncio.create_task(daemon.run())

    async def next_pass_with_ops():
        while not (await asyncio.wait_for(passes.get(), 30)).ops:
            pass

    try:
        await next_pass_with_ops()
        key = (SVC, DestKey("10.0.0.1", 80))
        daemon.set_weight(key, 50)
        await next_pass_with_ops()
        doc = json.loads(b"".join(status_chunks(daemon.snapshot())))
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 30)
    assert doc["reconcile"]["in_sync"]
    reals = {r["address"]: r for r in doc["services"][0]["reals"]}
    assert reals["10.0.0.1"]["effective_weight"] == 50
    assert reals["10.0.0.1"]["kernel_weight"] == 50  # not the 100 of before the write
    for real in reals.values():
        assert real["kernel_weight"] == real["effective_weight"]


async def test_a_cold_start_with_min_healthy_never_dips_a_weight(tmp_path):
    """Unchecked servers kept in at full weight by min_healthy stay there when
    their checks pass: slow start does not take them down to a fraction."""
    path = tmp_path / "pulsed.toml"
    extra = 'min_healthy = 2\nslow_start = "60s"\n'
    path.write_text(config_text(tmp_path / "state", reals=2, extra=extra, interval="50ms"))
    daemon = daemon_with_passing_probes(path)
    backend = daemon.backend
    assert isinstance(backend, MemoryBackend)
    seen: list[dict[DestKey, int]] = []
    up = asyncio.Event()

    def record(result, _elapsed) -> None:
        service = backend.table().get(SVC)
        if service is not None:
            seen.append({d.key: d.weight for d in service.dests})
        health = daemon.monitor.health()
        if len(health) == 2 and all(h.up for h in health.values()):
            up.set()

    daemon.pass_observers.append(record)
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(up.wait(), 30)
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 30)
    assert seen and seen[0] == {DestKey("10.0.0.1", 80): 100, DestKey("10.0.0.2", 80): 100}
    for weights in seen:
        assert set(weights.values()) == {100}, seen


def test_a_snapshot_is_frozen_and_built_from_real_parts(tmp_path):
    path = tmp_path / "pulsed.toml"
    path.write_text(config_text(tmp_path / "state", reals=1))
    config = load_config(path)
    snap = Snapshot.build(config)
    assert snap.index.config is config and snap.reconcile.passes == 0
    with pytest.raises(AttributeError):
        snap.health = {}  # type: ignore[misc]


def test_the_key_index_keeps_the_key_objects_of_unchanged_services(tmp_path):
    path = tmp_path / "pulsed.toml"
    path.write_text(config_text(tmp_path / "state", reals=3))
    first = KeyIndex(load_config(path))
    path.write_text(config_text(tmp_path / "state", reals=4))
    second = KeyIndex(load_config(path), first)
    old, new = first.by_name("web"), second.by_name("web")
    assert old is not None and new is not None
    assert all(a is b for a, b in zip(old.reals, new.reals[:3], strict=True))
    assert second.by_key(SVC) is new
    assert second.real((SVC, DestKey("10.0.0.4", 80))) is not None
    assert second.real((SVC, DestKey("10.0.0.9", 80))) is None
    assert second.canonical((SVC, DestKey("10.0.0.2", 80))) is new.reals[1]


async def test_a_change_waiting_for_its_pass_is_not_in_sync(tmp_path):
    path = tmp_path / "pulsed.toml"
    text = config_text(tmp_path / "state", reals=2)
    path.write_text(text.replace('type = "tcp"', 'type = "none"'))
    daemon = Daemon(path, MemoryBackend(), load_config(path))
    await daemon._first_pass()  # no loop task: the next pass runs only when asked
    try:
        assert daemon.snapshot().reconcile.in_sync
        daemon.set_weight((SVC, DestKey("10.0.0.1", 80)), 50)
        waiting = json.loads(b"".join(status_chunks(daemon.snapshot())))["reconcile"]
        assert not waiting["in_sync"] and waiting["pending"]
        assert waiting["reason"] == "a change waits for the next pass"
        await daemon.reconciler.reconcile_once()
        assert daemon.snapshot().reconcile.in_sync
    finally:
        await daemon.monitor.stop()
