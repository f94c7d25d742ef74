"""One TOML file in, one validated immutable ``Config`` out.

Validation is strict and exhaustive: every problem is reported with the file,
the key path (``service[1].real[0].weight``) and the value, one line each,
and all problems are collected rather than stopping at the first. msgspec
does the type checking; the cross-field rules (duplicates, address families,
scheduler names) live here.

Each section is converted on its own (every service, every real server,
every check), so one bad entry does not hide the errors of the next.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import ipaddress
import itertools
import json
import os
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

# tomli is the parser that became the standard library's tomllib (same grammar,
# same messages); its compiled build parses a 10,000-service file 2.5x faster.
import tomli

from pulsed.addresses import split_host_port
from pulsed.announce.config import BGP_RANGES, BgpConfig, bgp_problems, vrrp_vip_paths
from pulsed.checks.config import (
    MAX_FILE_BYTES,
    CheckConfig,
    bind_family_problem,
    check_problems,
    file_problems,
)
from pulsed.durations import Duration, format_duration, parse_duration
from pulsed.files import MAX_CONFIG_BYTES, FileProblem, check_file, read_file
from pulsed.ha.config import (
    HooksConfig,
    SyncGroup,
    VrrpConfig,
    VrrpScript,
    command_problem,
    instances_problems,
    vrrp_problems,
)
from pulsed.model import (
    AF_INET,
    AF_INET6,
    SCHEDULER_FLAGS,
    SCHEDULERS,
    SVC_F_ONEPACKET,
    ServiceKey,
    family_of,
    normalize_address,
)

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Weight = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Threshold = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
Fwmark = Annotated[int, msgspec.Meta(ge=1, le=2**32 - 1)]


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class DaemonConfig(_Section, frozen=True):
    state_dir: str = "/var/lib/pulsed"
    resync_interval: Duration = Duration(10.0)
    full_resync_interval: Duration = Duration(30.0)
    retry_interval: Duration = Duration(1.0)
    probe_tick_max: Duration = Duration(0.05)
    remove_on_shutdown: bool = False
    log_format: Literal["auto", "json", "console", "journal"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"


class ApiConfig(_Section, frozen=True):
    enabled: bool = True
    listen: str = "127.0.0.1:9480"
    # Empty: admin calls are off. A named file must exist, be a regular file
    # and be readable by its owner only (checked like every referenced file).
    token_file: str = ""
    status_refresh: Duration = Duration(2.0)
    # Budgets: a flood on the API must not take the probes' descriptors, and a
    # slow client must not hold a connection (see pulsed/api_guard.py).
    max_connections: Annotated[int, msgspec.Meta(ge=1, le=65536)] = 256
    header_timeout: Duration = Duration(10.0)
    body_timeout: Duration = Duration(10.0)
    response_timeout: Duration = Duration(60.0)
    # Config management through the API (pulsed config apply|rollback, the page's
    # editor): off unless turned on; needs the admin token. The last
    # ``config_history`` applied configs are kept in state_dir/config-history.
    config_write: bool = False
    config_history: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 20


class RealConfig(_Section, frozen=True):
    address: str
    # A name for the server: a file of this name in [checks] maintenance_dir
    # puts it into maintenance (pulsed.maintenance).
    name: str | None = None
    weight: Weight = 1
    forwarding: Literal["nat", "dr", "tunnel"] | None = None
    upper_threshold: Threshold = 0
    lower_threshold: Threshold = 0
    # The check is merged over the service's check, key by key.
    check: CheckConfig | None = None
    # Commands (argv, no shell) run when the server goes up or down.
    notify_up: tuple[str, ...] = ()
    notify_down: tuple[str, ...] = ()


class ServiceConfig(_Section, frozen=True):
    name: str
    vip: str | None = None
    port: Port | None = None
    protocol: Literal["tcp", "udp", "sctp"] = "tcp"
    fwmark: Fwmark | None = None
    family: Literal["ipv4", "ipv6"] = "ipv4"  # for fwmark services only
    scheduler: str = "wlc"
    scheduler_flags: tuple[str, ...] = ()
    one_packet: bool = False
    forwarding: Literal["nat", "dr", "tunnel"] = "nat"
    persistence: Duration = Duration(0.0)
    persistence_netmask: int | None = None
    check: CheckConfig = CheckConfig()
    on_failure: Literal["quiesce", "remove"] = "quiesce"
    drain_timeout: Duration = Duration(60.0)
    slow_start: Duration = Duration(0.0)
    min_healthy: int | str = 0
    sorry_server: str | None = None
    sorry_forwarding: Literal["nat", "dr", "tunnel"] = "nat"
    real: tuple[RealConfig, ...] = ()

    @property
    def key(self) -> ServiceKey:
        return _service_key(self.protocol, self.vip, self.port, self.fwmark, self.family)

    def real_endpoint(self, real: RealConfig) -> tuple[str, int]:
        """The real server's address and port (port defaults to the service's)."""
        return split_host_port(real.address, self.port or 0)


@lru_cache(maxsize=1 << 16)
def _service_key(
    protocol: str, vip: str | None, port: int | None, fwmark: int | None, family: str
) -> ServiceKey:
    # Cached: structs cannot memoise, and hot paths ask for keys many times.
    if fwmark is not None:
        return ServiceKey.for_fwmark(fwmark, AF_INET6 if family == "ipv6" else AF_INET)
    assert vip is not None and port is not None
    return ServiceKey.for_address(protocol, vip, port)


class ChecksConfig(_Section, frozen=True):
    """Settings of every check (per-service ones are in each [service.check])."""

    # Files named after real servers put them into maintenance (pulsed.maintenance).
    maintenance_dir: str | None = None


class Config(_Section, frozen=True):
    daemon: DaemonConfig = DaemonConfig()
    api: ApiConfig = ApiConfig()
    checks: ChecksConfig = ChecksConfig()
    # VRRP instances (a lone [vrrp] table is one, named "VI_1" unless it says).
    vrrp: tuple[VrrpConfig, ...] = ()
    vrrp_script: tuple[VrrpScript, ...] = ()
    vrrp_sync_group: tuple[SyncGroup, ...] = ()
    hooks: HooksConfig = HooksConfig()
    # Route health injection through a routing daemon (pulsed.announce); None: off.
    bgp: BgpConfig | None = None
    service: tuple[ServiceConfig, ...] = ()

    def service_named(self, name: str) -> ServiceConfig | None:
        return next((s for s in self.service if s.name == name), None)


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file."""

    file: str
    path: str
    value: Any
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}" if self.path else self.file
        if self.value is _MISSING:
            return f"{where}: {self.message}"
        return f"{where} = {_show(self.value)}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        value = None if self.value is _MISSING else self.value
        return {"file": self.file, "path": self.path, "value": value, "message": self.message}


