"""grpc: the standard health check, grpc.health.v1.Health/Check, over HTTP/2, plain or TLS.

SERVING is up; NOT_SERVING, SERVICE_UNKNOWN, UNKNOWN, or a grpc-status
other than 0 (OK) is down with the status in the reason.

Why h2 and not grpcio: grpcio (the C-core client) adds 17-20 MiB resident
to the daemon when imported (measured: VmRSS after ``import grpc`` and the
health stubs, against the same interpreter without), a third of the
daemon's 64 MiB budget at 10,000 real servers, and brings its own threads
and event engine beside asyncio. h2 (python-hyper, pure Python, well kept:
the HTTP/2 state machine behind hypercorn and httpx) costs about 0.5 MiB in
the daemon and runs on the probe engine like every other probe, one
connection per probe, no task. The two protobuf messages involved have one
field each (a string and an enum): they are encoded and decoded here
(``encode_request``, ``decode_status``) rather than importing protobuf.
"""

from __future__ import annotations

import functools
import ssl
import struct

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from pulsed.checks.base import ProbeResult, Target
from pulsed.checks.convo import Conversation, ConversationProbe, Dialogue

PATH = b"/grpc.health.v1.Health/Check"
# HealthCheckResponse.ServingStatus
STATUSES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
SERVING = 1
# The gRPC status codes, for reasons.
GRPC_CODES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)
_FRAME_HEADER = 9
_SETTINGS = 4
_CONFIG = h2.config.H2Configuration(client_side=True, header_encoding=None)


def encode_request(service: str) -> bytes:
    """A HealthCheckRequest{service} as one gRPC message (uncompressed, length-prefixed)."""
    raw = service.encode()
    body = b"\x0a" + _varint(len(raw)) + raw if raw else b""
    return b"\x00" + struct.pack("!I", len(body)) + body


