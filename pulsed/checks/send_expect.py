"""send_expect: send bytes and expect a regex, in one or more steps, over TCP or TLS.

Piranha nanny's send/expect, and ldirectord's line-protocol checks: each
step sends its text or hex bytes (if any), then waits until what the server
sent since the step began matches its regex (if any). What follows a match
is kept for the next step. At most ``max_bytes`` are read for one step; a
step that has not matched by then fails. Recipes (Redis, MySQL, POP3, IMAP)
are in docs/operations.md.
"""

from __future__ import annotations

import re

from pulsed.checks.base import ProbeResult, Target
from pulsed.checks.convo import Conversation, ConversationProbe, Dialogue, show_bytes
from pulsed.checks.http import tls_context


class SendExpectProbe(ConversationProbe):
    __slots__ = ("max_bytes", "server_hostname", "ssl", "steps")

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        check = target.check
        self.steps = tuple(
            (step.payload(), re.compile(step.expect.encode()) if step.expect is not None else None)
            for step in check.steps
        )
        self.max_bytes = check.max_bytes
        self.ssl = (
            tls_context(check.tls_verify, check.ca_file, check.client_cert, check.client_key)
            if check.tls
            else None
        )
        self.server_hostname = check.host or self.address

    def dialogue(self) -> Dialogue:
        return _Steps(self)


class _Steps:
    __slots__ = ("_buffer", "_error", "_index", "_probe", "_secured", "_talk", "finished")

    def __init__(self, probe: SendExpectProbe) -> None:
        self._probe = probe
        self._index = 0
        self._buffer = b""
        self._error: ProbeResult | None = None
        self._talk: Conversation | None = None
        self._secured = False
        self.finished = False

    @property
    def stage(self) -> str:
        if self._probe.ssl is not None and not self._secured:
            return "the TLS handshake"
        pattern = self._probe.steps[self._index][1] if not self.finished else None
        shown = f": {pattern.pattern.decode(errors='replace')!r}" if pattern is not None else ""
        return f"step {self._index + 1}{shown}"

    def connected(self, talk: Conversation) -> None:
        self._talk = talk
        probe = self._probe
        if probe.ssl is not None:
            talk.start_tls(probe.ssl, probe.server_hostname)
        else:
            self._advance()

    def secured(self) -> None:
        self._secured = True
        self._advance()

    def _advance(self) -> None:
        """Send what the current step sends; move on while steps expect nothing."""
        steps = self._probe.steps
        talk = self._talk
        assert talk is not None
        while self._index < len(steps):
            payload, pattern = steps[self._index]
            if payload:
                talk.send(payload)
            if pattern is not None:
                return
            self._index += 1
        self.finished = True

    def feed(self, data: bytes) -> bool:
        if self.finished:
            return True
        probe = self._probe
        self._buffer += data
        while not self.finished:
            pattern = probe.steps[self._index][1]
            assert pattern is not None  # _advance stops only at a step that expects
            match = pattern.search(self._buffer, 0, probe.max_bytes)
            if match is None:
                if len(self._buffer) >= probe.max_bytes:
                    self._fail(f"no match in {probe.max_bytes} bytes", "body")
                return self.finished
            self._buffer = self._buffer[match.end() :]
            self._index += 1
            self._advance()
        return True

    def eof(self) -> None:
        if not self.finished:
            got = f", got {show_bytes(self._buffer)}" if self._buffer else ""
            self._fail(f"connection closed before a match{got}", "closed")

    def _fail(self, why: str, category: str) -> None:
        pattern = self._probe.steps[self._index][1]
        assert pattern is not None
        expected = pattern.pattern.decode(errors="replace")
        self._error = ProbeResult(
            False, f"step {self._index + 1} ({expected!r}): {why}", 0.0, category
        )
        self.finished = True

    def result(self, latency: float) -> ProbeResult:
        if self._error is not None:
            error = self._error
            return ProbeResult(False, error.reason, latency, error.category)
        count = len(self._probe.steps)
        return ProbeResult(True, f"{count} step{'s' if count != 1 else ''} done", latency)
