"""icmp: an echo request answered by an echo reply, over IPv4 or IPv6 (keepalived's PING_CHECK).

Unprivileged ping sockets (SOCK_DGRAM, IPPROTO_ICMP/ICMPV6) where the
kernel allows them (``net.ipv4.ping_group_range`` holds the process's
group; the kernel then picks the identifier and delivers only our
replies), raw sockets otherwise (CAP_NET_RAW, as the unit grants). Which
one works is found once and looked at again every minute. A reply counts
when its type, identifier (raw sockets), sequence number and payload are
ours; anything else a raw socket sees is skipped. A destination unreachable
about our request, which a raw socket sees, is down at once, as is an
unreachable error the kernel reports on the socket. Silence is down at the
timeout. socket() refused (EPERM, EACCES: neither kind allowed) is the
router's fault, never the server's.
"""

from __future__ import annotations

import errno
import random
import socket
import struct
import time

from pulsed.checks.base import ProbeResult
from pulsed.checks.convo import Conversation, ConversationProbe, open_conversation
from pulsed.checks.sockio import Done, Exchange, ProbeEngine

_V4, _V6 = int(socket.AF_INET), int(socket.AF_INET6)
_ECHO: dict[int, tuple[int, int]] = {_V4: (8, 0), _V6: (128, 129)}  # request, reply
_UNREACHABLE: dict[int, int] = {_V4: 3, _V6: 1}
_PROTO: dict[int, int] = {_V4: socket.IPPROTO_ICMP, _V6: socket.IPPROTO_ICMPV6}
_PAYLOAD = b"pulsed icmp echo"
_RECHECK = 60.0
# Per family: (socket kind that works, when it was found).
_KIND: dict[int, tuple[int, float]] = {}


def socket_kind(family: int) -> int:
    """SOCK_DGRAM when this process may open ping sockets, else SOCK_RAW."""
    known = _KIND.get(family)
    now = time.monotonic()
    if known is not None and now - known[1] < _RECHECK:
        return known[0]
    kind = socket.SOCK_DGRAM
    try:
        socket.socket(family, socket.SOCK_DGRAM, _PROTO[family]).close()
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EPROTONOSUPPORT):
            raise
        kind = socket.SOCK_RAW  # if that is refused too, the probe reports it as local
    _KIND[family] = (kind, now)
    return kind


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


class IcmpProbe(ConversationProbe):
    __slots__ = ()

    def start(self, engine: ProbeEngine, done: Done, token: object = None) -> Exchange:
        family = self.family
        try:
            kind = socket_kind(family)
        except OSError:
            kind = socket.SOCK_RAW  # the conversation's socket() says what is wrong
        return open_conversation(
            engine,
            family,
            kind,
            _PROTO[family],
            self.address,
            0,
            self.timeout,
            self.check,
            _Echo(family, kind == socket.SOCK_RAW),
            done,
            token,
        )


class _Echo:
    __slots__ = ("_family", "_id", "_raw", "_seq", "_verdict", "finished", "stage")

    def __init__(self, family: int, raw: bool) -> None:
        self._family = family
        self._raw = raw
        self._id = random.getrandbits(16)  # a ping socket's kernel puts its own
        self._seq = random.getrandbits(16)
        self._verdict: ProbeResult | None = None
        self.finished = False
        self.stage = "the echo reply"

    def connected(self, talk: Conversation) -> None:
        request_type = _ECHO[self._family][0]
        header = struct.pack("!BBHHH", request_type, 0, 0, self._id, self._seq)
        message = header + _PAYLOAD
        if self._family == socket.AF_INET:  # ICMPv6's checksum is the kernel's
            message = header[:2] + struct.pack("!H", checksum(message)) + message[4:]
        talk.send(message)

    def secured(self) -> None:
        pass

    def feed(self, data: bytes) -> bool:
        if self._raw and self._family == socket.AF_INET and data:
            data = data[(data[0] & 0x0F) * 4 :]  # a raw IPv4 socket hands the IP header too
        if len(data) < 8:
            return False
        kind, code, _, ident, seq = struct.unpack_from("!BBHHH", data)
        if kind == _ECHO[self._family][1]:
            if seq == self._seq and (not self._raw or ident == self._id) and data[8:] == _PAYLOAD:
                self._verdict = ProbeResult(True, "echo reply", 0.0)
                self.finished = True
            return self.finished
        if kind == _UNREACHABLE[self._family] and self._raw and self._about_us(data[8:]):
            self._verdict = ProbeResult(
                False, f"destination unreachable (code {code})", 0.0, "unreachable"
            )
            self.finished = True
        return self.finished

    def _about_us(self, quoted: bytes) -> bool:
        """Whether an ICMP error quotes our echo request (IP header, then 8 bytes)."""
        if self._family == socket.AF_INET:
            if not quoted:
                return False
            quoted = quoted[(quoted[0] & 0x0F) * 4 :]
        else:
            quoted = quoted[40:]
        if len(quoted) < 8:
            return False
        kind, _, _, ident, seq = struct.unpack_from("!BBHHH", quoted)
        return kind == _ECHO[self._family][0] and ident == self._id and seq == self._seq

    def eof(self) -> None:
        pass

    def result(self, latency: float) -> ProbeResult:
        verdict = self._verdict
        assert verdict is not None
        return ProbeResult(verdict.ok, verdict.reason, latency, verdict.category)