class ConfigError(Exception):
    """A config that cannot be used; ``issues`` lists every problem."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


_MISSING: Any = type("Missing", (), {"__repr__": lambda self: "<missing>"})()


def _show(value: Any) -> str:
    if isinstance(value, Duration):
        text = f'"{value}"'
    elif isinstance(value, str):
        # Escaped: a value with a line break must not break the one-line message.
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class ParseCache:
    """The raw and validated form of each service of the last good config.

    A reload re-validates only the services whose TOML table changed: at
    10,000 services that halves the time to a new config. Every rule that
    looks at one service alone depends only on its raw table, so reusing
    the validated service is exact; rules across services always run.
    """

    def __init__(self) -> None:
        # name -> (the raw table as canonical JSON bytes, the validated service);
        # bytes take a tenth of the memory of the parsed table.
        self.services: dict[Any, tuple[bytes, ServiceConfig]] = {}
        # The digest of a [[service]] table's text -> the same pair: a table
        # whose text is unchanged is not even parsed again (see _parse_toml).
        self.texts: dict[bytes, tuple[bytes, ServiceConfig]] = {}


@dataclass(frozen=True, slots=True)
class _Unchanged:
    """In place of a parsed [[service]] table: its text is the last good config's."""

    entry: tuple[bytes, ServiceConfig]


# Deepest nesting of tables and arrays a config may have. pulsed's own
# schema needs 5 (service.real.check.headers); the cap keeps the parser and
# the validator far from Python's recursion limit.
MAX_DEPTH = 16


def load_config(
    path: str | Path, cache: ParseCache | None = None, *, services_required: bool = True
) -> Config:
    """Read and validate ``path``; raise ConfigError listing every problem.

    The file is opened without blocking (a FIFO or device is refused, never
    waited on) and its size is capped: see pulsed.files.
    """
    name = str(path)
    try:
        data = read_file(path, what="config file", max_bytes=MAX_CONFIG_BYTES)
    except FileProblem as exc:
        raise ConfigError([ConfigIssue(name, "", _MISSING, exc.reason)]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [ConfigIssue(name, "", _MISSING, f"not UTF-8 text: {exc.reason} at byte {exc.start}")]
        ) from None
    return parse_config(text, name, cache, services_required=services_required)


def parse_config(
    text: str,
    filename: str = "<config>",
    cache: ParseCache | None = None,
    *,
    services_required: bool = True,
    include_root: str | None = None,
) -> Config:
    """Validate TOML ``text``; raise ConfigError listing every problem.

    The one validation behind ``check-config``, start-up and every reload:
    what it accepts, the daemon can run. ``services_required=False`` is for
    tools that never touch IPVS (``python -m pulsed.ha``): for them a file
    without services cannot empty a table. ``include_root``: ``include`` may
    name files under this directory only (a config sent through the API,
    whose sender holds a token, not the router's files).
    """
    texts: dict[bytes, str] = {}
    raw = _parse_toml(text, filename, services_required, cache, texts)
    origins = _Origins(filename)
    if "include" in raw:
        raw = _with_includes(raw, filename, origins, include_root)
        if services_required and "service" not in raw:
            raise ConfigError(
                [
                    ConfigIssue(
                        filename,
                        "",
                        _MISSING,
                        "no [[service]] table here or in the included files;"
                        " a config with no services must say so: service = []",
                    )
                ]
            )
    validator = _Validator(filename, cache.services if cache else {})
    try:
        config = validator.validate(raw)
    except ConfigError as exc:
        raise ConfigError([origins.place(issue) for issue in exc.issues]) from None
    if cache is not None:
        cache.services = validator.validated
        cache.texts = {
            digest: validator.validated[name]
            for digest, name in texts.items()
            if name in validator.validated
        }
    return config


def _parse_toml(
    text: str,
    filename: str,
    services_required: bool,
    cache: ParseCache | None = None,
    texts: dict[bytes, str] | None = None,
) -> dict[str, Any]:
    """The TOML document as Python values, or ConfigError (one line).

    With a ``cache``, each [[service]] table whose text is the same as in the
    last good config is not parsed but given as ``_Unchanged``, and ``texts``
    is filled with each table's digest and service name.
    """

    def fail(message: str) -> ConfigError:
        return ConfigError([ConfigIssue(filename, "", _MISSING, message)])

    if len(text) > MAX_CONFIG_BYTES:
        raise fail(f"larger than {MAX_CONFIG_BYTES} bytes")
    if not text.strip():
        # A truncated write must never read as "no services": that would
        # delete the whole table. A config with none says service = [].
        raise fail("the file is empty; a config with no services says so: service = []")
    try:
        raw = None
        if cache is not None and texts is not None:
            raw = _parse_by_service(text, cache, texts)
        if raw is None:
            if texts:
                texts.clear()  # what a failed attempt noted
            raw = tomli.loads(text)
    except tomli.TOMLDecodeError as exc:
        raise fail(f"invalid TOML: {exc}") from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise fail(f"invalid TOML: {str(exc).split(';')[0]}") from None
    except RecursionError:
        raise fail(f"invalid TOML: nested deeper than {MAX_DEPTH} levels") from None
    if _depth(raw) > MAX_DEPTH:
        raise fail(f"tables and arrays nested deeper than {MAX_DEPTH} levels")
    if services_required and "service" not in raw and "include" not in raw:
        raise fail("no [[service]] table; a config with no services must say so: service = []")
    return raw


