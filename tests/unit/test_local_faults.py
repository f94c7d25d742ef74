"""Faults on the router are not failures of the servers (issue 12, part 3).

A probe that fails for a local reason (descriptors, memory, a sandbox, a
stalled engine) is recorded as a local error: counted, shown in /status and
/metrics, and it moves no rise/fall counter, no up/down and no weight.
"""

from __future__ import annotations

import asyncio
import errno
import json
import resource
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pulsed.checks.base import (
    LOCAL_FAULTS,
    ProbeResult,
    Target,
    error_result,
    local_error_result,
    local_fault,
    timeout_result,
)
from pulsed.checks.config import CheckConfig
from pulsed.checks.monitor import HealthMonitor
from pulsed.checks.sockio import STALL_NOISE, StallMeter
from pulsed.checks.state import apply_result, initial_health, note_local_error
from pulsed.durations import Duration
from pulsed.limits import (
    BASE_RESERVE,
    FDS_PER_PROBE,
    MIN_API_CONNECTIONS,
    api_connection_budget,
    budget_problem,
    nofile_needed,
    probe_reserve,
    wanted_soft_limit,
)
from pulsed.metrics import ActivityRecorder, MetricsRenderer, attach_recorder
from tests.unit.standin import stand_in
from tests.unit.standin import status as build_status

OK50 = ProbeResult(True, "status 200", 0.001, "ok", 50)
REFUSED = ProbeResult(False, "connect refused", 0.001, "refused")


# --- classification ------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "label"),
    [
        (errno.EMFILE, "emfile"),
        (errno.ENFILE, "enfile"),
        (errno.ENOBUFS, "enobufs"),
        (errno.ENOMEM, "enomem"),
        (errno.EPERM, "eperm"),
        (errno.EACCES, "eacces"),
        (errno.EADDRNOTAVAIL, "eaddrnotavail"),
        (errno.EAGAIN, "eagain"),
    ],
)
def test_router_errnos_are_local(code, label):
    exc = OSError(code, "x")
    assert local_fault(exc) == label
    result = error_result(exc, 0.001)
    assert (result.ok, result.category, result.fault) == (False, "local", label)
    assert errno.errorcode[code] in result.reason and result.reason.startswith("local error:")


def test_memory_error_is_local():
    assert local_fault(MemoryError()) == "memory"
    assert local_error_result(MemoryError(), 0.0).fault == "memory"


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
        ConnectionResetError(errno.ECONNRESET, "reset"),
        OSError(errno.EHOSTUNREACH, "no route"),
        OSError(errno.ENETUNREACH, "no route"),
        OSError(errno.ETIMEDOUT, "timed out"),
        # ssl.SSLError is an OSError whose errno is an SSL code: 1 is
        # SSL_ERROR_SSL, which must not read as EPERM.
        ssl.SSLError(1, "wrong version number"),
        socket.gaierror(socket.EAI_NONAME, "unknown"),
        ValueError("bug"),
    ],
)
def test_server_side_errors_are_not_local(exc):
    assert local_fault(exc) is None
    assert error_result(exc, 0.001).category != "local"


def test_every_label_is_listed():
    for code in (errno.EMFILE, errno.ENOBUFS, errno.EPERM):
        assert local_fault(OSError(code, "x")) in LOCAL_FAULTS
    assert {"memory", "socket", "saturated"} <= set(LOCAL_FAULTS)


# --- the pure health record -------------------------------------------------------


verdicts = st.lists(st.sampled_from(["ok", "fail", "local"]), max_size=40)


@given(verdicts, st.integers(1, 4), st.integers(1, 4))
def test_local_results_move_nothing(sequence, rise, fall):
    """Health with local errors interleaved equals health without them, but for
    the local-error record."""
    local = error_result(OSError(errno.EMFILE, "Too many open files"), 0.0)
    with_local = without = initial_health(True, 0.0)
    for i, verdict in enumerate(sequence):
        if verdict == "local":
            with_local = note_local_error(with_local, local, float(i))
            continue
        result = OK50 if verdict == "ok" else REFUSED
        with_local = apply_result(with_local, result, rise, fall, float(i), float(i))
        without = apply_result(without, result, rise, fall, float(i), float(i))
    assert with_local.local_errors == sequence.count("local")
    forgotten = replace(with_local, local_errors=0, local_error=None, local_error_at=None)
    assert forgotten == without


