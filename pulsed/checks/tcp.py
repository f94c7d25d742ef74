"""tcp: up when a TCP connection can be opened within the timeout."""

from __future__ import annotations

from pulsed.checks.base import ProbeResult, Target
from pulsed.checks.placement import needs_preparing
from pulsed.checks.sockio import Done, Exchange, ProbeEngine, run_exchange
from pulsed.model import family_of

# One float object per distinct timeout, shared by every probe using it.
_TIMEOUTS: dict[float, float] = {}


class TcpProbe:
    # One per real server: slots and a shared timeout keep 10,000 of them
    # ~0.6 MB smaller than a plain object each with its own float.
    __slots__ = ("address", "family", "place", "port", "timeout")

    def __init__(self, target: Target) -> None:
        self.address = target.probe_address
        self.port = target.probe_port
        self.family = family_of(self.address)
        self.place = target.check if needs_preparing(target.check) else None
        timeout = float(target.check.timeout)
        self.timeout = _TIMEOUTS.setdefault(timeout, timeout)

    def start(self, engine: ProbeEngine, done: Done, token: object = None) -> Exchange:
        return engine.open(
            self.family, self.address, self.port, self.timeout, b"", None, done, token, self.place
        )

    async def probe(self) -> ProbeResult:
        return await run_exchange(self.start)
