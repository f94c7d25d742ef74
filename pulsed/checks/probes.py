"""Pick the probe for a target's check type."""

from __future__ import annotations

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


def make_probe(target: Target) -> Probe:
    """A prepared probe; call ``await probe.probe()`` once per check."""
    return _PROBES.get(target.check.type, NoneProbe)(target)
