"""ldirectord.cf -> pulsed: ``virtual=`` blocks, their real servers and checks.

Read as ldirectord 4.x reads it: global ``key=value`` lines, then each
``virtual=`` (or ``virtual6=``) line opens a block of indented lines (a tab
or at least four spaces); ``#`` starts a comment. ldirectord's defaults are
written out where pulsed's differ: checkinterval 10s, checktimeout 5s,
negotiatetimeout 30s, failurecount 1, quiescent no, scheduler wrr, checktype
negotiate, the service taken from the port (80 http, 443 https, 25 smtp,
53 dns), a request path made absolute, HTTP success 2xx.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from pulsed.importers.common import (
    address,
    argv,
    digits,
    host_port,
    number,
    prefix_of_mask,
    seconds,
    source_lines,
)
from pulsed.importers.common import service_name as unique_name
from pulsed.importers.emit import Table
from pulsed.importers.report import Report, Where

FORWARDING = {"gate": "dr", "masq": "nat", "ipip": "tunnel"}
PORT_SERVICES = {80: "http", 443: "https", 25: "smtp", 587: "submission", 53: "dns", 21: "ftp"}
PORT_SERVICES |= {110: "pop", 143: "imap", 389: "ldap", 119: "nntp", 3306: "mysql", 5432: "pgsql"}
PORT_SERVICES |= {5060: "sip", 1812: "radius"}
MAX_RANGE = 256
_LINE = re.compile(r"^([A-Za-z0-9_]+)\s*=\s*(.*)$")

WHY_NOT = {
    "autoreload": "pulsed reloads on SIGHUP or `pulsed reload`; a systemd path unit can"
    " send it when the file changes",
    "callback": "pulsed reloads on SIGHUP or `pulsed reload`",
    "logfile": "pulsed logs to stderr or the journal ([daemon] log_format)",
    "emailalert": "pulsed sends no mail; use notify commands",
    "emailalertfreq": "pulsed sends no mail",
    "emailalertstatus": "pulsed sends no mail",
    "emailalertfrom": "pulsed sends no mail",
    "smtp": "pulsed sends no mail",
    "fork": "pulsed probes every server concurrently already",
    "supervised": "run pulsed under systemd",
    "readdquiescent": "pulsed keeps quiesced servers in the table",
    "fallbackcommand": "pulsed runs no command when the sorry server is used",
    "fallback6": "see fallback",
    "checkcount": "deprecated in ldirectord; failurecount is read",
    "login": "pulsed's probes do not log in",
    "passwd": "pulsed's probes do not log in",
    "database": "pulsed has no database probe; use an exec check",
    "secret": "pulsed has no RADIUS probe; use an exec check",
    "servicename": "kept as a comment",
    "comment": "kept as a comment",
    "monitorfile": "see /status and /metrics",
    "cleanstop": "see [daemon] remove_on_shutdown",
}


@dataclass
class Line:
    key: str
    value: str
    where: Where


@dataclass
class Virtual:
    head: Line
    lines: list[Line] = field(default_factory=list)


@dataclass
class Parsed:
    globals: list[Line]
    virtuals: list[Virtual]


def parse(path: str, text: str, report: Report) -> Parsed:
    parsed = Parsed([], [])
    current: Virtual | None = None
    for number_, raw in enumerate(source_lines(text), 1):
        where = Where(path, number_)
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        indented = raw.startswith("\t") or raw.startswith("    ")
        body = raw.split("#", 1)[0].strip() if '"' not in raw else raw.strip()
        match = _LINE.match(body)
        if match is None:
            report.untranslated(where, f"{body[:60]!r}: not a key=value line")
            continue
        line = Line(match.group(1), match.group(2).strip(), where)
        if line.key in ("virtual", "virtual6"):
            current = Virtual(line)
            parsed.virtuals.append(current)
        elif indented and current is not None:
            current.lines.append(line)
        else:
            current = None
            parsed.globals.append(line)
    return parsed


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


@dataclass
class _Settings:
    """Settings that a virtual block may override."""

    values: dict[str, tuple[str, Where]] = field(default_factory=dict)

    def get(self, key: str) -> tuple[str, Where] | None:
        return self.values.get(key)


class Ldirectord:
    def __init__(self, path: str, report: Report) -> None:
        self.path = path
        self.report = report
        self.root = Table()
        self.names: set[str] = set()

    def translate(self, parsed: Parsed) -> Table:
        settings = _Settings()
        for line in parsed.globals:
            self.global_line(line, settings)
        for virtual in parsed.virtuals:
            self.virtual(virtual, settings)
        self.root.values.setdefault("service", [])
        return self.root

    def global_line(self, line: Line, settings: _Settings) -> None:
        key, value = line.key, _unquote(line.value)
        if key in ("checktimeout", "negotiatetimeout", "checkinterval", "failurecount") or key in (
            "quiescent",
            "fallback",
        ):
            settings.values[key] = (value, line.where)
        elif key == "maintenancedir":
            self.root.table("checks").set("maintenance_dir", value, line.where)
        elif key == "cleanstop":
            self.root.table("daemon").set("remove_on_shutdown", value != "no", line.where)
        else:
            self.skip(line)

    def skip(self, line: Line, why: str | None = None) -> None:
        reason = why or WHY_NOT.get(line.key) or "no pulsed equivalent"
        self.report.untranslated(line.where, f"{line.key}: not translated ({reason})")

    def virtual(self, virtual: Virtual, outer: _Settings) -> None:
        head = virtual.head
        settings = _Settings(dict(outer.values))
        table = Table(head.where, f"{head.key}={head.value}")
        value = _unquote(head.value)
        port: int | None = None
        if digits(value):
            mark = number(value, head.where, self.report, "fwmark", 1, 2**32 - 1)
            if mark is None:
                return
            table.set("name", unique_name(f"fwmark-{mark}", self.names))
            table.set("fwmark", int(mark), head.where)
            if head.key == "virtual6":
                table.set("family", "ipv6", head.where)
        else:
            host, _, port_text = value.rpartition(":")
            ip = address(host.strip("[]"))
            port_value = (
                number(port_text, head.where, self.report, "port", 1, 65535)
                if digits(port_text)
                else None
            )
            if ip is None or port_value is None:
                self.report.untranslated(
                    head.where,
                    f"{head.key}={value}: give an IP address and a port number (names are"
                    " not resolved by the import)",
                )
                return
            port = int(port_value)
            table.set("name", unique_name(host_port(ip, port), self.names))
            table.set("vip", ip, head.where)
            table.set("port", port, head.where)
            if port == 53:
                table.set("protocol", "udp", head.where)  # ldirectord's default for port 53
        table.set("scheduler", "wrr")
        reals: list[Line] = []
        for line in virtual.lines:
            key, text = line.key, _unquote(line.value)
            if key in ("real", "real6"):
                reals.append(line)
            elif key in (
                "checktimeout",
                "negotiatetimeout",
                "checkinterval",
                "failurecount",
                "quiescent",
                "fallback",
                "checktype",
                "service",
                "request",
                "receive",
                "virtualhost",
                "checkport",
                "httpmethod",
                "checkcommand",
            ):
                settings.values[key] = (text, line.where)
            elif key == "scheduler":
                table.set("scheduler", text, line.where)
            elif key == "persistent":
                seconds_ = number(text, line.where, self.report, key, 1, 31 * 86400)
                if seconds_ is not None:
                    table.set("persistence", seconds(seconds_), line.where)
            elif key == "netmask":
                prefix = prefix_of_mask(text)
                if prefix is None:
                    self.report.untranslated(line.where, f"netmask {text}: not a netmask")
                else:
                    table.set("persistence_netmask", prefix, line.where)
            elif key == "protocol":
                if text in ("tcp", "udp"):
                    if "fwmark" not in table.values:
                        table.set("protocol", text, line.where)
                elif text != "fwm":
                    self.report.untranslated(line.where, f"protocol {text}: not tcp, udp or fwm")
            elif key == "ops" and text == "yes":
                table.set("one_packet", True, line.where)
            elif key in ("servicename", "comment"):
                table.notes.append(f"{key}: {text}")
            else:
                self.skip(line)
        forwardings = []
        real_tables = []
        for line in reals:
            for real, forwarding in self.real(line, port):
                real_tables.append(real)
                forwardings.append(forwarding)
        # The service's forwarding: the one most real servers use; others say theirs.
        main = max(set(forwardings), key=forwardings.count) if forwardings else "nat"
        table.set("forwarding", main)
        for real, forwarding in zip(real_tables, forwardings, strict=True):
            if forwarding != main:
                real.set("forwarding", forwarding, real.where)
        quiescent = settings.get("quiescent")
        table.set(
            "on_failure",
            "quiesce" if quiescent and quiescent[0] == "yes" else "remove",
            quiescent[1] if quiescent else None,
        )
        fallback = settings.get("fallback")
        if fallback:
            self.fallback(table, fallback, port)
        self.check(table.table("check"), settings, port, table)
        if real_tables:
            table.set("real", real_tables)
        self.root.append("service", table)

    def real(self, line: Line, port: int | None) -> list[tuple[Table, str]]:
        words = line.value.split()
        if not words:
            self.report.untranslated(line.where, "real= without an address")
            return []
        target, rest = words[0], words[1:]
        forwarding = "dr"  # ldirectord's default is gate
        weight = 1
        if rest and rest[0] in FORWARDING:
            forwarding = FORWARDING[rest.pop(0)]
        if rest and digits(rest[0]):
            value = number(rest.pop(0), line.where, self.report, "weight", 0, 65535)
            weight = int(value) if value is not None else 1
        if rest:
            self.report.untranslated(
                line.where,
                f"{' '.join(rest)[:60]}: per-real request, receive and thresholds"
                " are not translated",
            )
        host, sep, port_text = (
            target.rpartition(":") if not target.endswith("]") else (target, "", "")
        )
        if not sep:
            host, port_text = target, ""
        real_port = port
        if port_text:
            value = (
                number(port_text, line.where, self.report, "port", 1, 65535)
                if digits(port_text)
                else None
            )
            if value is None:
                self.report.untranslated(line.where, f"{target}: give the port as a number")
                return []
            real_port = int(value)
        first, arrow, last = host.partition("->")
        start = address(first.strip("[]"))
        if start is None:
            self.report.untranslated(
                line.where, f"{target}: give IP addresses (names are not resolved by the import)"
            )
            return []
        hosts = [start]
        if arrow:
            end = address(last.strip("[]"))
            first_ip = ipaddress.ip_address(start)
            last_ip = ipaddress.ip_address(end) if end is not None else None
            if last_ip is None or last_ip.version != first_ip.version or last_ip < first_ip:  # type: ignore[operator]
                self.report.untranslated(line.where, f"{target}: not an address range")
                return []
            count = int(last_ip) - int(first_ip) + 1
            if count > MAX_RANGE:
                self.report.untranslated(line.where, f"{target}: more than {MAX_RANGE} addresses")
                return []
            hosts = [str(first_ip + n) for n in range(count)]
        out = []
        for ip in hosts:
            real = Table(line.where, f"{line.key}={line.value}")
            real.set("address", host_port(ip, real_port), line.where)
            real.set("weight", weight, line.where)
            out.append((real, forwarding))
        return out

    def fallback(self, table: Table, fallback: tuple[str, Where], port: int | None) -> None:
        text, where = fallback
        words = text.split()
        target = words[0] if words else ""
        host, sep, port_text = target.rpartition(":")
        if not sep:
            host, port_text = target, ""
        ip = address(host.strip("[]"))
        if ip is None or (port_text and not digits(port_text)):
            self.report.untranslated(where, f"fallback {text}: give an IP address and port")
            return
        table.set("sorry_server", host_port(ip, int(port_text) if port_text else port), where)
        forwarding = FORWARDING.get(words[1], "dr") if len(words) > 1 else "dr"
        table.set("sorry_forwarding", forwarding, where)

    def check(self, check: Table, settings: _Settings, port: int | None, svc: Table) -> None:
        checktype, ctwhere = settings.get("checktype") or ("negotiate", None)
        service, swhere = settings.get("service") or (
            PORT_SERVICES.get(port or 0, "none") if port else "none",
            None,
        )
        interval = self.seconds_of(settings, "checkinterval", 10)
        failures = self.seconds_of(settings, "failurecount", 1)
        negotiate = checktype == "negotiate" or digits(checktype)
        if digits(checktype):
            self.report.untranslated(
                ctwhere or svc.where or Where(self.path),
                f"checktype={checktype}: pulsed does not alternate connect and negotiate"
                " checks; every probe negotiates",
            )
        timeout_key = "negotiatetimeout" if negotiate else "checktimeout"
        timeout = self.seconds_of(settings, timeout_key, 30 if negotiate else 5)
        if settings.get("checktimeout") and negotiate and not settings.get("negotiatetimeout"):
            # ldirectord: checktimeout alone stands for both
            timeout = self.seconds_of(settings, "checktimeout", 5)
        interval_where = (settings.get("checkinterval") or ("", None))[1]
        check.set("interval", seconds(interval), interval_where)
        if timeout > interval:
            self.report.warn(
                (settings.get(timeout_key) or ("", svc.where))[1] or Where(self.path),
                f"{timeout_key} {timeout:g}s is longer than checkinterval {interval:g}s: pulsed"
                " needs timeout <= interval, so the timeout is the interval",
            )
            timeout = interval
        check.set("timeout", seconds(timeout), (settings.get(timeout_key) or ("", None))[1])
        check.set("rise", 1)
        check.set("fall", int(failures), (settings.get("failurecount") or ("", None))[1])
        check.set("initial_state", "down")
        checkport = settings.get("checkport")
        if checkport:
            value = number(checkport[0], checkport[1], self.report, "checkport", 1, 65535)
            if value is not None:
                check.set("port", int(value), checkport[1])
        if checktype in ("on", "off"):
            check.set("type", "none", ctwhere)
            if checktype == "off":
                self.report.untranslated(
                    ctwhere or Where(self.path),
                    "checktype=off: pulsed has no 'always down'; the servers are taken as up"
                    " (set their weight to 0 to keep them out)",
                )
            return
        if checktype == "connect":
            check.set("type", "udp" if svc.get("protocol") == "udp" else "tcp", ctwhere)
            return
        if checktype == "ping":
            check.set("type", "icmp", ctwhere)
            return
        if checktype in ("external", "external-perl"):
            command = settings.get("checkcommand")
            if command is None:
                self.report.untranslated(
                    ctwhere or Where(self.path), "external check without checkcommand"
                )
                return
            words = argv(command[0], command[1], self.report, "checkcommand")
            if words is not None:
                # ldirectord passes: virtual IP, virtual port, real IP, real port
                vip, vport = str(svc.get("vip", "")), str(svc.get("port", ""))
                check.set("type", "exec", ctwhere)
                check.set("command", [*words, vip, vport, "{address}", "{port}"], command[1])
            return
        if not negotiate:
            self.report.untranslated(ctwhere or Where(self.path), f"checktype={checktype}: unknown")
            return
        self.negotiate(check, settings, service, swhere or ctwhere)

    def negotiate(
        self, check: Table, settings: _Settings, service: str, where: Where | None
    ) -> None:
        request = settings.get("request")
        receive = settings.get("receive")
        if service in ("http", "https"):
            check.set("type", service, where)
            path = request[0] if request else "/"
            check.set(
                "path",
                path if path.startswith("/") else "/" + path,
                request[1] if request else None,
            )
            check.set("expect_status", ["200-299"])
            if receive and receive[0]:
                check.set("body_regex", receive[0], receive[1])
            host = settings.get("virtualhost")
            if host:
                check.set("host", host[0], host[1])
            method = settings.get("httpmethod")
            if method:
                check.set("method", method[0], method[1])
            if service == "https":
                check.set("tls_verify", False)  # ldirectord checks no certificate
        elif service in ("smtp", "submission"):
            check.set("type", "smtp", where)
        elif service == "dns":
            check.set("type", "dns", where)
            check.set("query_name", request[0] if request else ".", request[1] if request else None)
            if receive and receive[0]:
                check.set("expect_answer", re.escape(receive[0]), receive[1])
        elif service == "none":
            check.set("type", "none", where)
        else:
            check.set("type", "tcp", where)
            self.report.untranslated(
                where or Where(self.path),
                f"service={service}: pulsed has no {service} probe; a TCP connect is used"
                " (an exec check can run a client)",
            )

    def seconds_of(self, settings: _Settings, key: str, default: float) -> float:
        found = settings.get(key)
        if found is None:
            return default
        value = number(found[0], found[1], self.report, key, 1, 86400)
        return default if value is None else float(value)


def translate(text: str, path: str, report: Report) -> Table:
    return Ldirectord(path, report).translate(parse(path, text, report))
