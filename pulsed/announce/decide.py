"""Pure: which VIPs this director announces, and why (route health injection).

A director *can serve* a VIP when every service on that VIP (same address,
any port and protocol):

1. is in the kernel's IPVS table after the last reconcile pass (else a
   packet for it would reach IPVS and find nothing);
2. has at least one real server passing its check;
3. has a healthy share of its real servers of at least the VIP's
   ``min_healthy`` (the [bgp] one, or the VIP's own): the same fraction the
   daemon publishes after each pass for VRRP's ``track_services``.

It announces a VIP it can serve unless the director is drained (``pulsed
director drain``) or has not finished its first pass. Any doubt withdraws:
a VIP whose service has no fraction (no real servers) is not served.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from pulsed.model import ServiceKey


@dataclass(frozen=True, slots=True)
class VipService:
    """A service on a VIP, as the decision sees it."""

    name: str
    key: ServiceKey


@dataclass(frozen=True, slots=True)
class VipDecision:
    vip: str
    announce: bool
    reason: str  # one line, for /status and the log
    min_healthy: float
    lowest: float | None = None  # the lowest healthy share among its services


def decide_vip(
    vip: str,
    services: Sequence[VipService],
    min_healthy: float,
    healthy: Mapping[str, float],
    kernel: Collection[ServiceKey],
    *,
    ready: bool = True,
    drained: bool = False,
) -> VipDecision:
    """The decision for one VIP (see the module's rules)."""
    if not ready:
        return VipDecision(
            vip, False, "starting: the first reconcile pass has not run", min_healthy
        )
    if not services:
        return VipDecision(vip, False, "no service has this VIP", min_healthy)
    lowest: float | None = None
    problem = ""
    for svc in services:
        share = healthy.get(svc.name)
        if share is not None:
            lowest = share if lowest is None else min(lowest, share)
        if problem:
            continue
        if svc.key not in kernel:
            problem = f"service {svc.name}: not in the kernel's IPVS table"
        elif share is None:
            problem = f"service {svc.name}: no real servers"
        elif share <= 0.0:
            problem = f"service {svc.name}: no healthy real server"
        elif share < min_healthy:
            problem = f"service {svc.name}: {share:.0%} healthy, below {min_healthy:.0%}"
    if problem:
        return VipDecision(vip, False, problem, min_healthy, lowest)
    if drained:
        return VipDecision(
            vip, False, "drained: pulsed director undrain announces it", min_healthy, lowest
        )
    count = len(services)
    what = "its service" if count == 1 else f"all {count} services"
    return VipDecision(
        vip, True, f"{what} can serve (lowest {lowest:.0%} healthy)", min_healthy, lowest
    )


def decide(
    thresholds: Mapping[str, float],
    services: Mapping[str, Sequence[VipService]],
    healthy: Mapping[str, float],
    kernel: Collection[ServiceKey],
    *,
    ready: bool = True,
    drained: bool = False,
) -> tuple[VipDecision, ...]:
    """One decision per configured VIP, in ``thresholds`` order."""
    return tuple(
        decide_vip(
            vip,
            services.get(vip, ()),
            threshold,
            healthy,
            kernel,
            ready=ready,
            drained=drained,
        )
        for vip, threshold in thresholds.items()
    )


def services_by_vip(
    services: Sequence[tuple[str, ServiceKey, str | None]],
) -> dict[str, list[VipService]]:
    """(name, key, normalised VIP or None for fwmark) -> the services of each VIP."""
    out: dict[str, list[VipService]] = {}
    for name, key, vip in services:
        if vip is not None:
            out.setdefault(vip, []).append(VipService(name, key))
    return out
