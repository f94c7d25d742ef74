"""tcp: up when a TCP connection can be opened within the timeout."""

from __future__ import annotations

from pulsed.checks.base import ProbeResult, Target
from pulsed.checks.sockio import Done, Exchange, ProbeEngine, run_exchange
from pulsed.model import family_of


class TcpProbe:
    def __init__(self, target: Target) -> None:
        self.address = target.address
        self.port = target.probe_port
        self.family = family_of(target.address)
        self.timeout = float(target.check.timeout)

    def start(self, engine: ProbeEngine, done: Done, token: object = None) -> Exchange:
        return engine.open(
            self.family, self.address, self.port, self.timeout, b"", None, done, token
        )

    async def probe(self) -> ProbeResult:
        return await run_exchange(self.start)
