"""Failover time: pulsed vs keepalived, two routers and an observer in namespaces (root).

    flock /tmp/pulsed-bench.lock .venv/bin/python benchmarks/failover.py --runs 40

For each implementation (same run, same lab, 100 ms adverts, priorities 200/100):
  crash:    kill -9 the master; time until the backup's kernel has the VIP (netlink
            RTM_NEWADDR seen by `ip monitor` in the backup's namespace) and until the observer
            receives the backup's first gratuitous ARP (AF_PACKET capture on the bridge).
            These depend on where in its 100 ms cycle the master dies; the phase-free figure
            is from the master's last advert on the wire to the VIP: the master-down
            interval (3 x 100 ms + skew 60.9 ms at priority 100) plus the implementation's
            own reaction time.
  heal:     partition the master away (bridge port disabled) until both hold the VIP, heal;
            time until the VIP is gone from the lower-priority router.
  graceful: SIGTERM the master (it sends priority 0); time until the backup has the VIP.
Times are wall-clock differences on one host. Prints a JSON summary and a Markdown table.

    flock /tmp/pulsed-bench.lock .venv/bin/python benchmarks/failover.py load --duration 20

Heartbeat under load: one pulsed router (100 ms adverts) whose main event loop also runs
2,000 TCP probes/s against a loopback server (plus optional CPU per probe and periodic
blocking stalls); the observer timestamps every advert on the wire. Reports the longest and
p99 gap between adverts with the heartbeat on the main loop and on its own thread.

    flock /tmp/pulsed-bench.lock .venv/bin/python benchmarks/failover.py instances --runs 15

Many instances: 20 VRRPv3 instances (VRIDs 51.., one /32 VIP each, 100 ms adverts) on one
router pair, priorities 200/100; kill -9 of the master at a random (seeded) phase; time until
each instance's VIP is in the backup's kernel (`ip monitor address`), and until the last one.
keepalived runs the same 20 instances in the same run, interleaved run by run.

    flock /tmp/pulsed-bench.lock .venv/bin/python benchmarks/failover.py fast --window 600

Fast adverts under load: one instance with 10 ms adverts on both routers, each process also
running 2,000 TCP probes/s on its main loop (the `load` mode's probe loop; the heartbeat has
its own thread). First a window of --window seconds with both alive: false failovers (the
backup becoming master, or any advert of the backup on the wire) and the master's advert
gaps; then --runs kill -9 of the master (restarted in between, it preempts back): time until
the backup has the VIP. `--window 5 --runs 5` runs in under a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import signal
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from lab.ha_pair import VIP, HaPair, Proc, many_vips, netns_exec, sh


class AddrMonitor:
    """`ip monitor address` in a namespace; records when VIP additions arrive."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.added: list[float] = []
        self.deleted: list[float] = []
        # Every address's additions (the instances mode watches one VIP per instance).
        self.added_at: dict[str, list[float]] = {}
        self.proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._event = asyncio.Event()

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            "ip", "-n", self.ns, "monitor", "address", stdout=asyncio.subprocess.PIPE
        )
        self._task = asyncio.create_task(self._read())
        await asyncio.sleep(0.1)  # let it subscribe before anything is measured

    async def _read(self) -> None:
        assert self.proc and self.proc.stdout
        while line := await self.proc.stdout.readline():
            text = line.decode()
            now = time.time()
            m = re.search(r"\binet (\S+)/", text)
            if m and not text.startswith("Deleted"):
                self.added_at.setdefault(m.group(1), []).append(now)
                self._event.set()
            if f"inet {VIP}/" in text:
                (self.deleted if text.startswith("Deleted") else self.added).append(now)
                self._event.set()

    async def first_after(self, t0: float, timeout: float = 5.0, deleted: bool = False) -> float:
        async with asyncio.timeout(timeout):
            while True:
                hits = [t for t in (self.deleted if deleted else self.added) if t >= t0]
                if hits:
                    return hits[0]
                self._event.clear()
                await self._event.wait()

    async def all_added_after(self, addrs: list[str], t0: float, timeout: float = 5.0) -> dict:
        """When each of ``addrs`` was first added at or after ``t0``."""
        async with asyncio.timeout(timeout):
            while True:
                seen = {
                    a: next((t for t in self.added_at.get(a, []) if t >= t0), None) for a in addrs
                }
                if all(t is not None for t in seen.values()):
                    return seen
                self._event.clear()
                await self._event.wait()

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._task:
            self._task.cancel()


