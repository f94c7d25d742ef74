"""One probe exchange on a raw non-blocking socket, driven by event-loop callbacks.

Plain TCP and HTTP probes run here rather than on asyncio transports and
coroutines: a probe is connect, one small write, a few reads and a close,
and doing that with ``add_writer``/``add_reader`` callbacks, one timer and
no Task, Future or Transport cost about a third less CPU per check than
asyncio transports on the default loop (docs/benchmarks.md, section
checks). TLS probes keep asyncio's SSL transport (pulsed.checks.http).

Contract: ``start()`` returns at once; ``done(result)`` is called exactly
once, from the event loop and never from inside ``start()``, unless
``cancel()`` is called first. Nothing here raises into the loop: any
unexpected error becomes a failed result.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import time
from collections.abc import Callable
from typing import Protocol

from pulsed.checks.base import (
    ProbeResult,
    error_result,
    set_reset_on_close,
    timeout_result,
)

Done = Callable[[ProbeResult], None]


class Reader(Protocol):
    """Consumes the response; decides when it is complete and what it means."""

    def feed(self, data: bytes) -> bool: ...  # True: finished

    def eof(self) -> None: ...

    def result(self, latency: float) -> ProbeResult: ...


class Exchange:
    """Connect, send ``request`` (if any), read with ``reader`` (if any), close with RST."""

    __slots__ = (
        "_done",
        "_fd",
        "_loop",
        "_pending",
        "_reader",
        "_sock",
        "_start",
        "_timeout",
        "_timer",
        "_watching",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        timeout: float,
        request: bytes | None,
        reader: Reader | None,
        done: Done,
    ) -> None:
        self._loop = loop
        self._timeout = timeout
        self._pending = request or b""
        self._reader = reader
        self._done: Done | None = done
        self._sock: socket.socket | None = None
        self._fd = -1
        self._timer: asyncio.TimerHandle | None = None
        self._watching = ""  # "", "w" or "r"
        self._start = 0.0

    def start(self, family: int, address: str, port: int) -> Exchange:
        self._start = time.perf_counter()
        self._timer = self._loop.call_later(self._timeout, self._on_timeout)
        try:
            sock = self._sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            self._fd = sock.fileno()
            err = sock.connect_ex((address, port))
        except OSError as exc:
            self._loop.call_soon(self._fail, exc)
            return self
        if err not in (0, errno.EINPROGRESS):
            self._loop.call_soon(self._fail, OSError(err, os.strerror(err)))
            return self
        self._watch("w", self._on_connected)
        return self

    def cancel(self) -> None:
        """Stop without reporting (the monitor is stopping or the check changed)."""
        self._done = None
        self._close()

    # --- event-loop callbacks ---------------------------------------------------

    def _on_connected(self) -> None:
        try:
            assert self._sock is not None
            err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, os.strerror(err))
            if not self._pending and self._reader is None:
                self._finish(ProbeResult(True, "connected", self._elapsed()))
                return
            self._on_writable()
        except Exception as exc:
            self._fail(exc)

    def _on_writable(self) -> None:
        try:
            assert self._sock is not None
            if self._pending:
                sent = self._sock.send(self._pending)
                self._pending = self._pending[sent:]
            if self._pending:
                self._watch("w", self._on_writable)
            else:
                self._watch("r", self._on_readable)
        except BlockingIOError:
            self._watch("w", self._on_writable)
        except Exception as exc:
            self._fail(exc)

    def _on_readable(self) -> None:
        reader = self._reader
        try:
            assert self._sock is not None and reader is not None
            data = self._sock.recv(65536)
            if data:
                if not reader.feed(data):
                    return
            else:
                reader.eof()
            self._finish(reader.result(self._elapsed()))
        except BlockingIOError:
            return
        except Exception as exc:
            self._fail(exc)

    def _on_timeout(self) -> None:
        self._timer = None
        self._finish(timeout_result(self._timeout, self._elapsed()))

    # --- helpers --------------------------------------------------------------

    def _watch(self, mode: str, callback: Callable[[], None]) -> None:
        self._unwatch()
        if mode == "w":
            self._loop.add_writer(self._fd, callback)
        else:
            self._loop.add_reader(self._fd, callback)
        self._watching = mode

    def _unwatch(self) -> None:
        if self._watching == "w":
            self._loop.remove_writer(self._fd)
        elif self._watching == "r":
            self._loop.remove_reader(self._fd)
        self._watching = ""

    def _elapsed(self) -> float:
        return time.perf_counter() - self._start

    def _fail(self, exc: BaseException) -> None:
        self._finish(error_result(exc, self._elapsed()))

    def _finish(self, result: ProbeResult) -> None:
        done, self._done = self._done, None
        self._close()
        if done is not None:
            done(result)

    def _close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sock is not None:
            self._unwatch()
            set_reset_on_close(self._sock)
            self._sock.close()
            self._sock = None


async def run_exchange(start: Callable[[Done], Exchange]) -> ProbeResult:
    """Await a callback-driven exchange (for tests and one-off probes)."""
    future: asyncio.Future[ProbeResult] = asyncio.get_running_loop().create_future()

    def done(result: ProbeResult) -> None:
        if not future.done():
            future.set_result(result)

    exchange = start(done)
    try:
        return await future
    except asyncio.CancelledError:
        exchange.cancel()
        raise