# --- the monitor ---------------------------------------------------------------


SCRIPT_CHECK = CheckConfig(
    type="tcp", interval=Duration(0.01), timeout=Duration(0.01), rise=1, fall=1
)


class ScriptedProbe:
    """Returns the results of ``script`` in turn, then ``then`` forever; or raises
    them when they are exceptions."""

    def __init__(self, script, then) -> None:
        self.script = list(script)
        self.then = then

    async def probe(self) -> ProbeResult:
        item = self.script.pop(0) if self.script else self.then
        if isinstance(item, BaseException):
            raise item
        if callable(item):
            return item()
        return item


class StartRaises:
    """An engine probe whose start() raises (socket() refused before any exchange)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.first = True

    def start(self, engine, done, token=None):
        if self.first:
            self.first = False
            engine._loop.call_soon(done, token, OK50)

            class _Handle:
                def cancel(self) -> None:
                    pass

            return _Handle()
        raise self.exc

    async def probe(self) -> ProbeResult:
        raise AssertionError("engine probes are started, not awaited")


async def run_monitor(daemon_key, probe, results_wanted: int):
    """Run one server with ``probe`` until ``results_wanted`` results came; return
    (monitor, health changes, results)."""
    changes, results = [], []
    enough = asyncio.Event()

    def on_result(key, result):
        results.append(result)
        if len(results) >= results_wanted:
            enough.set()

    monitor = HealthMonitor(
        lambda k, h: changes.append(h),
        on_result=on_result,
        max_tick=0.0,
        probe_factory=lambda target: probe,
    )
    monitor.update({daemon_key: Target("127.0.0.1", 80, SCRIPT_CHECK)})
    await monitor.start()
    try:
        async with asyncio.timeout(20):
            await enough.wait()
    finally:
        await monitor.stop()
    return monitor, changes, results


def _snapshot_with(tmp_path):
    """A daemon-shaped snapshot of one service with one real, and that real's key."""
    daemon = stand_in(tmp_path, services=1, reals=1)
    key = next(iter(daemon.monitor.health()))
    return daemon, key


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.EMFILE, "Too many open files"),
        OSError(errno.ENOBUFS, "No buffer space available"),
        OSError(errno.EPERM, "Operation not permitted"),
        MemoryError(),
    ],
)
async def test_a_probe_that_raises_a_local_error_keeps_the_server(tmp_path, capsys, exc):
    _daemon, key = _snapshot_with(tmp_path)
    probe = ScriptedProbe([OK50], exc)
    monitor, changes, results = await run_monitor(key, probe, 8)
    # Up once (the first pass), never down, weight report kept.
    assert [h.up for h in changes] == [True]
    health = monitor.health()[key]
    assert health.up and health.weight_pct == 50
    assert health.consecutive_fail == 0 and health.consecutive_ok == 1
    local = [r for r in results if r.category == "local"]
    assert len(local) >= 7
    assert health.local_errors == len(local)
    assert health.local_error.startswith("local error:")
    faults = monitor.local_faults()
    assert faults.totals[local_fault(exc)] == len(local)
    assert faults.last_key == key
    # Logged once (rate-limited), one line, no traceback.
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    logged = [line for line in lines if line["event"] == "probe.local_error"]
    assert len(logged) == 1 and logged[0]["fault"] == local_fault(exc)
    assert not any("exception" in line or "crashed" in line["event"] for line in lines)


async def test_an_engine_probe_whose_start_raises_emfile_keeps_the_server(tmp_path):
    _daemon, key = _snapshot_with(tmp_path)
    monitor, changes, _results = await run_monitor(
        key, StartRaises(OSError(errno.EMFILE, "Too many open files")), 6
    )
    assert [h.up for h in changes] == [True]
    assert monitor.health()[key].up
    assert monitor.local_faults().totals["emfile"] >= 5


