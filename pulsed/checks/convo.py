"""Conversations: probes that talk back and forth on one socket, on the ProbeEngine.

The http and tcp probes send one request and read one response
(pulsed.checks.sockio.Exchange). The udp, dns, icmp, smtp, grpc and
send_expect probes hold a short dialogue instead: a banner first, a reply
that calls for another request, a switch to TLS half-way (STARTTLS), a
retry over TCP (DNS truncation), or datagrams rather than a stream. A
``Conversation`` is an Exchange of the same engine (one epoll set, one
timer for every deadline, no task per probe) that runs a ``Dialogue``: the
protocol's own state machine, told what arrived and saying what to send.

TLS is the ssl module's MemoryBIO over the raw socket, as in
pulsed.checks.tls: a connection holds OpenSSL's record buffers and nothing
more, and STARTTLS is the same thing begun later.

One deadline covers the whole conversation, every step and a redial
included; the timeout's reason names what the dialogue was waiting for.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
from typing import Protocol

from pulsed.checks.base import LINGER_ZERO, ProbeResult, Target, error_result, seconds_text
from pulsed.checks.config import CheckConfig
from pulsed.checks.placement import needs_preparing, prepare_socket
from pulsed.checks.sockio import Done, Exchange, ProbeEngine, run_exchange
from pulsed.model import family_of

_EPOLLIN = 0x001
_EPOLLOUT = 0x004
_NONBLOCK = socket.SOCK_NONBLOCK
_RawSocket = socket.SocketType
# Plaintext read per call: one TLS record at most.
_TLS_READ = 16384
_RECV = 65536

# Exchange states (the engine's: anything but _CLOSED means active).
_TALKING = 2
_CLOSED = 3


class Dialogue(Protocol):
    """A protocol's side of a conversation.

    ``stage`` says what it waits for ("banner", "EHLO reply"): the reason
    of a timeout. ``connected`` runs right after connect() (the handshake
    may still be under way: what it sends waits for it). ``feed`` takes
    what arrived, plaintext once TLS is up; True means finished, and
    ``result`` then judges. ``secured`` runs once a TLS handshake is done.
    ``finished`` turns true when the dialogue has its verdict without
    waiting for more (its last words sent); the conversation ends once they
    have left.
    """

    finished: bool

    @property
    def stage(self) -> str: ...

    def connected(self, talk: Conversation) -> None: ...

    def feed(self, data: bytes) -> bool: ...

    def eof(self) -> None: ...

    def secured(self) -> None: ...

    def result(self, latency: float) -> ProbeResult: ...


class Verdict:
    """What dns, smtp and grpc dialogues share: one verdict, set once; a close
    before it is "connection closed before <stage>"; the latency is the
    conversation's, added at the end."""

    __slots__ = ("_verdict", "finished", "stage")

    def __init__(self, stage: str) -> None:
        self._verdict: ProbeResult | None = None
        self.finished = False
        self.stage = stage  # what the dialogue waits for: a timeout's reason

    def eof(self) -> None:
        if not self.finished:
            self._fail(f"connection closed before {self.stage}", "closed")

    def _fail(self, reason: str, category: str) -> bool:
        self._verdict = ProbeResult(False, reason, 0.0, category)
        self.finished = True
        return True

    def result(self, latency: float) -> ProbeResult:
        verdict = self._verdict
        assert verdict is not None  # finished, or eof() gave one
        return ProbeResult(verdict.ok, verdict.reason, latency, verdict.category)


