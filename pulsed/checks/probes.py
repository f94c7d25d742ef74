"""Pick the probe for a target's check type."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from pulsed.checks.base import Probe, Target
from pulsed.checks.exec import ExecProbe
from pulsed.checks.http import HttpProbe, HttpsProbe
from pulsed.checks.none import NoneProbe
from pulsed.checks.tcp import TcpProbe

_PROBES: dict[str, Callable[[Target], Probe]] = {
    "http": HttpProbe,
    "https": HttpsProbe,
    "tcp": TcpProbe,
    "exec": ExecProbe,
}
# Imported the first time a check of the type is made: the modules (and grpc's
# hpack and hyperframe) cost resident memory (docs/benchmarks.md) that a
# router without such checks need not carry.
_LATER = {
    "udp": ("pulsed.checks.udp", "UdpProbe"),
    "dns": ("pulsed.checks.dns", "DnsProbe"),
    "smtp": ("pulsed.checks.smtp", "SmtpProbe"),
    "icmp": ("pulsed.checks.icmp", "IcmpProbe"),
    "grpc": ("pulsed.checks.grpc", "GrpcProbe"),
    "send_expect": ("pulsed.checks.send_expect", "SendExpectProbe"),
}


def make_probe(target: Target) -> Probe:
    """A prepared probe; call ``await probe.probe()`` once per check."""
    kind = target.check.type
    factory = _PROBES.get(kind)
    if factory is None and kind in _LATER:
        module, name = _LATER[kind]
        factory = _PROBES[kind] = getattr(importlib.import_module(module), name)
    return (factory or NoneProbe)(target)
