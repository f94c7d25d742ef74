"""The ``[bgp]`` table: which VIPs this director announces, and when.

A VIP group is held by one announcer: either a VRRP instance (its
``virtual_addresses``) or this table. A VIP in both is a config error
(``bgp_problems``): two announcers would move it for different reasons.

"Can serve" (``pulsed.announce.decide``): every service on the VIP has its
IPVS service in the kernel, at least one healthy real server, and a healthy
fraction of at least ``min_healthy``.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import msgspec

from pulsed.durations import Duration

_STRUCT = {"frozen": True, "forbid_unknown_fields": True, "kw_only": True}
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
MAX_VIPS = 4096


class BgpVip(msgspec.Struct, **_STRUCT):
    """A VIP with a threshold of its own."""

    address: str
    min_healthy: float | None = None  # the [bgp] one when left out


class BgpConfig(msgspec.Struct, **_STRUCT):
    # Only FRR for now (docs/operations.md, "Scale-out with BGP" says why).
    daemon: Literal["frr"] = "frr"
    # The TUN interface pulsed creates and holds; FRR redistributes its connected routes.
    interface: str = "pulsed-bgp"
    vips: list[str | BgpVip] = []
    # A service on the VIP counts as able to serve at this share of healthy servers.
    min_healthy: float = 0.5
    # A local route on lo per VIP, so the kernel accepts it announced or not.
    accept_local: bool = True
    # Set net.ipv4.vs.sloppy_tcp and sloppy_sctp to 1: a director that takes
    # over a flow mid-stream (ECMP moved it) must accept a packet that is not a SYN.
    sloppy: bool = True
    vtysh: str = "/usr/bin/vtysh"
    vty_socket: str = ""  # FRR's --vty_socket directory, when not the default
    poll_interval: Duration = Duration(2.0)  # how often FRR's state is read
    command_timeout: Duration = Duration(2.0)  # one vtysh call

    def vip_thresholds(self) -> dict[str, float]:
        """Each VIP (normalised) with its threshold, in config order."""
        out: dict[str, float] = {}
        for item in self.vips:
            if isinstance(item, str):
                out[str(ipaddress.ip_address(item))] = self.min_healthy
            else:
                threshold = item.min_healthy
                out[str(ipaddress.ip_address(item.address))] = (
                    self.min_healthy if threshold is None else threshold
                )
        return out


BGP_RANGES: dict[str, tuple[float, float]] = {
    "poll_interval": (0.2, 3600.0),
    "command_timeout": (0.1, 60.0),
}


def _threshold_problem(value: float) -> str | None:
    if not math.isfinite(value) or not 0.0 < value <= 1.0:
        return "must be more than 0.0 and at most 1.0 (a share of healthy real servers)"
    return None


def bgp_problems(
    bgp: BgpConfig, service_vips: Iterable[str], vrrp_vips: Iterable[tuple[str, str]]
) -> list[tuple[str, Any, str]]:
    """(path below ``bgp``, value, message) for each problem.

    ``service_vips``: the (normalised) VIPs of the configured services;
    ``vrrp_vips``: (normalised VIP, instance path) of every VRRP VIP.
    """
    problems: list[tuple[str, Any, str]] = []
    if not _IFNAME.fullmatch(bgp.interface):
        problems.append(("interface", bgp.interface, "1-15 of A-Z a-z 0-9 _ . -"))
    if problem := _threshold_problem(bgp.min_healthy):
        problems.append(("min_healthy", bgp.min_healthy, problem))
    if not bgp.vtysh.startswith("/"):
        problems.append(("vtysh", bgp.vtysh, "give an absolute path"))
    if bgp.vty_socket and not bgp.vty_socket.startswith("/"):
        problems.append(("vty_socket", bgp.vty_socket, "give an absolute path"))
    if len(bgp.vips) > MAX_VIPS:
        problems.append(("vips", len(bgp.vips), f"at most {MAX_VIPS} VIPs"))
    if not bgp.vips:
        problems.append(("vips", [], "name the VIPs this director announces"))
    served = set(service_vips)
    held_by_vrrp = dict(vrrp_vips)
    seen: set[str] = set()
    for i, item in enumerate(bgp.vips):
        path = f"vips[{i}]" if isinstance(item, str) else f"vips[{i}].address"
        text = item if isinstance(item, str) else item.address
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            problems.append((path, text, "not an IPv4 or IPv6 address (a VIP, without a prefix)"))
            continue
        vip = str(ip)
        own = None if isinstance(item, str) else item.min_healthy
        if own is not None and (problem := _threshold_problem(own)):
            problems.append((f"vips[{i}].min_healthy", own, problem))
        if vip in seen:
            problems.append((path, text, "listed twice"))
        seen.add(vip)
        if vip not in served:
            problems.append((path, text, "no service has this VIP: nothing would decide it"))
        if vip in held_by_vrrp:
            problems.append(
                (
                    path,
                    text,
                    f"also a VIP of {held_by_vrrp[vip]}: a VIP is held either by a VRRP"
                    " instance or by BGP announcement, not both",
                )
            )
    return problems


def vrrp_vip_paths(instances: Sequence[Any], paths: Sequence[str]) -> list[tuple[str, str]]:
    """(normalised VIP, instance path) for every VIP of the (valid) VRRP instances."""
    out = []
    for instance, path in zip(instances, paths, strict=False):
        for iface, _ in instance.vips():
            out.append((str(iface.ip), path))
    return out