# Split configs: the main file's `include = ["conf.d/*.toml"]` reads more files (globs
# relative to the main file, in sorted order). Their arrays of tables (services, VRRP
# instances, scripts, sync groups) are appended to the main file's; any other table may
# be set in one file only. Included files include nothing themselves.
MAX_INCLUDED_FILES = 4096
_ARRAYS = ("service", "vrrp", "vrrp_script", "vrrp_sync_group")
_ELEMENT = re.compile(r"^(service|vrrp|vrrp_script|vrrp_sync_group)\[(\d+)\](.*)$")
_MENTION = re.compile(r"\b(service|vrrp|vrrp_script|vrrp_sync_group)\[(\d+)\]")


class _Origins:
    """Which file, and which element of it, each merged array element came from."""

    def __init__(self, main: str) -> None:
        self.main = main
        self.elements: dict[tuple[str, int], tuple[str, int]] = {}
        self.tables: dict[str, str] = {}

    def place(self, issue: ConfigIssue) -> ConfigIssue:
        """The issue, naming the file (and its own element numbers) that holds the problem."""
        match = _ELEMENT.match(issue.path)
        if match:
            found = self.elements.get((match.group(1), int(match.group(2))))
            if found is not None and found[0] != self.main:
                path = f"{match.group(1)}[{found[1]}]{match.group(3)}"
                message = self._others(issue.message, found[0])
                return ConfigIssue(found[0], path, issue.value, message)
            return replace(issue, message=self._others(issue.message, self.main))
        top = issue.path.split(".")[0].split("[")[0]
        if top in self.tables:
            return ConfigIssue(self.tables[top], issue.path, issue.value, issue.message)
        return issue

    def _others(self, message: str, here: str) -> str:
        """Elements a message names ("duplicate ... also service[0]") in their own file's
        numbers, with the file named when it is not ``here``."""

        def one(m: re.Match[str]) -> str:
            found = self.elements.get((m.group(1), int(m.group(2))))
            if found is None:
                return m.group(0)
            name = f"{m.group(1)}[{found[1]}]"
            return name if found[0] == here else f"{name} of {found[0]}"

        return _MENTION.sub(one, message)


def _under(root: str | None) -> Callable[[str], bool]:
    """A test of whether a path (its links resolved) lies under ``root``; None: anywhere.
    For a glob, the part before its first wildcard decides."""
    if root is None:
        return lambda _path: True
    top = os.path.realpath(root)

    def inside(path: str) -> bool:
        cut = min((path.find(c) for c in "*?[" if c in path), default=len(path))
        real = os.path.realpath(path[:cut] or ".")
        return real == top or real.startswith(os.path.join(top, ""))

    return inside


def _with_includes(
    raw: dict[str, Any], filename: str, origins: _Origins, root: str | None = None
) -> dict[str, Any]:
    """``raw`` with the files its ``include`` names merged in; ConfigError naming the
    file at fault otherwise. With ``root``, only files under that directory (links
    resolved) may be named: nothing is said of any other path, not even whether
    it exists."""
    issues: list[ConfigIssue] = []
    patterns = raw.pop("include")
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise ConfigError(
            [
                ConfigIssue(
                    filename, "include", patterns, 'expected a list of globs: ["conf.d/*.toml"]'
                )
            ]
        )
    base = os.path.dirname(filename)
    # The main file is never one of its own parts: validated as text (the API's
    # validate, plan and apply), an include of its path would read the *old*
    # file on disk and pass, and the written file would then include itself.
    main = os.path.realpath(filename)
    files: list[str] = []
    inside = _under(root)
    for i, pattern in enumerate(patterns):
        full = pattern if os.path.isabs(pattern) else os.path.join(base, pattern)
        if not inside(full):
            outside = f"is outside {root}: a config sent through the API includes files there only"
            issues.append(ConfigIssue(filename, f"include[{i}]", pattern, outside))
            continue
        if not glob.has_magic(full):
            if not os.path.exists(full):
                issues.append(ConfigIssue(filename, f"include[{i}]", pattern, "no such file"))
                continue
            if os.path.realpath(full) == main:
                issues.append(
                    ConfigIssue(filename, f"include[{i}]", pattern, "names this file itself")
                )
                continue
            matches = [full]
        else:
            # none: an empty conf.d is a valid config; "*.toml" beside the main
            # file matches the main file too, which is not one of its parts.
            matches = [m for m in sorted(glob.glob(full)) if os.path.realpath(m) != main]
        for m in matches:
            if not inside(m):  # a link out of the directory
                issues.append(ConfigIssue(filename, f"include[{i}]", m, f"leads outside {root}"))
            elif m not in files:
                files.append(m)
    if len(files) > MAX_INCLUDED_FILES:
        issues.append(
            ConfigIssue(filename, "include", len(files), f"more than {MAX_INCLUDED_FILES} files")
        )
        files = []
    for key in _ARRAYS:
        value = raw.get(key)
        if isinstance(value, list):
            for j in range(len(value)):
                origins.elements[(key, j)] = (filename, j)
    owner = {key: filename for key in raw}
    for name in files:
        part = _read_fragment(name, issues)
        if part is None:
            continue
        for key, value in part.items():
            if key == "include":
                issues.append(
                    ConfigIssue(name, "include", _MISSING, "only the main file may include files")
                )
            elif key in _ARRAYS and isinstance(value, list):
                merged = raw.setdefault(key, [])
                if not isinstance(merged, list):
                    issues.append(
                        ConfigIssue(
                            name,
                            key,
                            _MISSING,
                            f"{owner[key]} has a lone [{key}] table: write [[{key}]] to split them",
                        )
                    )
                    continue
                for j, item in enumerate(value):
                    origins.elements[(key, len(merged))] = (name, j)
                    merged.append(item)
                owner.setdefault(key, name)
            elif key in owner:
                issues.append(ConfigIssue(name, key, _MISSING, f"also set in {owner[key]}"))
            else:
                raw[key] = value
                owner[key] = name
                origins.tables[key] = name
    if issues:
        raise ConfigError(issues)
    return raw


