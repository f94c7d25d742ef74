"""Long-lived connections the lab holds open through the VIP, each one tracked.

``HeldConnections(VIP, 60).start(netns)`` opens 60 HTTP keep-alive
connections from the client and, on each, fetches ``/`` every ``interval``
seconds (staggered), recording who answered. A connection that fails (reset,
closed, timed out) is never reopened: it stays in the record as broken, with
why and when, so a step can count exactly which of the connections it
watched a director's death, drain or return broke. Each connection is known
by its client port, which is what the upstream router's L4 hash (and so the
director it goes through) depends on.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field

from lab.loadgen import _describe, _parse_response
from lab.netns import LabError, enter_netns


@dataclass
class Held:
    port: int  # the client port
    servers: list[str] = field(default_factory=list)  # who answered, in order (deduplicated)
    requests: int = 0
    error: str | None = None
    broken_at: float | None = None  # time.monotonic()

    @property
    def alive(self) -> bool:
        return self.error is None

    @property
    def server(self) -> str | None:
        return self.servers[-1] if self.servers else None


class HeldConnections:
    def __init__(
        self, host: str, count: int, port: int = 80, interval: float = 0.5, timeout: float = 20.0
    ) -> None:
        # The timeout outlasts a BGP hold time plus TCP's retransmission back-off: a
        # connection whose packets are lost until the route moves is slow, not broken.
        self.host, self.port, self.count = host, port, count
        self.interval, self.timeout = interval, timeout
        self.conns: list[Held] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._opened = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="held", daemon=True)
        self._request = (
            f"GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: pulsed-lab-held\r\n\r\n"
        ).encode()

    def start(self, netns: str | None = None, timeout: float = 30.0) -> HeldConnections:
        """Open every connection (each answered once) before returning."""
        self._netns = netns
        self._thread.start()
        if not self._opened.wait(timeout):
            self.stop()
            raise LabError(f"could not open {self.count} held connections within {timeout:.0f}s")
        if self._error is not None:
            raise LabError(f"held connections: {self._error}")
        return self

    def _main(self) -> None:
        try:
            if self._netns:
                enter_netns(self._netns)
            self._loop = asyncio.new_event_loop()
            self._stop = asyncio.Event()
            self._loop.run_until_complete(self._run())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._opened.set()
        finally:
            if self._loop is not None:
                self._loop.close()

    async def _run(self) -> None:
        streams = []
        for _ in range(self.count):
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout
            )
            held = Held(port=writer.get_extra_info("sockname")[1])
            streams.append((held, reader, writer))
            await self._exchange(held, reader, writer)
            if not held.alive:
                raise LabError(f"held connection from port {held.port} failed: {held.error}")
        with self._lock:
            self.conns = [h for h, _, _ in streams]
        self._opened.set()
        assert self._stop is not None
        await asyncio.gather(
            *(self._keep(i, h, r, w) for i, (h, r, w) in enumerate(streams)),
            return_exceptions=True,
        )

    async def _keep(self, index: int, held: Held, reader, writer) -> None:
        assert self._stop is not None
        delay = self.interval * index / max(self.count, 1)
        try:
            while not self._stop.is_set() and held.alive:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                if self._stop.is_set():
                    break
                delay = self.interval
                await self._exchange(held, reader, writer)
        finally:
            writer.close()

    async def _exchange(self, held: Held, reader, writer) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                writer.write(self._request)
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                server, error = _parse_response(head + await reader.readexactly(length))
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            server, error = None, _describe(exc)
        held.requests += 1
        if error is not None:
            held.error, held.broken_at = error, time.monotonic()
        elif server is not None and held.server != server:
            held.servers.append(server)

    def snapshot(self) -> list[Held]:
        with self._lock:
            return list(self.conns)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=self.timeout + 5)
