"""A short digest of a pool as the kernel holds it, so operators can see that
directors agree (``/status`` ``pool_digest``, ``pulsed_service_pool_digest_info``).

It covers the scheduler and each destination's address, port, weight and
forwarding method, in canonical order (pulsed.reconcile.dest_order), which
is the kernel's list order for ``mh`` pools pulsed built (their Maglev table
follows that order).
"""

from __future__ import annotations

import hashlib

from pulsed.model import Service
from pulsed.reconcile import dest_order


def pool_digest(service: Service | None) -> str:
    """16 hex digits; "" for a service not in the kernel."""
    if service is None:
        return ""
    dests = sorted(service.dests, key=dest_order)
    text = ";".join(f"{d.address},{d.port},{d.weight},{d.forwarding.name}" for d in dests)
    text = f"{service.scheduler}|{text}"
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