def _read_fragment(name: str, issues: list[ConfigIssue]) -> dict[str, Any] | None:
    try:
        data = read_file(name, what="included file", max_bytes=MAX_CONFIG_BYTES)
        part = tomli.loads(data.decode("utf-8"))
    except FileProblem as exc:
        issues.append(ConfigIssue(name, "", _MISSING, exc.reason))
    except UnicodeDecodeError as exc:
        issues.append(ConfigIssue(name, "", _MISSING, f"not UTF-8 text: {exc.reason}"))
    except tomli.TOMLDecodeError as exc:
        issues.append(ConfigIssue(name, "", _MISSING, f"invalid TOML: {exc}"))
    except (ValueError, RecursionError) as exc:
        issues.append(ConfigIssue(name, "", _MISSING, f"invalid TOML: {str(exc)[:100]}"))
    else:
        if _depth(part) > MAX_DEPTH:
            issues.append(ConfigIssue(name, "", _MISSING, f"nested deeper than {MAX_DEPTH} levels"))
            return None
        return part
    return None


# A line that opens a [[service]] table (what _parse_by_service splits at).
_SERVICE_HEADER = re.compile(r"^[ \t]*\[\[[ \t]*service[ \t]*\]\][ \t]*(?:#[^\n]*)?$", re.M)


def _parse_by_service(
    text: str, cache: ParseCache, texts: dict[bytes, str]
) -> dict[str, Any] | None:
    """The document parsed one [[service]] table at a time, skipping the tables
    whose text the last good config had; None when that cannot be done exactly.

    Why: parsing is most of a reload (tomli takes ~130 ms for 10,000
    services), and a reload usually changes a few. Exactness: each piece from
    one [[service]] line to the next is parsed alone; the head (before the
    first) must not name ``service``, and a key other than ``service`` may
    appear in one piece only. Anything else (and any piece that does not
    parse, e.g. a split inside a multi-line string) gives None, and the
    caller parses the whole text, which also gives the right error.
    """
    starts = [m.start() for m in _SERVICE_HEADER.finditer(text)]
    if not starts:
        return None
    try:
        head = tomli.loads(text[: starts[0]])
    except (tomli.TOMLDecodeError, ValueError, RecursionError):
        return None
    if "service" in head:
        return None
    services: list[Any] = []
    bounds = [*starts, len(text)]
    for start, end in itertools.pairwise(bounds):
        piece = text[start:end]
        digest = hashlib.blake2b(piece.encode(), digest_size=16).digest()
        known = cache.texts.get(digest)
        if known is not None:
            services.append(_Unchanged(known))
            texts[digest] = known[1].name
            continue
        try:
            part = tomli.loads(piece)
        except (tomli.TOMLDecodeError, ValueError, RecursionError):
            return None
        for key, value in part.items():
            if key == "service":
                services.extend(value)
            elif key in head:
                return None
            else:
                head[key] = value
        found = part.get("service") or []
        # Only a piece that is one service table and nothing else can stand
        # for itself next time (a trailing [vrrp] would be lost otherwise).
        if (
            len(part) == 1
            and len(found) == 1
            and isinstance(found[0], dict)
            and isinstance(found[0].get("name"), str)
        ):
            texts[digest] = found[0]["name"]
    head["service"] = services
    return head


def _depth(root: Any) -> int:
    """The nesting depth of dicts and lists in ``root``, without recursion
    (level by level, testing exact types: tomli makes only dicts and lists)."""
    kind = type(root)
    if kind is not dict and kind is not list:
        return 0
    level = [root]
    depth = 0
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            return depth
        below: list[Any] = []
        add = below.append
        for node in level:
            for child in node.values() if type(node) is dict else node:
                if type(child) is dict or type(child) is list:
                    add(child)
        level = below
    return depth


def _dec_hook(tp: type, obj: Any) -> Any:
    if tp is Duration:
        if isinstance(obj, str):
            return Duration(parse_duration(obj))
        raise ValueError(f"expected a duration such as '250ms', '2s' or '1m', got {obj!r}")
    raise NotImplementedError