def mac_of(lab: HaPair, i: int) -> str:
    out = sh("ip", "-n", lab.routers[i], "-j", "link", "show", lab.ifname(i)).stdout
    return json.loads(out)[0]["address"]


def clear_vips(lab: HaPair) -> None:
    for i, ns in enumerate(lab.routers):
        sh("ip", "-n", ns, "addr", "del", f"{VIP}/24", "dev", lab.ifname(i), check=False)


async def start_pair(lab: HaPair, impl: str) -> list[Proc]:
    clear_vips(lab)
    if impl == "pulsed":
        r1 = await lab.start_pulsed(0, priority=200, garp_count=5, garp_interval="10ms")
        await r1.wait_event(lambda e: e.get("event") == "applied" and e["role"] == "master")
        r2 = await lab.start_pulsed(1, priority=100, garp_count=5, garp_interval="10ms")
        await r2.wait_event(lambda e: e.get("event") == "applied" and e["role"] == "backup")
        procs = [r1, r2]
    else:
        k1 = await lab.start_keepalived(0, priority=200)
        await lab.wait_for(lambda: VIP in lab.vips(0))
        k2 = await lab.start_keepalived(1, priority=100)
        await lab.wait_for(lambda: len(lab.keepalived_pids(1)) == 2)
        procs = [k1, k2]
    await asyncio.sleep(0.6)  # the backup has heard several adverts: steady state
    assert lab.holders() == [0], f"{impl}: VIP holders {lab.holders()} before the failure"
    return procs


async def stop_all(lab: HaPair, procs: list[Proc], impl: str) -> None:
    for i, p in enumerate(procs):
        if impl == "keepalived":
            lab.crash_keepalived(i)
        p.kill(signal.SIGKILL)
        with contextlib.suppress(Exception):
            await p.wait(5)
        lab.procs.remove(p)
    clear_vips(lab)


async def one_run(lab: HaPair, impl: str, graceful: bool, cap: Proc, mon: AddrMonitor) -> dict:
    procs = await start_pair(lab, impl)
    backup_mac = mac_of(lab, 1)
    await asyncio.sleep(0.05 + (hash((impl, time.time())) % 100) / 1000)  # random phase
    t0 = time.time()
    if impl == "pulsed":
        procs[0].kill(signal.SIGTERM if graceful else signal.SIGKILL)
    elif graceful:
        os.kill(lab.keepalived_pids(0)[1], signal.SIGTERM)  # the parent stops its children
    else:
        lab.crash_keepalived(0)
    t_vip = await mon.first_after(t0)
    result = {"vip": t_vip - t0}
    if not graceful:
        # Phase-free: from the dead master's last advert on the wire (the backup's down timer
        # starts there) to the VIP: master-down interval + the implementation's own latency.
        last = [
            e["t"]
            for e in cap.events
            if e.get("event") == "advert" and e["src"] == lab.addr(0) and e["t"] < t0
        ]
        result["silence"] = t_vip - last[-1]
    if not graceful:
        ev = await cap.wait_event(
            lambda e: e.get("event") == "garp" and e["mac"] == backup_mac and e["t"] >= t0
        )
        result["garp"] = ev["t"] - t0
    await stop_all(lab, procs, impl)
    return result


async def heal_run(lab: HaPair, impl: str, mon: AddrMonitor) -> dict:
    """Partition the master away until the backup holds the VIP too, then heal: time until
    the VIP is gone from the backup (one master again)."""
    procs = await start_pair(lab, impl)
    lab.partition(0, cut=True)
    try:
        await mon.first_after(time.time() - 1.0)
        await lab.wait_for(lambda: sorted(lab.holders()) == [0, 1])
        await asyncio.sleep(0.05 + (hash((impl, time.time())) % 100) / 1000)
        t0 = time.time()
    finally:
        lab.partition(0, cut=False)
    t_del = await mon.first_after(t0, deleted=True)
    await lab.wait_for(lambda: lab.holders() == [0])
    await stop_all(lab, procs, impl)
    return {"heal": t_del - t0}


# ---- instances: many VRRP instances on one router pair


def clear_many(lab: HaPair, count: int) -> None:
    for i, ns in enumerate(lab.routers):
        for vip in many_vips(count):
            sh("ip", "-n", ns, "addr", "del", f"{vip}/32", "dev", lab.ifname(i), check=False)


