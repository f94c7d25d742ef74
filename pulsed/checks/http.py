"""http and https: one request on a fresh connection, judged on status and body.

Not aiohttp's client: a probe needs one request per fresh connection with a
hard byte cap, and at 2,000 checks/s on asyncio's default loop aiohttp's
client cost about 1.5x the CPU per check of asyncio's Protocol API, which
cost about 1.4x raw event-loop callbacks (docs/benchmarks.md, section
checks), which matters at thousands of checks a second. Plain HTTP therefore
runs on pulsed.checks.sockio; HTTPS on the ssl module's MemoryBIO over a
plain asyncio connection (pulsed.checks.tls: asyncio's SSL transport holds
256 KiB per connection). The parser here only reads the status line,
headers and framing of an HTTP/1.x response; anything it does not
understand is a failed probe with a clear reason, never an exception. A
check that looks at nothing but the status (no body regex, no weight
header) reads the head to its blank line and parses only the status line
(StatusReader).
"""

from __future__ import annotations

import asyncio
import functools
import re
import socket
import ssl
import time
from collections.abc import Callable

from pulsed.checks.base import (
    ProbeResult,
    Target,
    error_result,
    local_error_result,
    set_reset_on_close,
    timeout_result,
)
from pulsed.checks.config import parse_status_spec
from pulsed.checks.placement import needs_preparing, placement_failure, prepare_socket
from pulsed.checks.sockio import Done, Exchange, ProbeEngine, run_exchange
from pulsed.checks.tls import TlsExchange
from pulsed.model import family_of

_NO_BODY_STATUS = (204, 304)


@functools.lru_cache(maxsize=64)
def tls_context(
    verify: bool, ca_file: str | None, client_cert: str | None, client_key: str | None
) -> ssl.SSLContext:
    """One context per distinct TLS setting, shared by every target using it
    (loading the system CA store costs milliseconds and memory)."""
    if verify:
        ctx = ssl.create_default_context(cafile=ca_file)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if client_cert is not None:
        ctx.load_cert_chain(client_cert, client_key)
    return ctx


class _Response:
    """What the reader collected: status, headers, body prefix, and why it stopped."""

    __slots__ = ("body", "complete", "error", "head_ok", "headers", "status")

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.body = b""
        self.complete = False  # the whole body (per its framing) was read
        self.head_ok = False
        self.error = ""  # protocol problem, as reason text


class ResponseParser:
    """Collects at most ``max_bytes`` of one HTTP/1.x response and knows when it is
    complete: after the headers when the body is not needed, else at the end of
    the body by its framing (Content-Length, chunked, or the connection closing)."""

    __slots__ = (
        "body_start",
        "buffer",
        "chunked",
        "content_length",
        "finished",
        "head_only",
        "judge",
        "max_bytes",
        "need_body",
        "response",
    )

    def __init__(
        self,
        need_body: bool,
        head_only: bool,
        max_bytes: int,
        judge: Callable[[_Response, float], ProbeResult],
    ) -> None:
        self.need_body = need_body
        self.head_only = head_only  # HEAD request: never a body
        self.max_bytes = max_bytes
        self.judge = judge
        self.buffer = bytearray()
        self.response = _Response()
        self.body_start = -1
        self.content_length: int | None = None
        self.chunked = False
        self.finished = False

    def feed(self, data: bytes) -> bool:
        """Take more bytes; True once the response is complete (or hopeless)."""
        if self.finished:
            return True
        # Bytes past the cap are never looked at (nor stored: memory per exchange
        # stays at max_bytes, whatever the server sends).
        self.buffer += data[: self.max_bytes - len(self.buffer)]
        if self.body_start < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) >= self.max_bytes:
                    self._finish(f"response headers larger than {self.max_bytes} bytes")
                return self.finished
            self.body_start = end + 4
            if not self._parse_head(bytes(self.buffer[:end])):
                return True
            if not self.need_body:
                self._finish()
                return True
        self._check_body()
        return self.finished

    def eof(self) -> None:
        self._check_body(eof=True)

    def result(self, latency: float) -> ProbeResult:
        if not self.finished:
            self.eof()
        return self.judge(self.response, latency)

    def _parse_head(self, head: bytes) -> bool:
        lines = head.split(b"\r\n")
        status = status_code(lines[0])
        if status is None:
            self._finish("bad status line")
            return False
        resp = self.response
        resp.status = status
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if sep:
                resp.headers[name.strip().lower()] = value.strip()
        resp.head_ok = True
        if b"chunked" in resp.headers.get(b"transfer-encoding", b"").lower():
            self.chunked = True
        elif (length := resp.headers.get(b"content-length")) is not None:
            if not _DIGITS.fullmatch(length):
                self._finish("bad content-length")
                return False
            self.content_length = int(length)
        return True

    def _check_body(self, eof: bool = False) -> None:
        if self.finished:
            return
        if self.body_start < 0:
            self._finish(
                "connection closed before response"
                if not self.buffer
                else "connection closed in response headers"
            )
            return
        # The body is copied out of the buffer once, when the response is done:
        # a copy kept between reads would double what a slow exchange holds.
        resp = self.response
        start = self.body_start
        no_body = self.head_only or resp.status in _NO_BODY_STATUS or 100 <= resp.status < 200
        if no_body:
            complete = True
        elif self.chunked:
            complete = dechunk(bytes(self.buffer[start:]))[1]  # decoded only to know
        elif self.content_length is not None:
            complete = len(self.buffer) - start >= self.content_length
        else:
            complete = eof
        if complete or eof or len(self.buffer) >= self.max_bytes:
            body = bytes(self.buffer[start:])
            if self.chunked and not no_body:
                body, complete = dechunk(body)
            elif self.content_length is not None and not no_body:
                body = body[: self.content_length]
            resp.body, resp.complete = body, complete
            self._finish()

    def _finish(self, error: str = "") -> None:
        self.response.error = error
        self.finished = True


