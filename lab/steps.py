"""The lab's steps, each a function of a running stand that returns what it measured.

Each step prints live progress through the stand's reporter and returns a
``StepResult`` whose figures the driver prints, the benchmark records, and the
end-to-end tests assert on. The steps run in order on one stand (each starts
from where the previous one left it): balancing, failure, recovery, drain,
reload, failover; ``throughput`` is a benchmark, run only when asked.
"""

from __future__ import annotations

import itertools
import re
import shutil
import signal
import time
from dataclasses import dataclass, field

from lab import router_config
from lab.loadgen import Outcome, Summary, summarize
from lab.netns import LabError, run
from lab.stand import BACKUP, MASTER, RUNTIME, Stand
from lab.topology import CLIENT, VIP
from lab.watch import has_address


@dataclass
class StepResult:
    name: str
    summary: Summary
    figures: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"step": self.name, "load": self.summary.as_dict(), **self.figures}


def balancing(stand: Stand, seconds: float = 5.0) -> StepResult:
    """Step 1: requests spread over the real servers as their weights say."""
    say = stand.say
    say.heading("Step 1/5  Balancing: the client fetches the VIP, a new connection each time")
    shares = stand.expected_shares()
    weights = ", ".join(f"{n} {stand.weights[a]}" for n, a in sorted(stand.servers.items()))
    say.info(
        f"scheduler wrr, weights {weights}: expect "
        + ", ".join(f"{n} {100 * s:.0f}%" for n, s in sorted(shares.items()))
    )
    thread = stand.load()
    t0 = time.monotonic()
    stand.hold(seconds)
    s = summarize(stand.stop_load(thread), since=t0)
    say.result(f"{stand.spread_text(s)} at {s.rate:.0f} req/s")
    return StepResult(
        "balancing",
        s,
        {"expected_share": shares, "share": {n: s.share(n) for n in stand.servers}},
    )


def throughput(stand: Stand, seconds: float = 5.0, concurrency: int = 32) -> StepResult:
    """Flat out: the request rate through the VIP (a benchmark, not one of the steps)."""
    stand.say.heading(f"Throughput: {concurrency} clients flat out for {seconds:.0f}s")
    thread = stand.load(concurrency=concurrency, flat_out=True)
    t0 = time.monotonic()
    stand.hold(seconds)
    s = summarize(stand.stop_load(thread), since=t0)
    stand.say.result(
        f"lab/loadgen.py: {s.rate:.0f} req/s (new connection each), p50"
        f" {s.latency_p50 * 1000:.1f} ms, p99 {s.latency_p99 * 1000:.1f} ms, failed {s.failed}"
    )
    figures: dict = {"rate": s.rate}
    # wrk, when installed, for a figure that does not depend on the lab's own generator.
    if shutil.which("wrk"):
        for label, extra in (("wrk_close", ["-H", "Connection: close"]), ("wrk_keepalive", [])):
            argv = ["wrk", "-t2", f"-c{concurrency}", f"-d{seconds:.0f}s", *extra]
            proc = run([*argv, f"http://{VIP}/"], ns=CLIENT, check=False)
            m = re.search(r"Requests/sec:\s+([\d.]+)", proc.stdout)
            errors = re.search(r"Socket errors: (.*)|Non-2xx.*", proc.stdout)
            figures[label] = float(m.group(1)) if m else None
            stand.say.result(
                f"$ {' '.join(argv)} http://{VIP}/ -> "
                f"{figures[label] or '?'} req/s{'; ' + errors.group(0) if errors else ''}"
            )
    return StepResult("throughput", s, figures)


def failure(stand: Stand, victim: str = "rs1", after: float = 3.0) -> StepResult:
    """Step 2: a real server dies under load; pulsed takes it out of the pool."""
    say = stand.say
    address = stand.servers[victim]
    say.heading(f"Step 2/5  Failure: kill {victim}'s HTTP server under load")
    thread = stand.load()
    stand.hold(1.0)
    killed_at = time.monotonic()
    stand.kill(victim, signal.SIGKILL)
    say.info(f"killed {victim} (kill -9); waiting for pulsed to take it out of the pool")
    detected_at = stand.table.wait_for(
        lambda w: w.get(address, 0) == 0, timeout=30, what=f"{victim} to reach weight 0"
    )
    detection = detected_at - killed_at
    say.info(f"detected after {detection * 1000:.0f} ms: {stand.weights_text()}")
    stand.hold(after)
    outcomes = stand.stop_load(thread)
    before = summarize(outcomes, killed_at, detected_at)
    after_s = summarize(outcomes, since=detected_at)
    say.result(
        f"time to detection {detection * 1000:.0f} ms; {before.failed} request(s) failed"
        f" before detection, {after_s.failed} after; after detection"
        f" {after_s.by_server.get(victim, 0)} went to {victim}"
    )
    return StepResult(
        "failure",
        after_s,
        {
            "detection_ms": detection * 1000,
            "failed_before_detection": before.failed,
            "failed_after_detection": after_s.failed,
            "to_victim_after_detection": after_s.by_server.get(victim, 0),
        },
    )


