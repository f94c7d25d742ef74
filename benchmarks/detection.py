"""Detection latency: kill (or freeze) a real server, time until its pool plan drops it.

Real servers are separate processes on loopback (the server of
benchmarks/checks.py). One HealthMonitor probes them over HTTP; on every
health change the pool is re-planned with ``plan_pool``, as the daemon does,
and the time from the kill to the plan giving that server weight 0 is
recorded. Servers are killed in parallel, each at a random moment of its
probe cycle, then restarted and waited for before the next round.

    flock /tmp/pulsed-bench.lock .venv/bin/python benchmarks/detection.py --mode kill
    flock /tmp/pulsed-bench.lock .venv/bin/python benchmarks/detection.py --mode freeze

``kill`` (SIGKILL): probes fail at once with "connect refused".
``freeze`` (SIGSTOP): the kernel still accepts connections, nothing answers,
so each probe fails only at its timeout. Target for both: p99 within
fall x interval + timeout + 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import structlog

from pulsed.checks.base import Target
from pulsed.checks.config import CheckConfig
from pulsed.checks.monitor import HealthMonitor, RealKey
from pulsed.checks.state import RealHealth
from pulsed.durations import Duration
from pulsed.model import DestKey, ServiceKey
from pulsed.pool_policy import PoolPolicy, RealView, plan_pool

sys.path.insert(0, str(Path(__file__).parent))
from checks import free_ports  # the sibling benchmark

SERVER = Path(__file__).with_name("checks.py")
SERVICE = ServiceKey.for_address("tcp", "192.0.2.1", 80)


def start_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--serve", str(port), "--uvloop"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


class Pool:
    """The planner's view: re-plans on every change and signals weight changes."""

    def __init__(self, keys: list[DestKey]) -> None:
        self.health: dict[DestKey, RealHealth] = {}
        self.weight: dict[DestKey, int] = {k: 0 for k in keys}
        self.events: dict[DestKey, asyncio.Queue[tuple[int, float]]] = {
            k: asyncio.Queue() for k in keys
        }

    def on_change(self, key: RealKey, health: RealHealth) -> None:
        self.health[key[1]] = health
        reals = {k: RealView(weight=10, health=h) for k, h in self.health.items()}
        plan = plan_pool(PoolPolicy(), reals, time.monotonic())
        now = time.monotonic()
        for dest, weight in plan.weights.items():
            if weight != self.weight.get(dest):
                self.weight[dest] = weight
                self.events[dest].put_nowait((weight, now))


async def wait_weight(pool: Pool, dest: DestKey, want_zero: bool, limit: float) -> float:
    async with asyncio.timeout(limit):
        while True:
            weight, at = await pool.events[dest].get()
            if (weight == 0) == want_zero:
                return at


async def trial_loop(
    args: argparse.Namespace, pool: Pool, dest: DestKey, procs: dict, samples: list[float]
) -> None:
    rng = random.Random(dest.port)
    for _ in range(args.rounds):
        await asyncio.sleep(rng.uniform(0, args.interval))  # random phase vs the probe grid
        proc = procs[dest]
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL if args.mode == "kill" else signal.SIGSTOP)
        t1 = await wait_weight(pool, dest, want_zero=True, limit=30)
        samples.append(t1 - t0)
        if args.mode == "kill":
            proc.wait()
            procs[dest] = await asyncio.to_thread(start_server, dest.port)
        else:
            os.kill(proc.pid, signal.SIGCONT)
        await wait_weight(pool, dest, want_zero=False, limit=30)


async def run(args: argparse.Namespace) -> dict:
    ports = free_ports(args.servers)
    dests = [DestKey("127.0.0.1", p) for p in ports]
    procs = {d: start_server(d.port) for d in dests}
    check = CheckConfig(
        type="http",
        interval=Duration(args.interval),
        timeout=Duration(args.timeout),
        rise=1,
        fall=args.fall,
    )
    pool = Pool(dests)
    monitor = HealthMonitor(pool.on_change)
    monitor.update({(SERVICE, d): Target(d.address, d.port, check) for d in dests})
    samples: list[float] = []
    try:
        await monitor.start()
        for d in dests:
            await wait_weight(pool, d, want_zero=False, limit=30)
        await asyncio.gather(*(trial_loop(args, pool, d, procs, samples) for d in dests))
    finally:
        await monitor.stop()
        for proc in procs.values():
            proc.kill()
            proc.wait()
    samples.sort()
    bound = args.fall * args.interval + args.timeout + 0.05

    def pct(q: float) -> float:
        return round(samples[min(len(samples) - 1, int(q * len(samples)))] * 1000, 1)

    return {
        "mode": args.mode,
        "samples": len(samples),
        "interval_s": args.interval,
        "timeout_s": args.timeout,
        "fall": args.fall,
        "target_ms": round(bound * 1000, 1),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "max_ms": round(samples[-1] * 1000, 1),
        "within_target": sum(s <= bound for s in samples),
        "load_avg_1m": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["kill", "freeze"], default="kill")
    parser.add_argument("--servers", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=0.5)
    parser.add_argument("--fall", type=int, default=3)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.uvloop:
        import uvloop

        uvloop.install()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
