"""Live upgrade of the VRRP master: what the peer and the wire see (root; namespaces only).

    flock /tmp/pulsed-bench.lock .venv/bin/python benchmarks/upgrade.py --runs 10
    flock /tmp/pulsed-bench.lock .venv/bin/python benchmarks/upgrade.py --runs 10 --peer keepalived

Router 1 runs the whole daemon (`pulsed run`, one [[vrrp]] instance, priority 200, 100 ms
adverts) and is master; router 2 is a backup (pulsed's node, or keepalived 2.2.7 with
VRRPv3). Each run upgrades router 1 with `pulsed upgrade` (the next run upgrades the process
the previous one started) while the observer on the bridge timestamps every advert and every
gratuitous ARP, and a sampler reads both routers' addresses every few ms (lab/upgrade_stand.py).

Per run: the longest gap between two of the master's adverts on the wire (the peer takes over
only after the master-down interval, 3 x 100 ms + skew = 361 ms), the time the VIP was on no
router (sampled), the peer's transitions and GARPs (targets: 0), and how long `pulsed upgrade`
took. Prints one line per run and a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import asdict

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from lab.ha_pair import HaPair
from lab.upgrade_stand import UpgradeStand


async def run(runs: int, peer: str) -> dict:
    lab = HaPair().create()
    stand = UpgradeStand(lab, peer=peer)
    results = []
    try:
        await stand.start()
        for i in range(runs):
            o = await stand.upgrade()
            results.append(o)
            print(
                f"run {i + 1}: ok={o.ok} gap={o.longest_advert_gap * 1000:.1f}ms"
                f" no_owner={o.no_owner * 1000:.1f}ms ({o.samples} samples)"
                f" peer_transitions={o.peer_transitions} peer_garps={o.peer_garps}"
                f" upgrade={o.handover_seconds:.2f}s",
                flush=True,
            )
    finally:
        stand.kill_all()
        await lab.close()
    return {
        "peer": peer,
        "runs": len(results),
        "all_ok": all(o.ok for o in results),
        "longest_advert_gap_ms": round(max(o.longest_advert_gap for o in results) * 1000, 1),
        "master_down_interval_ms": round(results[0].master_down_interval * 1000, 1),
        "no_owner_ms_max": round(max(o.no_owner for o in results) * 1000, 1),
        "peer_transitions": sum(o.peer_transitions for o in results),
        "peer_garps": sum(o.peer_garps for o in results),
        "upgrade_seconds_max": round(max(o.handover_seconds for o in results), 2),
        "last": asdict(results[-1]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--peer", choices=("pulsed", "keepalived"), default="pulsed")
    args = parser.parse_args()
    summary = asyncio.run(run(args.runs, args.peer))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