async def test_local_errors_show_in_status_and_metrics(tmp_path):
    daemon, key = _snapshot_with(tmp_path)
    probe = ScriptedProbe([OK50], OSError(errno.EMFILE, "Too many open files"))
    monitor, _, results = await run_monitor(key, probe, 5)
    n_local = sum(r.category == "local" for r in results)
    daemon.monitor = monitor
    recorder = ActivityRecorder()
    attach_recorder(daemon, recorder)
    for result in results:
        recorder.on_probe(key, result)

    doc = build_status(daemon)
    real = doc["services"][0]["reals"][0]
    assert real["health"] == "up"
    assert real["local_errors"] == n_local
    assert "too many open files (EMFILE)" in real["last_local_error"]
    assert real["last_local_error_at"] is not None
    assert "latest probe unknown" in real["reason"]
    probes = doc["probes"]
    assert probes["local_errors"] == n_local
    assert probes["local_errors_by_reason"] == {"emfile": n_local}
    assert probes["last_local_error_server"] == "tcp:192.0.2.1:8000/10.0.0.1:80"
    json.dumps(doc)

    text = b"".join(MetricsRenderer(daemon.snapshot, recorder).chunks()).decode()
    assert f'pulsed_probe_local_errors_total{{reason="emfile"}} {n_local}\n' in text
    assert 'pulsed_probe_local_errors_total{reason="saturated"} 0\n' in text
    assert (
        'pulsed_real_probe_results_total{service="svc0",server="10.0.0.1:80",'
        f'result="local_error"}} {n_local}\n' in text
    )
    # Local errors stay out of the latency histogram: only the one real probe is in it.
    assert 'pulsed_real_probe_duration_seconds_count{service="svc0",server="10.0.0.1:80"} 1\n' in (
        text
    )


async def test_a_stalled_loop_makes_a_timeout_local(tmp_path):
    """A probe whose timeout fired because the router's loop was blocked is
    not the server's failure."""
    _daemon, key = _snapshot_with(tmp_path)
    timeout = float(SCRIPT_CHECK.timeout)

    def stalled_timeout() -> ProbeResult:
        time.sleep(timeout * 20)  # a blocking call on the router's loop
        return timeout_result(timeout, timeout * 20)

    probe = ScriptedProbe([OK50], stalled_timeout)
    monitor, changes, results = await run_monitor(key, probe, 4)
    assert [h.up for h in changes] == [True]
    assert monitor.health()[key].up
    assert all(r.fault == "saturated" for r in results[1:])
    assert monitor.local_faults().totals["saturated"] == len(results) - 1
    assert "router stalled" in results[1].reason


async def test_a_timeout_of_an_attentive_router_still_counts(tmp_path):
    """The stall rule must not hide a server that really does not answer."""
    _daemon, key = _snapshot_with(tmp_path)
    timeout = float(SCRIPT_CHECK.timeout)
    probe = ScriptedProbe([OK50], timeout_result(timeout, timeout))
    monitor, changes, _ = await run_monitor(key, probe, 3)
    assert [h.up for h in changes] == [True, False]
    assert monitor.local_faults().total == 0


# --- the stall meter ------------------------------------------------------------


def test_stall_meter_merges_and_measures():
    meter = StallMeter(None, lambda: False)  # note() and lost() need no loop
    meter.note(1.0, 1.001)  # jitter: not a stall
    assert not meter.stalls
    meter.note(1.0, 3.0)
    meter.note(2.5, 3.0)  # the same stall seen by a second timer: one interval
    meter.note(0.5, 3.2)
    assert list(meter.stalls) == [(0.5, 3.2)]
    meter.note(5.0, 5.5)
    assert meter.lost(0.0, 10.0) == pytest.approx(2.7 + 0.5)
    assert meter.lost(3.0, 5.2) == pytest.approx(0.2 + 0.2)
    assert meter.lost(3.3, 4.9) == 0.0


