"""The ECMP lab's steps: spread, a director's crash and pulled cable, its return, a drain, wlc.

Each step runs short requests (a new connection each, so the upstream
router's hash spreads them) and holds long-lived connections open
(lab/held.py), then does one thing to a director and measures, from
outside pulsed: when the upstream router's route changed, how many short
requests failed, and which held connections broke, among those whose flow
went through the director concerned and those the change of paths moved
(which director a flow takes is asked of the upstream router's hash before
and after). ``scenario`` runs them in order and ``verdicts`` checks what
the lab promises; tests/kernel/test_ecmp_lab.py asserts the same figures.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from lab import ecmp_topology as topo
from lab.ecmp_stand import ALL_HOPS, EcmpStand
from lab.ecmp_topology import DIRECTORS
from lab.held import Held
from lab.loadgen import summarize
from lab.steps import StepResult

HELD = 100  # long-lived connections per step: one reset is 1%
SETTLE = 3.0  # seconds the load runs on after the route changed
# Longest wait for the upstream router's routes to change. A pulsed that starts
# again (rejoin) takes most of a minute in the emulated IPVS VM under load.
ROUTE_TIMEOUT = 300.0


@dataclass
class Change:
    """What happened to the held connections and the short requests around one route change."""

    result: StepResult
    conns: list[Held]
    before: dict[int, str | None]
    after: dict[int, str | None]


def _measure(
    stand: EcmpStand,
    name: str,
    action: Callable[[], None],
    want: frozenset[str],
    what: str,
    settle: float = SETTLE,
    held_count: int = HELD,
) -> Change:
    held = stand.hold_connections(held_count)
    stand.watching = held
    load = stand.load()
    try:
        stand.hold(1.0)
        ports = [h.port for h in held.snapshot()]
        before = stand.flows(ports)
        t0 = time.monotonic()
        action()
        changed_at = stand.wait_hops(want, timeout=ROUTE_TIMEOUT, what=what)
        stand.hold(settle)
        after = stand.flows(ports)
    finally:
        outcomes = stand.stop_load(load)
        stand.watching = None
        stand.release(held)
    conns = held.snapshot()
    s = summarize(outcomes, since=t0 - 1.0)
    broken = [h for h in conns if not h.alive]
    figures = {
        "route_change_ms": round((changed_at - t0) * 1000, 1),
        "held": len(conns),
        "held_broken": len(broken),
        "held_broken_share": len(broken) / len(conns) if conns else 0.0,
        "held_errors": dict(Counter(h.error for h in broken)),
        "moved": sum(1 for p in ports if before[p] != after[p]),
        "moved_broken": sum(1 for h in broken if before[h.port] != after[h.port]),
    }
    return Change(StepResult(name, s, figures), conns, before, after)


def _held_text(c: Change) -> str:
    f = c.result.figures
    return (
        f"held connections: {f['held_broken']} of {f['held']} broken"
        f" ({100 * f['held_broken_share']:.0f}%), {f['moved']} moved to another director"
        f" ({f['moved_broken']} of them broken)"
        + (f" {f['held_errors']}" if f["held_errors"] else "")
    )


def spread(stand: EcmpStand, seconds: float = 4.0) -> StepResult:
    """Step 1: new connections spread over the three directors and the three servers."""
    say = stand.say
    say.heading("Step 1/5  Spread: the upstream router's hash over directors, mh over servers")
    held = stand.hold_connections(HELD)
    stand.watching = held
    c0 = stand.counters()
    load = stand.load()
    t0 = time.monotonic()
    try:
        stand.hold(seconds)
    finally:
        outcomes = stand.stop_load(load)
        stand.watching = None
    c1 = stand.counters()
    conns = held.snapshot()
    paths = stand.flows([h.port for h in conns])
    stand.release(held)
    s = summarize(outcomes, since=t0)
    new = {topo.director_name(d): c1[d][0] - c0[d][0] for d in DIRECTORS}
    total = sum(new.values()) or 1
    by_director = {d: n / total for d, n in new.items()}
    held_by_director = Counter(stand.director_of(paths[h.port]) for h in conns)
    held_by_server = Counter(h.server for h in conns)
    say.info(
        "new connections by director: "
        + ", ".join(f"{d} {100 * v:.0f}%" for d, v in sorted(by_director.items()))
    )
    say.info(
        f"{len(conns)} held connections by director: "
        + ", ".join(f"{d} {n}" for d, n in sorted(held_by_director.items()))
        + "; by server: "
        + ", ".join(f"{sv} {n}" for sv, n in sorted(held_by_server.items()))
    )
    say.result(f"{stand.spread_text(s)} at {s.rate:.0f} req/s")
    return StepResult(
        "spread",
        s,
        {
            "by_director": by_director,
            "share": {n: s.share(n) for n in stand.servers},
            "held_by_director": dict(held_by_director),
            "held_by_server": dict(held_by_server),
        },
    )


def crash(stand: EcmpStand, victim: str = DIRECTORS[0], how: str = "kill", step: str = "2/5"):
    """A director dies: ``kill -9`` of its pulsed, or its uplink's cable pulled."""
    name = topo.director_name(victim)
    addr = stand.address(victim)
    if how == "kill":
        text, action = f"kill -9 of {name}'s pulsed", lambda: stand.kill_pulsed(victim)
    else:
        text, action = f"{name}'s uplink cable pulled", lambda: topo.pull_cable(victim)
    stand.say.heading(f"Step {step}  A director dies ({stand.scheduler}): {text}")
    stand.say.info(
        "kill -9: the kernel closes pulsed's TUN, its VIP address goes, FRR withdraws"
        if how == "kill"
        else "the upstream router finds out from "
        + ("BFD (300 ms)" if stand.bfd else "BGP's hold timer (3 s)")
    )
    c = _measure(
        stand,
        f"{stand.scheduler}-{how}",
        action,
        ALL_HOPS - {addr},
        f"the upstream router to withdraw {name}",
    )
    through = [h for h in c.conns if c.before[h.port] == addr]
    f = c.result.figures
    f["withdrawal_ms"] = f.pop("route_change_ms")
    f["through_victim"] = len(through)
    f["through_victim_survived"] = sum(1 for h in through if h.alive)
    f["scheduler"] = stand.scheduler
    stand.say.info(f"withdrawn at the upstream router {f['withdrawal_ms']:.0f} ms after the {how}")
    stand.say.info(
        f"{f['through_victim_survived']} of the {len(through)} held connections through {name}"
        " survived on the other directors"
    )
    stand.say.result(
        f"{c.result.summary.failed} short request(s) failed"
        f" {dict(c.result.summary.errors) or ''}; {_held_text(c)}"
    )
    return c.result


