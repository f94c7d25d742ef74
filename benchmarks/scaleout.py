"""Scale-out: withdrawal times, connections reset, and throughput, on the ECMP lab (root, IPVS).

    scripts/vm-run --out /tmp/scaleout -- .venv/bin/python benchmarks/scaleout.py --short

One ECMP lab (lab/ecmp_stand.py: an upstream FRR router, three directors
each running pulsed and FRR, three real servers by DR), in the IPVS VM:

  withdrawal  kill -9 of a director's pulsed, and its uplink cable pulled: time
              until the upstream router's FIB drops the director (its route to the
              VIP, read in a loop), with BFD (100 ms x 3) and without (BGP 1/3 s).
              A seeded random pause before each event spreads its phase. p50, p99.
  resets      100 held long-lived connections (lab/held.py) through the directors;
              one of three leaves gracefully (pulsed director drain), crashes
              (kill -9), rejoins: the share broken, with mh and then wlc in the same
              run, and the ratio.
  throughput  flat-out short requests (one load generator, 32 workers) through three
              directors, then through one (the two others drained).

Prints a JSON summary. --short: 3 runs per withdrawal kind instead of 10.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab import ecmp_steps
from lab import ecmp_topology as topo
from lab.ecmp_stand import ALL_HOPS, EcmpStand
from lab.ecmp_topology import DIRECTORS, UPSTREAM
from lab.loadgen import summarize
from lab.report import QuietReporter, Reporter


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def set_bfd(stand: EcmpStand, on: bool) -> None:
    """BFD on or off on every session, both ends, without restarting FRR."""
    no = "" if on else "no "
    stand.frr[UPSTREAM].vtysh(
        "configure terminal", "router bgp 65000", f"{no}neighbor DIRECTORS bfd profile fast"
    )
    for d in DIRECTORS:
        stand.frr[d].vtysh(
            "configure terminal",
            "router bgp 65001",
            f"{no}neighbor {topo.UPSTREAM_UPLINK} bfd profile fast",
        )
    stand.bfd = on
    time.sleep(2.0)  # sessions come up (or go) in well under that


def withdrawal_runs(stand: EcmpStand, how: str, runs: int, rng: random.Random) -> list[float]:
    victim = DIRECTORS[0] if how == "kill" else DIRECTORS[1]
    gone = ALL_HOPS - {stand.address(victim)}
    times = []
    for _ in range(runs):
        time.sleep(rng.uniform(0.0, 1.0))
        t0 = time.monotonic()
        if how == "kill":
            stand.kill_pulsed(victim)
        else:
            topo.pull_cable(victim)
        at = stand.wait_hops(gone, timeout=60, what="withdrawal")
        times.append((at - t0) * 1000)
        if how == "kill":
            stand.start_pulsed(victim)
        else:
            topo.plug_cable(victim)
        stand.wait_hops(ALL_HOPS, timeout=300, what="the director back")
        time.sleep(1.0)
    return times


def summary(times: list[float]) -> dict:
    return {
        "runs": len(times),
        "p50_ms": round(statistics.median(times), 1),
        "p99_ms": round(percentile(times, 0.99), 1),
        "max_ms": round(max(times), 1),
        "all_ms": [round(t, 1) for t in times],
    }


def resets(stand: EcmpStand) -> dict:
    out = {}
    leave = ecmp_steps.drain(stand, DIRECTORS[2])
    ecmp_steps.undrain(stand, DIRECTORS[2])
    crash = ecmp_steps.crash(stand, DIRECTORS[0], "kill")
    rejoin = ecmp_steps.rejoin(stand, DIRECTORS[0], "kill")
    for name, r in (("leave", leave), ("crash", crash), ("rejoin", rejoin)):
        out[name] = {
            "held": r.figures["held"],
            "broken": r.figures["held_broken"],
            "share": round(r.figures["held_broken_share"], 4),
            "moved": r.figures["moved"],
            "failed_requests": r.summary.failed,
        }
    return out


def throughput(stand: EcmpStand, seconds: float) -> float:
    thread = stand.load(flat_out=True, quiet=True, concurrency=32)
    t0 = time.monotonic()
    time.sleep(seconds)
    s = summarize(stand.stop_load(thread), since=t0, until=time.monotonic())
    return round(s.ok / seconds, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10, help="runs per withdrawal kind")
    ap.add_argument("--short", action="store_true", help="3 runs per withdrawal kind")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=5.0, help="each throughput window")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--verbose", action="store_true", help="print the lab's progress")
    args = ap.parse_args()
    if os.geteuid() != 0 or not os.path.exists("/proc/net/ip_vs"):
        print("scaleout.py: run as root with IPVS (scripts/vm-run ... here)", file=sys.stderr)
        return 2
    runs = 3 if args.short else args.runs
    rng = random.Random(args.seed)
    say = Reporter() if args.verbose else QuietReporter()
    doc: dict = {"runs": runs, "seed": args.seed}
    with EcmpStand(reporter=say, bfd=True) as stand:
        doc["withdrawal"] = {
            "kill_bfd": summary(withdrawal_runs(stand, "kill", runs, rng)),
            "cable_bfd": summary(withdrawal_runs(stand, "cable", runs, rng)),
        }
        set_bfd(stand, False)
        doc["withdrawal"]["kill_no_bfd"] = summary(withdrawal_runs(stand, "kill", runs, rng))
        doc["withdrawal"]["cable_no_bfd"] = summary(withdrawal_runs(stand, "cable", runs, rng))
        set_bfd(stand, True)
        print(json.dumps(doc["withdrawal"]), flush=True)
        doc["resets_mh"] = resets(stand)
        stand.set_scheduler("wlc")
        doc["resets_wlc"] = resets(stand)
        doc["crash_reset_ratio_wlc_over_mh"] = (
            round(doc["resets_wlc"]["crash"]["share"] / doc["resets_mh"]["crash"]["share"], 1)
            if doc["resets_mh"]["crash"]["share"]
            else None
        )
        stand.set_scheduler("mh")
        three = throughput(stand, args.seconds)
        for d in DIRECTORS[1:]:
            stand.api(d, "POST", "/api/v1/director/drain")
        stand.wait_hops(frozenset({stand.address(DIRECTORS[0])}), 60, "two directors drained")
        time.sleep(1.0)
        one = throughput(stand, args.seconds)
        doc["throughput"] = {"three_rps": three, "one_rps": one, "ratio": round(three / one, 2)}
    text = json.dumps(doc, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