def decode_status(message: bytes) -> int:
    """The status of a gRPC-framed HealthCheckResponse; ValueError if it is not one."""
    if len(message) < 5:
        raise ValueError("short message")
    if message[0] != 0:
        raise ValueError("compressed message")
    (length,) = struct.unpack_from("!I", message, 1)
    body = message[5:]
    if len(body) != length:
        raise ValueError("message length does not match")
    status, pos = 0, 0  # proto3: an absent field is its default, UNKNOWN
    while pos < len(body):
        key, pos = _read_varint(body, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(body, pos)
            if field == 1:
                status = value
        elif wire == 2:
            size, pos = _read_varint(body, pos)
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"wire type {wire}")
        if pos > len(body):
            raise ValueError("truncated field")
    return status


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("bad varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


@functools.lru_cache(maxsize=64)
def grpc_tls_context(
    verify: bool, ca_file: str | None, client_cert: str | None, client_key: str | None
) -> ssl.SSLContext:
    """As pulsed.checks.http.tls_context, offering ALPN "h2" (gRPC servers require it)."""
    if verify:
        ctx = ssl.create_default_context(cafile=ca_file)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if client_cert is not None:
        ctx.load_cert_chain(client_cert, client_key)
    ctx.set_alpn_protocols(["h2"])
    return ctx


class GrpcProbe(ConversationProbe):
    __slots__ = ("headers", "max_bytes", "request", "server_hostname", "service", "ssl")

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        check = target.check
        self.service = check.grpc_service
        self.request = encode_request(check.grpc_service)
        self.max_bytes = check.max_bytes
        self.ssl = (
            grpc_tls_context(check.tls_verify, check.ca_file, check.client_cert, check.client_key)
            if check.tls
            else None
        )
        self.server_hostname = check.host or self.address
        host = check.host or (f"[{self.address}]" if ":" in self.address else self.address)
        self.headers = [
            (b":method", b"POST"),
            (b":scheme", b"https" if check.tls else b"http"),
            (b":path", PATH),
            (b":authority", f"{host}:{self.port}".encode()),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            (b"user-agent", b"pulsed-check"),
        ]

    def dialogue(self) -> Dialogue:
        return _HealthCheck(self)


class _HealthCheck:
    __slots__ = (
        "_body",
        "_conn",
        "_fields",
        "_head",
        "_probe",
        "_read",
        "_stream",
        "_talk",
        "_verdict",
        "finished",
        "stage",
    )

    def __init__(self, probe: GrpcProbe) -> None:
        self._probe = probe
        self._conn: h2.connection.H2Connection | None = None
        self._talk: Conversation | None = None
        self._stream = 1
        self._body = b""
        self._read = 0
        self._head = b""
        self._fields: dict[bytes, bytes] = {}  # response headers and trailers
        self._verdict: ProbeResult | None = None
        self.finished = False
        self.stage = "the TLS handshake" if probe.ssl is not None else "the response"

    def connected(self, talk: Conversation) -> None:
        self._talk = talk
        if self._probe.ssl is not None:
            talk.start_tls(self._probe.ssl, self._probe.server_hostname)
        else:
            self._ask()

    def secured(self) -> None:
        self.stage = "the response"
        self._ask()

    def _ask(self) -> None:
        probe = self._probe
        conn = self._conn = h2.connection.H2Connection(config=_CONFIG)
        conn.initiate_connection()
        self._stream = conn.get_next_available_stream_id()
        conn.send_headers(self._stream, probe.headers)
        conn.send_data(self._stream, probe.request, end_stream=True)
        assert self._talk is not None
        self._talk.send(conn.data_to_send())

    def feed(self, data: bytes) -> bool:
        conn = self._conn
        if conn is None:  # bytes before our first words: nothing a server should send
            return self._fail("server spoke first", "protocol")
        if self._read < _FRAME_HEADER:
            # h2 waits for a whole frame, whatever length the header claims: an
            # HTTP/1 reply read as a frame header asks for 4.7 MB. A server's
            # first frame is SETTINGS (RFC 9113, 3.4): judge it by its header.
            self._head += data[: _FRAME_HEADER - self._read]
            if len(self._head) >= 5 and self._head.startswith(b"HTTP/"):
                return self._fail("bad HTTP/2: an HTTP/1 response", "protocol")
            if len(self._head) >= 4 and self._head[3] != _SETTINGS:
                return self._fail("bad HTTP/2: the first frame is not SETTINGS", "protocol")
        self._read += len(data)
        if self._read > self._probe.max_bytes:
            return self._fail(f"more than {self._probe.max_bytes} bytes", "protocol")
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            return self._fail(f"bad HTTP/2: {_first_line(exc)}", "protocol")
        for event in events:
            if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                self._fields.update(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                self._body += event.data or b""
            elif isinstance(event, h2.events.StreamEnded):
                self._judge()
            elif isinstance(event, h2.events.StreamReset):
                self._fail(f"stream reset (HTTP/2 error {int(event.error_code or 0)})", "reset")
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._fail(
                    f"connection closed by GOAWAY (HTTP/2 error {int(event.error_code or 0)})",
                    "closed",
                )
            if self.finished:
                return True
        pending = conn.data_to_send()
        if pending and self._talk is not None:
            self._talk.send(pending)  # SETTINGS and PING acknowledgements
        return False

    def _judge(self) -> None:
        fields = self._fields
        status = fields.get(b":status", b"")
        if status != b"200":
            self._fail(f"HTTP status {status.decode('latin-1')[:10] or 'missing'}", "status")
            return
        code = fields.get(b"grpc-status")
        if code is None:
            self._fail("no grpc-status in the response", "protocol")
            return
        if code != b"0":
            name = GRPC_CODES[int(code)] if code.isdigit() and int(code) < 17 else "?"
            message = fields.get(b"grpc-message", b"").decode("utf-8", "replace")[:60]
            text = f"grpc-status {code.decode('latin-1')[:10]} {name}"
            self._fail(text + (f": {message}" if message else ""), "status")
            return
        try:
            serving = decode_status(self._body)
        except ValueError as exc:
            self._fail(f"bad health response: {exc}", "protocol")
            return
        name = STATUSES.get(serving, f"status {serving}")
        if serving != SERVING:
            self._fail(name, "status")
            return
        self._verdict = ProbeResult(True, name, 0.0)
        self.finished = True

    def eof(self) -> None:
        if not self.finished:
            self._fail(f"connection closed before {self.stage}", "closed")

    def _fail(self, reason: str, category: str) -> bool:
        self._verdict = ProbeResult(False, reason, 0.0, category)
        self.finished = True
        return True

    def result(self, latency: float) -> ProbeResult:
        verdict = self._verdict
        assert verdict is not None
        return ProbeResult(verdict.ok, verdict.reason, latency, verdict.category)


def _first_line(exc: BaseException) -> str:
    return (str(exc).split("\n")[0] or type(exc).__name__)[:80]
