"""piranha's lvs.cf -> pulsed: ``virtual`` and ``server`` blocks, and the router pair.

lvs.cf is ``key = value`` lines, with ``virtual NAME {`` and, inside,
``server NAME {`` blocks. pulse's heartbeat (primary, backup,
heartbeat_port, keepalive, deadtime) has no wire form pulsed speaks; the
pair becomes a VRRP instance between ``primary`` and ``backup`` (unicast
adverts), written from the primary's side: on the backup router swap the
peer and lower the priority. nanny's checks (send/expect, timeout,
reentry) become pulsed checks: interval = keepalive... see ``check``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from pulsed.importers.common import (
    address,
    argv,
    host_port,
    number,
    prefix_of_mask,
    seconds,
    source_lines,
)
from pulsed.importers.common import service_name as unique_name
from pulsed.importers.emit import Table
from pulsed.importers.report import Report, Where

FORWARDING = {"nat": "nat", "direct": "dr", "tunnel": "tunnel"}
_ASSIGN = re.compile(r"^([A-Za-z0-9_]+)\s*=\s*(.*)$")
_BLOCK = re.compile(r"^(virtual|server|failover)\s+(\S+)\s*\{$")

WHY_NOT = {
    "serial_no": "pulsed keeps no serial number",
    "service": "pulse's service name; pulsed is one daemon",
    "heartbeat_port": "VRRP is IP protocol 112, on no port; open it in the firewall instead",
    "heartbeat": "pulsed's VRRP runs whenever a [[vrrp]] instance is configured",
    "backup_active": "pulsed's VRRP runs whenever a [[vrrp]] instance is configured",
    "debug_level": "see [daemon] log_level",
    "rsh_command": "pulsed copies no config between routers",
    "syncdaemon": "see [vrrp.sync_daemon]",
    "load_monitor": "pulsed runs no rup/ruptime; weight_header or an exec check can report load",
    "quiesce_server": "pulsed does not reset every weight when a server comes back",
    "reentry": "kept as rise",
    "use_regex": "read with expect",
    "nat_nmask": "read with nat_router",
    "monitor_links": "use [[vrrp.track_interfaces]]",
    "hard_shutdown": "pulsed does not power off servers",
}


@dataclass
class Block:
    kind: str
    name: str
    where: Where
    values: dict[str, tuple[str, Where]] = field(default_factory=dict)
    children: list[Block] = field(default_factory=list)


def parse(path: str, text: str, report: Report) -> Block:
    top = Block("", "", Where(path))
    stack = [top]
    for n, raw in enumerate(source_lines(text), 1):
        where = Where(path, n)
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line == "}":
            if len(stack) > 1:
                stack.pop()
            else:
                report.warn(where, "a '}' that closes no block; ignored")
            continue
        block = _BLOCK.match(line)
        if block:
            child = Block(block.group(1), block.group(2), where)
            stack[-1].children.append(child)
            stack.append(child)
            continue
        match = _ASSIGN.match(line)
        if match is None:
            report.untranslated(where, f"{line[:60]!r}: not a key = value line")
            continue
        key, value = match.group(1), match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        stack[-1].values[key] = (value, where)
    for unclosed in stack[1:]:
        report.warn(
            unclosed.where, f"{unclosed.kind} {unclosed.name}: block not closed before the end"
        )
    return top


class Piranha:
    def __init__(self, path: str, report: Report) -> None:
        self.path = path
        self.report = report
        self.root = Table()
        self.names: set[str] = set()

    def translate(self, top: Block) -> Table:
        values = top.values
        network, nwhere = values.get("network", ("nat", None))
        forwarding = FORWARDING.get(network)
        if forwarding is None:
            self.report.untranslated(
                nwhere or top.where, f"network = {network}: not nat, direct or tunnel"
            )
            forwarding = "nat"
        keepalive = self.num(values, "keepalive", 6)
        vrrp = self.pair(top, keepalive)
        for key, (_value, where) in values.items():
            if key in (
                "network",
                "keepalive",
                "primary",
                "backup",
                "deadtime",
                "nat_router",
                "nat_nmask",
            ):
                continue
            if key in ("primary_private", "backup_private"):
                self.report.untranslated(
                    where, f"{key}: pulsed's VRRP speaks on one interface per instance"
                )
                continue
            self.skip(key, where)
        for block in top.children:
            if block.kind == "virtual":
                self.virtual(block, forwarding, keepalive, vrrp)
            else:
                self.report.untranslated(block.where, f"{block.kind} {block.name}: not translated")
        self.root.values.setdefault("service", [])
        return self.root

    def skip(self, key: str, where: Where) -> None:
        self.report.untranslated(
            where, f"{key}: not translated ({WHY_NOT.get(key, 'no pulsed equivalent')})"
        )

    def num(self, values: dict, key: str, default: float) -> float:
        found = values.get(key)
        if found is None:
            return default
        value = number(found[0], found[1], self.report, key, 1, 3600, whole=False)
        return default if value is None else float(value)

    def pair(self, top: Block, keepalive: float) -> Table | None:
        values = top.values
        primary = values.get("primary")
        backup = values.get("backup")
        if primary is None and backup is None:
            return None
        vrrp = Table(top.where, "primary / backup")
        vrrp.set("name", "lvs")
        vrrp.set("version", 3)
        vrrp.set("vrid", 51)
        vrrp.set("priority", 150)
        vrrp.notes.append(
            "pulse's heartbeat as VRRP, from the primary's side: on the backup router"
            " set priority = 100 and unicast_peers to the primary's address"
        )
        vrrp.set(
            "advert_interval",
            seconds(max(1.0, min(keepalive, 40.0))),
            values.get("keepalive", ("", None))[1],
        )
        if primary is not None and address(primary[0]) is not None:
            vrrp.set("unicast_source", address(primary[0]), primary[1])
        if backup is not None and address(backup[0]) is not None:
            vrrp.set("unicast_peers", [address(backup[0])], backup[1])
        deadtime = values.get("deadtime")
        if deadtime is not None:
            self.report.warn(
                deadtime[1],
                "deadtime: VRRP's takeover time is about 3 x advert_interval; it is not set"
                " on its own",
            )
        vrrp.set("virtual_addresses", [])
        nat = values.get("nat_router")
        if nat is not None:
            self.vip(vrrp, nat, values.get("nat_nmask"))
        self.root.append("vrrp", vrrp)
        return vrrp

    def vip(self, vrrp: Table, value: tuple[str, Where], mask: tuple[str, Where] | None) -> None:
        words = value[0].split()
        ip = address(words[0]) if words else None
        if ip is None:
            self.report.untranslated(value[1], f"{value[0]}: not an address")
            return
        prefix = prefix_of_mask(mask[0]) if mask else None
        prefix = prefix if prefix is not None else (128 if ":" in ip else 32)
        entry: str | dict = f"{ip}/{prefix}"
        if len(words) > 1:
            device = words[1].split(":")[0]  # eth0:1 is an alias of eth0
            entry = {"address": f"{ip}/{prefix}", "interface": device}
        vips = vrrp.get("virtual_addresses") or []
        texts = [v if isinstance(v, str) else v["address"] for v in vips]
        if (entry if isinstance(entry, str) else entry["address"]) not in texts:
            vips.append(entry)
        vrrp.set("virtual_addresses", vips, vrrp.sources.get("virtual_addresses") or value[1])

    def virtual(self, block: Block, forwarding: str, keepalive: float, vrrp: Table | None) -> None:
        values = block.values
        active = values.get("active", ("1", None))
        if active[0] == "0":
            self.report.warn(
                active[1] or block.where,
                f"virtual {block.name}: active = 0, left out as pulse does",
            )
            return
        table = Table(block.where, f"virtual {block.name}")
        addr = values.get("address")
        port = values.get("port")
        mark = values.get("fwmark")
        words = addr[0].split() if addr else []
        ip = address(words[0]) if words else None
        if ip is None:
            self.report.untranslated(block.where, f"virtual {block.name}: no address")
            return
        table.set("name", unique_name(block.name, self.names), block.where)
        if mark is not None:
            value = number(mark[0], mark[1], self.report, "fwmark", 1, 2**32 - 1)
            if value is None:
                return
            table.set("fwmark", int(value), mark[1])
        else:
            pvalue = number(port[0], port[1], self.report, "port", 1, 65535) if port else None
            if pvalue is None:
                self.report.untranslated(block.where, f"virtual {block.name}: no port")
                return
            table.set("vip", ip, addr[1] if addr else None)
            table.set("port", int(pvalue), port[1] if port else None)
        if vrrp is not None and addr is not None:
            self.vip(vrrp, addr, values.get("vip_nmask"))
        table.set("forwarding", forwarding)
        table.set("scheduler", "wlc")
        for key, (text, where) in values.items():
            if key in ("address", "port", "fwmark", "active", "vip_nmask", "send", "expect"):
                continue
            if key in ("timeout", "reentry", "use_regex", "send_program"):
                continue
            if key == "scheduler":
                table.set("scheduler", text, where)
            elif key == "protocol":
                if text in ("tcp", "udp"):
                    table.set("protocol", text, where)
                else:
                    self.report.untranslated(where, f"protocol = {text}: not tcp or udp")
            elif key == "persistent":
                seconds_ = number(text, where, self.report, key, 0, 31 * 86400)
                if seconds_:
                    table.set("persistence", seconds(seconds_), where)
            elif key == "pmask":
                prefix = prefix_of_mask(text)
                if prefix is not None:
                    table.set("persistence_netmask", prefix, where)
            elif key == "sorry_server":
                sorry = address(text.split()[0]) if text.split() else None
                if sorry is not None:
                    table.set("sorry_server", host_port(sorry, table.get("port")), where)
                    table.set("sorry_forwarding", forwarding)
            else:
                self.skip(key, where)
        self.check(table.table("check"), values, keepalive, block)
        reals = []
        for server in block.children:
            real = self.server(server, table.get("port"))
            if real is not None:
                reals.append(real)
        if reals:
            table.set("real", reals)
        table.set("on_failure", "remove")  # nanny takes a failed server out of the table
        self.root.append("service", table)

    def check(self, check: Table, values: dict, keepalive: float, block: Block) -> None:
        """nanny probes every ``keepalive`` seconds (pulse hands it -c), a server is down after
        ``timeout`` seconds of failures and back after ``reentry`` seconds of success."""
        interval = keepalive
        timeout = self.num(values, "timeout", 10)
        reentry = self.num(values, "reentry", 180)
        check.set("interval", seconds(interval))
        check.set("timeout", seconds(min(interval, 10.0)))
        check.set(
            "fall", max(1, math.ceil(timeout / interval)), values.get("timeout", ("", None))[1]
        )
        check.set(
            "rise", max(1, math.ceil(reentry / interval)), values.get("reentry", ("", None))[1]
        )
        check.set("initial_state", "down")
        send = values.get("send")
        expect = values.get("expect")
        program = values.get("send_program")
        if program is not None:
            words = argv(
                program[0].replace("%h", "{address}"), program[1], self.report, "send_program"
            )
            if words is not None:
                check.set("type", "exec", program[1])
                check.set("command", words, program[1])
                if expect is not None:
                    self.report.untranslated(
                        expect[1],
                        "expect with send_program: pulsed takes the command's exit status, not"
                        " its output",
                    )
            return
        if send is None and expect is None:
            check.set("type", "tcp")
            return
        regex = values.get("use_regex", ("0", None))[0] == "1"
        step: dict[str, str] = {}
        if send is not None:
            step["send"] = send[0].replace("\\r", "\r").replace("\\n", "\n")
        if expect is not None:
            step["expect"] = expect[0] if regex else "^" + re.escape(expect[0])
        check.set("type", "send_expect", (send or expect or ("", block.where))[1])
        check.set("steps", [step], (send or expect or ("", block.where))[1])

    def server(self, block: Block, port: int | None) -> Table | None:
        if block.kind != "server":
            self.report.untranslated(block.where, f"{block.kind} {block.name}: not translated")
            return None
        values = block.values
        active = values.get("active", ("1", None))
        if active[0] == "0":
            self.report.warn(
                active[1] or block.where, f"server {block.name}: active = 0, left out as pulse does"
            )
            return None
        addr = values.get("address")
        ip = address(addr[0].split()[0]) if addr and addr[0].split() else None
        if ip is None:
            self.report.untranslated(block.where, f"server {block.name}: no address")
            return None
        real = Table(block.where, f"server {block.name}")
        real.set("address", host_port(ip, port), addr[1] if addr else None)
        weight = values.get("weight")
        real.set("weight", 1)
        if weight is not None:
            value = number(weight[0], weight[1], self.report, "weight", 0, 65535)
            if value is not None:
                real.set("weight", int(value), weight[1])
        for key, (_, where) in values.items():
            if key not in ("address", "active", "weight"):
                self.skip(key, where)
        return real


def translate(text: str, path: str, report: Report) -> Table:
    return Piranha(path, report).translate(parse(path, text, report))