class StatusReader:
    """Reads a response head up to its blank line (or the byte cap) and judges the
    status line alone: for checks that need no header and no body, so none is
    parsed or read. Same reasons as ResponseParser for the same faults."""

    __slots__ = ("_buffer", "_error", "_finished", "_probe", "_status")

    def __init__(self, probe: _HttpProbeBase) -> None:
        self._probe = probe
        self._buffer = b""
        self._status = 0
        self._error = ""
        self._finished = False

    def feed(self, data: bytes) -> bool:
        if self._finished:
            return True
        buffer = self._buffer + data if self._buffer else data
        cap = self._probe.max_bytes
        if len(buffer) > cap:
            buffer = buffer[:cap]  # bytes past the cap are never looked at
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            self._buffer = buffer
            if len(buffer) >= cap:
                self._error = f"response headers larger than {cap} bytes"
                self._finished = True
            return self._finished
        self._finished = True
        status = status_code(buffer[: buffer.find(b"\r\n")])
        if status is None:
            self._error = "bad status line"
        else:
            self._status = status
        return True

    def eof(self) -> None:
        if not self._finished:
            self._finished = True
            self._error = (
                "connection closed in response headers"
                if self._buffer
                else "connection closed before response"
            )

    def result(self, latency: float) -> ProbeResult:
        if not self._finished:
            self.eof()
        if self._error:
            category = "closed" if self._error.startswith("connection closed") else "protocol"
            return ProbeResult(False, self._error, latency, category)
        return self._probe.judge_status(self._status, latency)


def status_code(line: bytes) -> int | None:
    """The status of an HTTP/1.x status line; None when it is not one.

    Exactly three digits (RFC 9112): int() alone would take "+200", "2_00",
    non-ASCII digits and numbers too long to convert.
    """
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not _STATUS.fullmatch(parts[1]):
        return None
    return int(parts[1])


_STATUS = re.compile(rb"[0-9]{3}")
_DIGITS = re.compile(rb"[0-9]{1,18}")  # a Content-Length that fits in 64 bits
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,15}")  # hex digits only: never negative


def dechunk(data: bytes) -> tuple[bytes, bool]:
    """Decode as much of a chunked body as is present; (body, complete).

    A chunk size that is not plain hex (a sign, "0x", underscores) stops the
    decoding as incomplete: int() would take "-6" and walk backwards forever.
    """
    out = bytearray()
    pos = 0
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return bytes(out), False
        size_text = data[pos:eol].split(b";", 1)[0].strip()
        if not _CHUNK_SIZE.fullmatch(size_text):
            return bytes(out), False
        size = int(size_text, 16)
        if size == 0:
            return bytes(out), True
        start = eol + 2
        out += data[start : start + size]
        if start + size + 2 > len(data):
            return bytes(out), False
        pos = start + size + 2


# Shared by every probe: one set per distinct expect_status (a "200-399" set
# is 300 ints, about 13 KiB: per probe, 130 MiB at 10,000 servers), and one
# reason text per status code.
_status_set = functools.lru_cache(maxsize=256)(parse_status_spec)
_STATUS_REASONS: dict[int, str] = {}