def applied_as(name: str, role: str) -> Callable[[dict], bool]:
    return lambda e: e.get("event") == "applied" and e["instance"] == name and e["role"] == role


async def start_many(lab: HaPair, impl: str, count: int) -> list[Proc]:
    """Router 1 master (priority 200) and router 2 backup (100) of ``count`` instances."""
    clear_many(lab, count)
    vips = many_vips(count)
    if impl == "pulsed":
        conf = [
            lab.instances_config(i, lab.many_instances(i, count, priority=prio,
                                                       garp_count=5, garp_interval="10ms"))
            for i, prio in ((0, 200), (1, 100))
        ]  # fmt: skip
        r1 = await lab.start_pulsed(0, config=conf[0])
        await lab.wait_for(lambda: set(vips) <= set(lab.vips(0)))
        r2 = await lab.start_pulsed(1, config=conf[1])
        for k in range(count):
            await r2.wait_event(applied_as(f"VI_{k + 1}", "backup"))
        procs = [r1, r2]
    else:
        k1 = await lab.start_keepalived(
            0, 200, config=lab.keepalived_instances_config(0, count, 200)
        )
        await lab.wait_for(lambda: set(vips) <= set(lab.vips(0)))
        k2 = await lab.start_keepalived(
            1, 100, config=lab.keepalived_instances_config(1, count, 100)
        )
        await lab.wait_for(lambda: len(lab.keepalived_pids(1)) == 2)
        procs = [k1, k2]
    await asyncio.sleep(1.0)  # the backup has heard several adverts of every instance
    held = [lab.holders(v) for v in vips]
    assert all(h == [0] for h in held), f"{impl}: VIP holders {held} before the failure"
    return procs


async def many_run(
    lab: HaPair, impl: str, count: int, mon: AddrMonitor, rng: random.Random
) -> dict:
    procs = await start_many(lab, impl, count)
    await asyncio.sleep(rng.uniform(0.0, 0.1))  # random phase in the 100 ms cycle
    t0 = time.time()
    if impl == "pulsed":
        procs[0].kill(signal.SIGKILL)
    else:
        lab.crash_keepalived(0)
    seen = await mon.all_added_after(many_vips(count), t0)
    moved = sorted(t - t0 for t in seen.values())
    await stop_all(lab, procs, impl)
    clear_many(lab, count)
    return {"each": moved, "first": moved[0], "last": moved[-1]}


def summarise_ms(values_s: list[float]) -> dict:
    v = [x * 1000 for x in values_s]
    return {
        "n": len(v),
        "p50_ms": round(statistics.median(v), 1),
        "p99_ms": round(pct(v, 99), 1),
        "min_ms": round(min(v), 1),
        "max_ms": round(max(v), 1),
    }


async def instances_bench(args: argparse.Namespace) -> int:
    lab = HaPair().create()
    rng = random.Random(args.seed)
    results: dict[str, dict] = {}
    try:
        mon = AddrMonitor(lab.routers[1])
        await mon.start()
        impls = args.impl.split(",")
        runs: dict[str, list[dict]] = {impl: [] for impl in impls}
        for _ in range(args.runs):  # interleaved: both see the same machine load
            for impl in impls:
                r = await many_run(lab, impl, args.instances, mon, rng)
                print(impl, json.dumps({k: round(r[k] * 1000, 1) for k in ("first", "last")}),
                      file=sys.stderr, flush=True)  # fmt: skip
                runs[impl].append(r)
        await mon.stop()
        for impl, rs in runs.items():
            results[impl] = {
                "instances": args.instances,
                "runs": len(rs),
                "each_instance": summarise_ms([t for r in rs for t in r["each"]]),
                "last_instance": summarise_ms([r["last"] for r in rs]),
                "first_instance": summarise_ms([r["first"] for r in rs]),
            }
    finally:
        await lab.close()
    print(json.dumps(results, indent=2))
    if "pulsed" in results and "keepalived" in results:
        p, k = results["pulsed"], results["keepalived"]
        print(f"\n{args.instances} instances, 100 ms adverts, kill -9 of the master, "
              f"{args.runs} runs each (interleaved)\n")  # fmt: skip
        print("| measurement | pulsed p50 | pulsed p99 | pulsed max | keepalived p50 |"
              " keepalived p99 | keepalived max | ratio p50 | ratio p99 |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|")
        for key, label in [
            ("each_instance", "kill -9 → backup has the instance's VIP (every instance)"),
            ("first_instance", "kill -9 → first instance's VIP on the backup"),
            ("last_instance", "kill -9 → last instance's VIP on the backup"),
        ]:
            a, b = p[key], k[key]
            print(
                f"| {label} | {a['p50_ms']} ms | {a['p99_ms']} ms | {a['max_ms']} ms | "
                f"{b['p50_ms']} ms | {b['p99_ms']} ms | {b['max_ms']} ms | "
                f"{a['p50_ms'] / b['p50_ms']:.2f} | {a['p99_ms'] / b['p99_ms']:.2f} |"
            )
    return 0


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