def rejoin(stand: EcmpStand, victim: str = DIRECTORS[0], how: str = "kill", step: str = "3/5"):
    """The director comes back: pulsed restarted, or the cable plugged in again."""
    name = topo.director_name(victim)
    addr = stand.address(victim)
    if how == "kill":
        text, action = f"{name}'s pulsed starts again", lambda: stand.start_pulsed(victim)
    else:
        text, action = f"{name}'s cable plugged back", lambda: topo.plug_cable(victim)
    stand.say.heading(f"Step {step}  The director comes back ({stand.scheduler}): {text}")
    c = _measure(
        stand, f"{stand.scheduler}-rejoin-{how}", action, ALL_HOPS, f"{name} announced again"
    )
    back = [h for h in c.conns if c.after[h.port] == addr and c.before[h.port] != addr]
    f = c.result.figures
    f["announce_ms"] = f.pop("route_change_ms")
    f["moved_back"] = len(back)
    f["moved_back_survived"] = sum(1 for h in back if h.alive)
    f["scheduler"] = stand.scheduler
    stand.say.info(
        f"announced again {f['announce_ms']:.0f} ms after; {f['moved_back_survived']} of the"
        f" {len(back)} held connections that moved back to {name} survived"
    )
    stand.say.result(f"{c.result.summary.failed} short request(s) failed; {_held_text(c)}")
    return c.result


