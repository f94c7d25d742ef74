"""What the running daemon would change: its wanted table against the kernel's (pure).

``GET /api/v1/plan`` answers with this; ``pulsed plan`` prints it, and
computes it locally only when no daemon answers. The figures are the last
reconcile pass's, from the snapshot (pulsed.readmodel): the table that pass
wanted, the kernel's table read after its writes, and the services pulsed may
delete (the ones it programmed, even if dropped from the config since).
"""

from __future__ import annotations

from typing import Any

from pulsed.readmodel import Snapshot
from pulsed.reconcile import diff


def plan_document(snap: Snapshot) -> dict[str, Any]:
    last = snap.last_pass
    ops = diff(last.wanted, snap.kernel, last.owned) if last.index is not None else []
    up = down = unknown = 0
    for key in snap.index.real_keys():
        health = snap.health.get(key)
        if health is None or (not health.up and not health.checked):
            unknown += 1
        elif health.up:
            up += 1
        else:
            down += 1
    return {
        "source": "daemon",
        "generation": snap.reload.generation,
        "passes": snap.reconcile.passes,
        "pending": snap.reconcile.pending,
        "in_sync": not ops and snap.reconcile.in_sync,
        "operations": [str(op) for op in ops],
        "deletions": [str(op) for op in ops if op.kind.value.startswith("del-")],
        "reals": {"up": up, "down": down, "unknown": unknown},
    }