def recovery(stand: Stand, victim: str = "rs1", after: float = 3.0) -> StepResult:
    """Step 3: the dead server comes back; pulsed returns it to the pool with a slow start."""
    say = stand.say
    address = stand.servers[victim]
    full = stand.weights[address]
    say.heading(f"Step 3/5  Recovery: bring {victim} back")
    thread = stand.load()
    started_at = time.monotonic()
    stand.start_server(stand.server_namespace(victim))
    serving_at = time.monotonic()
    say.info(
        f"{victim} serves again ({(serving_at - started_at) * 1000:.0f} ms to start);"
        " pulsed must see it pass its checks, then ramp it up"
    )
    up_at = stand.table.wait_for(
        lambda w: w.get(address, 0) > 0, timeout=30, what=f"{victim} back in the pool"
    )
    say.info(
        f"back in the pool {(up_at - serving_at) * 1000:.0f} ms after it could serve:"
        f" {stand.weights_text()}"
    )
    ramp, full_at = _follow_ramp(stand, victim, up_at, full)
    say.info(f"full weight after {(full_at - up_at) * 1000:.0f} ms of slow start")
    t_full = time.monotonic()
    stand.hold(after)
    outcomes = stand.stop_load(thread)
    during = summarize(outcomes, started_at)
    balanced = summarize(outcomes, since=t_full)
    say.result(
        f"balanced again: {stand.spread_text(balanced)}; {during.failed} failed during the step"
    )
    return StepResult(
        "recovery",
        during,
        {
            "back_in_pool_ms": (up_at - serving_at) * 1000,
            "slow_start_ms": (full_at - up_at) * 1000,
            "ramp": ramp,
            "share_after": {n: balanced.share(n) for n in stand.servers},
            "expected_share": stand.expected_shares(),
        },
    )


def _follow_ramp(stand: Stand, victim: str, up_at: float, full: int) -> tuple[list[int], float]:
    """Print each weight ``victim`` takes from ``up_at`` on until it reaches ``full``:
    (the weights seen, when it was full)."""
    address = stand.servers[victim]
    ramp: list[int] = []
    shown = 0
    deadline = time.monotonic() + 30
    while True:
        changes = stand.table.changes_since(up_at)
        for at, weights in changes[shown:]:
            w = weights.get(address, 0)
            stand.say.info(f"  +{(at - up_at) * 1000:5.0f} ms  {victim} weight {w}")
            ramp.append(w)
            if w >= full:
                return ramp, at
        shown = len(changes)
        if time.monotonic() > deadline:
            raise LabError(f"{victim} never reached its full weight {full}")
        time.sleep(0.1)


def drain(stand: Stand, victim: str = "rs2", seconds: float = 2.0) -> StepResult:
    """Step 4a: an operator drains a server and enables it again; no request may fail."""
    say = stand.say
    address = stand.servers[victim]
    say.heading("Step 4/5  Drain and reload, under load: no request may fail")
    if not stand.admin_cli:
        say.info("skipped the drain: this pulsed has no admin CLI (pulsed drain) yet")
        return StepResult("drain", Summary(), {"skipped": True})
    thread = stand.load()
    t0 = time.monotonic()
    stand.hold(1.0)
    say.info(f"$ pulsed drain web/{address}")
    called = time.monotonic()
    stand.admin("drain", f"web/{address}")
    say.info(f"(the command returned after {time.monotonic() - called:.1f}s)")
    drained_at = stand.table.wait_for(
        lambda w: w.get(address, -1) == 0, timeout=15, what=f"{victim} drained to weight 0"
    )
    say.info(f"drained: {stand.weights_text()}")
    stand.hold(seconds)
    enable_at = time.monotonic()
    try:
        for line in stand.admin("status").rstrip().splitlines():
            say.info(f"  {line}")
    except LabError as exc:
        say.info(f"(pulsed status: {exc})")
    say.info(f"$ pulsed enable web/{address}")
    stand.admin("enable", f"web/{address}")
    stand.table.wait_for(
        lambda w: w.get(address, 0) > 0, timeout=15, what=f"{victim} enabled again"
    )
    stand.hold(1.0)
    outcomes = stand.stop_load(thread)
    s = summarize(outcomes, since=t0)
    while_drained = summarize(outcomes, drained_at, enable_at)
    say.result(
        f"{s.failed} of {s.total} requests failed; while drained"
        f" {while_drained.by_server.get(victim, 0)} went to {victim}"
    )
    return StepResult(
        "drain",
        s,
        {"to_drained": while_drained.by_server.get(victim, 0), "failed": s.failed},
    )