class _Validator:
    def __init__(self, filename: str, known: dict[Any, tuple[bytes, ServiceConfig]]) -> None:
        self.filename = filename
        self.known = known
        self.validated: dict[Any, tuple[bytes, ServiceConfig]] = {}
        # Services taken unchanged from the last good config: their files are
        # checked again (referenced_files), as files change under their names.
        self.reused: list[tuple[str, ServiceConfig]] = []
        self.issues: list[ConfigIssue] = []
        self.vrrp_paths: list[str] = []  # each instance's key path: vrrp or vrrp[i]

    def fail(self, path: str, value: Any, message: str) -> None:
        # One problem per key: a key that failed its type check is not
        # reported again as missing by the cross-field rules.
        if any(issue.path == path for issue in self.issues):
            return
        self.issues.append(ConfigIssue(self.filename, path, value, message))

    def validate(self, raw: dict[str, Any]) -> Config:
        known = set(Config.__struct_fields__)
        for key in raw:
            if key not in known:
                self.fail(
                    key,
                    _MISSING,
                    f"unknown section or key (expected one of: {', '.join(sorted(known))})",
                )
        daemon = self.convert(raw.get("daemon", {}), DaemonConfig, "daemon")
        api = self.convert(raw.get("api", {}), ApiConfig, "api")
        checks = self.convert(raw.get("checks", {}), ChecksConfig, "checks")
        if checks is not None and checks.maintenance_dir is not None:
            self.directory("checks.maintenance_dir", checks.maintenance_dir)
        vrrp = self.instances(raw.get("vrrp", []))
        scripts = self.array(raw.get("vrrp_script", []), VrrpScript, "vrrp_script")
        groups = self.array(raw.get("vrrp_sync_group", []), SyncGroup, "vrrp_sync_group")
        hooks = self.convert(raw.get("hooks", {}), HooksConfig, "hooks")
        if hooks is not None:
            self.ranges(hooks, "hooks", _HOOKS_RANGES)
            if hooks.fifo:
                self.fifo_path(hooks.fifo)
        if vrrp is not None and scripts is not None and groups is not None:
            for path, value, message in instances_problems(list(vrrp), scripts, groups):
                self.fail(path, value, message)
        services = self.services(raw.get("service", []))
        if daemon is not None:
            self.ranges(daemon, "daemon", _DAEMON_RANGES)
        if api is not None:
            self.check_listen(api.listen)
            self.ranges(api, "api", _API_RANGES)
            if api.enabled and api.token_file:
                self.file("api.token_file", api.token_file, "API token file", secret=True)
        if vrrp is not None and "service" in raw:
            for i, instance in enumerate(vrrp):
                self.tracked_services(instance, services, self.vrrp_paths[i])
        bgp = None
        if "bgp" in raw:
            bgp = self.convert(raw["bgp"], BgpConfig, "bgp")
            if bgp is not None:
                self.bgp_rules(bgp, services, vrrp or ())
        self.referenced_files()
        if self.issues:
            raise ConfigError(self.issues)
        assert daemon is not None and api is not None and hooks is not None
        assert vrrp is not None and scripts is not None and groups is not None
        assert checks is not None
        return Config(
            daemon=daemon,
            api=api,
            checks=checks,
            vrrp=vrrp,
            vrrp_script=tuple(scripts),
            vrrp_sync_group=tuple(groups),
            hooks=hooks,
            bgp=bgp,
            service=tuple(services),
        )

    def bgp_rules(
        self, bgp: BgpConfig, services: list[ServiceConfig], vrrp: tuple[VrrpConfig, ...]
    ) -> None:
        self.ranges(bgp, "bgp", BGP_RANGES)
        vips = set()
        for svc in services:
            if svc.vip is not None:
                with contextlib.suppress(ValueError):  # reported with the service
                    vips.add(normalize_address(svc.vip))
        held = vrrp_vip_paths(vrrp, self.vrrp_paths)
        for rel, value, message in bgp_problems(bgp, vips, held):
            self.fail(f"bgp.{rel}", value, message)

    def instances(self, raw: Any) -> tuple[VrrpConfig, ...] | None:
        """The VRRP instances: ``[[vrrp]]``, or a lone ``[vrrp]`` table (then named
        "VI_1" unless it gives a name); None after recording problems."""
        lone = isinstance(raw, dict)
        self.vrrp_paths = ["vrrp"] if lone else [f"vrrp[{i}]" for i in range(len(raw or []))]
        if lone:
            raw = [raw]
        elif not isinstance(raw, list):
            self.fail("vrrp", raw, "expected [[vrrp]] tables (or one [vrrp] table)")
            return None
        instances: list[VrrpConfig] = []
        clean = True
        for path, item in zip(self.vrrp_paths, raw, strict=True):
            instance = self.convert(item, VrrpConfig, path)
            if instance is None:
                clean = False
                continue
            if lone and not instance.name:
                instance = msgspec.structs.replace(instance, name="VI_1")
            problems = vrrp_problems(instance)
            for rel, value, message in problems:
                self.fail(f"{path}.{rel}", value, message)
            clean = clean and not problems  # cross-instance rules need sound instances
            instances.append(instance)
        return tuple(instances) if clean else None

    def array(self, raw: Any, tp: type, path: str) -> list[Any] | None:
        """An array of tables of one type; None after recording problems."""
        if not isinstance(raw, list):
            self.fail(path, raw, f"expected [[{path}]] tables")
            return None
        items = [self.convert(item, tp, f"{path}[{i}]") for i, item in enumerate(raw)]
        return items if all(item is not None for item in items) else None

    def directory(self, path: str, name: str) -> None:
        if not name.startswith("/"):
            self.fail(path, name, "give an absolute path")
        elif not os.path.exists(name):
            self.fail(path, name, "does not exist")
        elif not os.path.isdir(name):
            self.fail(path, name, "is not a directory")

    def fifo_path(self, path: str) -> None:
        if not path.startswith("/"):
            self.fail("hooks.fifo", path, "give an absolute path")
        elif not os.path.isdir(os.path.dirname(path)):
            self.fail("hooks.fifo", path, f"directory {os.path.dirname(path)} does not exist")

    def ranges(self, section: Any, path: str, table: dict[str, tuple[float, float]]) -> None:
        """Every number and duration within the range the code can live with."""
        for key, (low, high) in table.items():
            value = getattr(section, key)
            if value is None or low <= value <= high:
                continue
            if isinstance(value, Duration):
                shown: Any = str(value)
                span = f"between {format_duration(low)} and {format_duration(high)}"
            else:
                shown, span = value, f"between {low:g} and {high:g}"
            self.fail(f"{path}.{key}", shown, f"must be {span}")

    def tracked_services(
        self, vrrp: VrrpConfig, services: list[ServiceConfig], base: str = "vrrp"
    ) -> None:
        names = {s.name for s in services}
        for i, tracked in enumerate(vrrp.track_services):
            if tracked.service and tracked.service not in names:
                known = ", ".join(sorted(names)[:10]) or "none"
                self.fail(
                    f"{base}.track_services[{i}].service",
                    tracked.service,
                    f"no service has this name (services: {known})",
                )

    def file(self, path: str, name: str, what: str, *, secret: bool = False) -> None:
        problem = check_file(name, what=what, secret=secret, max_bytes=MAX_FILE_BYTES)
        if problem:
            self.fail(path, name, problem)

    def referenced_files(self) -> None:
        """The files of the services taken from the cache, checked again: a
        file gone or changed since the last reload is found even when its
        service's table did not change. Each distinct set of files once."""
        checked: dict[tuple[Any, ...], list[tuple[str, object, str]]] = {}
        for path, svc in self.reused:
            checks = [(f"{path}.check", svc.check)]
            checks += [
                (f"{path}.real[{j}].check", r.check)
                for j, r in enumerate(svc.real)
                if r.check is not None
            ]
            for base, check in checks:
                files: tuple[str | None, ...] = (
                    check.type,
                    check.ca_file,
                    check.client_cert,
                    check.client_key,
                    *check.command[:1],
                )
                if files not in checked:
                    checked[files] = file_problems(check)
                for key, value, message in checked[files]:
                    self.fail(f"{base}.{key}", value, message)
            for j, real in enumerate(svc.real):
                self.notify_commands(real, f"{path}.real[{j}]")

    def convert(self, raw: Any, tp: type, path: str) -> Any:
        """``raw`` as a ``tp``, or None after recording every problem in it.

        msgspec stops at the first error, so each offending top-level key is
        dropped and the conversion retried: one pass reports them all.
        """
        obj, clean = self.convert_best_effort(raw, tp, path)
        return obj if clean else None

    def convert_best_effort(self, raw: Any, tp: type, path: str) -> tuple[Any, bool]:
        """(object built from the valid keys or None, whether raw was all valid)."""
        clean = True
        for _ in range(64):
            try:
                return msgspec.convert(raw, tp, dec_hook=_dec_hook, strict=True), clean
            except msgspec.ValidationError as exc:
                clean = False
                rel = self.fail_from_msgspec(str(exc), raw, path, tp)
            parts = _path_parts(rel)
            if not isinstance(raw, dict) or not parts or parts[0] not in raw:
                return None, False
            raw = {k: v for k, v in raw.items() if k != parts[0]}
        return None, False

    def fail_from_msgspec(self, message: str, raw: Any, base: str, tp: type) -> str:
        """Record one msgspec error; return the relative path it names."""
        text, sep, where = message.rpartition(" - at `$")
        if not sep:
            text, where = message, "`"
        rel = where[:-1]  # like ".real[0].weight" or "" (drop closing backtick)
        if text.startswith("Object contains unknown field `"):
            rel = f"{rel}.{text.split('`')[1]}"
            text = "unknown key"
        elif text.startswith("Object missing required field `"):
            rel = f"{rel}.{text.split('`')[1]}"
            self.fail(_join(base, rel), _MISSING, "required key is missing")
            return rel
        elif text.startswith("Invalid enum value"):
            choices = _literal_choices(tp, _path_parts(rel))
            if choices:
                text = f"expected one of: {', '.join(map(str, choices))}"
        text = text.replace("Expected `", "expected ").replace("`", "")
        self.fail(_join(base, rel), _lookup(raw, rel), text)
        return rel

    def services(self, raw_services: Any) -> list[ServiceConfig]:
        if not isinstance(raw_services, list):
            self.fail("service", raw_services, "expected an array of tables: [[service]]")
            return []
        services: list[ServiceConfig] = []
        seen_keys: dict[ServiceKey, str] = {}
        seen_names: dict[str, str] = {}
        for index, raw in enumerate(raw_services):
            path = f"service[{index}]"
            svc = self.service(raw, path)  # best effort: duplicates are still found
            if svc is None:
                continue
            services.append(svc)
            if svc.name in seen_names:
                self.fail(
                    f"{path}.name",
                    svc.name,
                    f"duplicate service name (also {seen_names[svc.name]})",
                )
            seen_names.setdefault(svc.name, path)
            try:
                key = svc.key
            except (AssertionError, ValueError):
                continue  # identity errors are already reported
            if key in seen_keys:
                self.fail(path, svc.name, f"duplicate service: {key} is also {seen_keys[key]}")
            seen_keys.setdefault(key, path)
        return services

    def service(self, raw: Any, path: str) -> ServiceConfig | None:
        """The service built from its valid parts; problems are recorded."""
        if isinstance(raw, _Unchanged):  # the same text as in the last good config
            reused = raw.entry[1]
            self.validated[reused.name] = raw.entry
            self.reused.append((path, reused))
            return reused
        if not isinstance(raw, dict):
            self.fail(path, raw, "expected a table")
            return None
        name = raw.get("name")
        known = self.known.get(name) if isinstance(name, str) else None
        fingerprint = _fingerprint(raw)
        if known is not None and known[0] == fingerprint:
            self.validated[name] = known
            self.reused.append((path, known[1]))
            return known[1]
        before = len(self.issues)
        svc = self.build_service(raw, path)
        if svc is not None and len(self.issues) == before:
            self.validated[svc.name] = (fingerprint, svc)
        return svc

    def build_service(self, raw: dict, path: str) -> ServiceConfig | None:
        base_check = raw.get("check", {})
        if not isinstance(base_check, dict):
            self.fail(f"{path}.check", base_check, "expected a table")
            base_check = {}
        check = self.convert(base_check, CheckConfig, f"{path}.check")
        if check is not None:
            for rel, value, message in check_problems(check):
                self.fail(f"{path}.check.{rel}", value, message)
        reals = self.reals(raw.get("real", []), base_check, path)
        body = {k: v for k, v in raw.items() if k not in ("real", "check")}
        svc, _ = self.convert_best_effort(body, ServiceConfig, path)
        if svc is None:
            return None
        svc = msgspec.structs.replace(svc, check=check or CheckConfig(), real=tuple(reals))
        self.service_rules(svc, path, reals)
        return svc

    def reals(self, raw_reals: Any, base_check: dict, svc_path: str) -> list[RealConfig]:
        if not isinstance(raw_reals, list):
            self.fail(
                f"{svc_path}.real", raw_reals, "expected an array of tables: [[service.real]]"
            )
            return []
        reals: list[RealConfig] = []
        for index, raw in enumerate(raw_reals):
            path = f"{svc_path}.real[{index}]"
            if not isinstance(raw, dict):
                self.fail(path, raw, "expected a table")
                continue
            override = raw.get("check")
            body = {k: v for k, v in raw.items() if k != "check"}
            real, _ = self.convert_best_effort(body, RealConfig, path)
            check = None
            if override is not None:
                if not isinstance(override, dict):
                    self.fail(f"{path}.check", override, "expected a table")
                else:
                    merged = {**base_check, **override}
                    check = self.convert(merged, CheckConfig, f"{path}.check")
                    for rel, value, message in check_problems(check) if check else ():
                        self.fail(f"{path}.check.{rel}", value, message)
            if real is not None:
                reals.append(msgspec.structs.replace(real, check=check))
        return reals

    def service_rules(self, svc: ServiceConfig, path: str, reals: list[RealConfig]) -> None:
        if not _NAME.fullmatch(svc.name):
            # Names go into API paths (SERVICE/REAL), log lines and metric labels.
            self.fail(
                f"{path}.name",
                svc.name,
                "use 1-64 characters, without '/', line breaks or spaces at either end",
            )
        self.identity_rules(svc, path)
        self.ranges(svc, path, _SERVICE_RANGES)
        if svc.scheduler not in SCHEDULERS:
            self.fail(
                f"{path}.scheduler",
                svc.scheduler,
                f"unknown scheduler (the kernel has: {' '.join(SCHEDULERS)})",
            )
        for i, flag in enumerate(svc.scheduler_flags):
            spec = SCHEDULER_FLAGS.get(flag)
            if spec is None:
                self.fail(
                    f"{path}.scheduler_flags[{i}]",
                    flag,
                    f"unknown flag (known: {', '.join(SCHEDULER_FLAGS)})",
                )
            elif spec[0] is not None and spec[0] != svc.scheduler:
                self.fail(
                    f"{path}.scheduler_flags[{i}]", flag, f"only applies to the {spec[0]} scheduler"
                )
        if svc.persistence and svc.persistence < 1:
            self.fail(
                f"{path}.persistence",
                str(svc.persistence),
                "persistence is counted in whole seconds; use 0 or at least 1s",
            )
        family = self.service_family(svc)
        if svc.persistence_netmask is not None and family is not None:
            limit = 128 if family == AF_INET6 else 32
            if not 1 <= svc.persistence_netmask <= limit:
                self.fail(
                    f"{path}.persistence_netmask",
                    svc.persistence_netmask,
                    f"prefix length must be 1..{limit}",
                )
        self.pool_rules(svc, path)
        seen: dict[tuple[str, int], str] = {}
        for i, real in enumerate(reals):
            rpath = f"{path}.real[{i}]"
            try:
                endpoint = split_host_port(real.address, svc.port if svc.port else None)
            except ValueError as exc:
                self.fail(f"{rpath}.address", real.address, str(exc))
                continue
            if problem := destination_problem(endpoint[0]):
                self.fail(f"{rpath}.address", real.address, problem)
                continue
            if endpoint in seen:
                self.fail(
                    f"{rpath}.address",
                    real.address,
                    f"duplicate real server (also {seen[endpoint]})",
                )
            seen.setdefault(endpoint, rpath)
            forwarding = real.forwarding or svc.forwarding
            if family is not None and family_of(endpoint[0]) != family and forwarding != "tunnel":
                self.fail(
                    f"{rpath}.address",
                    real.address,
                    "address family differs from the service's;"
                    ' the kernel allows that only with forwarding = "tunnel"',
                )
            check = real.check or svc.check
            if problem := bind_family_problem(check, endpoint[0]):
                where = f"{rpath}.check" if real.check is not None else f"{path}.check"
                self.fail(f"{where}.bind_address", check.bind_address, problem)
            if real.name is not None and not _NAME.fullmatch(real.name):
                self.fail(
                    f"{rpath}.name",
                    real.name,
                    "use 1-64 characters, without '/', line breaks or spaces at either end",
                )
            if real.upper_threshold and real.lower_threshold > real.upper_threshold:
                self.fail(
                    f"{rpath}.lower_threshold",
                    real.lower_threshold,
                    "must not exceed upper_threshold",
                )
            self.notify_commands(real, rpath)

    def notify_commands(self, real: RealConfig, path: str) -> None:
        for key in ("notify_up", "notify_down"):
            argv = getattr(real, key)
            if argv and (why := command_problem(argv)):
                self.fail(f"{path}.{key}", argv[0], why)

    def identity_rules(self, svc: ServiceConfig, path: str) -> None:
        if svc.fwmark is not None:
            if svc.vip is not None or svc.port is not None:
                self.fail(path, svc.name, "give either fwmark, or vip and port, not both")
            return
        if svc.vip is None:
            self.fail(f"{path}.vip", _MISSING, "required: a virtual IP (or use fwmark)")
        else:
            try:
                normalize_address(svc.vip)
            except ValueError:
                self.fail(f"{path}.vip", svc.vip, "not an IPv4 or IPv6 address")
        if svc.port is None:
            self.fail(f"{path}.port", _MISSING, "required with vip")

    def service_family(self, svc: ServiceConfig) -> int | None:
        if svc.fwmark is not None:
            return AF_INET6 if svc.family == "ipv6" else AF_INET
        try:
            return family_of(svc.vip) if svc.vip else None
        except ValueError:
            return None

    def pool_rules(self, svc: ServiceConfig, path: str) -> None:
        value = svc.min_healthy
        if isinstance(value, str):
            text = value.strip()
            if (
                not text.endswith("%")
                or not _is_number(text[:-1])
                or not 0 <= float(text[:-1]) <= 100
            ):
                self.fail(
                    f"{path}.min_healthy",
                    value,
                    'expected a count like 2 or a percentage like "50%"',
                )
        elif not 0 <= value <= 65535:
            self.fail(f"{path}.min_healthy", value, "must be between 0 and 65535")
        if svc.sorry_server is not None:
            try:
                host, _ = split_host_port(svc.sorry_server, svc.port if svc.port else None)
            except ValueError as exc:
                self.fail(f"{path}.sorry_server", svc.sorry_server, str(exc))
            else:
                if problem := destination_problem(host):
                    self.fail(f"{path}.sorry_server", svc.sorry_server, problem)

    def check_listen(self, listen: str) -> None:
        try:
            split_host_port(listen)
        except ValueError as exc:
            self.fail("api.listen", listen, str(exc))