class Conversation(Exchange):
    __slots__ = (
        "_check",
        "_datagram",
        "_dialogue",
        "_graceful",
        "_in_bio",
        "_out",
        "_out_bio",
        "_secure",
        "_tls",
        "_watching",
    )

    def __init__(
        self,
        engine: ProbeEngine,
        timeout: float,
        dialogue: Dialogue,
        done: Done,
        token: object,
        started: float,
    ) -> None:
        super().__init__(engine, timeout, b"", None, done, token, started)
        self._dialogue = dialogue
        self._datagram = False
        self._out = b""
        self._tls: ssl.SSLObject | None = None
        self._in_bio: ssl.MemoryBIO | None = None
        self._out_bio: ssl.MemoryBIO | None = None
        self._secure = False
        self._graceful = False
        self._watching = 0  # epoll events registered; 0 until the engine adopted it
        self._check: CheckConfig | None = None

    # --- for the dialogue -----------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Send ``data`` (through TLS once it is on); what the socket cannot
        take yet goes when it becomes writable."""
        if self._tls is not None:
            self._tls.write(data)
            return self._flush_tls()
        if self._datagram:
            assert self._sock is not None
            self._sock.send(data)  # one datagram, even an empty one
            return None
        self._out += data
        self._flush()

    def start_tls(self, context: ssl.SSLContext, server_hostname: str | None) -> None:
        """Begin a TLS handshake on the connection (at once, or after STARTTLS)."""
        self._in_bio, self._out_bio = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(
            self._in_bio, self._out_bio, server_side=False, server_hostname=server_hostname
        )
        self._secure = False
        self._handshake()

    def close_gracefully(self) -> None:
        """End with FIN rather than RST (after SMTP's QUIT: the last words arrive)."""
        self._graceful = True

    def redial(self, family: int, kind: int, proto: int, address: str, port: int) -> None:
        """Replace the socket by a new one to the same server (DNS over TCP after
        a truncated UDP answer); the deadline stays. Raises OSError."""
        engine = self._engine
        engine.release(self)
        old = self._sock
        if old is not None:
            old.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
            old.close()
        self._sock = None
        self._watching = 0
        assert self._check is not None
        self._connect(family, kind, proto, address, port, self._check, timed=False)

    # --- opening --------------------------------------------------------------------

    def _connect(
        self,
        family: int,
        kind: int,
        proto: int,
        address: str,
        port: int,
        check: CheckConfig,
        timed: bool = True,
    ) -> None:
        engine = self._engine
        setup = True  # socket(), binding and registration never reach the network
        try:
            sock = self._sock = _RawSocket(family, kind | _NONBLOCK, proto)
            self._fd = sock.fileno()
            self._datagram = kind != socket.SOCK_STREAM
            if needs_preparing(check):
                prepare_socket(sock, check, family)
            setup = False
            err = sock.connect_ex((address, port))
            if err and err != errno.EINPROGRESS:
                raise OSError(err, os.strerror(err))
            self._state = _TALKING
            self._dialogue.connected(self)
            setup = True
            events = _EPOLLIN | _EPOLLOUT if self._out else _EPOLLIN
            engine.adopt(self, events, timed)
            self._watching = events
            if self._dialogue.finished and not self._out:
                engine._loop.call_soon(self._conclude)  # never from inside open()
        except Exception as exc:
            if timed:
                engine.fail_later(self, exc, setup)
            else:
                self._report(exc)

    # --- driven by the engine -------------------------------------------------------

    def on_event(self) -> None:
        try:
            if self._out:
                self._flush()
                if self._dialogue.finished:
                    if not self._out:
                        self._conclude()
                    return
            if self._state != _CLOSED:
                self._read()
        except BlockingIOError:
            pass  # the other direction was the ready one
        except Exception as exc:
            self._report(exc)

    def expire(self) -> None:
        latency = self._engine.clock() - self.started
        reason = f"timeout after {seconds_text(self.timeout)} waiting for {self._dialogue.stage}"
        self._finish(ProbeResult(False, reason, latency, "timeout"))

    # --- steps ----------------------------------------------------------------------

    def _report(self, exc: BaseException) -> None:
        latency = self._engine.clock() - self.started
        if self._datagram and isinstance(exc, ConnectionRefusedError):
            # An ICMP port (or protocol) unreachable on a connected datagram socket.
            self._finish(ProbeResult(False, "port unreachable", latency, "refused"))
        else:
            self._finish(error_result(exc, latency))

    def _read(self) -> None:
        sock = self._sock
        assert sock is not None
        data = sock.recv(_RECV)
        if self._tls is not None:
            assert self._in_bio is not None
            if data:
                self._in_bio.write(data)
            else:
                self._in_bio.write_eof()
            if not self._secure:
                self._handshake(eof=not data)
                if not self._secure or self._state == _CLOSED:
                    return
            self._read_tls()
            return
        dialogue = self._dialogue
        if data or self._datagram:  # an empty datagram is a datagram
            if dialogue.feed(data) and not self._out:
                self._conclude()
            return
        dialogue.eof()
        self._conclude()

    def _handshake(self, eof: bool = False) -> None:
        tls = self._tls
        assert tls is not None
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush_tls()
            if eof:
                raise ConnectionResetError(
                    errno.ECONNRESET, "connection closed in TLS handshake"
                ) from None
            return
        self._flush_tls()
        self._secure = True
        self._dialogue.secured()
        if self._dialogue.finished and not self._out:
            self._conclude()

    def _read_tls(self) -> None:
        tls = self._tls
        assert tls is not None
        dialogue = self._dialogue
        while self._state != _CLOSED:
            try:
                chunk = tls.read(_TLS_READ)
            except ssl.SSLWantReadError:
                if self._in_bio is not None and self._in_bio.eof:
                    chunk = b""  # closed without close_notify
                else:
                    return
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                chunk = b""
            if not chunk:
                dialogue.eof()
                self._conclude()
                return
            if dialogue.feed(chunk):
                if not self._out:
                    self._conclude()
                return

    def _close(self) -> None:
        if self._graceful and self._state != _CLOSED and self._sock is not None:
            self._state = _CLOSED
            self._engine.release(self)
            self._sock.close()  # FIN, after what is still queued
            return
        super()._close()

    def _conclude(self) -> None:
        if self._state != _CLOSED:
            self._finish(self._dialogue.result(self._engine.clock() - self.started))

    def _flush_tls(self) -> None:
        assert self._out_bio is not None
        if self._out_bio.pending:
            self._out += self._out_bio.read()
            self._flush()

    def _flush(self) -> None:
        sock = self._sock
        if sock is None or not self._out:
            return
        try:
            sent = sock.send(self._out)
        except BlockingIOError:
            sent = 0  # the handshake is still under way, or the buffer is full
        self._out = self._out[sent:]
        want = _EPOLLIN | _EPOLLOUT if self._out else _EPOLLIN
        if self._watching and want != self._watching:
            self._engine.watch(self._fd, want)
            self._watching = want


def open_conversation(
    engine: ProbeEngine,
    family: int,
    kind: int,
    proto: int,
    address: str,
    port: int,
    timeout: float,
    check: CheckConfig,
    dialogue: Dialogue,
    done: Done,
    token: object = None,
) -> Conversation:
    """Start one conversation; ``done(token, result)`` follows from the loop."""
    talk = Conversation(engine, timeout, dialogue, done, token, engine.clock())
    talk._check = check
    talk._connect(family, kind, proto, address, port, check)
    return talk


# One float object per distinct timeout, shared by every probe using it.
_TIMEOUTS: dict[float, float] = {}


class ConversationProbe:
    """Where and how long: what every conversation probe keeps (one per real server)."""

    __slots__ = ("address", "check", "family", "port", "timeout")

    def __init__(self, target: Target) -> None:
        self.check = target.check
        self.address = target.probe_address
        self.port = target.probe_port
        self.family = family_of(self.address)
        timeout = float(target.check.timeout)
        self.timeout = _TIMEOUTS.setdefault(timeout, timeout)

    def dialogue(self) -> Dialogue:
        raise NotImplementedError

    def start(self, engine: ProbeEngine, done: Done, token: object = None) -> Exchange:
        return open_conversation(
            engine,
            self.family,
            socket.SOCK_STREAM,
            0,
            self.address,
            self.port,
            self.timeout,
            self.check,
            self.dialogue(),
            done,
            token,
        )

    async def probe(self) -> ProbeResult:
        return await run_exchange(self.start)


def show_bytes(data: bytes, limit: int = 24) -> str:
    """A short printable form of bytes from the network, for a reason."""
    text = repr(data[:limit])
    return text + "..." if len(data) > limit else text
