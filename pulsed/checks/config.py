"""The ``check`` table: how one real server is probed.

The config loader reads ``[service.check]`` as a table, merges a real
server's ``[service.real.check]`` over it key by key, and converts the result
into a ``CheckConfig``. ``check_problems`` then reports semantic errors, each
with the key path relative to the check table.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import ssl
from typing import Literal

import msgspec

from pulsed.checks.protocols import protocol_problems
from pulsed.durations import Duration
from pulsed.files import check_executable, check_file

CheckType = Literal[
    "http", "https", "tcp", "exec", "none", "udp", "dns", "smtp", "icmp", "grpc", "send_expect"
]
# Types that may speak TLS, and the key that turns it on (https always does).
TLS_SWITCH = {"smtp": "starttls", "grpc": "tls", "send_expect": "tls"}

MIN_INTERVAL = 0.01
MIN_TIMEOUT = 0.001
MAX_INTERVAL = 86400.0
MAX_RUN = 1000  # rise and fall
MAX_RESPONSE_BYTES = 16 * 1024 * 1024

# RFC 9110 token characters, for the method and header names.
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_STATUS_RANGE = re.compile(r"^([1-5]\d\d)-([1-5]\d\d)$")
_STATUS_CLASS = re.compile(r"^([1-5])xx$")


class Step(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One step of a send_expect check: send (text or hex), then expect (a regex)."""

    send: str = ""
    send_hex: str | None = None
    expect: str | None = None

    def payload(self) -> bytes:
        return bytes.fromhex(self.send_hex) if self.send_hex is not None else self.send.encode()


class CheckConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How to probe a real server. Every field has a sane default."""

    type: CheckType = "tcp"
    # Port to probe; None means the real server's own port (keepalived's connect_port).
    port: int | None = None
    # Address to probe; None means the real server's own (keepalived's connect_ip).
    address: str | None = None
    # Source address and device of the probe (keepalived's bindto and bind_if).
    bind_address: str | None = None
    bind_interface: str | None = None
    # After a failed probe, the next one comes after this delay rather than
    # `interval`, until the state settles (keepalived's delay_before_retry).
    retry_interval: Duration | None = None
    interval: Duration = Duration(2.0)
    # Covers the whole exchange: connect, TLS, request, headers and body.
    timeout: Duration = Duration(1.0)
    rise: int = 2
    fall: int = 3
    # First probes of the servers are spread at random over this window
    # (None: one interval); later probes follow a fixed grid every interval.
    jitter: Duration | None = None
    # "down": a new server must pass `rise` probes before it takes traffic.
    # "up": it takes traffic at once and needs `fall` failures to leave.
    initial_state: Literal["down", "up"] = "down"

    # http / https
    method: str = "GET"
    path: str = "/"
    # Host header and TLS server name; None means the probed address.
    host: str | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    # Status codes that mean "up": 200, "200-299", "2xx".
    expect_status: tuple[int | str, ...] = ("200-399",)
    # Optional regular expression searched in the first `max_bytes` of the body.
    body_regex: str | None = None
    # Most bytes read from one response (headers + body); reading stops there.
    max_bytes: int = 65536
    # Response header in which the server reports its own weight as a
    # percentage of its configured weight (for example "X-Pulsed-Weight").
    weight_header: str | None = None

    # https
    tls_verify: bool = True
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    # exec: argv, no shell. "{address}" and "{port}" in arguments are replaced.
    command: tuple[str, ...] = ()

    # udp: the datagram sent (text or hex; default empty), and what the reply
    # must hold (a regex searched in it, or exact bytes in hex; default any reply).
    payload: str | None = None
    payload_hex: str | None = None
    expect: str | None = None
    expect_hex: str | None = None

    # dns
    query_name: str | None = None
    query_type: str = "A"
    dns_transport: Literal["udp", "tcp"] = "udp"
    expect_rcode: str = "NOERROR"
    expect_answer: str | None = None

    # smtp (helo_name None: this host's name)
    helo_name: str | None = None
    starttls: bool = False

    # grpc: the service asked about ("" = the server as a whole)
    grpc_service: str = ""
    # grpc and send_expect: TLS from the start
    tls: bool = False

    # send_expect
    steps: tuple[Step, ...] = ()

    # --- agent: HAProxy's agent-check, a companion of any type (pulsed.checks.agent) ---
    # Port of the server's agent; None: no agent.
    agent_port: int | None = None
    agent_interval: Duration = Duration(2.0)
    agent_timeout: Duration = Duration(1.0)
    # Sent once connected, before the reply is read ("" sends nothing).
    agent_send: str = ""


def uses_tls(check: CheckConfig) -> bool:
    """Whether the check's probe speaks TLS (and so loads the TLS files)."""
    if check.type == "https":
        return True
    switch = TLS_SWITCH.get(check.type)
    return switch is not None and bool(getattr(check, switch))


