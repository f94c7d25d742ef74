"""The ``[vrrp]`` table: how this router takes part in its VRRPv3 pair.

An absent ``[vrrp]`` table means no HA: the router programs IPVS and holds no VIPs.
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Literal

import msgspec

from pulsed.durations import Duration
from pulsed.files import FileProblem, read_file

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
IPIface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

_STRUCT = {"frozen": True, "forbid_unknown_fields": True, "kw_only": True}
_IFNAME = re.compile(r"^[^\s/:]{1,15}$")


class VirtualAddress(msgspec.Struct, **_STRUCT):
    """A VIP written as a table, when it lives on another interface than [vrrp].interface."""

    address: str
    interface: str = ""


class VrrpAuth(msgspec.Struct, **_STRUCT):
    """HMAC-SHA256 over each advert, pulsed-to-pulsed only (keepalived drops such adverts)."""

    key_file: str = ""
    # Deprecated and ignored: replay protection no longer reads the clocks (see auth.py).
    # Still accepted so that older configs load; remove it at your convenience.
    max_clock_skew: Duration | None = None


class TrackInterface(msgspec.Struct, **_STRUCT):
    interface: str
    # 0: the router goes to FAULT while the interface is down; N: lower the priority by N.
    decrement: int = 0


class TrackService(msgspec.Struct, **_STRUCT):
    service: str
    # Below this fraction of healthy real servers the service counts as failed.
    min_healthy: float = 0.5
    # 0: the router goes to FAULT; N: lower the priority by N.
    decrement: int = 0


class SyncDaemon(msgspec.Struct, **_STRUCT):
    """The kernel's IPVS connection sync daemon, following the VRRP role."""

    enabled: bool = False
    interface: str = ""  # empty: the VRRP interface
    syncid: int = 0


class VrrpConfig(msgspec.Struct, **_STRUCT):
    interface: str = "eth0"
    vrid: int = 51
    # 1-254; 255 only for the owner of the addresses (it starts as master at once).
    priority: int = 100
    advert_interval: Duration = Duration(1.0)
    preempt: bool = True
    preempt_delay: Duration = Duration(0.0)
    virtual_addresses: list[str | VirtualAddress] = []
    unicast_peers: list[str] = []
    unicast_source: str = ""
    # keepalived-compatible by default: a backup learns the master's interval (RFC 5798 6.4.2)
    # and a mismatch is only counted. true: drop adverts whose interval differs from ours.
    strict_interval: bool = False
    garp_count: int = 5
    garp_interval: Duration = Duration(0.01)
    garp_refresh: Duration = Duration(0.0)
    auth: VrrpAuth = VrrpAuth()
    track_interfaces: list[TrackInterface] = []
    track_services: list[TrackService] = []
    # How often interface and service tracking are re-evaluated.
    track_interval: Duration = Duration(0.1)
    sync_daemon: SyncDaemon = SyncDaemon()
    # Run the VRRP heartbeat on its own thread and event loop, so that a busy main loop
    # (thousands of probes a second) cannot delay adverts.
    dedicated_thread: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    def vips(self) -> list[tuple[IPIface, str]]:
        """(address/prefix, interface) of each VIP; call only on a config without problems."""
        out = []
        for item in self.virtual_addresses:
            if isinstance(item, str):
                out.append((ipaddress.ip_interface(item), self.interface))
            else:
                out.append((ipaddress.ip_interface(item.address), item.interface or self.interface))
        return out

    def family(self) -> int:
        vips = self.vips()
        return vips[0][0].version if vips else 4

    def advert_centiseconds(self) -> int:
        return round(self.advert_interval * 100)


MAX_UNICAST_PEERS = 255
MAX_TRACKED = 255  # tracked interfaces or services: each is re-checked every track_interval


def _addr_problem(text: str, want_prefix: bool) -> str | None:
    """Why ``text`` is not an address the kernel takes for this use, or None."""
    form = "'address/prefix', e.g. '192.0.2.10/24'" if want_prefix else "an IP address"
    if not isinstance(text, str) or "%" in text:
        # ipaddress accepts a scope ("fe80::1%eth0"); inet_pton and the kernel do not.
        return f"not {form} (no %scope: the interface is [vrrp].interface)"
    try:
        ip = ipaddress.ip_interface(text).ip if want_prefix else ipaddress.ip_address(text)
    except ValueError:
        return f"not {form}"
    if ip.is_unspecified or ip.is_multicast:
        return "an unspecified or multicast address cannot be used here"
    if ip.is_loopback:
        return "a loopback address cannot be used here"
    return None


def _duration_problem(value: float, low: float, high: float, text: str) -> str | None:
    """None if ``low <= value <= high`` and finite (400 nines and a unit are infinite)."""
    if not math.isfinite(value) or not low <= value <= high:
        return text
    return None


def _key_problem(path: str) -> str | None:
    """Why the key file cannot be used, as the node would read it (one line), or None."""
    from pulsed.ha.auth import parse_key  # auth imports nothing from here

    try:
        parse_key(read_file(path, what="VRRP auth key file", secret=True), path)
    except (FileProblem, ValueError) as e:
        return str(e)
    return None


