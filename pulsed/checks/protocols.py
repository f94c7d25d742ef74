"""Validation of the keys of the udp, dns, smtp, grpc and send_expect checks.

Called by pulsed.checks.config.check_problems (the one validation path of
check-config, start-up and reload). pulsed.checks.dns_wire is imported only
when a dns check is validated.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Bad = Callable[[str, object, str], None]
# A pulsed.checks.config.CheckConfig. Not imported: that module imports this one,
# and pulsed's modules never import each other both ways (tests/unit/test_layout.py).
CheckConfig = Any

MAX_DATAGRAM = 65507  # largest UDP payload over IPv4
MAX_STEPS = 32
MAX_STEP_BYTES = 65536

MAX_NAME = 255  # an EHLO domain, a gRPC service name


def protocol_problems(check: CheckConfig, bad: Bad) -> None:
    {
        "udp": _udp,
        "dns": _dns,
        "smtp": _smtp,
        "grpc": _grpc,
        "send_expect": _send_expect,
    }[check.type](check, bad)


def _udp(check: CheckConfig, bad: Bad) -> None:
    if check.payload is not None and check.payload_hex is not None:
        bad("payload_hex", check.payload_hex, "give payload or payload_hex, not both")
    payload = _hex(check.payload_hex, "payload_hex", bad)
    if check.payload is not None:
        payload = check.payload.encode()
    if payload is not None and len(payload) > MAX_DATAGRAM:
        bad("payload", len(payload), f"is longer than a datagram ({MAX_DATAGRAM} bytes)")
    if check.expect is not None and check.expect_hex is not None:
        bad("expect_hex", check.expect_hex, "give expect or expect_hex, not both")
    _hex(check.expect_hex, "expect_hex", bad)
    _regex(check.expect, "expect", bad)


def _dns(check: CheckConfig, bad: Bad) -> None:
    from pulsed.checks import dns_wire

    if not check.query_name:
        bad("query_name", check.query_name, "a dns check needs the name to query")
    else:
        try:
            dns_wire.encode_name(check.query_name)
        except dns_wire.DnsWireError as exc:
            bad("query_name", check.query_name, f"is not a domain name: {exc}")
    try:
        dns_wire.type_code(check.query_type)
    except dns_wire.DnsWireError:
        bad("query_type", check.query_type, "is not a DNS record type (A, AAAA, MX, ...)")
    try:
        dns_wire.rcode_code(check.expect_rcode)
    except dns_wire.DnsWireError:
        bad("expect_rcode", check.expect_rcode, "is not a DNS rcode (NOERROR, NXDOMAIN, ...)")
    _regex(check.expect_answer, "expect_answer", bad, as_text=True)


_EHLO_NAME = re.compile(r"^[A-Za-z0-9.:\[\]-]+$")


def _smtp(check: CheckConfig, bad: Bad) -> None:
    name = check.helo_name
    if name is not None and (not _EHLO_NAME.match(name) or len(name) > MAX_NAME):
        bad("helo_name", name, "must be a host name or an address literal ([10.0.0.1])")


def _grpc(check: CheckConfig, bad: Bad) -> None:
    service = check.grpc_service
    if len(service.encode()) > MAX_NAME or any(ord(c) < 32 or ord(c) == 127 for c in service):
        bad("grpc_service", service, f"must be at most {MAX_NAME} bytes without control characters")


def _send_expect(check: CheckConfig, bad: Bad) -> None:
    if not check.steps:
        bad("steps", [], "a send_expect check needs at least one step")
    if len(check.steps) > MAX_STEPS:
        bad("steps", len(check.steps), f"at most {MAX_STEPS} steps")
    for i, step in enumerate(check.steps):
        key = f"steps[{i}]"
        if step.send and step.send_hex is not None:
            bad(f"{key}.send_hex", step.send_hex, "give send or send_hex, not both")
        sent = _hex(step.send_hex, f"{key}.send_hex", bad)
        if sent is None:
            sent = step.send.encode()
        if len(sent) > MAX_STEP_BYTES:
            bad(f"{key}.send", len(sent), f"sends more than {MAX_STEP_BYTES} bytes")
        if not sent and step.expect is None:
            bad(key, {}, "a step needs send, send_hex or expect")
        _regex(step.expect, f"{key}.expect", bad)


def _hex(text: str | None, key: str, bad: Bad) -> bytes | None:
    if text is None:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        bad(key, text, "is not hexadecimal bytes (pairs of 0-9a-f, spaces allowed)")
        return None


def _regex(pattern: str | None, key: str, bad: Bad, as_text: bool = False) -> None:
    """Patterns are compiled as the probe compiles them: over bytes, except
    expect_answer (matched against answer text)."""
    if pattern is None:
        return
    try:
        re.compile(pattern if as_text else pattern.encode())
    except re.error as exc:
        bad(key, pattern, f"is not a valid regular expression: {exc}")