def parse_status_spec(spec: tuple[int | str, ...]) -> frozenset[int]:
    """The set of status codes named by ``expect_status``; ValueError if bad."""
    codes: set[int] = set()
    for item in spec:
        if isinstance(item, int) and not isinstance(item, bool):
            if not 100 <= item <= 599:
                raise ValueError(f"status {item} is not between 100 and 599")
            codes.add(item)
            continue
        text = str(item).strip()
        if text.isdigit() and 100 <= int(text) <= 599:
            codes.add(int(text))
        elif m := _STATUS_RANGE.match(text):
            low, high = int(m.group(1)), int(m.group(2))
            if low > high:
                raise ValueError(f"status range {text!r} is backwards")
            codes.update(range(low, high + 1))
        elif m := _STATUS_CLASS.match(text):
            base = int(m.group(1)) * 100
            codes.update(range(base, base + 100))
        else:
            raise ValueError(f"bad status {item!r}: use 200, '200-299' or '2xx'")
    if not codes:
        raise ValueError("no status codes given")
    return frozenset(codes)


def check_problems(check: CheckConfig) -> list[tuple[str, object, str]]:
    """Semantic errors as (key path relative to the check table, value, message)."""
    problems: list[tuple[str, object, str]] = []

    def bad(key: str, value: object, message: str) -> None:
        problems.append((key, value, message))

    if check.port is not None and not 1 <= check.port <= 65535:
        bad("port", check.port, "must be between 1 and 65535")
    _placement_problems(check, bad)
    _agent_problems(check, bad)
    # Ranges the probe engine can live with: a probe more often than every
    # 10 ms is a flood, and timers of days are mistakes.
    if not MIN_INTERVAL <= check.interval <= MAX_INTERVAL:
        bad("interval", check.interval, "must be between 10ms and 1d")
    if not MIN_TIMEOUT <= check.timeout <= MAX_INTERVAL:
        bad("timeout", check.timeout, "must be between 1ms and 1d")
    elif check.timeout > check.interval >= MIN_INTERVAL:
        bad("timeout", check.timeout, f"must not exceed interval ({check.interval})")
    if not 1 <= check.rise <= MAX_RUN:
        bad("rise", check.rise, f"must be between 1 and {MAX_RUN}")
    if not 1 <= check.fall <= MAX_RUN:
        bad("fall", check.fall, f"must be between 1 and {MAX_RUN}")
    if check.jitter is not None and not 0 <= check.jitter <= MAX_INTERVAL:
        bad("jitter", check.jitter, "must be between 0s and 1d")

    if check.type in ("http", "https"):
        _http_problems(check, bad)
    if check.type in ("udp", "dns", "smtp", "grpc", "send_expect"):
        protocol_problems(check, bad)
    if check.type in TLS_SWITCH and check.host is not None and not _good_host(check.host):
        bad("host", check.host, "must be an ASCII host name without spaces or line breaks")
    if uses_tls(check) and check.client_key is not None and check.client_cert is None:
        bad("client_key", check.client_key, "needs client_cert as well")
    if check.type == "exec" and not check.command:
        bad("command", list(check.command), "exec check needs a command (a list of arguments)")
    problems.extend(file_problems(check))
    return problems


# Most bytes of a certificate or key file.
MAX_FILE_BYTES = 1 << 20
_TLS_FILES = (("ca_file", False), ("client_cert", False), ("client_key", True))


def file_problems(check: CheckConfig) -> list[tuple[str, object, str]]:
    """The files a check names that the probe could not use, as (key, value,
    message): TLS files that are missing, not regular, open to others (the
    key) or that do not load as the probe loads them, and an exec program
    that cannot run. The config loader also calls this for services it
    takes unchanged from the last reload, since files change under names."""
    problems: list[tuple[str, object, str]] = []
    if uses_tls(check):
        for key, secret in _TLS_FILES:
            path = getattr(check, key)
            if path is not None:
                problem = check_file(path, what=key, secret=secret, max_bytes=MAX_FILE_BYTES)
                if problem:
                    problems.append((key, path, problem))
        if not problems and (check.client_key is None or check.client_cert is not None):
            # Readable is not enough: a file of garbage would fail every probe
            # as "bad check setup" and take the servers down. Load it as the
            # probe will (pulsed.checks.http.tls_context).
            loaded = tls_setup_problem(check.ca_file, check.client_cert, check.client_key)
            if loaded:
                problems.append((loaded[0], getattr(check, loaded[0]), loaded[1]))
    if check.type == "exec" and check.command and (problem := check_executable(check.command[0])):
        problems.append(("command[0]", check.command[0], problem))
    return problems


# Linux's IFNAMSIZ less the terminating NUL.
MAX_IFNAME = 15


def _placement_problems(check: CheckConfig, bad) -> None:
    for key in ("address", "bind_address"):
        value = getattr(check, key)
        if value is not None:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                bad(key, value, "is not an IPv4 or IPv6 address")
    if check.address is not None and check.bind_address is not None:
        with contextlib.suppress(ValueError):
            if (
                ipaddress.ip_address(check.address).version
                != ipaddress.ip_address(check.bind_address).version
            ):
                bad("bind_address", check.bind_address, "is not of the probed address's family")
    name = check.bind_interface
    if name is not None and not _valid_ifname(name):
        bad(
            "bind_interface",
            name,
            f"must be an interface name of 1 to {MAX_IFNAME} ASCII characters,"
            " without '/', ':' or spaces",
        )
    retry = check.retry_interval
    if retry is not None and not MIN_INTERVAL <= retry <= check.interval:
        bad("retry_interval", retry, f"must be between 10ms and interval ({check.interval})")


