"""tcp: up when a TCP connection can be opened within the timeout."""

from __future__ import annotations

import asyncio
import socket
import time

from pulsed.checks.base import (
    ProbeResult,
    Target,
    error_result,
    set_reset_on_close,
    timeout_result,
)
from pulsed.model import family_of


class TcpProbe:
    def __init__(self, target: Target) -> None:
        self.address = target.address
        self.port = target.probe_port
        self.family = family_of(target.address)
        self.timeout = float(target.check.timeout)

    async def probe(self) -> ProbeResult:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(self.timeout):
                await loop.sock_connect(sock, (self.address, self.port))
        except TimeoutError:
            return timeout_result(self.timeout, time.perf_counter() - start)
        except OSError as exc:
            return error_result(exc, time.perf_counter() - start)
        finally:
            set_reset_on_close(sock)
            sock.close()
        return ProbeResult(True, "connected", time.perf_counter() - start)
