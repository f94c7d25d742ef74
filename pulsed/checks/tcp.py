"""tcp: up when a TCP connection can be opened within the timeout."""

from __future__ import annotations

import asyncio

from pulsed.checks.base import ProbeResult, Target
from pulsed.checks.sockio import Done, Exchange, run_exchange
from pulsed.model import family_of


class TcpProbe:
    def __init__(self, target: Target) -> None:
        self.address = target.address
        self.port = target.probe_port
        self.family = family_of(target.address)
        self.timeout = float(target.check.timeout)

    def start(self, done: Done) -> Exchange:
        exchange = Exchange(asyncio.get_running_loop(), self.timeout, None, None, done)
        return exchange.start(self.family, self.address, self.port)

    async def probe(self) -> ProbeResult:
        return await run_exchange(self.start)