def reload(
    stand: Stand, server: str = "rs2", new_weight: int = 3, seconds: float = 3.0
) -> StepResult:
    """Step 4b: a weight edited in the config and SIGHUP, under load; no request may fail."""
    say = stand.say
    address = stand.servers[server]
    old_weight = stand.weights[address]
    edited = router_config.with_weight(
        stand.config.read_text(), address, old_weight, new_weight, stand.config
    )
    thread = stand.load()
    t0 = time.monotonic()
    stand.hold(1.0)
    stand.config.write_text(edited)
    say.info(
        f"edited {stand.config}: {server} weight {old_weight} -> {new_weight}; $ kill -HUP <pulsed>"
    )
    hup_at = time.monotonic()
    stand.processes.send_signal(MASTER, signal.SIGHUP)
    applied_at = stand.table.wait_for(
        lambda w: w.get(address) == new_weight, timeout=15, what="the reload to apply"
    )
    stand.weights[address] = new_weight
    say.info(f"reloaded in {(applied_at - hup_at) * 1000:.0f} ms: {stand.weights_text()}")
    stand.hold(seconds)
    outcomes = stand.stop_load(thread)
    s = summarize(outcomes, since=t0)
    after = summarize(outcomes, since=applied_at)
    say.result(
        f"{s.failed} of {s.total} requests failed across the reload;"
        f" new spread {stand.spread_text(after)}"
    )
    return StepResult(
        "reload",
        s,
        {
            "reload_ms": (applied_at - hup_at) * 1000,
            "failed": s.failed,
            "share_after": {n: after.share(n) for n in stand.servers},
            "expected_share": stand.expected_shares(),
        },
    )


def failover(stand: Stand, after: float = 3.0) -> StepResult:
    """Step 5: a warm backup router takes the VIP when the master dies."""
    say = stand.say
    say.heading("Step 5/5  Failover: a second router takes over when the master dies")
    if not stand.vrrp:
        say.info("skipped: this pulsed has no VRRP yet")
        return StepResult("failover", Summary(), {"skipped": True})
    backup_config = RUNTIME / "router2.toml"
    backup_config.write_text(router_config.backup_router(stand.config.read_text()))
    backup_table = stand.watch_table(BACKUP)
    stand.start_pulsed(BACKUP, backup_config)
    say.info(f"pulsed on plab-router2 with priority 100 ({backup_config})")
    stand.wait_table(
        backup_table,
        stand.fully_programmed,
        timeout=90,
        what="the backup router to program both real servers",
        router=BACKUP,
    )
    if has_address(BACKUP, VIP):
        raise LabError("plab-router2 took the VIP while the master was alive")
    say.info(
        f"backup is warm (IPVS programmed: {stand.weights_text(backup_table.current)})"
        " and holds no VIP"
    )
    vip_watch = stand.watch_vip(BACKUP)
    held = stand.load(keepalive=True, rate=20, quiet=True)
    thread = stand.load()
    stand.hold(2.0)
    # A crash, as when the machine loses power: the master vanishes from the network
    # (links down) and its pulsed dies (kill -9). kill -9 alone would leave the VIP
    # on the dead router's interface, still answering.
    # Timed from when the links are down: starting a process costs a good part of a
    # second under the VM's emulation, and the cut happens at the end of it.
    stand.topo.router_links_down(MASTER)
    killed_at = time.monotonic()
    stand.kill(MASTER, signal.SIGKILL)
    say.info("pulled the master's cables (links down) and killed its pulsed (kill -9)")
    vip_at = vip_watch.wait_present(timeout=30, after=killed_at)
    away = vip_at - killed_at
    say.info(f"plab-router2 holds the VIP after {away * 1000:.0f} ms")
    stand.hold(after)
    outcomes = stand.stop_load(thread)
    held_outcomes = stand.stop_load(held)
    s = summarize(outcomes, since=killed_at - 2.0)
    gap = _largest_gap(outcomes, killed_at - 2.0)
    after_vip = summarize(outcomes, since=vip_at)
    # The last second of requests issued (by start time: the list is in completion order).
    last_start = max((o.start for o in outcomes), default=0.0)
    settled = summarize(outcomes, since=last_start - 1.0) if outcomes else Summary()
    failed_at = [round((o.start - killed_at) * 1000) for o in outcomes if not o.ok]
    held_s = summarize(held_outcomes)
    survived = held_s.failed == 0 and held.gen.connects == 1
    say.result(
        f"VIP away {away * 1000:.0f} ms; longest wait between answers {gap * 1000:.0f} ms;"
        f" {s.failed} of {s.total} requests failed {dict(s.errors) or ''};"
        " the long-lived connection"
        f" {'survived' if survived else 'broke'}"
        f" ({held_s.ok} answers, {held.gen.connects} connection(s))"
    )
    return StepResult(
        "failover",
        s,
        {
            "vip_away_ms": away * 1000,
            "largest_gap_ms": gap * 1000,
            "failed": s.failed,
            "failed_after_vip_moved": after_vip.failed,
            "answered_after_vip_moved": after_vip.ok,
            "failed_in_last_second": settled.failed,
            "failures_started_at_ms": failed_at[-20:],
            "held_connection_survived": survived,
            "held_connection_failures": held_s.failed,
            "held_connection_connects": held.gen.connects,
        },
    )


def _largest_gap(outcomes: list[Outcome], since: float) -> float:
    """The longest time without any successful answer, after ``since``."""
    ends = sorted(o.end for o in outcomes if o.ok and o.end >= since)
    if len(ends) < 2:
        return 0.0
    return max(b - a for a, b in itertools.pairwise(ends))