def vrrp_problems(cfg: VrrpConfig) -> list[tuple[str, object, str]]:
    """Semantic errors as (key path relative to [vrrp], value, message)."""
    problems: list[tuple[str, object, str]] = []

    def bad(path: str, value: object, message: str) -> None:
        problems.append((path, value, message))

    if not _IFNAME.match(cfg.interface):
        bad("interface", cfg.interface, "not a valid interface name")
    if not 1 <= cfg.vrid <= 255:
        bad("vrid", cfg.vrid, "must be 1-255")
    if not 1 <= cfg.priority <= 255:
        bad("priority", cfg.priority, "must be 1-255 (255 only for the address owner)")
    cs = cfg.advert_interval * 100
    if not math.isfinite(cs) or not 1 <= round(cs) <= 4095 or abs(cs - round(cs)) > 1e-6:
        bad(
            "advert_interval",
            str(cfg.advert_interval),
            "must be a whole number of centiseconds between 10ms and 40.95s",
        )
    if why := _duration_problem(cfg.preempt_delay, 0, 3600, "must be between 0 and 1h"):
        bad("preempt_delay", str(cfg.preempt_delay), why)
    if cfg.preempt_delay and not cfg.preempt:
        bad("preempt_delay", str(cfg.preempt_delay), "has no effect with preempt = false")
    if not cfg.virtual_addresses:
        bad("virtual_addresses", [], "list at least one address/prefix")
    if len(cfg.virtual_addresses) > 255:
        bad("virtual_addresses", len(cfg.virtual_addresses), "at most 255 addresses fit an advert")
    versions = set()
    seen = set()
    for i, item in enumerate(cfg.virtual_addresses):
        text = item if isinstance(item, str) else item.address
        path = f"virtual_addresses[{i}]" + ("" if isinstance(item, str) else ".address")
        problem = _addr_problem(text, want_prefix=True)
        if problem:
            bad(path, text, problem)
            continue
        iface = ipaddress.ip_interface(text)
        versions.add(iface.version)
        if iface.ip in seen:
            bad(path, text, "listed twice")
        seen.add(iface.ip)
        if not isinstance(item, str) and item.interface and not _IFNAME.match(item.interface):
            bad(f"virtual_addresses[{i}].interface", item.interface, "not a valid interface name")
    if len(versions) > 1:
        bad("virtual_addresses", "mixed", "mixes IPv4 and IPv6: use one [vrrp] per family")
    family = versions.pop() if len(versions) == 1 else None
    if len(cfg.unicast_peers) > MAX_UNICAST_PEERS:
        bad("unicast_peers", len(cfg.unicast_peers), f"at most {MAX_UNICAST_PEERS} peers")
    peers_seen = set()
    for i, peer in enumerate(cfg.unicast_peers):
        problem = _addr_problem(peer, want_prefix=False)
        if problem:
            bad(f"unicast_peers[{i}]", peer, problem)
            continue
        ip = ipaddress.ip_address(peer)
        if family and ip.version != family:
            bad(f"unicast_peers[{i}]", peer, "not the same address family as the VIPs")
        if ip in peers_seen:
            bad(f"unicast_peers[{i}]", peer, "listed twice")
        peers_seen.add(ip)
    if cfg.unicast_source:
        problem = _addr_problem(cfg.unicast_source, want_prefix=False)
        if problem:
            bad("unicast_source", cfg.unicast_source, problem)
        elif family and ipaddress.ip_address(cfg.unicast_source).version != family:
            bad("unicast_source", cfg.unicast_source, "not the same address family as the VIPs")
    if not 0 <= cfg.garp_count <= 100:
        bad("garp_count", cfg.garp_count, "must be 0-100")
    if why := _duration_problem(cfg.garp_interval, 0, 10, "must be between 0 and 10s"):
        bad("garp_interval", str(cfg.garp_interval), why)
    if cfg.garp_refresh and _duration_problem(cfg.garp_refresh, 1, 86400, "x"):
        bad("garp_refresh", str(cfg.garp_refresh), "must be 0 (off) or between 1s and 1d")
    if cfg.auth.key_file and (why := _key_problem(cfg.auth.key_file)):
        bad("auth.key_file", cfg.auth.key_file, why)
    for name in ("track_interfaces", "track_services"):
        if len(getattr(cfg, name)) > MAX_TRACKED:
            bad(name, len(getattr(cfg, name)), f"at most {MAX_TRACKED} entries")
    for i, ti in enumerate(cfg.track_interfaces):
        if not _IFNAME.match(ti.interface):
            bad(f"track_interfaces[{i}].interface", ti.interface, "not a valid interface name")
        if not 0 <= ti.decrement <= 254:
            bad(f"track_interfaces[{i}].decrement", ti.decrement, "must be 0 (fault) or 1-254")
    for i, ts in enumerate(cfg.track_services):
        if not ts.service:
            bad(f"track_services[{i}].service", ts.service, "name the tracked service")
        if not math.isfinite(ts.min_healthy) or not 0.0 <= ts.min_healthy <= 1.0:
            bad(f"track_services[{i}].min_healthy", ts.min_healthy, "must be between 0.0 and 1.0")
        if not 0 <= ts.decrement <= 254:
            bad(f"track_services[{i}].decrement", ts.decrement, "must be 0 (fault) or 1-254")
    if _duration_problem(cfg.track_interval, 0.01, 60, "x"):
        bad("track_interval", str(cfg.track_interval), "must be between 10ms and 1m")
    if not 0 <= cfg.sync_daemon.syncid <= 255:
        bad("sync_daemon.syncid", cfg.sync_daemon.syncid, "must be 0-255")
    if cfg.sync_daemon.interface and not _IFNAME.match(cfg.sync_daemon.interface):
        bad("sync_daemon.interface", cfg.sync_daemon.interface, "not a valid interface name")
    return problems