# Visible characters and inner spaces; no "/", which separates SERVICE/REAL in API paths.
_NAME = re.compile(r"(?=[^\s])[^/\x00-\x1f\x7f]{1,64}(?<=[^\s])")


# (low, high) of each number and duration, in seconds for durations: what the
# code can live with. A resync of 0s would spin a core; days-long timers or
# counters that never finish are mistakes, not settings.
_DAEMON_RANGES: dict[str, tuple[float, float]] = {
    "resync_interval": (0.1, 3600.0),
    "full_resync_interval": (1.0, 86400.0),
    "retry_interval": (0.01, 3600.0),
    "probe_tick_max": (0.0, 1.0),
}
_API_RANGES: dict[str, tuple[float, float]] = {
    "status_refresh": (0.1, 3600.0),
    "header_timeout": (0.1, 3600.0),
    "body_timeout": (0.1, 3600.0),
    "response_timeout": (1.0, 3600.0),
}
_HOOKS_RANGES: dict[str, tuple[float, float]] = {
    "timeout": (0.01, 3600.0),
    "max_running": (1, 256),
}
_SERVICE_RANGES: dict[str, tuple[float, float]] = {
    # The kernel keeps persistence in jiffies of an unsigned int.
    "persistence": (0.0, 31 * 86400.0),
    "drain_timeout": (0.0, 7 * 86400.0),
    "slow_start": (0.0, 86400.0),
}