# Most bytes of agent_send.
MAX_AGENT_SEND = 1024


def _agent_problems(check: CheckConfig, bad) -> None:
    if check.agent_port is not None and not 1 <= check.agent_port <= 65535:
        bad("agent_port", check.agent_port, "must be between 1 and 65535")
    if not MIN_INTERVAL <= check.agent_interval <= MAX_INTERVAL:
        bad("agent_interval", check.agent_interval, "must be between 10ms and 1d")
    if not MIN_TIMEOUT <= check.agent_timeout <= MAX_INTERVAL:
        bad("agent_timeout", check.agent_timeout, "must be between 1ms and 1d")
    elif check.agent_timeout > check.agent_interval >= MIN_INTERVAL:
        bad(
            "agent_timeout",
            check.agent_timeout,
            f"must not exceed agent_interval ({check.agent_interval})",
        )
    if len(check.agent_send.encode()) > MAX_AGENT_SEND:
        bad("agent_send", check.agent_send[:40], f"must be at most {MAX_AGENT_SEND} bytes")


def _valid_ifname(name: str) -> bool:
    """What the kernel takes as a device name (dev_valid_name): whether it
    exists is not checked here (see pulsed.checks.placement)."""
    return (
        1 <= len(name) <= MAX_IFNAME
        and name.isascii()
        and name not in (".", "..")
        and not any(c in "/:" or c.isspace() or not c.isprintable() for c in name)
    )


def bind_family_problem(check: CheckConfig, real_address: str) -> str | None:
    """Why ``bind_address`` cannot be the source of probes of a real server at
    ``real_address`` (when the check gives no ``address`` of its own), or None."""
    if check.bind_address is None or check.address is not None:
        return None
    try:
        ours = ipaddress.ip_address(check.bind_address).version
        theirs = ipaddress.ip_address(real_address).version
    except ValueError:
        return None  # reported on its own
    if ours != theirs:
        return f"is IPv{ours} but the real server {real_address} is IPv{theirs}"
    return None


def _http_problems(check: CheckConfig, bad) -> None:
    if not _TOKEN.match(check.method):
        bad("method", check.method, "is not a valid HTTP method")
    if not check.path.startswith("/") or _has_space_or_newline(check.path):
        bad("path", check.path, "must start with '/' and contain no spaces or line breaks")
    elif not check.path.isascii():
        bad("path", check.path, "must be ASCII (percent-encode other characters)")
    if check.host is not None and not _good_host(check.host):
        bad("host", check.host, "must be an ASCII host name without spaces or line breaks")
    for name, value in check.headers.items():
        if not _TOKEN.match(name):
            bad(f"headers.{name}", value, "is not a valid header name")
        elif "\r" in value or "\n" in value:
            bad(f"headers.{name}", value, "must not contain line breaks")
        elif not _is_latin1(value):
            bad(f"headers.{name}", value, "must be Latin-1 text")
    try:
        parse_status_spec(check.expect_status)
    except ValueError as exc:
        bad("expect_status", list(check.expect_status), str(exc))
    if check.body_regex is not None:
        try:
            re.compile(check.body_regex.encode())
        except re.error as exc:
            bad("body_regex", check.body_regex, f"is not a valid regular expression: {exc}")
    if not 256 <= check.max_bytes <= MAX_RESPONSE_BYTES:
        bad("max_bytes", check.max_bytes, f"must be between 256 and {MAX_RESPONSE_BYTES}")
    if check.weight_header is not None and not _TOKEN.match(check.weight_header):
        bad("weight_header", check.weight_header, "is not a valid header name")


def tls_setup_problem(
    ca_file: str | None, client_cert: str | None, client_key: str | None
) -> tuple[str, str] | None:
    """(key, why) when the CA file or the client certificate and key cannot be loaded."""
    try:
        ctx = ssl.create_default_context(cafile=ca_file) if ca_file else None
    except (OSError, ssl.SSLError, ValueError) as exc:
        return "ca_file", f"cannot load as CA certificates: {_ssl_reason(exc)}"
    if client_cert is not None:
        ctx = ctx or ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            ctx.load_cert_chain(client_cert, client_key)
        except (OSError, ssl.SSLError, ValueError) as exc:
            return "client_cert", f"cannot load certificate and key: {_ssl_reason(exc)}"
    return None


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or exc.strerror or "TLS error"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return str(exc) or type(exc).__name__


def _good_host(host: str) -> bool:
    return bool(host) and not _has_space_or_newline(host) and host.isascii()


def _has_space_or_newline(text: str) -> bool:
    return any(c in text for c in " \t\r\n")


def _is_latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True
