"""dns: query a name and type, expect an rcode and optionally a matching answer.

keepalived's DNS_CHECK and ldirectord's dns check. Messages are built and
read by pulsed.checks.dns_wire (which says why not dnspython); the query's
wire form is built once per probe and only its ID changes per query. Over
UDP (the default) a truncated answer (TC) is asked again over TCP on a new
socket within the same timeout; ``dns_transport =
"tcp"`` asks over TCP only. A reply with another ID or question, or one
that does not parse, is a protocol failure: the socket is connected, so only
the server can have sent it. ``expect_answer`` is searched in the text of
each answer record ("192.0.2.10", '"v=spf1 -all"', "10 mx.example.org.").
"""

from __future__ import annotations

import random
import re
import socket
import struct

from pulsed.checks import dns_wire
from pulsed.checks.base import ProbeResult, Target
from pulsed.checks.convo import Conversation, ConversationProbe, Verdict, open_conversation
from pulsed.checks.sockio import Done, Exchange, ProbeEngine

_MAX_TCP = 65535 + 2


class DnsProbe(ConversationProbe):
    __slots__ = ("answer", "over_tcp", "query", "question", "rcode", "type_text")

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        check = target.check
        assert check.query_name is not None  # validated: a dns check names its query
        rdtype = dns_wire.type_code(check.query_type)
        self.query = dns_wire.make_query(check.query_name, rdtype)
        self.question = dns_wire.question_of(self.query)
        self.type_text = dns_wire.type_text(rdtype)
        self.rcode = dns_wire.rcode_code(check.expect_rcode)
        self.answer = re.compile(check.expect_answer) if check.expect_answer else None
        self.over_tcp = check.dns_transport == "tcp"

    def start(self, engine: ProbeEngine, done: Done, token: object = None) -> Exchange:
        kind = socket.SOCK_STREAM if self.over_tcp else socket.SOCK_DGRAM
        return open_conversation(
            engine,
            self.family,
            kind,
            0,
            self.address,
            self.port,
            self.timeout,
            self.check,
            _Query(self),
            done,
            token,
        )


class _Query(Verdict):
    __slots__ = ("_buffer", "_id", "_probe", "_talk", "_tcp")

    def __init__(self, probe: DnsProbe) -> None:
        self._probe = probe
        self._id = random.getrandbits(16)
        self._tcp = probe.over_tcp
        self._buffer = b""
        self._talk: Conversation | None = None
        super().__init__(_stage(self._tcp))

    def _wire(self) -> bytes:
        return struct.pack("!H", self._id) + self._probe.query[2:]

    def connected(self, talk: Conversation) -> None:
        self._talk = talk
        wire = self._wire()
        talk.send(struct.pack("!H", len(wire)) + wire if self._tcp else wire)

    def secured(self) -> None:
        pass

    def feed(self, data: bytes) -> bool:
        if not self._tcp:
            return self._judge(data)
        self._buffer += data[: _MAX_TCP - len(self._buffer)]
        if len(self._buffer) < 2:
            return False
        (length,) = struct.unpack_from("!H", self._buffer)
        if len(self._buffer) < 2 + length:
            return False
        return self._judge(self._buffer[2 : 2 + length])

    def _judge(self, wire: bytes) -> bool:
        self.finished = True
        probe = self._probe
        if len(wire) < dns_wire.HEADER:
            return self._fail(f"bad DNS reply: {len(wire)} bytes", "protocol")
        (reply_id, flags) = struct.unpack_from("!HH", wire)
        if reply_id != self._id or not flags & dns_wire.FLAG_QR:
            return self._fail("reply is not for this query (ID)", "protocol")
        if flags & dns_wire.FLAG_TC and not self._tcp:
            self._retry_over_tcp()
            return self.finished
        try:
            reply = dns_wire.parse_reply(wire)
        except dns_wire.DnsWireError as exc:
            return self._fail(f"bad DNS reply: {_exc_text(exc)}", "protocol")
        if reply.question != probe.question:
            return self._fail("reply is not for this query (question)", "protocol")
        rcode = reply.rcode
        if rcode != probe.rcode:
            expected = dns_wire.rcode_text(probe.rcode)
            return self._fail(f"rcode {dns_wire.rcode_text(rcode)}, expected {expected}", "status")
        texts = reply.answers
        count = len(texts)
        if probe.answer is not None and not any(probe.answer.search(text) for text in texts):
            shown = f", got {', '.join(texts)[:60]}" if texts else ""
            return self._fail(f"no answer matched ({count} answers{shown})", "body")
        plural = "s" if count != 1 else ""
        reason = f"{dns_wire.rcode_text(rcode)}, {count} answer{plural}"
        self._verdict = ProbeResult(True, reason + (" over TCP" if self._tcp else ""), 0.0)
        return True

    def _retry_over_tcp(self) -> None:
        """A truncated answer: ask again over TCP, on a new socket, before the same deadline."""
        probe = self._probe
        talk = self._talk
        assert talk is not None
        self._tcp = True
        self.stage = _stage(True)
        self.finished = False
        self._id = random.getrandbits(16)
        talk.redial(probe.family, socket.SOCK_STREAM, 0, probe.address, probe.port)


def _stage(tcp: bool) -> str:
    return "the DNS reply over TCP" if tcp else "the DNS reply"


def _exc_text(exc: BaseException) -> str:
    text = str(exc).split("\n")[0][:60]
    return text or type(exc).__name__