def destination_problem(address: str) -> str | None:
    """Why the kernel would refuse ``address`` as a real server, or None.

    The kernel takes only unicast (or local) destinations: IPv4 in 0.0.0.0/8,
    multicast or the limited broadcast, and IPv6 that is not unicast (any,
    multicast, v4-mapped) or is link-local, get EINVAL on every pass.
    """
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv4Address):
        if ip in _V4_ZERONET or ip.is_multicast or ip == _V4_BROADCAST:
            return "not a unicast address (the kernel takes only unicast real servers)"
        return None
    if ip.is_unspecified or ip.is_multicast or ip.ipv4_mapped is not None:
        return "not a unicast address (the kernel takes only unicast real servers)"
    if ip.is_link_local:
        return "a link-local address cannot be a real server (it has no scope in IPVS)"
    return None


_V4_ZERONET = ipaddress.ip_network("0.0.0.0/8")
_V4_BROADCAST = ipaddress.ip_address("255.255.255.255")


def _fingerprint(raw: dict) -> bytes:
    """A digest of the canonical bytes of a raw TOML table: equal digest, equal table.

    A 128-bit digest rather than the bytes themselves (~500 per service),
    which the cache would keep for every service of the running config.
    """
    encoded = msgspec.json.encode(raw, order="deterministic")
    return hashlib.blake2b(encoded, digest_size=16).digest()


