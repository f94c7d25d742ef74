"""Probe exchanges on raw non-blocking sockets, driven by one epoll set per monitor.

Plain TCP and HTTP probes run here rather than on asyncio transports: a
probe is connect, one small write, a read or two and a close, and at
thousands of checks a second the event loop's per-socket machinery
(``add_reader``/``remove_reader`` with their selector bookkeeping, a Handle
per callback, a TimerHandle per timeout) cost more than the probe itself
(docs/benchmarks.md, section checks). So a ``ProbeEngine`` keeps every
in-flight probe socket in its own ``select.epoll`` set, which the loop
watches as one file descriptor: one loop callback handles every socket that
became ready, a socket leaves the set by being closed, and timeouts sit in
first-in first-out queues (probes with the same timeout expire in the order
they started) served by a single loop timer. This works the same under
asyncio's default loop and uvloop. TLS probes keep asyncio's SSL transport
(pulsed.checks.http).

The request is sent right after ``connect()`` when the connection is
already established, as it is on loopback and fast local links; if the
handshake is still under way the send fails with EAGAIN and the exchange
waits for the socket to become writable, as before. One extra failed
``send`` per probe on slow links buys a whole event-loop round trip on fast
ones.

Contract: ``ProbeEngine.open()`` returns at once; ``done(token, result)`` is
called exactly once, from the event loop and never from inside ``open()``,
unless the exchange is cancelled first. Nothing here raises into the loop:
any unexpected error becomes a failed result. An error creating or
registering the socket, or placing it (a check's ``bind_address`` and
``bind_interface``, pulsed.checks.placement), never reached the network: it
is a local error (pulsed.checks.base.local_error_result), not the server's
failure.
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from pulsed.checks.base import (
    LINGER_ZERO,
    ProbeResult,
    error_result,
    local_error_result,
    timeout_result,
)
from pulsed.checks.config import CheckConfig
from pulsed.checks.placement import placement_failure, prepare_socket

Done = Callable[[Any, ProbeResult], None]

_EPOLLIN = select.EPOLLIN
_EPOLLOUT = select.EPOLLOUT
_SOL_SOCKET = socket.SOL_SOCKET
_SO_ERROR = socket.SO_ERROR
_SO_LINGER = socket.SO_LINGER
_STREAM_NONBLOCK = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
# socket.SocketType is the C socket type itself: no Python-level __init__ or
# close() wrapper (those serve makefile(), which a probe never uses).
_RawSocket = socket.SocketType
_now = time.monotonic

# Exchange states.
_CONNECTING = 0  # waiting for the handshake (writable)
_SENDING = 1  # part of the request is still to be written (writable)
_READING = 2  # waiting for the response (readable)
_CLOSED = 3


class Reader(Protocol):
    """Consumes the response; decides when it is complete and what it means."""

    def feed(self, data: bytes) -> bool: ...  # True: finished

    def eof(self) -> None: ...

    def result(self, latency: float) -> ProbeResult: ...


class EngineProbe(Protocol):
    """A probe that can also run on a ProbeEngine (see pulsed.checks.base.Probe):
    ``start`` opens its exchange and ``done(token, result)`` follows from the loop."""

    async def probe(self) -> ProbeResult: ...

    def start(self, engine: ProbeEngine, done: Done, token: object = None) -> Exchange: ...


class Exchange:
    """Connect, send ``request`` (if any), read with ``reader`` (if any), close with RST.

    Closing with RST, not FIN: a checker that opens thousands of connections
    a second must not leave them in TIME_WAIT (HAProxy's checks do the same).
    """

    __slots__ = (
        "_done",
        "_engine",
        "_fd",
        "_pending",
        "_reader",
        "_sock",
        "_state",
        "_token",
        "deadline",
        "started",
        "timeout",
    )

    def __init__(
        self,
        engine: ProbeEngine,
        timeout: float,
        request: bytes,
        reader: Reader | None,
        done: Done,
        token: object,
        started: float,
    ) -> None:
        self._engine = engine
        self._sock: _RawSocket | None = None  # None until open() made it
        self._fd = -1
        self._pending = request
        self._reader = reader
        self._done: Done | None = done
        self._token = token
        self._state = _CONNECTING
        self.timeout = timeout
        self.started = started
        self.deadline = started + timeout

    def cancel(self) -> None:
        """Stop without reporting (the monitor is stopping or the check changed)."""
        self._done = None
        self._close()

    @property
    def active(self) -> bool:
        return self._state != _CLOSED

    # --- driven by the engine -----------------------------------------------------

    def on_event(self) -> None:
        """The socket is ready for what the current state waits for (or failed)."""
        try:
            state = self._state
            if state == _READING:
                self._read()
            elif state == _CONNECTING:
                sock = self._sock
                assert sock is not None  # events come only for an open socket
                err = sock.getsockopt(_SOL_SOCKET, _SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err))
                if not self._pending and self._reader is None:
                    latency = self._engine.clock() - self.started
                    self._finish(ProbeResult(True, "connected", latency))
                    return
                self._state = _SENDING
                self._send()
            elif state == _SENDING:
                self._send()
        except BlockingIOError:
            pass  # a stale or spurious wake-up: keep waiting
        except Exception as exc:
            self._finish(error_result(exc, self._engine.clock() - self.started))

    def expire(self) -> None:
        latency = self._engine.clock() - self.started
        self._finish(timeout_result(self.timeout, latency))

    def fail(self, exc: BaseException, setup: bool = False) -> None:
        """Report ``exc``. ``setup``: it came from creating or registering the
        socket, which never reaches the network, so it is the router's fault
        whatever its errno (a sandbox refuses socket() with EAFNOSUPPORT)."""
        latency = self._engine.clock() - self.started
        if setup:
            result = placement_failure(exc, latency) or local_error_result(exc, latency)
        else:
            result = error_result(exc, latency)
        self._finish(result)

    def send_now(self) -> bool:
        """Right after connect: send if the connection is up already.

        Returns whether the exchange should wait for the socket to become
        readable (everything sent) rather than writable. Errors propagate.
        """
        sock = self._sock
        assert sock is not None  # called by open() once the socket exists
        try:
            sent = sock.send(self._pending)
        except BlockingIOError:
            return False  # handshake still under way
        self._pending = self._pending[sent:]
        if self._pending:
            self._state = _SENDING
            return False
        self._state = _READING
        return True

    # --- steps ------------------------------------------------------------------

    def _send(self) -> None:
        sock = self._sock
        assert sock is not None
        sent = sock.send(self._pending)
        self._pending = self._pending[sent:]
        if not self._pending:
            self._state = _READING
            self._engine.watch_readable(self._fd)

    def _read(self) -> None:
        reader = self._reader
        sock = self._sock
        assert reader is not None and sock is not None
        data = sock.recv(65536)
        if data:
            if not reader.feed(data):
                return
        else:
            reader.eof()
        self._finish(reader.result(self._engine.clock() - self.started))

    def _finish(self, result: ProbeResult) -> None:
        done, self._done = self._done, None
        self._close()
        if done is not None:
            done(self._token, result)

    def _close(self) -> None:
        if self._state == _CLOSED:
            return
        self._state = _CLOSED
        self._engine._exchanges.pop(self._fd, None)
        sock = self._sock
        if sock is None:
            return
        # SO_LINGER cannot fail on an open socket (only on a bad option length).
        sock.setsockopt(_SOL_SOCKET, _SO_LINGER, LINGER_ZERO)
        sock.close()  # also takes the socket out of the engine's epoll set


class ProbeEngine:
    """Every in-flight socket probe of one monitor: one epoll set, one loop reader,
    one loop timer for all timeouts."""

    def __init__(self, loop: asyncio.AbstractEventLoop, meter: StallMeter | None = None) -> None:
        self._loop = loop
        self.meter = meter
        self._epoll = select.epoll()
        self._exchanges: dict[int, Exchange] = {}
        # One queue per timeout value: exchanges expire in the order they started.
        self._expiry: dict[float, deque[Exchange]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._closed = False
        # One clock reading per batch of work (a wake-up of the loop) rather
        # than several per probe; see begin(). (Clock reads are cheap on most
        # machines, but a system call each where the clock has no vDSO path.)
        self.now = 0.0
        self._in_batch = False
        loop.add_reader(self._epoll.fileno(), self._on_ready)

    def begin(self) -> float:
        """Read the clock once for a batch: exchanges opened, and results
        timed, until end() use this reading. Returns it (time.monotonic())."""
        self.now = _now()
        self._in_batch = True
        return self.now

    def end(self) -> None:
        self._in_batch = False

    def clock(self) -> float:
        """The batch's clock reading, or the clock itself outside a batch."""
        return self.now if self._in_batch else _now()

    def open(
        self,
        family: int,
        address: str,
        port: int,
        timeout: float,
        request: bytes,
        reader: Reader | None,
        done: Done,
        token: object = None,
        place: CheckConfig | None = None,
    ) -> Exchange:
        """Start one exchange; ``done(token, result)`` follows from the loop.

        ``place``: a check whose ``bind_address``/``bind_interface`` the socket
        takes before connecting (None: nothing to bind, see placement.needs_preparing).
        """
        started = self.now if self._in_batch else _now()
        exchange = Exchange(self, timeout, request, reader, done, token, started)
        setup = True  # socket() and epoll registration never reach the network
        try:
            sock = exchange._sock = _RawSocket(family, _STREAM_NONBLOCK)
            exchange._fd = sock.fileno()
            if place is not None:
                prepare_socket(sock, place, family)
            setup = False
            err = sock.connect_ex((address, port))
            if err and err != errno.EINPROGRESS:
                raise OSError(err, os.strerror(err))
            events = _EPOLLIN if request and exchange.send_now() else _EPOLLOUT
            setup = True
            self._epoll.register(exchange._fd, events)
        except Exception as exc:
            # Reported from the loop, never from inside open(); the socket,
            # if any, is closed then.
            exchange._state = _SENDING  # anything but closed
            self._loop.call_soon(exchange.fail, exc, setup)
            self._add_expiry(exchange)
            return exchange
        self._exchanges[exchange._fd] = exchange
        self._add_expiry(exchange)
        return exchange

    def watch_readable(self, fd: int) -> None:
        self._epoll.modify(fd, _EPOLLIN)

    def watch(self, fd: int, events: int) -> None:
        self._epoll.modify(fd, events)

    def adopt(self, exchange: Exchange, events: int, timed: bool = True) -> None:
        """Watch an exchange whose socket another module opened (conversations,
        pulsed.checks.convo): its ``_fd`` joins the epoll set for ``events``
        and, when ``timed``, it expires like the engine's own at its deadline.
        Raises what epoll raises (a setup error, the router's)."""
        self._epoll.register(exchange._fd, events)
        self._exchanges[exchange._fd] = exchange
        if timed:
            self._add_expiry(exchange)

    def release(self, exchange: Exchange) -> None:
        """Forget an exchange's socket (it is about to be closed and replaced)."""
        self._exchanges.pop(exchange._fd, None)

    def fail_later(self, exchange: Exchange, exc: BaseException, setup: bool) -> None:
        """Report ``exc`` from the loop (never from inside the call that started it)."""
        exchange._state = _SENDING  # anything but closed
        self._loop.call_soon(exchange.fail, exc, setup)
        self._add_expiry(exchange)

    def close(self) -> None:
        """Cancel every exchange in flight (without reporting) and let go of the loop."""
        if self._closed:
            return
        self._closed = True
        for exchange in list(self._exchanges.values()):
            exchange.cancel()
        for queue in self._expiry.values():
            for exchange in queue:
                exchange.cancel()
        self._expiry.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop.remove_reader(self._epoll.fileno())
        self._epoll.close()

    # --- loop callbacks -----------------------------------------------------------

    def _on_ready(self) -> None:
        exchanges = self._exchanges
        events = self._epoll.poll(0)
        self.begin()
        try:
            for fd, _ in events:
                exchange = exchanges.get(fd)
                if exchange is not None:
                    exchange.on_event()
        finally:
            self._in_batch = False

    def _on_timer(self) -> None:
        due = self._timer_at
        self._timer = None
        self._timer_at = float("inf")
        now = self.begin()
        if self.meter is not None:
            self.meter.note(due, now)  # before expiring: a late timer is the router's
        try:
            for queue in self._expiry.values():
                while queue and (not queue[0].active or queue[0].deadline <= now):
                    exchange = queue.popleft()
                    if exchange.active:
                        exchange.expire()
        finally:
            self._in_batch = False
            self._arm()  # even if a done callback raised: the rest must still expire

    # --- timeouts -----------------------------------------------------------------

    def _add_expiry(self, exchange: Exchange) -> None:
        queue = self._expiry.get(exchange.timeout)
        if queue is None:
            queue = self._expiry[exchange.timeout] = deque()
        queue.append(exchange)
        if exchange.deadline < self._timer_at:
            self._arm()

    def _arm(self) -> None:
        """Set the loop timer for the earliest deadline of an exchange still running
        (finished ones at the head of a queue are dropped here, not cancelled
        one by one when they finish)."""
        if self._closed:
            return
        first = float("inf")
        for queue in self._expiry.values():
            while queue and not queue[0].active:
                queue.popleft()
            if queue and queue[0].deadline < first:
                first = queue[0].deadline
        if first == float("inf") or first >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = first
        self._timer = self._loop.call_at(first, self._on_timer)


class StallMeter:
    """When the event loop could not run: the router's own stalls, for judging timeouts.

    A loop blocked by a long callback, starved of CPU or swapped out runs
    every timer late; a probe timing out then says more about the router
    than about the server (see pulsed.checks.monitor for the rule). Timers
    report their lateness here (``note``); while probes are in flight
    (``busy()``) a watch timer runs every ``period`` so that a stall is seen
    whether or not a deadline falls in it, measured to within one period.
    Stalls are kept merged, in time order, the most recent ``keep`` of them.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        busy: Callable[[], bool],
        period: float = 0.05,
        keep: int = 64,
    ) -> None:
        self._loop = loop
        self._busy = busy
        self.period = period
        self.stalls: deque[tuple[float, float]] = deque(maxlen=keep)
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._closed = False

    def note(self, due: float, ran: float) -> None:
        """A callback due at ``due`` ran at ``ran`` (both time.monotonic())."""
        if ran - due <= STALL_NOISE:
            return
        stalls = self.stalls
        # Notes come in the order callbacks ran; one stall seen by several
        # timers is merged into one interval, never counted twice.
        while stalls and due <= stalls[-1][1]:
            due = min(due, stalls.pop()[0])
        stalls.append((due, ran))

    def lost(self, start: float, end: float) -> float:
        """Seconds between ``start`` and ``end`` during which the loop was stalled.

        Stalls older than the ``keep`` kept are forgotten; if the oldest kept
        one is inside the window, the whole window before it counts as lost
        (when unsure, do not blame the server)."""
        total = 0.0
        stalls = self.stalls
        for first, last in reversed(stalls):
            if last <= start:
                return total
            total += min(last, end) - max(first, start) if first < end else 0.0
        if len(stalls) == stalls.maxlen and stalls[0][0] > start:
            total += stalls[0][0] - start
        return total

    def settle(self, now: float) -> None:
        """Count the stall still under way: a watch that was due before ``now``
        and has not run yet means the loop has not been free since then (the
        callback asking may be the one that ended a stall)."""
        if self._timer is not None:
            self.note(self._due, now)

    def kick(self) -> None:
        """Probes are in flight: make sure the watch timer runs."""
        if self._timer is None and not self._closed:
            self._due = _now() + self.period  # the loop's clock (see module doc)
            self._timer = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self.note(self._due, _now())
        if self._busy():
            self.kick()

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


# Timer lateness below this is the loop's ordinary jitter, not a stall.
STALL_NOISE = 0.002


async def run_exchange(start: Callable[[ProbeEngine, Done], Exchange]) -> ProbeResult:
    """Await one callback-driven exchange (for tests and one-off probes)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[ProbeResult] = loop.create_future()

    def done(_token: object, result: ProbeResult) -> None:
        if not future.done():
            future.set_result(result)

    engine = ProbeEngine(loop)
    try:
        start(engine, done)
        return await future
    finally:
        engine.close()