@given(
    st.lists(
        st.tuples(st.floats(0, 5), st.floats(0, 3)),  # (time since the last note, lateness)
        max_size=30,
    ),
    st.floats(0, 100),
    st.floats(0, 100),
)
def test_stall_meter_measures_the_union_of_stalls(notes, a, b):
    """lost(a, b) is the length of [a, b] covered by the noted stalls, each
    counted once however many timers saw it (notes come in the order they ran)."""
    meter = StallMeter(None, lambda: False, keep=64)
    ran = 0.0
    kept = []
    for gap, lateness in notes:
        ran += gap
        due = ran - lateness
        meter.note(due, ran)
        if ran - due > STALL_NOISE:  # jitter is not a stall
            kept.append((due, ran))
    start, end = min(a, b), max(a, b)
    # Brute force: merge the intervals, then intersect with [start, end].
    merged: list[list[float]] = []
    for first, last in sorted(kept):
        if merged and first <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    expected = sum(max(0.0, min(last, end) - max(first, start)) for first, last in merged)
    assert meter.lost(start, end) == pytest.approx(expected, abs=1e-9)


def test_stall_meter_that_forgot_counts_the_unknown_as_lost():
    meter = StallMeter(None, lambda: False, keep=2)
    for start in (1.0, 2.0, 3.0):
        meter.note(start, start + 0.5)
    # (1.0, 1.5) was forgotten: from 0 to 2.0 nothing is known, count it lost.
    assert meter.lost(0.0, 4.0) == pytest.approx(2.0 + 0.5 + 0.5)


# --- descriptor budget ------------------------------------------------------------


def test_probe_reserve_follows_the_servers_up_to_max_in_flight():
    assert probe_reserve(0) == BASE_RESERVE
    assert probe_reserve(10) == BASE_RESERVE + 10 * FDS_PER_PROBE
    assert probe_reserve(100_000, max_in_flight=2000) == BASE_RESERVE + 2000 * FDS_PER_PROBE


def test_api_budget_is_what_the_probes_leave():
    assert api_connection_budget(1024, 2) == 1024 - BASE_RESERVE - 2 * FDS_PER_PROBE
    assert api_connection_budget(100, 5000) == 0
    assert api_connection_budget(resource.RLIM_INFINITY, 2) == api_connection_budget(1 << 20, 2)
    assert nofile_needed(2, 1000) == probe_reserve(2) + 1000
    for soft in (64, 1024, 65536):
        for n in (0, 2, 500, 10_000):
            budget = api_connection_budget(soft, n)
            assert budget >= 0 and budget + probe_reserve(n) >= soft


def test_budget_problem_is_one_line():
    assert budget_problem(65536, 100) is None
    problem = budget_problem(1024, 600)
    assert problem is not None and "\n" not in problem
    needed = nofile_needed(600, MIN_API_CONNECTIONS)
    assert f"at least {needed}" in problem
    assert api_connection_budget(needed, 600) == MIN_API_CONNECTIONS


def test_wanted_soft_limit():
    inf = resource.RLIM_INFINITY
    assert wanted_soft_limit(1024, 524288) == 524288
    assert wanted_soft_limit(1024, 4096) == 4096
    assert wanted_soft_limit(1024, inf, cap=1 << 20) == 1 << 20
    assert wanted_soft_limit(8192, 4096) == 8192  # never lowered
    assert wanted_soft_limit(inf, inf) == inf


_RAISE = """
import json, resource
from pulsed.limits import raise_nofile_limit
resource.setrlimit(resource.RLIMIT_NOFILE, (256, {hard}))
got = raise_nofile_limit()
print(json.dumps([got.soft, got.hard, got.raised_from, got.problem,
                  resource.getrlimit(resource.RLIMIT_NOFILE)[0]]))
"""


def test_raise_nofile_limit_raises_the_soft_limit_to_the_hard_one():
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    hard = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    out = subprocess.run(
        [sys.executable, "-c", _RAISE.format(hard=hard)],
        capture_output=True,
        text=True,
        check=True,
    )
    soft, got_hard, raised_from, problem, actual = json.loads(out.stdout)
    assert (soft, got_hard, raised_from, problem, actual) == (hard, hard, 256, None, hard)