class _HttpProbeBase:
    """One HTTP(S) request per probe on a fresh connection: request, parser, verdict."""

    def __init__(self, target: Target) -> None:
        check = target.check
        self.address = target.probe_address
        self.port = target.probe_port
        self.place = check if needs_preparing(check) else None
        self.timeout = float(check.timeout)
        self.max_bytes = check.max_bytes
        self.expect = _status_set(check.expect_status)
        self.body_regex = re.compile(check.body_regex.encode()) if check.body_regex else None
        self.weight_header = check.weight_header.lower().encode() if check.weight_header else None
        self.head_only = check.method.upper() == "HEAD"
        self.family = family_of(self.address)
        default_port = 443 if check.type == "https" else 80
        host = check.host or (f"[{self.address}]" if ":" in self.address else self.address)
        if self.port != default_port:
            host = f"{host}:{self.port}"
        lines = [f"{check.method} {check.path} HTTP/1.1", f"Host: {host}"]
        names = {name.lower() for name in check.headers}
        if "user-agent" not in names:
            lines.append("User-Agent: pulsed-check")
        lines += [f"{name}: {value}" for name, value in check.headers.items()]
        lines.append("Connection: close")
        self.request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.status_only = self.body_regex is None and self.weight_header is None

    def judge_status(self, status: int, latency: float) -> ProbeResult:
        """The verdict when only the status counts (see StatusReader)."""
        reason = _STATUS_REASONS.get(status)
        if reason is None:
            reason = f"status {status}"
            if 100 <= status <= 999:  # what a server sends never grows it past 900
                _STATUS_REASONS[status] = reason
        if status in self.expect:
            return ProbeResult(True, reason, latency, "ok")
        return ProbeResult(False, reason, latency, "status")

    def _parser(self) -> ResponseParser:
        return ResponseParser(
            self.body_regex is not None, self.head_only, self.max_bytes, self.judge
        )

    def judge(self, resp: _Response, latency: float) -> ProbeResult:
        if resp.error:
            category = "closed" if resp.error.startswith("connection closed") else "protocol"
            return ProbeResult(False, resp.error, latency, category)
        if resp.status not in self.expect:
            return ProbeResult(False, f"status {resp.status}", latency, "status")
        if self.body_regex is not None and not self.body_regex.search(resp.body):
            return ProbeResult(False, "body did not match", latency, "body")
        reason = f"status {resp.status}"
        weight_pct = None
        if self.weight_header is not None and (raw := resp.headers.get(self.weight_header)):
            weight_pct = parse_weight_pct(raw)
            if weight_pct is None:
                reason += f" (ignored bad weight {raw[:20].decode('latin-1')!r})"
        return ProbeResult(True, reason, latency, "ok", weight_pct)


class HttpProbe(_HttpProbeBase):
    """Plain HTTP, run on a ProbeEngine (see pulsed.checks.sockio)."""

    def start(self, engine: ProbeEngine, done: Done, token: object = None) -> Exchange:
        reader = StatusReader(self) if self.status_only else self._parser()
        return engine.open(
            self.family,
            self.address,
            self.port,
            self.timeout,
            self.request,
            reader,
            done,
            token,
            self.place,
        )

    async def probe(self) -> ProbeResult:
        return await run_exchange(self.start)


class HttpsProbe(_HttpProbeBase):
    """HTTPS, on pulsed.checks.tls over a plain asyncio connection."""

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        check = target.check
        self.ssl = tls_context(check.tls_verify, check.ca_file, check.client_cert, check.client_key)
        self.server_hostname = check.host or self.address

    async def probe(self) -> ProbeResult:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        parser = self._parser()
        tls = TlsExchange(self.ssl, self.server_hostname, self.request, parser, self.max_bytes)
        transport: asyncio.Transport | None = None
        sock: socket.socket | None = None
        try:
            try:
                sock = socket.socket(self.family, socket.SOCK_STREAM)
                sock.setblocking(False)
                if self.place is not None:
                    prepare_socket(sock, self.place, self.family)
            except OSError as exc:  # never reached the network: the router's fault
                latency = time.perf_counter() - start
                return placement_failure(exc, latency) or local_error_result(exc, latency)
            async with asyncio.timeout(self.timeout):
                await loop.sock_connect(sock, (self.address, self.port))
                transport, _ = await loop.create_connection(lambda: tls, sock=sock)
                await tls.done
        except TimeoutError:
            return timeout_result(self.timeout, time.perf_counter() - start)
        except (OSError, ssl.SSLError) as exc:
            return error_result(exc, time.perf_counter() - start)
        finally:
            if transport is not None:
                set_reset_on_close(transport.get_extra_info("socket"))
                transport.abort()
            elif sock is not None:
                set_reset_on_close(sock)
                sock.close()
        return parser.result(time.perf_counter() - start)


def parse_weight_pct(raw: bytes | str) -> int | None:
    """'75', '75%' -> 75; above 100 is capped at 100; anything else -> None.

    ASCII digits only (str.isdigit() also takes '²', which int() refuses), and
    any length: more than three significant digits is above 100.
    """
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    text = text.strip().removesuffix("%").strip()
    if not (text.isascii() and text.isdigit()):
        return None
    significant = text.lstrip("0") or "0"
    return 100 if len(significant) > 3 else min(int(significant), 100)