def _literal_choices(tp: type, parts: list[str | int]) -> tuple[Any, ...]:
    """The allowed values of a Literal field, for a friendlier enum error."""
    if len(parts) != 1 or not isinstance(parts[0], str):
        return ()
    try:
        hint = typing.get_type_hints(tp).get(parts[0])
    except (NameError, TypeError):
        return ()
    for candidate in (hint, *typing.get_args(hint)):
        if typing.get_origin(candidate) is Literal:
            return typing.get_args(candidate)
    return ()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _join(base: str, rel: str) -> str:
    """``service[1]`` + ``.real[0].weight`` -> ``service[1].real[0].weight``."""
    return (base + rel).lstrip(".")


def _lookup(raw: Any, rel: str) -> Any:
    """The raw value at a msgspec-style relative path like ``.real[0].weight``."""
    node = raw
    for part in _path_parts(rel):
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return node


def _path_parts(rel: str) -> list[str | int]:
    parts: list[str | int] = []
    for chunk in rel.replace("[", ".[").split("."):
        if not chunk:
            continue
        if chunk.startswith("[") and chunk.endswith("]"):
            inner = chunk[1:-1]
            parts.append(int(inner) if inner.isascii() and inner.isdigit() else inner.strip("'\""))
        else:
            parts.append(chunk)
    return parts


def persistence_netmask(svc: ServiceConfig) -> int:
    """The persistence netmask as a prefix length (default: a single address)."""
    if svc.persistence_netmask is not None:
        return svc.persistence_netmask
    return 128 if svc.key.family == AF_INET6 else 32


def scheduler_flag_bits(svc: ServiceConfig) -> int:
    bits = SVC_F_ONEPACKET if svc.one_packet else 0
    for flag in svc.scheduler_flags:
        bits |= SCHEDULER_FLAGS[flag][1]
    return bits
