"""udp: send one datagram, expect a reply (keepalived's UDP_CHECK).

The socket is connected, so the kernel hands it only the server's replies
and reports an ICMP port unreachable as ECONNREFUSED: down at once
("port unreachable"). Silence is down at the timeout. With ``expect`` the
reply must contain a match of the regex, with ``expect_hex`` it must be
exactly those bytes; without either any reply will do.
"""

from __future__ import annotations

import re
import socket

from pulsed.checks.base import ProbeResult, Target
from pulsed.checks.convo import Conversation, ConversationProbe, open_conversation, show_bytes
from pulsed.checks.sockio import Done, Exchange, ProbeEngine


class UdpProbe(ConversationProbe):
    __slots__ = ("expect", "expect_bytes", "payload")

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        check = target.check
        if check.payload_hex is not None:
            self.payload = bytes.fromhex(check.payload_hex)
        else:
            self.payload = (check.payload or "").encode()
        self.expect = re.compile(check.expect.encode()) if check.expect is not None else None
        self.expect_bytes = (
            bytes.fromhex(check.expect_hex) if check.expect_hex is not None else None
        )

    def start(self, engine: ProbeEngine, done: Done, token: object = None) -> Exchange:
        return open_conversation(
            engine,
            self.family,
            socket.SOCK_DGRAM,
            0,
            self.address,
            self.port,
            self.timeout,
            self.check,
            _UdpDialogue(self),
            done,
            token,
        )


class _UdpDialogue:
    __slots__ = ("_probe", "_reply", "finished", "stage")

    def __init__(self, probe: UdpProbe) -> None:
        self._probe = probe
        self._reply: bytes | None = None
        self.stage = "a reply"
        self.finished = False

    def connected(self, talk: Conversation) -> None:
        talk.send(self._probe.payload)

    def feed(self, data: bytes) -> bool:
        self._reply = data
        self.finished = True
        return True

    def eof(self) -> None:
        pass

    def secured(self) -> None:
        pass

    def result(self, latency: float) -> ProbeResult:
        reply = self._reply
        probe = self._probe
        if reply is None:
            return ProbeResult(False, "no reply", latency, "closed")
        if probe.expect_bytes is not None and reply != probe.expect_bytes:
            return ProbeResult(
                False, f"reply {show_bytes(reply)} is not the expected bytes", latency, "body"
            )
        if probe.expect is not None and not probe.expect.search(reply):
            return ProbeResult(False, f"reply {show_bytes(reply)} did not match", latency, "body")
        return ProbeResult(True, f"reply of {len(reply)} bytes", latency)
