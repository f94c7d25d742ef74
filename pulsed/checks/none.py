"""none: always up, for servers steered only by hand."""

from __future__ import annotations

from pulsed.checks.base import ProbeResult, Target


class NoneProbe:
    __slots__ = ("target",)

    def __init__(self, target: Target) -> None:
        self.target = target

    async def probe(self) -> ProbeResult:
        return ProbeResult(True, "no check", 0.0)
