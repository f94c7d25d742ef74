"""A stand-in for the daemon's side of exec checks, run as its own process.

The subreaper flag belongs to a whole process, so the leak tests run this
module in a fresh interpreter (``python -m tests.support.exec_leaks SPEC``)
that does what pulsed does: enable the reaper, probe, and at stop shut the
monitor and the reaper down. It prints one JSON line of measurements.

SPEC (JSON): ``commands`` (name -> argv), ``rounds``, ``timeout`` (and
``timeouts``, name -> seconds, for some commands), ``loop``
("asyncio" or "uvloop"), ``subreaper`` (bool), and for the stop phase
``hangers`` (argvs that run until killed), ``fifo`` (where each hanger writes
one line per process it started, so the stop waits on that, not a sleep) and
``ready_lines`` (how many lines to wait for).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from pulsed.checks.base import Target
from pulsed.checks.config import CheckConfig
from pulsed.checks.exec import ExecProbe
from pulsed.checks.monitor import HealthMonitor
from pulsed.checks.reaper import _children, reaper
from pulsed.durations import Duration
from pulsed.model import DestKey, ServiceKey


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _target(
    argv: list[str], timeout: float, address: str = "127.0.0.1", interval: float = 60.0
) -> Target:
    check = CheckConfig(
        type="exec",
        command=tuple(argv),
        timeout=Duration(timeout),
        interval=Duration(interval),
        jitter=Duration(0.0),
    )
    return Target(address, 80, check)


async def _probe_rounds(spec: dict) -> dict:
    results: dict[str, list[list]] = {name: [] for name in spec["commands"]}
    timeouts = spec.get("timeouts", {})
    probes = {
        name: ExecProbe(_target(argv, timeouts.get(name, spec["timeout"])))
        for name, argv in spec["commands"].items()
    }
    for _ in range(spec["rounds"]):
        outcomes = await asyncio.gather(*(p.probe() for p in probes.values()))
        for name, result in zip(probes, outcomes, strict=True):
            results[name].append([result.ok, result.reason, result.category, result.weight_pct])
    await reaper.idle()
    return results


async def _stop_phase(spec: dict) -> dict:
    """Hangers in flight under a HealthMonitor; then stop it as the daemon does."""
    loop = asyncio.get_running_loop()
    # O_RDWR: the FIFO never reports end-of-file between writers.
    fifo = os.open(spec["fifo"], os.O_RDWR | os.O_NONBLOCK)
    lines: list[bytes] = []
    ready = loop.create_future()
    buffer = bytearray()

    def on_line() -> None:
        buffer.extend(os.read(fifo, 4096))
        while b"\n" in buffer:
            line, _, rest = bytes(buffer).partition(b"\n")
            buffer[:] = rest
            lines.append(line)
        if len(lines) >= spec["ready_lines"] and not ready.done():
            ready.set_result(None)

    loop.add_reader(fifo, on_line)
    key = ServiceKey.for_address("tcp", "192.0.2.1", 80)
    targets = {
        # Servers of their own: identical checks of one server would be probed once.
        (key, DestKey(f"10.0.0.{i + 1}", 80)): _target(argv, 30.0, f"10.0.0.{i + 1}")
        for i, argv in enumerate(spec["hangers"])
    }
    monitor = HealthMonitor(lambda *_: None, max_tick=0.0)
    monitor.update(targets)
    await monitor.start()
    await ready
    loop.remove_reader(fifo)
    os.close(fifo)
    live_before = reaper.live
    await monitor.stop()
    await reaper.shutdown()
    return {"live_before_stop": live_before, "started": [x.decode() for x in lines]}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


async def _spare_phase(spec: dict) -> dict:
    """A running check's orphan (``spare["holder"]`` leaves one, says so on the
    FIFO ``ready``, then waits for a line on the FIFO ``release``) outlives
    another check's end, and dies with its own check."""
    loop = asyncio.get_running_loop()
    spare = spec["spare"]
    ready = os.open(spare["ready"], os.O_RDWR | os.O_NONBLOCK)
    said = loop.create_future()
    loop.add_reader(ready, lambda: said.done() or said.set_result(os.read(ready, 100)))
    holder = asyncio.create_task(ExecProbe(_target(spare["holder"], 30.0)).probe())
    orphan = int((await said).split()[0])
    loop.remove_reader(ready)
    os.close(ready)
    other = await ExecProbe(_target(["true"], 5.0)).probe()
    await reaper.idle()
    alive_after_other = _alive(orphan)
    release = os.open(spare["release"], os.O_RDWR)
    os.write(release, b"go\n")
    result = await holder
    os.close(release)
    await reaper.idle()
    return {
        "alive_after_other_check": alive_after_other,
        "alive_after_own_check": _alive(orphan),
        "results": [other.reason, result.reason],
    }


async def main(spec: dict) -> dict:
    if spec.get("subreaper", True):
        assert reaper.enable()
    baseline = {"fds": _fds(), "children": len(_children())}
    out: dict = {"baseline": baseline}
    if spec.get("commands"):
        out["results"] = await _probe_rounds(spec)
        out["after_rounds"] = {"fds": _fds(), "children": len(_children())}
    if spec.get("spare"):
        out["spare"] = await _spare_phase(spec)
    if spec.get("hangers"):
        out["stop"] = await _stop_phase(spec)
        out["after_stop"] = {"fds": _fds(), "children": len(_children())}
    out["killed"] = reaper.killed
    return out


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    if spec.get("loop") == "uvloop":
        import uvloop

        result = uvloop.run(main(spec))
    else:
        result = asyncio.run(main(spec))
    print(json.dumps(result))