def summarise(runs: list[dict], key: str) -> dict:
    v = [r[key] * 1000 for r in runs]
    return {
        "n": len(v),
        "p50_ms": round(statistics.median(v), 1),
        "p99_ms": round(pct(v, 99), 1),
        "min_ms": round(min(v), 1),
        "max_ms": round(max(v), 1),
    }


def _burn(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def load_node(conf: str, rate: int, cpu_ms: float, stall_ms: float, duration: float) -> None:
    """Inside the router namespace: a VrrpNode plus a probe-like load on the same main loop."""
    from pulsed.ha.__main__ import load_vrrp_config
    from pulsed.ha.node import VrrpNode

    def on_event(kind: str, name: str, old: str, new: str, prio: int, reason: str) -> None:
        print(json.dumps({"event": "role", "old": old, "new": new, "reason": reason,
                          "t": time.time()}), flush=True)  # fmt: skip

    node = VrrpNode(load_vrrp_config(conf), on_event=on_event)
    await node.start()

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.read(100)
        w.write(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await w.drain()
        w.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    done = errors = 0

    async def probe() -> None:
        nonlocal done, errors
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET / HTTP/1.0\r\n\r\n")
            await r.read(200)
            w.close()
            done += 1
        except OSError:
            errors += 1
        _burn(cpu_ms / 1000)

    print(json.dumps({"event": "ready"}), flush=True)
    loop = asyncio.get_running_loop()
    start = loop.time()
    tick = 0.01
    tasks: set[asyncio.Task[None]] = set()
    next_stall = start + 1.0
    next_report, reported = start + 1.0, 0
    while loop.time() - start < duration:
        if loop.time() >= next_report:  # the load actually run, each second
            print(json.dumps({"event": "rate", "probes": done - reported, "errors": errors}),
                  flush=True)  # fmt: skip
            reported, next_report = done, next_report + 1.0
        for _ in range(round(rate * tick) if rate else 0):  # rate 0: the node alone
            t = asyncio.create_task(probe())
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        if stall_ms and loop.time() >= next_stall:
            _burn(stall_ms / 1000)  # a blocking stretch on the main loop (big reload, GC...)
            next_stall += 1.0
        await asyncio.sleep(tick)
    elapsed = loop.time() - start
    await asyncio.gather(*tasks, return_exceptions=True)
    server.close()
    await node.stop()
    print(json.dumps({"event": "done", "probes_per_s": round(done / elapsed), "errors": errors}))


async def load_bench(args: argparse.Namespace) -> int:
    lab = HaPair(routers=1).create()
    out: list[dict] = []
    try:
        cap = await lab.capture()
        for dedicated in (False, True):
            for cpu_ms, stall_ms in ((0.0, 0.0), (args.cpu_ms, 0.0), (0.0, args.stall_ms)):
                conf = lab.pulsed_config(0, priority=200, dedicated_thread=dedicated)
                proc = await asyncio.create_subprocess_exec(
                    *netns_exec(lab.routers[0], sys.executable, __file__, "_loadnode", conf,
                                str(args.rate), str(cpu_ms), str(stall_ms), str(args.duration)),
                    stdout=asyncio.subprocess.PIPE,
                )  # fmt: skip
                p = Proc("load", lab.routers[0], proc)
                p.start_reader()
                lab.procs.append(p)
                await p.wait_event(lambda e: e.get("event") == "ready")
                mark = len(cap.events)
                done = await p.wait_event(lambda e: e.get("event") == "done", args.duration + 30)
                await p.wait(10)
                lab.procs.remove(p)
                ts = [
                    e["t"]
                    for e in cap.events[mark:]
                    if e.get("event") == "advert" and e["src"] == lab.addr(0) and e["prio"]
                ]
                gaps = [(b - a) * 1000 for a, b in itertools.pairwise(ts)]
                row = {
                    "heartbeat": "own thread" if dedicated else "main loop",
                    "cpu_ms_per_probe": cpu_ms,
                    "stall_ms_per_s": stall_ms,
                    "probes_per_s": done["probes_per_s"],
                    "adverts": len(ts),
                    "gap_p50_ms": round(statistics.median(gaps), 1),
                    "gap_p99_ms": round(pct(gaps, 99), 1),
                    "gap_max_ms": round(max(gaps), 1),
                }
                print(json.dumps(row), file=sys.stderr, flush=True)
                out.append(row)
    finally:
        await lab.close()
    print("| heartbeat | load on the main loop | probes/s done | adverts | gap p50 | gap p99 |"
          " gap max |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in out:
        load = f"{args.rate}/s TCP probes"
        if r["cpu_ms_per_probe"]:
            load += f" + {r['cpu_ms_per_probe']} ms CPU each"
        if r["stall_ms_per_s"]:
            load += f" + a {r['stall_ms_per_s']:g} ms blocking stall each second"
        print(f"| {r['heartbeat']} | {load} | {r['probes_per_s']} | {r['adverts']} | "
              f"{r['gap_p50_ms']} ms | {r['gap_p99_ms']} ms | {r['gap_max_ms']} ms |")  # fmt: skip
    return 0


# ---- fast: 10 ms adverts, one instance, probes in the same process


async def start_loadnode(lab: HaPair, i: int, priority: int, args: argparse.Namespace) -> Proc:
    """Router i: a VrrpNode (``advert_ms`` adverts) with ``rate`` TCP probes/s on its main
    loop, until killed; its stdout carries role and per-second rate events."""
    conf = lab.pulsed_config(i, priority=priority, advert_interval=f"{args.advert_ms}ms",
                             garp_count=5, garp_interval="10ms")  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *netns_exec(lab.routers[i], sys.executable, __file__, "_loadnode", conf,
                    str(args.rate), "0", "0", "1e9"),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    p = Proc(f"load-r{i + 1}", lab.routers[i], proc)
    p.start_reader()
    lab.procs.append(p)
    await p.wait_event(lambda e: e.get("event") == "ready")
    return p


def is_role(role: str):
    return lambda e: e.get("event") == "role" and e["new"] == role


def probe_rate(p: Proc, start: int) -> float:
    rates = [e["probes"] for e in p.events[start:] if e.get("event") == "rate"]
    return statistics.mean(rates) if rates else 0.0


async def fast_bench(args: argparse.Namespace) -> int:
    lab = HaPair().create()
    rng = random.Random(args.seed)
    advert = args.advert_ms / 1000
    # RFC 5798 master-down interval of the backup (priority 100).
    mdi = 3 * advert + (256 - 100) / 256 * advert
    try:
        cap = await lab.capture()
        mon = AddrMonitor(lab.routers[1])
        await mon.start()
        clear_vips(lab)
        r1 = await start_loadnode(lab, 0, 200, args)
        await r1.wait_event(is_role("master"))
        await lab.wait_for(lambda: lab.holders() == [0])
        r2 = await start_loadnode(lab, 1, 100, args)
        await r2.wait_event(is_role("backup"))
        await asyncio.sleep(1.0)
        assert lab.holders() == [0], lab.holders()

        # False failovers: both alive and loaded for the window; the backup must never
        # become master (its role events), nor send an advert (the observer).
        print(f"window: {args.window:g} s", file=sys.stderr, flush=True)
        m_cap, m1, m2 = len(cap.events), len(r1.events), len(r2.events)
        t_start = time.time()
        await asyncio.sleep(args.window)
        window = time.time() - t_start
        seen = cap.events[m_cap:]
        master_ts = [e["t"] for e in seen if e.get("event") == "advert" and e["src"] == lab.addr(0)]
        gaps = [(b - a) * 1000 for a, b in itertools.pairwise(master_ts)]
        false_masters = [e for e in r2.events[m2:] if is_role("master")(e)]
        backup_adverts = sum(
            1 for e in seen if e.get("event") == "advert" and e["src"] == lab.addr(1) and e["prio"]
        )
        master_left = [e for e in r1.events[m1:] if e.get("event") == "role"]
        rates = [probe_rate(r1, m1), probe_rate(r2, m2)]
        window_row = {
            "window_s": round(window, 1),
            "false_failovers": len(false_masters),
            "backup_adverts": backup_adverts,
            "master_transitions": len(master_left),
            "master_adverts": len(master_ts),
            "advert_gap_p50_ms": round(statistics.median(gaps), 2),
            "advert_gap_p99_ms": round(pct(gaps, 99), 2),
            "advert_gap_max_ms": round(max(gaps), 2),
            "probes_per_s_master": round(rates[0]),
            "probes_per_s_backup": round(rates[1]),
            "master_down_interval_ms": round(mdi * 1000, 2),
        }
        print(json.dumps(window_row), file=sys.stderr, flush=True)

        # Failover: kill -9 the master at a random phase, time the VIP on the backup; the
        # master comes back (priority 200 preempts) before the next run.
        crash: list[dict] = []
        skipped = 0
        for _ in range(args.runs):
            await asyncio.sleep(rng.uniform(0.0, advert))
            if lab.holders() != [0]:  # a false failover under way: not a clean start
                skipped += 1
                await lab.wait_for(lambda: lab.holders() == [0])
                await asyncio.sleep(0.2)
            t0 = time.time()
            r1.kill(signal.SIGKILL)
            try:
                t_vip: float | None = await mon.first_after(t0)
            except TimeoutError:  # the backup held the VIP already (it flapped just before)
                skipped += 1
                t_vip = None
            last = [
                e["t"]
                for e in cap.events
                if e.get("event") == "advert" and e["src"] == lab.addr(0) and e["t"] < t0
            ]
            if t_vip is not None:
                crash.append({"vip": t_vip - t0, "silence": t_vip - last[-1]})
                print(json.dumps({k: round(v * 1000, 1) for k, v in crash[-1].items()}),
                      file=sys.stderr, flush=True)  # fmt: skip
            await r1.wait(10)
            lab.procs.remove(r1)
            sh("ip", "-n", lab.routers[0], "addr", "del", f"{VIP}/24", "dev", lab.ifname(0),
               check=False)  # fmt: skip
            mark = len(r2.events)
            r1 = await start_loadnode(lab, 0, 200, args)
            await r1.wait_event(is_role("master"))
            await r2.wait_event(is_role("backup"), start=mark)
            await lab.wait_for(lambda: lab.holders() == [0])
            await asyncio.sleep(0.5)
        await mon.stop()
    finally:
        await lab.close()
    result = {
        "advert_ms": args.advert_ms,
        "rate": args.rate,
        "seed": args.seed,
        "false_failover_window": window_row,
        "crash_runs_skipped": skipped,
        "crash_vip": summarise(crash, "vip"),
        "silence_vip": summarise(crash, "silence"),
    }
    print(json.dumps(result, indent=2))
    w, c, q = window_row, result["crash_vip"], result["silence_vip"]
    print(f"\n{args.advert_ms} ms adverts, one instance, {args.rate} TCP probes/s on the main loop"
          f" of both routers (done: {w['probes_per_s_master']}/s and"
          f" {w['probes_per_s_backup']}/s)\n")  # fmt: skip
    print("| measurement | n | p50 | p99 | max |")
    print("|---|---|---|---|---|")
    print(f"| kill -9 → backup has the VIP | {c['n']} | {c['p50_ms']} ms | {c['p99_ms']} ms | "
          f"{c['max_ms']} ms |")  # fmt: skip
    print(f"| master's last advert → backup has the VIP (MDI {w['master_down_interval_ms']} ms) |"
          f" {q['n']} | {q['p50_ms']} ms | {q['p99_ms']} ms | {q['max_ms']} ms |")  # fmt: skip
    print(f"| master's advert gap over {w['window_s']} s | {w['master_adverts']} |"
          f" {w['advert_gap_p50_ms']} ms | {w['advert_gap_p99_ms']} ms |"
          f" {w['advert_gap_max_ms']} ms |")  # fmt: skip
    print(
        f"\nfalse failovers in {w['window_s']} s (backup became master while the master"
        f" lived): {w['false_failovers']}; backup adverts seen: {w['backup_adverts']};"
        f" kill -9 runs skipped (the backup held the VIP already): {skipped}"
    )
    return 0


async def main() -> int:
    if len(sys.argv) == 7 and sys.argv[1] == "_loadnode":
        conf, rate, cpu, stall, duration = sys.argv[2:]
        await load_node(conf, int(rate), float(cpu), float(stall), float(duration))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "instances":
        ap = argparse.ArgumentParser(prog="failover.py instances")
        ap.add_argument("--instances", type=int, default=20)
        ap.add_argument("--runs", type=int, default=10, help="kill -9 runs per implementation")
        ap.add_argument("--impl", default="pulsed,keepalived")
        ap.add_argument("--seed", type=int, default=1, help="seeds the kill's phase")
        if os.geteuid() != 0:
            print("failover.py needs root (network namespaces)", file=sys.stderr)
            return 2
        return await instances_bench(ap.parse_args(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "fast":
        ap = argparse.ArgumentParser(prog="failover.py fast")
        ap.add_argument("--advert-ms", type=int, default=10)
        ap.add_argument("--rate", type=int, default=2000, help="probes per second per router")
        ap.add_argument("--runs", type=int, default=20, help="kill -9 runs")
        ap.add_argument("--window", type=float, default=10.0,
                        help="seconds of both routers alive, counting false failovers")  # fmt: skip
        ap.add_argument("--seed", type=int, default=1, help="seeds the kill's phase")
        if os.geteuid() != 0:
            print("failover.py needs root (network namespaces)", file=sys.stderr)
            return 2
        return await fast_bench(ap.parse_args(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "load":
        ap = argparse.ArgumentParser(prog="failover.py load")
        ap.add_argument("--rate", type=int, default=2000, help="probes per second")
        ap.add_argument("--cpu-ms", type=float, default=0.3, help="extra CPU per probe")
        ap.add_argument("--stall-ms", type=float, default=250, help="blocking stall per second")
        ap.add_argument("--duration", type=float, default=20)
        if os.geteuid() != 0:
            print("failover.py needs root (network namespaces)", file=sys.stderr)
            return 2
        return await load_bench(ap.parse_args(sys.argv[2:]))
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=40, help="crash runs per implementation")
    ap.add_argument("--graceful-runs", type=int, default=10)
    ap.add_argument("--heal-runs", type=int, default=10)
    ap.add_argument("--impl", default="pulsed,keepalived")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("failover.py needs root (network namespaces)", file=sys.stderr)
        return 2
    lab = HaPair().create()
    results: dict[str, dict] = {}
    try:
        cap = await lab.capture()
        mon = AddrMonitor(lab.routers[1])
        await mon.start()
        for impl in args.impl.split(","):
            crash = [await one_run(lab, impl, False, cap, mon) for _ in range(args.runs)]
            grace = [await one_run(lab, impl, True, cap, mon) for _ in range(args.graceful_runs)]
            heal = [await heal_run(lab, impl, mon) for _ in range(args.heal_runs)]
            results[impl] = {
                "crash_vip": summarise(crash, "vip"),
                "crash_garp": summarise(crash, "garp"),
                "silence_vip": summarise(crash, "silence"),
                "graceful_vip": summarise(grace, "vip"),
                "heal_release": summarise(heal, "heal"),
            }
            print(impl, json.dumps(results[impl]), file=sys.stderr, flush=True)
        await mon.stop()
    finally:
        await lab.close()
    print(json.dumps(results, indent=2))
    if "pulsed" in results and "keepalived" in results:
        p, k = results["pulsed"], results["keepalived"]
        print("\n| measurement | pulsed p50 | pulsed p99 | keepalived p50 | keepalived p99 |"
              " ratio p50 | ratio p99 |")  # fmt: skip
        print("|---|---|---|---|---|---|---|")
        for key, label in [
            ("crash_vip", "kill -9 → backup has the VIP"),
            ("crash_garp", "kill -9 → observer sees first GARP"),
            ("silence_vip", "dead master's last advert → backup has the VIP (MDI 360.9 ms)"),
            ("graceful_vip", "SIGTERM → backup has the VIP"),
            ("heal_release", "partition healed → VIP gone from the lower router"),
        ]:
            a, b = p[key], k[key]
            print(
                f"| {label} | {a['p50_ms']} ms | {a['p99_ms']} ms | {b['p50_ms']} ms | "
                f"{b['p99_ms']} ms | {a['p50_ms'] / b['p50_ms']:.2f} | "
                f"{a['p99_ms'] / b['p99_ms']:.2f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
