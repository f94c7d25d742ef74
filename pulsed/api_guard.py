"""Budgets for the API's connections: how many may be open, and how long a
client may take to send a request head.

A flood of idle connections must never take the descriptors the probes need
(a probe that cannot open a socket would blame a real server for the
router's fault), and a slow client must never hold a connection for ever.

Why at the protocol level, and not with aiohttp's own settings: aiohttp has
no limit on connections and no request-head timeout. Its keep-alive timer
closes a connection that stays idle, but it is documented as an idle timer,
not as a deadline for a head that trickles in one byte at a time, and a
connection over any limit must be turned away before aiohttp allocates a
parser for it. So the server's protocol factory is wrapped here:

- ``ConnectionGuard.protocol()`` is the factory given to
  ``loop.create_server``. Over ``max_connections`` it first closes the
  oldest connection that is still waiting for a request head (an idle
  flood cannot lock out a client that sends its request at once); when
  every connection is busy with a request, the new one gets a canned 503
  and is closed, without a parser, a task or a timer.
- Each admitted connection (``GuardedHandler``, aiohttp's request handler)
  has a deadline of ``header_timeout`` for its next request head: from the
  connect, and again from the end of each response (so an idle keep-alive
  connection is closed too). The API middleware marks the span between
  head and end of response with ``request_started``/``request_done``.
- Errors aiohttp answers itself (a malformed request line or header) are
  JSON like every other error, logged on one line without a traceback.

Body and response deadlines are in the middleware (pulsed.api): they are
per request, where the handler knows what it reads and sends.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from pulsed.addresses import join_host_port, split_host_port
from pulsed.aioweb import web

log = structlog.get_logger(__name__)

# Most request-head bytes aiohttp buffers per connection (line and each header
# field), and most header fields: an API client sends a handful of short ones.
# The products bound a waiting connection's memory (aiohttp's own defaults
# allow 128 fields of 8 KiB, 1 MiB per connection).
MAX_LINE = 8190
MAX_FIELD = 4096
MAX_HEADERS = 48
LISTEN_BACKLOG = 512
# How often at most a summary of refused and timed-out connections is logged.
LOG_EVERY = 10.0


@dataclass(frozen=True)
class Budget:
    """The connection limits in force; read for every new connection, so a
    reload applies to the connections that come after it."""

    max_connections: int = 256
    header_timeout: float = 10.0


class BindError(OSError):
    """The API cannot listen; the message is one line naming the address."""


class BoundSocket:
    """A listening socket for the API, made before anything else is touched."""

    def __init__(self, sock: socket.socket, listen: str) -> None:
        self.sock = sock
        self.listen = listen

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://{join_host_port(host, port)}"

    def close(self) -> None:
        self.sock.close()


def bind_listen(listen: str, backlog: int = LISTEN_BACKLOG) -> BoundSocket:
    """Bind and listen on ``listen`` (``address:port``); BindError (one line) if not.

    Connections that arrive before serving starts wait in the kernel's
    backlog, and are answered once serving starts.
    """
    try:
        host, port = split_host_port(listen)
    except ValueError as exc:
        raise BindError(f"api.listen {listen}: {exc}") from None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        reason = (exc.strerror or type(exc).__name__).lower()
        raise BindError(f"api.listen {listen}: {reason}") from None
    return BoundSocket(sock, listen)


def _canned_503() -> bytes:
    body = json.dumps({"error": "too many API connections; try again"}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


_REFUSAL = _canned_503()


class _Refused(asyncio.Protocol):
    """A connection over the limit: one 503 written into the socket buffer, then closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_REFUSAL)
        # abort, not close: a client that does not read must not keep this
        # descriptor open while the kernel still has bytes to send.
        transport.abort()


