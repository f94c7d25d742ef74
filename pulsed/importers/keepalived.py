"""keepalived.conf -> pulsed: virtual servers, real servers and their checks, VRRP.

Where keepalived reads a value in a surprising way, the import does what
keepalived does, so that the new router behaves like the old one, and warns
with what was probably meant. Checked against keepalived 2.2.7 (Debian 12):

- ``lb_kind``/``lvs_method`` take NAT, DR and TUN in capitals only: ``dr``
  is refused with a log line and the service stays NAT (keepalived's default);
- ``lb_algo`` takes the kernel's names in lower case only: ``RR`` leaves wlc;
- ``protocol`` is read without regard to case;
- ``state`` takes MASTER and BACKUP in capitals only; ``master`` is ignored;
- a real server without ``alpha`` starts up (pulsed's default: down);
- ``retry`` counts retries: a server goes down after retry + 1 failures;
- defaults: delay_loop 60s, connect_timeout 5s, retry 1 (DNS_CHECK 3,
  MISC_CHECK 0), delay_before_retry 1s, HTTP status 200-299, VRRP version 2.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from pulsed.importers.common import (
    address,
    argv,
    host_port,
    instance_name,
    number,
    prefix_of_mask,
    seconds,
    service_name,
)
from pulsed.importers.emit import Table
from pulsed.importers.keepalived_lexer import Node
from pulsed.importers.report import Report, Where

SCHEDULERS: tuple[str, ...] = ("rr", "wrr", "lc", "wlc", "lblc", "sh", "mh", "dh", "fo", "ovf")
SCHEDULERS += ("lblcr", "sed", "nq", "twos")
FORWARDING = {"NAT": "nat", "DR": "dr", "TUN": "tunnel"}
SCHED_FLAGS = ("sh-port", "sh-fallback", "mh-port", "mh-fallback", "flag-1", "flag-2", "flag-3")
MAX_RANGE = 256  # addresses one virtual_server_group range may expand to
DEFAULT_DELAY_LOOP = 60.0
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_RETRY = 1
DEFAULT_DELAY_BEFORE_RETRY = 1.0
CHECKERS = {
    "HTTP_GET": "http",
    "SSL_GET": "https",
    "TCP_CHECK": "tcp",
    "MISC_CHECK": "exec",
    "SMTP_CHECK": "smtp",
    "DNS_CHECK": "dns",
    "UDP_CHECK": "udp",
    "PING_CHECK": "icmp",
}

# Why some keywords have no pulsed form (the rest get a generic line).
WHY_NOT = {
    "notification_email": "pulsed sends no mail; use notify commands or the event FIFO",
    "notification_email_from": "pulsed sends no mail",
    "smtp_server": "pulsed sends no mail",
    "smtp_connect_timeout": "pulsed sends no mail",
    "smtp_alert": "pulsed sends no mail",
    "router_id": "pulsed has no router id (it appears only in keepalived's mail and SNMP)",
    "enable_script_security": "pulsed runs commands as itself, always without a shell",
    "script_user": "pulsed runs commands as itself; use a wrapper such as runuser",
    "snmp_name": "pulsed has no SNMP; see /metrics",
    "quorum": "pulsed has no quorum; min_healthy keeps servers in instead (fail open)",
    "quorum_up": "pulsed has no quorum commands; use the real servers' notify_up",
    "quorum_down": "pulsed has no quorum commands; use the real servers' notify_down",
    "hysteresis": "pulsed has no quorum",
    "omega": "pulsed has no quorum commands",
    "ha_suspend": "pulsed probes on both routers all the time, so the backup takes over warm",
    "persistence_engine": "pulsed sets no IPVS persistence engine",
    "digest": "pulsed does not compare a page digest; body_regex can match its text",
    "use_vmac": "pulsed adds VIPs to the interface itself, with no macvlan",
    "vmac_xmit_base": "pulsed uses no macvlan",
    "virtual_ipaddress_excluded": "pulsed puts every VIP in its adverts; list them in"
    " virtual_addresses or add them outside pulsed",
    "virtual_routes": "pulsed adds no routes with the VIPs",
    "virtual_rules": "pulsed adds no rules with the VIPs",
    "static_ipaddress": "pulsed adds no static addresses",
    "static_routes": "pulsed adds no static routes",
    "static_rules": "pulsed adds no static rules",
    "dont_track_primary": "pulsed always goes to FAULT while the VRRP interface is down",
    "garp_master_delay": "pulsed sends one burst of gratuitous ARPs (garp_count), no second"
    " burst; garp_refresh repeats it",
    "net_namespace": "run pulsed itself in the namespace (ip netns exec)",
    "misc_dynamic": "pulsed reads a weight percentage from the command's output"
    ' ("75%"), not exit codes 2-255',
    "user": "pulsed runs commands as itself",
    "bind_port": "pulsed probes from an ephemeral port",
    "fast_recovery": "pulsed opens a new connection for every probe already",
    "http_protocol": "pulsed's HTTP probe speaks HTTP/1.1 with Connection: close",
    "sorry_server_inhibit": "pulsed puts the sorry server in only while every real server is"
    " down, and takes it out after",
    "min_reply_length": "pulsed's udp probe matches the reply by expect or expect_hex",
    "max_reply_length": "pulsed's udp probe matches the reply by expect or expect_hex",
    "regex_no_match": "body_regex must match; pulsed has no negated form",
    "lvs_flush": "pulsed touches only the services it declares",
    "lvs_flush_onstop": "see [daemon] remove_on_shutdown",
}


@dataclass
class _Timing:
    """Check timing as keepalived inherits it: checker over real server over virtual server."""

    delay_loop: tuple[float, Where] | None = None
    connect_timeout: tuple[float, Where] | None = None
    retry: tuple[int, Where] | None = None
    delay_before_retry: tuple[float, Where] | None = None
    warmup: tuple[float, Where] | None = None
    alpha: tuple[bool, Where] | None = None
    virtualhost: tuple[str, Where] | None = None

    def over(self, base: _Timing) -> _Timing:
        return _Timing(
            **{
                name: getattr(self, name)
                if getattr(self, name) is not None
                else getattr(base, name)
                for name in self.__dataclass_fields__
            }
        )


@dataclass
class _Real:
    table: Table
    check: dict[str, tuple[Any, Where | None]]
    inhibit: tuple[bool, Where] | None = None


@dataclass
class _Service:
    """What a virtual_server block says, before it is stamped out for each address."""

    node: Node
    values: dict[str, tuple[Any, Where | None]] = field(default_factory=dict)
    reals: list[_Real] = field(default_factory=list)
    inhibit: bool = False


class Keepalived:
    def __init__(self, report: Report) -> None:
        self.report = report
        self.root = Table()
        self.groups: dict[str, Node] = {}
        self.track_files: dict[str, Node] = {}
        self.names: set[str] = set()
        self.vrrp_version: tuple[int, Where] | None = None
        self.garp: dict[str, tuple[Node, str]] = {}
        self.sync_daemon: Node | None = None
        self.ssl: dict[str, tuple[str, Where]] = {}
        self.instances: dict[str, Table] = {}

    # -- the top level -------------------------------------------------------------------

    def translate(self, nodes: list[Node]) -> Table:
        for node in nodes:  # what later blocks refer to
            if node.keyword == "virtual_server_group" and node.args:
                self.groups[node.args[0]] = node
            elif node.keyword == "vrrp_track_file" and node.args:
                self.track_files[node.args[0]] = node
            elif node.keyword == "global_defs":
                self.global_defs(node)
            elif node.keyword == "SSL":
                self.ssl_block(node)
        for node in nodes:
            handler = {
                "vrrp_script": self.vrrp_script,
                "vrrp_instance": self.vrrp_instance,
                "vrrp_sync_group": self.sync_group,
                "virtual_server": self.virtual_server,
            }.get(node.keyword)
            if handler is not None:
                handler(node)
            elif node.keyword not in (
                "virtual_server_group",
                "vrrp_track_file",
                "global_defs",
                "SSL",
            ):
                self.skip(node)
        if self.sync_daemon is not None:
            self.lvs_sync_daemon(self.sync_daemon)
        if "service" not in self.root.values:
            self.root.set("service", [])
        return self.root

    def skip(self, node: Node, why: str | None = None) -> None:
        reason = why or WHY_NOT.get(node.keyword) or "no pulsed equivalent"
        self.report.untranslated(node.where, f"{node.keyword}: not translated ({reason})")

    def global_defs(self, node: Node) -> None:
        for child in node.children or []:
            key, arg = child.keyword, (child.args[0] if child.args else None)
            if key == "vrrp_version":
                version = number(arg, child.where, self.report, key, 2, 3)
                if version is not None:
                    self.vrrp_version = (int(version), child.where)
            elif key in ("vrrp_garp_master_repeat", "vrrp_garp_master_refresh"):
                self.garp[key.removeprefix("vrrp_")] = (child, arg or "")
            elif key == "vrrp_garp_interval":
                self.garp["garp_interval"] = (child, arg or "")
            elif key == "lvs_sync_daemon":
                self.sync_daemon = child
            elif key == "notify_fifo" and arg:
                self.root.table("hooks").set("fifo", arg, child.where)
            else:
                self.skip(child)

    def ssl_block(self, node: Node) -> None:
        for child in node.children or []:
            if child.keyword in ("ca", "certificate", "key") and child.args:
                self.ssl[child.keyword] = (child.args[0], child.where)
            else:
                self.skip(child, "pulsed reads no key password; give an unencrypted key")

    # -- VRRP ----------------------------------------------------------------------------

    def vrrp_script(self, node: Node) -> None:
        script = Table(node.where, node.text())
        script.set("name", instance_name(node.args[0] if node.args else "script"), node.where)
        interval = 1.0
        timeout: float | None = None
        for child in node.children or []:
            key, arg = child.keyword, (child.args[0] if child.args else None)
            if key == "script" and arg is not None:
                words = argv(" ".join(child.args), child.where, self.report, "script")
                if words is not None:
                    script.set("command", words, child.where)
            elif key in ("interval", "timeout"):
                value = number(arg, child.where, self.report, key, 0.01, 3600, whole=False)
                if value is not None:
                    script.set(key, seconds(value), child.where)
                    if key == "interval":
                        interval = value
                    else:
                        timeout = value
            elif key in ("rise", "fall"):
                value = number(arg, child.where, self.report, key, 1, 100)
                if value is not None:
                    script.set(key, int(value), child.where)
            elif key == "weight":
                value = number(arg, child.where, self.report, key, -254, 254)
                if value is not None:
                    if "reverse" in child.args[1:]:
                        self.report.untranslated(child.where, "weight ... reverse: not translated")
                    script.set(key, int(value), child.where)
            else:
                self.skip(child)
        if timeout is None:  # keepalived's script timeout defaults to its interval
            script.set("timeout", seconds(interval))
        self.root.append("vrrp_script", script)

    def vrrp_instance(self, node: Node) -> None:
        vrrp = Table(node.where, node.text())
        name = instance_name(node.args[0] if node.args else "VI")
        vrrp.set("name", name, node.where)
        version, vwhere = self.vrrp_version or (2, None)
        vrrp.set("version", version, vwhere)
        vrrp.set("priority", 100)  # keepalived's default, written out
        vrrp.set("garp_interval", "0s")  # keepalived sends its gratuitous ARPs back to back
        for key, (child, text) in self.garp.items():
            self.garp_value(vrrp, key, child, text)
        auth: tuple[str, Where] | None = None
        for child in node.children or []:
            key, args = child.keyword, child.args
            arg: str | None = args[0] if args else None
            if key == "state":
                if arg in ("MASTER", "BACKUP"):
                    vrrp.set("initial_state", arg.lower(), child.where)
                else:
                    self.report.warn(
                        child.where,
                        f"state {arg}: keepalived takes only MASTER or BACKUP and ignores this"
                        f" (starts as backup); probably meant {str(arg).upper()}",
                    )
            elif key == "interface" and arg:
                vrrp.set("interface", arg, child.where)
            elif key == "virtual_router_id":
                self.set_number(vrrp, "vrid", child, 1, 255)
            elif key == "priority":
                self.set_number(vrrp, "priority", child, 1, 255)
            elif key == "advert_int":
                value = number(arg, child.where, self.report, key, 0.01, 255, whole=False)
                if value is not None:
                    vrrp.set("advert_interval", seconds(value), child.where)
            elif key in ("version", "vrrp_version"):
                self.set_number(vrrp, "version", child, 2, 3)
            elif key == "nopreempt":
                vrrp.set("preempt", False, child.where)
            elif key == "preempt":
                vrrp.set("preempt", True, child.where)
            elif key == "preempt_delay":
                value = number(arg, child.where, self.report, key, 0, 3600, whole=False)
                if value is not None:
                    vrrp.set("preempt_delay", seconds(value), child.where)
            elif key == "virtual_ipaddress":
                self.vips(vrrp, child)
            elif key == "unicast_peer":
                peers = [c.keyword for c in child.children or [] if c.keyword]
                vrrp.set("unicast_peers", peers, child.where)
            elif key == "unicast_src_ip" and arg:
                vrrp.set("unicast_source", arg, child.where)
            elif key == "mcast_src_ip" and arg:
                if "unicast_source" not in vrrp.sources:
                    vrrp.set("unicast_source", arg, child.where)
            elif key == "authentication":
                auth = self.authentication(child)
            elif key == "track_interface":
                self.track_interfaces(vrrp, child)
            elif key == "track_script":
                self.track_scripts(vrrp, child)
            elif key == "track_file":
                self.track_file(vrrp, child)
            elif key.startswith("notify") and key in (
                "notify_master",
                "notify_backup",
                "notify_fault",
                "notify_stop",
                "notify",
            ):
                words = argv(" ".join(args), child.where, self.report, key)
                if words is not None:
                    vrrp.set(key, words, child.where)
            elif key in ("garp_master_repeat", "garp_master_refresh", "garp_interval"):
                self.garp_value(vrrp, key, child, arg or "")
            elif key == "lvs_sync_daemon_interface" and arg:
                vrrp.table("sync_daemon").set("enabled", True, child.where)
                vrrp.table("sync_daemon").set("interface", arg, child.where)
            else:
                self.skip(child)
        if auth is not None:
            password, where = auth
            if vrrp.get("version") == 2:
                vrrp.table("auth").set("password", password, where)
            else:
                self.report.warn(
                    where,
                    "authentication: keepalived ignores it with VRRP version 3, and so does"
                    " the import",
                )
        if not vrrp.get("virtual_addresses"):
            self.report.untranslated(node.where, f"vrrp_instance {name}: no virtual_ipaddress")
        self.instances[name] = vrrp
        self.root.append("vrrp", vrrp)

    def set_number(self, table: Table, key: str, child: Node, low: int, high: int) -> None:
        arg = child.args[0] if child.args else None
        value = number(arg, child.where, self.report, child.keyword, low, high)
        if value is not None:
            table.set(key, int(value), child.where)

    def garp_value(self, vrrp: Table, key: str, child: Node, arg: str) -> None:
        if key == "garp_master_repeat":
            value = number(arg, child.where, self.report, key, 0, 100)
            if value is not None:
                vrrp.set("garp_count", int(value), child.where)
        elif key == "garp_master_refresh":
            value = number(arg, child.where, self.report, key, 0, 86400)
            if value is not None:
                vrrp.set("garp_refresh", seconds(value), child.where)
        else:
            value = number(arg, child.where, self.report, key, 0, 10, whole=False)
            if value is not None:
                vrrp.set("garp_interval", seconds(value), child.where)

    def vips(self, vrrp: Table, node: Node) -> None:
        out: list[Any] = []
        for child in node.children or []:
            text = child.keyword
            try:
                iface = ipaddress.ip_interface(text)
            except ValueError:
                self.report.untranslated(child.where, f"virtual_ipaddress {text!r}: not an address")
                continue
            if "/" not in text:  # keepalived's default prefix: the host's own
                iface = ipaddress.ip_interface(f"{text}/{iface.max_prefixlen}")
            device = ""
            args = child.args
            for i, word in enumerate(args):
                nxt = args[i + 1] if i + 1 < len(args) else ""
                if word == "dev":
                    device = nxt
                elif word == "label":
                    self.report.untranslated(
                        child.where, f"label {nxt}: pulsed adds VIPs without a label"
                    )
                elif word in ("brd", "broadcast", "scope", "no_track", "preferred_lft"):
                    self.report.untranslated(child.where, f"{word}: not translated")
            out.append({"address": str(iface), "interface": device} if device else str(iface))
        vrrp.set("virtual_addresses", out, node.where)

    def authentication(self, node: Node) -> tuple[str, Where] | None:
        kind = password = None
        where = node.where
        for child in node.children or []:
            if child.keyword == "auth_type":
                kind = child.args[0] if child.args else None
            elif child.keyword == "auth_pass":
                password = " ".join(child.args)
                where = child.where
        if kind == "AH":
            self.report.untranslated(node.where, "auth_type AH: pulsed has no IPsec AH")
            return None
        if kind != "PASS" or password is None:
            self.report.untranslated(
                node.where, "authentication: needs auth_type PASS and auth_pass"
            )
            return None
        if len(password) > 8:  # keepalived truncates it to the 8 bytes an advert holds
            self.report.warn(
                where, "auth_pass: longer than 8 characters; keepalived uses the first 8"
            )
            password = password[:8]
        return password, where

    def weight_arg(self, child: Node) -> float | None:
        """The number after ``weight`` in a tracking line (-254..254), or None (reported)."""
        i = child.args.index("weight")
        value = child.args[i + 1] if i + 1 < len(child.args) else None
        return number(value, child.where, self.report, "weight", -254, 254)

    def track_interfaces(self, vrrp: Table, node: Node) -> None:
        tracked = []
        for child in node.children or []:
            entry: dict[str, Any] = {"interface": child.keyword}
            if "weight" in child.args:
                weight = self.weight_arg(child)
                if weight is None:
                    continue
                if weight > 0:
                    self.report.untranslated(
                        child.where,
                        f"track_interface {child.keyword} weight {weight}: pulsed only lowers"
                        " the priority while an interface is down (give a negative weight)",
                    )
                    continue
                if weight < 0:
                    entry["decrement"] = int(-weight)
            tracked.append(entry)
        vrrp.set("track_interfaces", tracked, node.where)

    def track_scripts(self, vrrp: Table, node: Node) -> None:
        tracked = []
        for child in node.children or []:
            entry: dict[str, Any] = {"script": instance_name(child.keyword)}
            if "weight" in child.args:
                weight = self.weight_arg(child)
                if weight is not None:
                    entry["weight"] = int(weight)
            tracked.append(entry)
        vrrp.set("track_scripts", tracked, node.where)

    def track_file(self, vrrp: Table, node: Node) -> None:
        tracked = []
        for child in node.children or []:
            definition = self.track_files.get(child.keyword)
            if definition is None:
                self.report.untranslated(child.where, f"track_file {child.keyword}: not defined")
                continue
            entry: dict[str, Any] = {}
            for part in definition.children or []:
                if part.keyword == "file" and part.args:
                    entry["file"] = part.args[0]
                elif part.keyword == "weight" and part.args:
                    weight = number(part.args[0], part.where, self.report, "weight", -254, 254)
                    if weight is not None:
                        entry["weight"] = int(weight)
            if "weight" in child.args:
                weight = self.weight_arg(child)
                if weight is not None:
                    entry["weight"] = int(weight)
            if "file" in entry:
                tracked.append(entry)
        vrrp.set("track_files", tracked, node.where)

    def sync_group(self, node: Node) -> None:
        group = Table(node.where, node.text())
        group.set("name", instance_name(node.args[0] if node.args else "G"), node.where)
        for child in node.children or []:
            key = child.keyword
            if key == "group":
                names = [instance_name(c.keyword) for c in child.children or []]
                names += [instance_name(a) for a in child.args]
                group.set("instances", names, child.where)
            elif key in ("notify_master", "notify_backup", "notify_fault", "notify_stop", "notify"):
                words = argv(" ".join(child.args), child.where, self.report, key)
                if words is not None:
                    group.set(key, words, child.where)
            else:
                self.skip(child)
        self.root.append("vrrp_sync_group", group)

    def lvs_sync_daemon(self, node: Node) -> None:
        args = node.args
        if len(args) < 2 or instance_name(args[1]) not in self.instances:
            self.report.untranslated(
                node.where, "lvs_sync_daemon: needs an interface and a vrrp_instance name"
            )
            return
        sync = self.instances[instance_name(args[1])].table("sync_daemon")
        sync.set("enabled", True, node.where)
        sync.set("interface", args[0], node.where)
        if "id" in args:
            i = args.index("id")
            value = number(
                args[i + 1] if i + 1 < len(args) else None, node.where, self.report, "id", 0, 255
            )
            if value is not None:
                sync.set("syncid", int(value), node.where)

    # -- virtual servers -----------------------------------------------------------------

    def virtual_server(self, node: Node) -> None:
        identities = self.identities(node)
        if not identities:
            return
        svc = self.service_settings(node)
        for label, identity in identities:
            table = Table(node.where, node.text())
            table.set("name", service_name(label, self.names))
            for key, value in identity.items():
                table.set(key, value, node.where)
            self.fill_service(table, svc, "fwmark" in identity)
            self.root.append("service", table)

    def identities(self, node: Node) -> list[tuple[str, dict[str, Any]]]:
        args = node.args
        if not args:
            self.report.untranslated(node.where, "virtual_server without an address")
            return []
        if args[0] == "fwmark":
            mark = number(
                args[1] if len(args) > 1 else None, node.where, self.report, "fwmark", 1, 2**32 - 1
            )
            return [] if mark is None else [(f"fwmark-{mark}", {"fwmark": int(mark)})]
        if args[0] == "group":
            name = args[1] if len(args) > 1 else ""
            group = self.groups.get(name)
            if group is None:
                self.report.untranslated(
                    node.where, f"virtual_server group {name!r}: no such group"
                )
                return []
            out = []
            for entry in group.children or []:
                out.extend(self.group_entry(entry, name))
            return out
        return self.address_identity(args[0], args[1] if len(args) > 1 else None, node.where, "")

    def address_identity(
        self, host: str, port_text: str | None, where: Where, group: str
    ) -> list[tuple[str, dict[str, Any]]]:
        ip = address(host)
        if ip is None:
            self.report.untranslated(where, f"virtual_server {host!r}: not an IP address")
            return []
        port = number(port_text, where, self.report, "port", 0, 65535)
        if port is None:
            return []
        if port == 0:
            self.report.untranslated(
                where, f"{host} port 0: a service on every port has no pulsed form; use fwmark"
            )
            return []
        label = f"{group}/" if group else ""
        return [
            (f"{label}{host_port(ip, int(port))}".replace("/", "-"), {"vip": ip, "port": int(port)})
        ]

    def group_entry(self, entry: Node, group: str) -> list[tuple[str, dict[str, Any]]]:
        if entry.keyword == "fwmark":
            mark = number(
                entry.args[0] if entry.args else None,
                entry.where,
                self.report,
                "fwmark",
                1,
                2**32 - 1,
            )
            return [] if mark is None else [(f"{group}-fwmark-{mark}", {"fwmark": int(mark)})]
        port = entry.args[0] if entry.args else None
        first, dash, last = entry.keyword.rpartition("-")
        if not dash or address(entry.keyword) is not None:
            return self.address_identity(entry.keyword, port, entry.where, group)
        start = address(first)
        if start is None:
            self.report.untranslated(entry.where, f"{entry.keyword}: not an address range")
            return []
        base = ipaddress.ip_address(start)
        low = int(
            str(base).split("." if base.version == 4 else ":")[-1] or "0",
            10 if base.version == 4 else 16,
        )
        if not re.fullmatch("[0-9]{1,3}" if base.version == 4 else "[0-9a-fA-F]{1,4}", last):
            self.report.untranslated(entry.where, f"{entry.keyword}: not an address range")
            return []
        high = int(last, 10 if base.version == 4 else 16)
        if (
            not low <= high
            or high - low >= MAX_RANGE
            or high > (255 if base.version == 4 else 0xFFFF)
        ):
            self.report.untranslated(entry.where, f"{entry.keyword}: range not understood")
            return []
        out = []
        for n in range(high - low + 1):
            out.extend(self.address_identity(str(base + n), port, entry.where, group))
        return out

    def service_settings(self, node: Node) -> _Service:
        svc = _Service(node)
        timing = _Timing()
        values = svc.values
        reals: list[Node] = []
        for child in node.children or []:
            key, args = child.keyword, child.args
            arg = args[0] if args else None
            if self.timing(timing, child):
                continue
            if key in ("lb_algo", "lvs_sched"):
                if arg in SCHEDULERS:
                    values["scheduler"] = (arg, child.where)
                else:
                    self.report.warn(
                        child.where,
                        f"{key} {arg}: keepalived does not know it and keeps wlc"
                        + (
                            f"; probably meant {arg.lower()}"
                            if arg and arg.lower() in SCHEDULERS
                            else ""
                        ),
                    )
            elif key in ("lb_kind", "lvs_method"):
                self.forwarding(values, "forwarding", child)
            elif key == "persistence_timeout":
                value = (
                    360
                    if arg is None
                    else number(arg, child.where, self.report, key, 1, 31 * 86400)
                )
                if value is not None:
                    values["persistence"] = (seconds(value), child.where)
            elif key == "persistence_granularity" and arg:
                prefix = prefix_of_mask(arg)
                if prefix is None:
                    self.report.untranslated(child.where, f"{key} {arg}: not a netmask")
                else:
                    values["persistence_netmask"] = (prefix, child.where)
            elif key == "protocol":
                if arg and arg.upper() in ("TCP", "UDP", "SCTP"):
                    values["protocol"] = (arg.lower(), child.where)
                else:
                    self.report.warn(child.where, f"protocol {arg}: keepalived ignores it (TCP)")
            elif key == "ops":
                values["one_packet"] = (True, child.where)
            elif key in SCHED_FLAGS:
                flags = values.get("scheduler_flags", ([], child.where))[0]
                values["scheduler_flags"] = ([*flags, key], child.where)
            elif key == "sorry_server":
                ip = address(arg or "")
                port = args[1] if len(args) > 1 else None
                if ip is None:
                    self.report.untranslated(child.where, f"sorry_server {arg}: not an address")
                else:
                    port_value = (
                        number(port, child.where, self.report, "port", 1, 65535) if port else None
                    )
                    values["sorry_server"] = (
                        host_port(ip, None if port_value is None else int(port_value)),
                        child.where,
                    )
            elif key == "sorry_server_lvs_method":
                self.forwarding(values, "sorry_forwarding", child)
            elif key == "inhibit_on_failure":
                svc.inhibit = True
            elif key == "ip_family" and arg in ("inet", "inet6"):
                values["family"] = ("ipv4" if arg == "inet" else "ipv6", child.where)
            elif key == "real_server":
                reals.append(child)
            else:
                self.skip(child)
        for child in reals:
            real = self.real_server(child, timing, svc)
            if real is not None:
                svc.reals.append(real)
        return svc

    def forwarding(self, values: dict, key: str, child: Node) -> None:
        arg = child.args[0] if child.args else ""
        if arg in FORWARDING:
            values[key] = (FORWARDING[arg], child.where)
            if len(child.args) > 1:
                self.report.untranslated(
                    child.where, f"{' '.join(child.args[1:])}: tunnel options not translated"
                )
        else:
            meant = f"; probably meant {arg.upper()}" if arg.upper() in FORWARDING else ""
            self.report.warn(
                child.where,
                f"{child.keyword} {arg}: keepalived 2.2 does not take it and keeps NAT"
                f" (the import does the same){meant}",
            )

    def timing(self, timing: _Timing, child: Node) -> bool:
        """Read a timing keyword into ``timing``; False when ``child`` is not one."""
        key, arg, where = child.keyword, (child.args[0] if child.args else None), child.where
        if key == "delay_loop":
            value = number(arg, where, self.report, key, 0.01, 86400, whole=False)
            if value is not None:
                timing.delay_loop = (value, where)
        elif key == "connect_timeout":
            value = number(arg, where, self.report, key, 0.001, 86400, whole=False)
            if value is not None:
                timing.connect_timeout = (value, where)
        elif key in ("retry", "nb_get_retry"):
            value = number(arg, where, self.report, key, 0, 999)
            if value is not None:
                timing.retry = (int(value), where)
        elif key == "delay_before_retry":
            value = number(arg, where, self.report, key, 0.01, 86400, whole=False)
            if value is not None:
                timing.delay_before_retry = (value, where)
        elif key == "warmup":
            value = number(arg, where, self.report, key, 0, 86400, whole=False)
            if value is not None:
                timing.warmup = (value, where)
        elif key == "alpha":
            timing.alpha = (arg not in ("off", "no", "false"), where)
        elif key == "virtualhost" and arg:
            timing.virtualhost = (arg, where)
        else:
            return False
        return True

    def real_server(self, node: Node, base: _Timing, svc: _Service) -> _Real | None:
        args = node.args
        ip = address(args[0]) if args else None
        if ip is None:
            self.report.untranslated(node.where, f"real_server {' '.join(args)}: not an address")
            return None
        port = None
        if len(args) > 1:
            value = number(args[1], node.where, self.report, "port", 0, 65535)
            if value is None:
                return None
            port = int(value) or None
        table = Table(node.where, node.text())
        table.set("address", host_port(ip, port), node.where)
        real = _Real(table, {})
        timing = _Timing()
        checkers: list[Node] = []
        for child in node.children or []:
            key, arg = child.keyword, (child.args[0] if child.args else None)
            if self.timing(timing, child):
                continue
            if key == "weight":
                self.set_number(table, "weight", child, 0, 65535)
            elif key == "lvs_method":
                forwarding: dict[str, tuple[Any, Where]] = {}
                self.forwarding(forwarding, "forwarding", child)
                if forwarding:
                    table.set("forwarding", forwarding["forwarding"][0], child.where)
            elif key in ("uthreshold", "lthreshold"):
                name = "upper_threshold" if key == "uthreshold" else "lower_threshold"
                self.set_number(table, name, child, 0, 2**31 - 1)
            elif key == "inhibit_on_failure":
                real.inhibit = (arg not in ("off", "no", "false"), child.where)
            elif key in ("notify_up", "notify_down"):
                words = argv(" ".join(child.args), child.where, self.report, key)
                if words is not None:
                    table.set(key, words, child.where)
                    table.notes.append(
                        f"{key}: pulsed appends the service name and ADDRESS:PORT to the"
                        " arguments; keepalived passed none"
                    )
            elif key in CHECKERS or key in ("BFD_CHECK", "FILE_CHECK"):
                checkers.append(child)
            else:
                self.skip(child)
        if real.inhibit is None:
            real.inhibit = (svc.inhibit, node.where)
        timing = timing.over(base)
        if not checkers:
            # keepalived counts a real server without a checker as always up.
            real.check = {"type": ("none", node.where)}
            return real
        self.checker(real, checkers[0], timing)
        for extra in checkers[1:]:
            self.report.untranslated(
                extra.where,
                f"{extra.keyword}: pulsed runs one check per real server; the first"
                f" ({checkers[0].keyword}, line {checkers[0].where.line}) is kept",
            )
        return real

    def checker(self, real: _Real, node: Node, outer: _Timing) -> None:
        if node.keyword not in CHECKERS:
            self.skip(node, "pulsed has no such check")
            real.check = {"type": ("none", node.where)}
            return
        kind = CHECKERS[node.keyword]
        check: dict[str, tuple[Any, Where | None]] = {"type": (kind, node.where)}
        timing = _Timing()
        urls: list[Node] = []
        hosts: list[Node] = []
        for child in node.children or []:
            if self.timing(timing, child):
                continue
            key, args = child.keyword, child.args
            arg = args[0] if args else None
            if key == "url":
                urls.append(child)
            elif key == "host":
                hosts.append(child)
            elif self.placement(check, child):
                continue
            elif key in ("misc_path",) and arg is not None:
                words = argv(" ".join(args), child.where, self.report, key)
                if words is not None:
                    check["command"] = (words, child.where)
            elif key == "misc_timeout":
                value = number(arg, child.where, self.report, key, 0.001, 86400, whole=False)
                if value is not None:
                    timing.connect_timeout = (value, child.where)
            elif key == "helo_name" and arg:
                check["helo_name"] = (arg, child.where)
            elif key == "type" and node.keyword == "DNS_CHECK" and arg:
                check["query_type"] = (arg.upper(), child.where)
            elif key == "name" and node.keyword == "DNS_CHECK" and arg:
                check["query_name"] = (arg, child.where)
            elif key == "payload" and arg:
                check["payload_hex"] = ("".join(args), child.where)
            elif key == "require_reply":
                if args:
                    check["expect_hex"] = ("".join(args), child.where)
            elif key == "enable_sni":
                check["sni"] = (True, child.where)
            else:
                self.skip(child)
        if node.keyword == "DNS_CHECK":
            check.setdefault("query_name", (".", None))
        if node.keyword == "UDP_CHECK" and "expect_hex" not in check:
            self.report.warn(
                node.where,
                "UDP_CHECK without require_reply passes unless an ICMP error comes back;"
                " pulsed's udp probe waits for a reply",
            )
        if urls:
            self.url(check, urls[0])
            for extra in urls[1:]:
                self.report.untranslated(
                    extra.where,
                    f"url: pulsed probes one path per real server; the first (line"
                    f" {urls[0].where.line}) is kept",
                )
        elif kind in ("http", "https"):
            check["expect_status"] = (["200-299"], None)
        if hosts:
            for child in hosts[0].children or []:
                if not self.placement(check, child):
                    self.skip(child)
            for extra in hosts[1:]:
                self.report.untranslated(
                    extra.where,
                    "host: pulsed probes one address per real server; the first is kept",
                )
        check.pop("sni", None)
        self.check_timing(check, timing.over(outer), node.keyword)
        if kind == "https":
            check["tls_verify"] = (False, None)  # keepalived checks no certificate
            for key, name in (
                ("ca", "ca_file"),
                ("certificate", "client_cert"),
                ("key", "client_key"),
            ):
                if key in self.ssl:
                    check[name] = self.ssl[key]
        real.check = check

    def placement(self, check: dict, child: Node) -> bool:
        key, arg = child.keyword, (child.args[0] if child.args else None)
        if key == "connect_port":
            value = number(arg, child.where, self.report, key, 1, 65535)
            if value is not None:
                check["port"] = (int(value), child.where)
        elif key == "connect_ip" and arg:
            check["address"] = (arg, child.where)
        elif key == "bindto" and arg:
            check["bind_address"] = (arg, child.where)
        elif key == "bind_if" and arg:
            check["bind_interface"] = (arg, child.where)
        else:
            return False
        return True

    def url(self, check: dict, node: Node) -> None:
        statuses: list[str] = []
        for child in node.children or []:
            key, args = child.keyword, child.args
            if key == "path" and args:
                check["path"] = (args[0], child.where)
            elif key == "status_code":
                statuses.extend(args)
            elif key == "regex" and args:
                check["body_regex"] = (" ".join(args), child.where)
            elif key == "virtualhost" and args:
                check["host"] = (args[0], child.where)
            else:
                self.skip(child)
        check["expect_status"] = (statuses or ["200-299"], node.where if statuses else None)

    def check_timing(self, check: dict, timing: _Timing, keyword: str) -> None:
        interval, iwhere = timing.delay_loop or (DEFAULT_DELAY_LOOP, None)
        timeout, twhere = timing.connect_timeout or (
            (interval, None) if keyword == "MISC_CHECK" else (DEFAULT_CONNECT_TIMEOUT, None)
        )
        default_retry = {"DNS_CHECK": 3, "MISC_CHECK": 0}.get(keyword, DEFAULT_RETRY)
        retry, rwhere = timing.retry or (default_retry, None)
        check["interval"] = (seconds(interval), iwhere)
        if timeout > interval:
            self.report.warn(
                twhere or iwhere or Where("?"),
                f"connect_timeout {timeout:g}s is longer than delay_loop {interval:g}s; pulsed"
                " needs timeout <= interval, so the timeout is cut to the interval",
            )
            timeout = interval
        check["timeout"] = (seconds(timeout), twhere)
        check["rise"] = (1, None)
        check["fall"] = (retry + 1, rwhere)
        if retry:
            delay, dwhere = timing.delay_before_retry or (DEFAULT_DELAY_BEFORE_RETRY, None)
            check["retry_interval"] = (seconds(delay), dwhere)
        if timing.warmup is not None:
            check["jitter"] = (seconds(timing.warmup[0]), timing.warmup[1])
        alpha = timing.alpha[0] if timing.alpha else False
        check["initial_state"] = (
            "down" if alpha else "up",
            timing.alpha[1] if timing.alpha else None,
        )
        if timing.virtualhost is not None and "host" not in check:
            check["host"] = timing.virtualhost

    def fill_service(self, table: Table, svc: _Service, fwmark: bool) -> None:
        values = dict(svc.values)
        forwarding = values.get("forwarding", ("nat", None))
        if fwmark:
            values.pop("protocol", None)
            if "family" not in values:
                families = {
                    "ipv6" if str(r.table.get("address", "")).count(":") > 1 else "ipv4"
                    for r in svc.reals
                }
                if families == {"ipv6"}:
                    values["family"] = ("ipv6", None)
        else:
            values.pop("family", None)
        values["forwarding"] = forwarding
        values.setdefault("scheduler", ("wlc", None))
        if fwmark:
            self.portless_reals(svc)
        if "sorry_server" in values:
            # keepalived's sorry server forwards as the service does unless told.
            values.setdefault("sorry_forwarding", forwarding)
        for key, (value, where) in values.items():
            table.set(key, value, where)
        inhibits = [r.inhibit[0] for r in svc.reals if r.inhibit is not None]
        quiesce = inhibits.count(True) > len(inhibits) / 2 if inhibits else svc.inhibit
        table.set("on_failure", "quiesce" if quiesce else "remove")
        for real in svc.reals:
            if real.inhibit is not None and real.inhibit[0] != quiesce:
                self.report.untranslated(
                    real.inhibit[1],
                    f"inhibit_on_failure {'on' if real.inhibit[0] else 'off'} for this real server:"
                    f" pulsed sets on_failure per service; this one follows the others"
                    f" ({'quiesce' if quiesce else 'remove'})",
                )
        self.factor_checks(table, svc.reals)

    def portless_reals(self, svc: _Service) -> None:
        """keepalived's real servers of a fwmark service may leave out the port (the kernel
        keeps each packet's own); pulsed needs one, so the check's port stands in."""
        for real in list(svc.reals):
            text = str(real.table.get("address", ""))
            if text.startswith("[") or text.count(":") == 1:
                continue
            port = real.check.get("port", (None, None))[0]
            where = real.table.where or Where("?")
            if port is None:
                self.report.untranslated(
                    where,
                    "real_server without a port in a fwmark service: pulsed needs a port"
                    " (and this one's check names none)",
                )
                svc.reals.remove(real)
                continue
            real.table.set("address", host_port(text, int(port)), where)
            self.report.untranslated(
                where,
                f"real_server without a port: pulsed needs one and uses the check's port {port};"
                " under NAT the kernel now rewrites the destination port to it",
            )

    def factor_checks(self, table: Table, reals: list[_Real]) -> None:
        """Keys every real server's check shares go to the service's check; the rest to each
        real server's own check table."""
        common: dict[str, tuple[Any, Where | None]] = {}
        if reals:
            first = reals[0].check
            for key, (value, where) in first.items():
                if all(key in r.check and r.check[key][0] == value for r in reals[1:]):
                    common[key] = (value, where)
        check = table.table("check")
        for key, (value, where) in common.items():
            check.set(key, value, where)
        real_tables: list[Table] = []
        for real in reals:
            own = {k: v for k, v in real.check.items() if k not in common}
            copy = Table(
                real.table.where,
                real.table.origin,
                dict(real.table.values),
                dict(real.table.sources),
                list(real.table.notes),
            )
            if own:
                rcheck = copy.table("check")
                for key, (value, where) in own.items():
                    rcheck.set(key, value, where)
            real_tables.append(copy)
        if real_tables:
            table.set("real", real_tables)


def translate(nodes: list[Node], report: Report) -> Table:
    return Keepalived(report).translate(nodes)
