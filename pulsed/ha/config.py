"""The ``[[vrrp]]`` instances: how this router takes part in its VRRP pairs.

Each instance is one virtual router (VRRPv3, RFC 5798, or VRRPv2, RFC 3768)
with its VIPs. No instance means no HA: the router programs IPVS and holds no
VIPs. ``[[vrrp_script]]`` (periodic commands) and ``[[vrrp_sync_group]]``
(instances that move together) are keepalived's ``vrrp_script`` and
``vrrp_sync_group``. ``vrrp_problems`` checks one instance,
``instances_problems`` what spans them.
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Literal

import msgspec

from pulsed.durations import Duration
from pulsed.files import FileProblem, check_executable, read_file

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
IPIface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

_STRUCT = {"frozen": True, "forbid_unknown_fields": True, "kw_only": True}
_IFNAME = re.compile(r"^[^\s/:]{1,15}$")
# Instance, script and group names: metric labels, log fields and FIFO lines.
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_PASSWORD = 8  # VRRPv2's authentication data is 8 bytes
MAX_WEIGHT = 254


class VirtualAddress(msgspec.Struct, **_STRUCT):
    """A VIP written as a table, when it lives on another interface than [vrrp].interface."""

    address: str
    interface: str = ""


class VrrpAuth(msgspec.Struct, **_STRUCT):
    """Version 3: ``key_file``, HMAC-SHA256 over each advert, pulsed-to-pulsed only
    (keepalived drops such adverts). Version 2: ``password``, keepalived's PASS,
    which is no security at all: the password travels in clear in every advert."""

    key_file: str = ""
    password: str = ""
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


class TrackScript(msgspec.Struct, **_STRUCT):
    """A [[vrrp_script]] this instance follows. ``weight`` (the script's own when
    left out): > 0 adds it to the priority while the script succeeds, < 0 adds it
    while the script fails, 0 puts the instance in FAULT while the script fails."""

    script: str
    weight: int | None = None


class TrackFile(msgspec.Struct, **_STRUCT):
    """A file holding an integer: priority += value x weight; with weight 0, FAULT
    while the value is not 0 (keepalived's track_file)."""

    file: str
    weight: int = 1


class VrrpScript(msgspec.Struct, **_STRUCT):
    """keepalived's vrrp_script: a command run every ``interval`` (no shell)."""

    name: str
    command: list[str]
    interval: Duration = Duration(1.0)
    timeout: Duration = Duration(1.0)
    rise: int = 1
    fall: int = 1
    weight: int = 0


class SyncGroup(msgspec.Struct, **_STRUCT):
    """keepalived's vrrp_sync_group: instances that are master, backup or in fault together."""

    name: str
    instances: list[str]
    notify_master: list[str] = []
    notify_backup: list[str] = []
    notify_fault: list[str] = []
    notify_stop: list[str] = []
    notify: list[str] = []


class SyncDaemon(msgspec.Struct, **_STRUCT):
    """The kernel's IPVS connection sync daemon, following the VRRP role."""

    enabled: bool = False
    interface: str = ""  # empty: the VRRP interface
    syncid: int = 0


class VrrpConfig(msgspec.Struct, **_STRUCT):
    # Unique among the instances; the metrics label. A lone [vrrp] table may leave it out.
    name: str = ""
    # 3: RFC 5798 (IPv4 and IPv6, centisecond intervals); 2: RFC 3768, keepalived's
    # default (IPv4, whole-second intervals, optional PASS password).
    version: Literal[2, 3] = 3
    # keepalived's "state": "" starts as backup (master at once only with priority 255),
    # "master" takes the VIPs at start unless a better master is heard, "backup" waits.
    initial_state: Literal["", "backup", "master"] = ""
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
    track_scripts: list[TrackScript] = []
    track_files: list[TrackFile] = []
    # Commands (argv, no shell) run on transitions; ``notify`` gets TYPE NAME STATE PRIORITY.
    notify_master: list[str] = []
    notify_backup: list[str] = []
    notify_fault: list[str] = []
    notify_stop: list[str] = []
    notify: list[str] = []
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

    def identity(self) -> tuple[str, int, int, int]:
        """What cannot change in place: (interface, VRID, address family, version)."""
        return (self.interface, self.vrid, self.family(), self.version)


class HooksConfig(msgspec.Struct, **_STRUCT):
    """How notify commands and vrrp_scripts run (see pulsed.hooks)."""

    timeout: Duration = Duration(10.0)
    max_running: int = 8
    # keepalived's notify_fifo: one line per event, written only while a reader has it open.
    fifo: str = ""


# The notify commands of an instance or a sync group, by key.
NOTIFY_KEYS = ("notify_master", "notify_backup", "notify_fault", "notify_stop", "notify")


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
    if cfg.name and not _NAME.match(cfg.name):
        bad("name", cfg.name, "use 1-64 letters, digits or _ . : -")
    problems.extend(_version_problems(cfg, family))
    for i, tscript in enumerate(cfg.track_scripts):
        if tscript.weight is not None and not -MAX_WEIGHT <= tscript.weight <= MAX_WEIGHT:
            bad(
                f"track_scripts[{i}].weight", tscript.weight, f"must be {-MAX_WEIGHT}..{MAX_WEIGHT}"
            )
    for i, tf in enumerate(cfg.track_files):
        if not tf.file.startswith("/"):
            bad(f"track_files[{i}].file", tf.file, "give an absolute path")
        if not -MAX_WEIGHT <= tf.weight <= MAX_WEIGHT:
            bad(f"track_files[{i}].weight", tf.weight, f"must be {-MAX_WEIGHT}..{MAX_WEIGHT}")
    if len(cfg.track_scripts) + len(cfg.track_files) > MAX_TRACKED:
        bad("track_scripts", len(cfg.track_scripts), f"at most {MAX_TRACKED} tracked entries")
    problems.extend(notify_problems(cfg))
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


def _version_problems(cfg: VrrpConfig, family: int | None) -> list[tuple[str, object, str]]:
    """What VRRPv2 (RFC 3768) cannot carry, and what only it can."""
    problems: list[tuple[str, object, str]] = []
    if cfg.version == 3:
        if cfg.auth.password:
            problems.append(
                ("auth.password", "<hidden>", "PASS passwords are VRRPv2 only (version = 2)")
            )
        return problems
    seconds = float(cfg.advert_interval)
    if not math.isfinite(seconds) or seconds != int(seconds) or not 1 <= seconds <= 255:
        problems.append(
            ("advert_interval", str(cfg.advert_interval), "VRRPv2 counts whole seconds: 1s-255s")
        )
    if family == 6:
        problems.append(("virtual_addresses", "IPv6", "VRRPv2 is IPv4 only: use version = 3"))
    if cfg.auth.key_file:
        problems.append(
            ("auth.key_file", cfg.auth.key_file, "HMAC authentication needs version = 3")
        )
    password = cfg.auth.password
    if password and (not password.isascii() or not password.isprintable()):
        problems.append(("auth.password", "<hidden>", "use printable ASCII"))
    elif len(password) > MAX_PASSWORD:
        problems.append(
            ("auth.password", "<hidden>", f"at most {MAX_PASSWORD} characters (keepalived's too)")
        )
    return problems


def command_problem(argv: list[str] | tuple[str, ...]) -> str | None:
    """Why a notify or script command cannot run, or None (argv, no shell)."""
    if not argv:
        return 'give the program and its arguments as a list, e.g. ["/usr/local/bin/x", "a"]'
    if not argv[0].startswith("/"):
        return f"{argv[0]}: give the program's absolute path (commands run without a shell)"
    return check_executable(argv[0], what="program")


def notify_problems(item: VrrpConfig | SyncGroup) -> list[tuple[str, object, str]]:
    problems: list[tuple[str, object, str]] = []
    for key in NOTIFY_KEYS:
        argv = getattr(item, key)
        if argv and (why := command_problem(argv)):
            problems.append((key, argv[0] if argv else argv, why))
    return problems


def instances_problems(
    instances: list[VrrpConfig], scripts: list[VrrpScript], groups: list[SyncGroup]
) -> list[tuple[str, object, str]]:
    """What spans instances, scripts and groups, as (key path from the root, value, message).

    Paths: ``vrrp[i]...``, ``vrrp_script[i]...``, ``vrrp_sync_group[i]...``.
    """
    problems: list[tuple[str, object, str]] = []

    def bad(path: str, value: object, message: str) -> None:
        problems.append((path, value, message))

    names: dict[str, int] = {}
    identities: dict[tuple[str, int, int], int] = {}
    for i, cfg in enumerate(instances):
        if not cfg.name:
            bad(f"vrrp[{i}].name", "", "name every instance when there are several")
        elif cfg.name in names:
            bad(f"vrrp[{i}].name", cfg.name, f"also the name of vrrp[{names[cfg.name]}]")
        names.setdefault(cfg.name, i)
        where = (cfg.interface, cfg.vrid, cfg.family())
        if where in identities:
            bad(
                f"vrrp[{i}].vrid",
                cfg.vrid,
                f"vrrp[{identities[where]}] has VRID {cfg.vrid} on {cfg.interface} for this"
                " address family too",
            )
        identities.setdefault(where, i)
    syncd = [i for i, cfg in enumerate(instances) if cfg.sync_daemon.enabled]
    if len(syncd) > 1:
        bad(f"vrrp[{syncd[1]}].sync_daemon.enabled", True, "only one instance may run it")
    threads = {cfg.dedicated_thread for cfg in instances}
    if len(threads) > 1:
        bad("vrrp", "dedicated_thread", "must be the same in every instance (one heartbeat)")
    script_names: dict[str, int] = {}
    for i, script in enumerate(scripts):
        path = f"vrrp_script[{i}]"
        if not _NAME.match(script.name):
            bad(f"{path}.name", script.name, "use 1-64 letters, digits or _ . : -")
        elif script.name in script_names:
            bad(f"{path}.name", script.name, f"also vrrp_script[{script_names[script.name]}]")
        script_names.setdefault(script.name, i)
        if why := command_problem(script.command):
            bad(f"{path}.command", script.command[:1], why)
        if why := _duration_problem(script.interval, 0.01, 3600, "must be between 10ms and 1h"):
            bad(f"{path}.interval", str(script.interval), why)
        if why := _duration_problem(script.timeout, 0.001, 3600, "must be between 1ms and 1h"):
            bad(f"{path}.timeout", str(script.timeout), why)
        for key in ("rise", "fall"):
            if not 1 <= getattr(script, key) <= 100:
                bad(f"{path}.{key}", getattr(script, key), "must be 1-100")
        if not -MAX_WEIGHT <= script.weight <= MAX_WEIGHT:
            bad(f"{path}.weight", script.weight, f"must be {-MAX_WEIGHT}..{MAX_WEIGHT}")
    for i, cfg in enumerate(instances):
        for j, ts in enumerate(cfg.track_scripts):
            if ts.script not in script_names:
                known = ", ".join(sorted(script_names)[:10]) or "none"
                bad(
                    f"vrrp[{i}].track_scripts[{j}].script",
                    ts.script,
                    f"no [[vrrp_script]] of that name (known: {known})",
                )
    member_of: dict[str, str] = {}
    group_names: set[str] = set()
    for i, group in enumerate(groups):
        path = f"vrrp_sync_group[{i}]"
        if not _NAME.match(group.name):
            bad(f"{path}.name", group.name, "use 1-64 letters, digits or _ . : -")
        elif group.name in group_names:
            bad(f"{path}.name", group.name, "two sync groups have this name")
        group_names.add(group.name)
        if not group.instances:
            bad(f"{path}.instances", [], "list the instances that move together")
        for j, member in enumerate(group.instances):
            if member not in names:
                bad(f"{path}.instances[{j}]", member, "no [[vrrp]] instance of that name")
            elif member in member_of:
                bad(f"{path}.instances[{j}]", member, f"already in sync group {member_of[member]}")
            member_of.setdefault(member, group.name)
        for key, value, message in notify_problems(group):
            bad(f"{path}.{key}", value, message)
    return problems