class ConnectionGuard:
    """Counts the API's connections and holds each one's head deadline."""

    def __init__(self, budget: Callable[[], Budget], make_handler: Callable[[], Any]) -> None:
        self._budget = budget
        self._make_handler = make_handler
        self._open = 0
        # Connections waiting for a request head, oldest first (dicts keep order).
        self._waiting: dict[GuardedHandler, None] = {}
        self.refused = 0
        self.evicted = 0
        self.timed_out = 0
        self._logged = (0, 0, 0)
        self._log_at = 0.0
        self._log_later: asyncio.TimerHandle | None = None

    @property
    def open(self) -> int:
        return self._open

    def protocol(self) -> asyncio.BaseProtocol:
        """The protocol factory for ``loop.create_server``."""
        if self._open >= self._budget().max_connections:
            oldest = next(iter(self._waiting), None)
            if oldest is None:
                self.refused += 1
                self._log_summary()
                return _Refused()
            self.evicted += 1
            self._drop(oldest)
            self._log_summary()
        self._open += 1
        handler = self._make_handler()
        handler.guard = self
        return handler

    # Called by GuardedHandler ------------------------------------------------

    def waiting(self, handler: GuardedHandler) -> None:
        """``handler`` now waits for a request head: start its deadline."""
        if not handler.counted or handler.transport is None:
            return
        self._waiting[handler] = None
        handler.arm(self._budget().header_timeout)

    def busy(self, handler: GuardedHandler) -> None:
        """A request head arrived: no head deadline until the response is sent."""
        self._waiting.pop(handler, None)
        handler.disarm()

    def lost(self, handler: GuardedHandler) -> None:
        self._waiting.pop(handler, None)
        handler.disarm()
        if handler.counted:
            handler.counted = False
            self._open -= 1

    def expired(self, handler: GuardedHandler) -> None:
        self.timed_out += 1
        self._drop(handler)
        self._log_summary()

    def _drop(self, handler: GuardedHandler) -> None:
        # The descriptor is freed now, not when the loop reports the loss.
        self.lost(handler)
        if handler.transport is not None:
            handler.transport.abort()

    def _log_summary(self) -> None:
        now = time.monotonic()
        counts = (self.refused, self.evicted, self.timed_out)
        if counts == self._logged:
            return
        if now < self._log_at:
            # Throttled: the totals are logged once the interval ends.
            if self._log_later is None:
                self._log_later = asyncio.get_running_loop().call_later(
                    self._log_at - now, self._log_deferred
                )
            return
        self._log_at = now + LOG_EVERY
        self._logged = counts
        log.warning(
            "api.connections_shed",
            refused=self.refused,
            evicted_idle=self.evicted,
            head_timeouts=self.timed_out,
            open=self._open,
            limit=self._budget().max_connections,
        )

    def _log_deferred(self) -> None:
        self._log_later = None
        self._log_summary()

    def close(self) -> None:
        if self._log_later is not None:
            self._log_later.cancel()
            self._log_later = None


class GuardedHandler(web.RequestHandler):
    """aiohttp's request handler with a request-head deadline and JSON errors."""

    __slots__ = ("_head_timer", "counted", "guard")

    def __init__(self, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.guard: ConnectionGuard | None = None
        self.counted = True
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.guard is not None:
            self.guard.waiting(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.guard is not None:
            self.guard.lost(self)
        super().connection_lost(exc)

    def arm(self, timeout: float) -> None:
        self.disarm()
        self._head_timer = asyncio.get_running_loop().call_later(timeout, self._head_late)

    def disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self.guard is not None:
            self.guard.expired(self)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request aiohttp could not parse: a JSON error and one log line.

        aiohttp's own version answers in text and logs a traceback."""
        if request.writer.output_size > 0:
            raise ConnectionError("the response had started; the connection is dropped")
        if status >= 500:
            log.error("api.error", reason=f"{type(exc).__name__}: {exc}"[:200])
            text = f"internal error: {type(exc).__name__}"
        else:
            text = " ".join(str(message or exc or "bad request").split())[:200]
            log.debug("api.bad_request", status=status, reason=text)
        response = web.json_response({"error": f"malformed request: {text}"}, status=status)
        response.force_close()
        return response


def request_started(request: web.BaseRequest) -> GuardedHandler | None:
    """The request's connection, now busy (None when not served by a guard)."""
    handler = request.protocol
    if isinstance(handler, GuardedHandler) and handler.guard is not None:
        handler.guard.busy(handler)
        return handler
    return None


def request_done(handler: GuardedHandler | None) -> None:
    """The response is sent: the connection waits for its next head, on a deadline."""
    if handler is not None and handler.guard is not None:
        handler.guard.waiting(handler)


class GuardedSite(web.BaseSite):
    """Serves a runner on an already bound socket, through a ConnectionGuard."""

    __slots__ = ("_guard", "_sock")

    def __init__(self, runner: web.BaseRunner, bound: BoundSocket, guard: ConnectionGuard) -> None:
        super().__init__(runner)
        self._sock = bound.sock
        self._guard = guard

    @property
    def name(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"http://{join_host_port(host, port)}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._guard.protocol, sock=self._sock)