def drain(stand: EcmpStand, victim: str = DIRECTORS[2], quiet_timeout: float = 20.0):
    """Step 4: ``pulsed director drain``: routes withdrawn, arriving flows served, then idle."""
    name = topo.director_name(victim)
    stand.say.heading(f"Step 4/5  Graceful drain: pulsed director drain on {name}")
    c = _measure(
        stand,
        "drain",
        lambda: stand.api(victim, "POST", "/api/v1/director/drain"),
        ALL_HOPS - {stand.address(victim)},
        f"{name}'s routes withdrawn",
    )
    f = c.result.figures
    f["withdrawal_ms"] = f.pop("route_change_ms")
    stand.say.info(f"withdrawn at the upstream router {f['withdrawal_ms']:.0f} ms after the drain")
    f["quiet_after_s"] = _wait_quiet(stand, victim, quiet_timeout)
    status = stand.api(victim, "GET", "/status").get("bgp") or {}
    f["pulsed_idle"] = bool(status.get("idle"))
    f["active_connections"] = status.get("active_connections")
    quiet = f["quiet_after_s"]
    stand.say.info(
        (f"no packet reaches {name} any more ({quiet:.1f} s after the withdrawal)")
        if quiet is not None
        else f"{name} still receives packets after {quiet_timeout:.0f} s"
    )
    stand.say.info(
        f"pulsed on {name}: idle {f['pulsed_idle']}, {f['active_connections']} IPVS"
        " connection entries left (DR: the director never sees a flow's end, so an entry"
        " of a flow that moved away lasts until IPVS's TCP timeout)"
    )
    stand.say.result(
        f"{c.result.summary.failed} short request(s) failed"
        f" {dict(c.result.summary.errors) or ''}; {_held_text(c)}"
    )
    return c.result


def undrain(stand: EcmpStand, victim: str = DIRECTORS[2]) -> StepResult:
    name = topo.director_name(victim)
    stand.say.heading(f"Step 4/5  ... and pulsed director undrain on {name}")
    c = _measure(
        stand,
        "undrain",
        lambda: stand.api(victim, "POST", "/api/v1/director/undrain"),
        ALL_HOPS,
        f"{name} announced again",
    )
    c.result.figures["announce_ms"] = c.result.figures.pop("route_change_ms")
    stand.say.result(f"{c.result.summary.failed} short request(s) failed; {_held_text(c)}")
    return c.result


def _wait_quiet(stand: EcmpStand, director: str, timeout: float) -> float | None:
    """Seconds until the director's IPVS service counts no new packet for one second."""
    start = time.monotonic()
    last = stand.counters()[director][1]
    quiet_since = time.monotonic()
    while time.monotonic() - start < timeout:
        time.sleep(0.25)
        now = stand.counters()[director][1]
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= 1.0:
            return max(quiet_since - start, 0.0)
    return None


def baseline(stand: EcmpStand, victim: str = DIRECTORS[0]) -> Iterator[StepResult]:
    """Step 5: the same crash and return with wlc, which does not hash."""
    stand.say.heading("Step 5/5  Baseline: every director reloaded with scheduler wlc")
    stand.set_scheduler("wlc")
    stand.say.info("the directors' IPVS tables now use wlc")
    yield crash(stand, victim, "kill", step="5/5")
    yield rejoin(stand, victim, "kill", step="5/5")


def scenario(stand: EcmpStand) -> Iterator[StepResult]:
    yield spread(stand)
    yield crash(stand, DIRECTORS[0], "kill", step="2/5")
    yield rejoin(stand, DIRECTORS[0], "kill", step="3/5")
    yield crash(stand, DIRECTORS[1], "cable", step="2/5")
    yield rejoin(stand, DIRECTORS[1], "cable", step="3/5")
    yield drain(stand, DIRECTORS[2])
    yield undrain(stand, DIRECTORS[2])
    yield from baseline(stand, DIRECTORS[0])


CRASH_RESET_LIMIT = 0.01  # the target: at most 1% of held connections reset on a crash


def verdicts(results: list[StepResult]) -> list[str]:
    """What the ECMP lab promises, checked against what it measured."""
    problems = []
    by_name = {r.name: r for r in results}
    for r in results:
        f = r.figures
        if r.name in ("mh-kill", "mh-cable") and f["held_broken_share"] > CRASH_RESET_LIMIT:
            problems.append(
                f"{r.name}: {100 * f['held_broken_share']:.1f}% of held connections broke"
                f" (at most {100 * CRASH_RESET_LIMIT:.0f}%)"
            )
        if r.name.startswith("mh-rejoin") and f["held_broken"]:
            problems.append(f"{r.name}: {f['held_broken']} held connection(s) broke")
        if r.name in ("drain", "undrain") and (r.summary.failed or f["held_broken"]):
            problems.append(
                f"{r.name}: {r.summary.failed} request(s) failed,"
                f" {f['held_broken']} held connection(s) broke"
            )
    mh, wlc = by_name.get("mh-kill"), by_name.get("wlc-kill")
    if mh and wlc and wlc.figures["held_broken"] <= mh.figures["held_broken"]:
        problems.append("wlc broke no more held connections than mh on a crash: no contrast")
    return problems
