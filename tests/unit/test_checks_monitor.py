"""HealthMonitor with scripted probes: change reporting, reloads, bounded concurrency.

Real sockets are exercised in tests/netns/test_probes_monitor.py; here the
probes are scripted so each test controls every result.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import math
import random
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator

import pytest

from pulsed.checks.base import ProbeResult, Target
from pulsed.checks.config import CheckConfig
from pulsed.checks.monitor import HealthMonitor, RealKey
from pulsed.checks.state import RealHealth
from pulsed.durations import Duration
from pulsed.model import DestKey, ServiceKey

SVC = ServiceKey.for_address("tcp", "192.0.2.1", 80)
FAST = CheckConfig(interval=Duration(0.01), timeout=Duration(0.01), rise=2, fall=2)


def key(n: int) -> RealKey:
    return (SVC, DestKey(f"10.0.0.{n}", 80))


def target(n: int, check: CheckConfig = FAST) -> Target:
    return Target(f"10.0.0.{n}", 80, check)


class Script:
    """Scripted probe results per address; records every probe call."""

    def __init__(self) -> None:
        self.results: dict[str, deque[ProbeResult]] = defaultdict(deque)
        self.default = ProbeResult(True, "status 200", 0.001)
        self.calls: dict[str, int] = defaultdict(int)
        self.gate: asyncio.Event | None = None
        self.running = 0
        self.max_running = 0
        self.started = asyncio.Condition()

    async def wait_running(self, n: int) -> None:
        async with asyncio.timeout(5), self.started:
            await self.started.wait_for(lambda: self.running >= n)

    def factory(self, target: Target) -> Script.Probe:
        return Script.Probe(self, target.address)

    class Probe:
        def __init__(self, script: Script, address: str) -> None:
            self.script, self.address = script, address

        async def probe(self) -> ProbeResult:
            s = self.script
            s.calls[self.address] += 1
            s.running += 1
            s.max_running = max(s.max_running, s.running)
            async with s.started:
                s.started.notify_all()
            try:
                if s.gate is not None:
                    await s.gate.wait()
                queue = s.results[self.address]
                result = queue.popleft() if queue else s.default
                if result.reason == "crash":
                    raise RuntimeError("bug in a probe")
                return result
            finally:
                s.running -= 1


class Recorder:
    def __init__(self) -> None:
        self.changes: list[tuple[RealKey, RealHealth]] = []
        self.results: list[tuple[RealKey, ProbeResult]] = []
        self.changed = asyncio.Condition()

    def on_change(self, k: RealKey, health: RealHealth) -> None:
        self.changes.append((k, health))
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, predicate, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            async with self.changed:
                await self.changed.wait_for(predicate)


@pytest.fixture
async def setup() -> AsyncIterator[tuple[HealthMonitor, Script, Recorder]]:
    script, rec = Script(), Recorder()
    monitor = HealthMonitor(
        rec.on_change,
        on_result=lambda k, r: rec.results.append((k, r)),
        probe_factory=script.factory,
    )
    await monitor.start()
    try:
        yield monitor, script, rec
    finally:
        await monitor.stop()


FAIL = ProbeResult(False, "connect refused", 0.001, "refused")


async def test_new_server_starts_down_and_comes_up_after_rise(setup) -> None:
    monitor, _, rec = setup
    monitor.update({key(1): target(1)})
    assert monitor.health()[key(1)].up is False
    assert monitor.health()[key(1)].reason == "not checked yet"
    await rec.wait_for(lambda: rec.changes)
    k, health = rec.changes[0]
    assert k == key(1) and health.up and health.consecutive_ok == 2
    assert health.went_up_at is not None and health.reason == "status 200"


async def test_change_fires_on_transitions_only(setup) -> None:
    monitor, script, rec = setup
    script.results["10.0.0.1"].extend([FAIL, FAIL, FAIL, FAIL])  # then passes forever
    monitor.update({key(1): target(1, CheckConfig(**{**_fields(FAST), "initial_state": "up"}))})
    await rec.wait_for(lambda: len(rec.changes) >= 2)
    assert [h.up for _, h in rec.changes[:2]] == [False, True]
    assert rec.changes[0][1].reason == "connect refused"
    assert len(rec.results) >= 6  # every result observed, only 2 changes


async def test_dynamic_weight_change_fires(setup) -> None:
    monitor, script, rec = setup
    script.results["10.0.0.1"].extend(
        [ProbeResult(True, "s", 0, "ok", pct) for pct in (50, 50, 50, 80)]
    )
    script.default = ProbeResult(True, "s", 0, "ok", 80)
    monitor.update({key(1): target(1)})
    await rec.wait_for(lambda: len(rec.changes) >= 2)
    assert [(h.up, h.weight_pct) for _, h in rec.changes[:2]] == [(True, 50), (True, 80)]


async def test_reload_keeps_unchanged_restarts_changed_and_stops_removed(setup) -> None:
    monitor, script, rec = setup
    monitor.update({key(1): target(1), key(2): target(2), key(3): target(3)})
    await rec.wait_for(lambda: len(rec.changes) >= 3)
    changed_check = CheckConfig(**{**_fields(FAST), "rise": 3})
    script.gate = asyncio.Event()  # hold probes so health is observed before any result
    monitor.update({key(1): target(1), key(2): target(2, changed_check), key(4): target(4)})
    health = monitor.health()
    assert health[key(1)].up  # unchanged check: state kept
    assert not health[key(2)].up and health[key(2)].reason == "not checked yet"
    assert key(3) not in health
    assert not health[key(4)].up
    calls_3 = script.calls["10.0.0.3"]
    script.gate.set()
    script.gate = None
    await rec.wait_for(lambda: {k for k, h in rec.changes[3:] if h.up} >= {key(2), key(4)})
    assert script.calls["10.0.0.3"] == calls_3  # removed server is no longer probed


async def test_assume_up_for_servers_already_in_the_kernel(setup) -> None:
    monitor, _, _ = setup
    monitor.update({key(1): target(1), key(2): target(2)}, assume_up={key(1)})
    health = monitor.health()
    assert health[key(1)].up and health[key(1)].went_up_at is None
    assert not health[key(2)].up


async def test_none_check_is_up_and_never_probed(setup) -> None:
    monitor, script, _ = setup
    monitor.update({key(1): target(1, CheckConfig(type="none"))})
    assert monitor.health()[key(1)].up
    assert monitor.health()[key(1)].reason == "no check"
    assert script.calls["10.0.0.1"] == 0


async def test_a_crashing_probe_is_a_failure_not_a_dead_monitor(setup) -> None:
    monitor, script, rec = setup
    script.results["10.0.0.1"].extend([ProbeResult(False, "crash", 0)])
    monitor.update({key(1): target(1)})
    await rec.wait_for(lambda: rec.changes)
    first = rec.results[0][1]
    assert (first.ok, first.reason, first.category) == (False, "error: RuntimeError", "error")


async def test_callback_errors_do_not_stop_monitoring() -> None:
    script = Script()
    seen: list[RealHealth] = []
    done = asyncio.Event()

    def bad_on_result(k: RealKey, r: ProbeResult) -> None:
        raise ValueError("metrics bug")

    def on_change(k: RealKey, h: RealHealth) -> None:
        seen.append(h)
        done.set()

    monitor = HealthMonitor(on_change, on_result=bad_on_result, probe_factory=script.factory)
    monitor.update({key(1): target(1)})
    await monitor.start()
    try:
        await asyncio.wait_for(done.wait(), 5)
    finally:
        await monitor.stop()
    assert seen[0].up


async def test_probes_in_flight_are_bounded() -> None:
    script, rec = Script(), Recorder()
    script.gate = asyncio.Event()
    monitor = HealthMonitor(rec.on_change, max_in_flight=3, probe_factory=script.factory)
    slow = CheckConfig(interval=Duration(0.01), timeout=Duration(0.01), rise=1, jitter=Duration(0))
    monitor.update({key(n): target(n, slow) for n in range(1, 11)})
    await monitor.start()
    try:
        await script.wait_running(3)
        script.gate.set()
        await rec.wait_for(lambda: len({k for k, _ in rec.changes}) == 10)
    finally:
        await monitor.stop()
    assert script.max_running == 3


async def test_stop_cancels_probes_in_flight() -> None:
    script, rec = Script(), Recorder()
    script.gate = asyncio.Event()  # never set: probes hang
    monitor = HealthMonitor(rec.on_change, probe_factory=script.factory)
    monitor.update({key(1): target(1, CheckConfig(jitter=Duration(0)))})
    await monitor.start()
    await script.wait_running(1)
    await monitor.stop()
    assert script.running == 0 and monitor.in_flight == 0


def _fields(check: CheckConfig) -> dict:
    return {f: getattr(check, f) for f in check.__struct_fields__}


async def test_a_probe_that_cannot_be_built_fails_with_its_reason() -> None:
    rec = Recorder()
    results: list[ProbeResult] = []
    got = asyncio.Event()

    def factory(target: Target) -> Script.Probe:
        if target.address == "10.0.0.2":
            raise OSError("[X509] no certificate or crl found")
        return Script().factory(target)

    def on_result(k: RealKey, r: ProbeResult) -> None:
        if k == key(2):
            results.append(r)
            got.set()

    monitor = HealthMonitor(rec.on_change, on_result=on_result, probe_factory=factory)
    monitor.update({key(1): target(1), key(2): target(2)})  # one bad target breaks nothing
    await monitor.start()
    try:
        await asyncio.wait_for(got.wait(), 5)
        await rec.wait_for(lambda: any(k == key(1) for k, _ in rec.changes))
    finally:
        await monitor.stop()
    assert results[0].reason == "bad check setup: [X509] no certificate or crl found"
    assert not monitor.health()[key(2)].up


async def test_health_counts_every_repeated_result() -> None:
    """Passes that change nothing are folded into the record when it is read:
    the counters, latency and check time still follow every probe."""
    script = Script()
    script.results["10.0.0.1"].extend([ProbeResult(True, "status 200", 0.001)] * 2)
    script.default = ProbeResult(True, "status 200", 0.007)
    changes: list[RealHealth] = []
    results: list[ProbeResult] = []
    six = asyncio.Event()

    def on_result(k: RealKey, r: ProbeResult) -> None:
        results.append(r)
        if len(results) >= 6:
            six.set()

    monitor = HealthMonitor(
        lambda k, h: changes.append(h), on_result=on_result, probe_factory=script.factory
    )
    monitor.update({key(1): target(1)})
    await monitor.start()
    try:
        async with asyncio.timeout(5):
            await six.wait()
        health = monitor.health()[key(1)]
    finally:
        await monitor.stop()
    assert len(changes) == 1 and changes[0].consecutive_ok == 2  # up after rise = 2
    assert health.consecutive_ok == len(results)  # every pass so far, folded in
    assert (health.up, health.reason, health.latency) == (True, "status 200", 0.007)
    assert health.last_check > changes[0].last_check
    assert health.went_up_at == changes[0].went_up_at


class _Offsets(random.Random):
    """Places first probes at the given offsets after a whole tenth of a second
    (a tick of 0.05 and of 0.1) at least 0.1 s ahead, in the order servers are added."""

    def __init__(self, offsets: list[float]) -> None:
        super().__init__(0)
        self.offsets = deque(offsets)
        self.base: float | None = None

    def uniform(self, a: float, b: float) -> float:
        now = time.monotonic()
        if self.base is None:
            self.base = math.ceil(now * 10 + 1) / 10
        return self.base + self.offsets.popleft() - now


async def _first_probes(tick: float, offsets: list[float], interval: float = 1.0) -> list[tuple]:
    """(wake-up number, server, grid time, start time) of every server's first
    probe, with first probes placed ``offsets`` after the monitor starts."""
    script = Script()
    script.gate = asyncio.Event()  # hold each probe: only first probes are seen
    monitor = HealthMonitor(
        lambda k, h: None, max_tick=tick, rng=_Offsets(offsets), probe_factory=script.factory
    )
    check = CheckConfig(interval=Duration(interval), timeout=Duration(interval))
    monitor.update({key(n): target(n, check) for n in range(1, len(offsets) + 1)})
    wakes, seen = [0], []
    on_wake, launch = monitor._on_wake, monitor._launch

    def counting_wake() -> None:
        wakes[0] += 1
        on_wake()

    def recording_launch(entry) -> None:
        seen.append((wakes[0], entry.key[1].address, entry.deadline, time.monotonic()))
        launch(entry)

    monitor._on_wake, monitor._launch = counting_wake, recording_launch
    await monitor.start()
    try:
        await script.wait_running(len(offsets))
    finally:
        await monitor.stop()
    return seen


def _groups(seen: list[tuple]) -> list[list[str]]:
    by_wake = defaultdict(set)
    for wake, address, _, _ in seen:
        by_wake[wake].add(address)
    return sorted(map(sorted, by_wake.values()))


async def test_probes_due_in_one_tick_start_in_one_wake_up_on_the_tick() -> None:
    tick = 0.05
    # Due 5, 20 and 45 ms after a tick: all start on the next one; 70 ms: the one after.
    seen = await _first_probes(tick, [0.005, 0.02, 0.045, 0.07])
    assert _groups(seen) == [["10.0.0.1", "10.0.0.2", "10.0.0.3"], ["10.0.0.4"]]
    for _, _, grid, started in seen:
        assert abs(grid / tick - round(grid / tick)) < 1e-6  # the grid sits on ticks
        assert started >= grid  # never early


async def test_without_a_tick_each_probe_wakes_the_loop_itself() -> None:
    seen = await _first_probes(0.0, [0.005, 0.02, 0.045])
    assert len({wake for wake, *_ in seen}) == 3
    assert all(started >= grid for _, _, grid, started in seen)


async def test_a_check_faster_than_ten_ticks_is_not_aligned() -> None:
    seen = await _first_probes(0.05, [0.005, 0.02], interval=0.4)
    assert len({wake for wake, *_ in seen}) == 2


async def test_an_interval_off_the_tick_starts_at_the_next_tick_and_keeps_its_grid() -> None:
    script = Script()
    starts: list[tuple[float, float]] = []
    count = asyncio.Event()
    monitor = HealthMonitor(lambda k, h: None, max_tick=0.05, probe_factory=script.factory)
    check = CheckConfig(interval=Duration(0.52), timeout=Duration(0.1), jitter=Duration(0))
    monitor.update({key(1): target(1, check)})
    launch = monitor._launch

    def recording_launch(entry) -> None:
        starts.append((entry.deadline, time.monotonic()))
        if len(starts) == 3:
            count.set()
        launch(entry)

    monitor._launch = recording_launch
    await monitor.start()
    try:
        async with asyncio.timeout(5):
            await count.wait()
    finally:
        await monitor.stop()
    grids = [grid for grid, _ in starts]
    assert [round(b - a, 6) for a, b in itertools.pairwise(grids)] == [0.52, 0.52]
    for grid, started in starts:
        assert started >= grid
        assert math.ceil(grid / 0.05 - 1e-6) * 0.05 <= started  # waited for its tick


async def test_a_crowded_tick_starts_in_slices() -> None:
    seen = await _first_probes(0.05, [0.005] * 150)
    sizes = sorted(collections.Counter(wake for wake, *_ in seen).values())
    assert sizes == [22, 64, 64]  # the loop runs between slices


def test_the_tick_shrinks_as_the_check_rate_grows() -> None:
    monitor = HealthMonitor(lambda k, h: None, max_tick=0.05)
    second = CheckConfig(interval=Duration(1.0))
    monitor.update({key(n): target(n, second) for n in range(1, 21)})
    assert monitor.tick == 0.05  # 20 checks/s: the longest tick holds 1
    assert all(e.aligned for e in monitor._entries.values())
    monitor.max_tick = 0.2  # 1 s is under 10 ticks of 0.2 s: no server aligns any more
    assert monitor.tick == 0.2 and not any(e.aligned for e in monitor._entries.values())
    monitor.max_tick = 0.05
    many = {(SVC, DestKey(f"10.1.{n >> 8}.{n & 255}", 80)): target(n, second) for n in range(2000)}
    monitor.update(many)
    assert monitor.tick == pytest.approx(0.005)  # 2,000 checks/s: 10 per tick
    fast = CheckConfig(interval=Duration(0.1))
    monitor.update({k: Target(t.address, t.port, fast) for k, t in many.items()})
    assert monitor.tick == 0.0  # 20,000 checks/s: every wake-up is full anyway
    monitor.update({key(1): target(1, CheckConfig(type="none"))})
    assert monitor.tick == 0.05  # nothing to probe


async def _deadlines(results: list[ProbeResult], pushes: int) -> tuple[list[float], RealHealth]:
    """The grid times of a server's first ``pushes`` schedulings (its first probe
    and the ones after each result), its probes scripted by ``results``."""
    script = Script()
    script.results["10.0.0.1"].extend(results)
    check = CheckConfig(
        interval=Duration(30.0),
        timeout=Duration(0.01),
        retry_interval=Duration(0.02),
        rise=1,
        fall=3,
        initial_state="up",
        jitter=Duration(0),
    )
    monitor = HealthMonitor(lambda k, h: None, probe_factory=script.factory)
    monitor.update({key(1): target(1, check)})
    seen: list[float] = []
    enough = asyncio.Event()
    push = monitor._push

    def recording_push(entry, aligned=None) -> None:
        seen.append(entry.deadline)
        if len(seen) == pushes:
            enough.set()
        push(entry, aligned)

    monitor._push = recording_push
    await monitor.start()
    try:
        async with asyncio.timeout(5):
            await enough.wait()
    finally:
        await monitor.stop()
    return seen, monitor.health()[key(1)]


async def test_a_failing_server_is_retried_after_retry_interval_until_it_is_down() -> None:
    # Three failures at a 30 s interval would take a minute; the retries take 40 ms.
    seen, health = await _deadlines([FAIL, FAIL, FAIL], pushes=4)
    steps = [round(b - a, 6) for a, b in itertools.pairwise(seen)]
    assert steps == [0.02, 0.02, 30.0]  # down reached: back to the interval
    assert (health.up, health.consecutive_fail) == (False, 3)


async def test_a_pass_after_a_failure_returns_to_the_interval() -> None:
    ok = ProbeResult(True, "status 200", 0.001)
    seen, health = await _deadlines([FAIL, ok], pushes=3)
    steps = [round(b - a, 6) for a, b in itertools.pairwise(seen)]
    assert steps == [0.02, 30.0]
    assert (health.up, health.consecutive_ok) == (True, 1)


SVC2 = ServiceKey.for_address("tcp", "192.0.2.2", 80)


async def test_servers_of_two_services_with_one_probe_are_probed_once(setup) -> None:
    monitor, script, rec = setup
    first, second = key(1), (SVC2, DestKey("10.0.0.1", 80))
    monitor.update({first: target(1), second: target(1)})
    await rec.wait_for(lambda: len(rec.changes) == 2)  # up after rise: for both at once
    assert {k for k, _ in rec.changes} == {first, second}
    calls = script.calls["10.0.0.1"]
    assert [k for k, _ in rec.results].count(first) == calls  # one probe, two results
    assert [k for k, _ in rec.results].count(second) == calls
    health = monitor.health()
    assert health[first] is health[second]
    assert monitor.shared() == {first: (first, second), second: (first, second)}

    # One leaves: the other keeps the probe and its record.
    monitor.update({second: target(1)})
    assert monitor.health()[second].up and monitor.shared() == {}
    assert len(monitor._entries) == 1 and monitor._entries[second].live
    # A newcomer with the same probe joins the record as it stands.
    monitor.update({second: target(1), first: target(1)})
    assert monitor.health()[first] is monitor.health()[second]
    # A different check is a different probe.
    other = CheckConfig(interval=Duration(0.01), timeout=Duration(0.01), rise=3, fall=2)
    monitor.update({second: target(1), first: target(1, other)})
    assert monitor.shared() == {} and not monitor.health()[first].up


async def test_a_check_on_another_address_is_shared_by_its_probed_address(setup) -> None:
    monitor, _, _ = setup
    # Two real servers whose health shows on one address: one probe.
    check = CheckConfig(
        address="10.0.0.9", port=8080, interval=Duration(0.01), timeout=Duration(0.01)
    )
    a, b = key(1), (SVC2, DestKey("10.0.0.2", 81))
    monitor.update({a: Target("10.0.0.1", 80, check), b: Target("10.0.0.2", 81, check)})
    assert monitor.shared() == {a: (a, b), b: (a, b)}
