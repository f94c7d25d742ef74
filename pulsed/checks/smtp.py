"""smtp: banner 220, EHLO answered 250, optionally STARTTLS; then QUIT (keepalived's SMTP_CHECK).

With ``starttls`` the server must offer STARTTLS in its EHLO reply, answer
220 to it, pass the TLS handshake (the certificate verified as for https:
``tls_verify``, ``ca_file``, ``host``) and answer 250 to a second EHLO.
QUIT is sent and the connection closed with FIN, not RST, so the server
sees a polite client. Replies are read to their last line ("250 ...",
after any "250-..." lines); at most ``max_bytes`` are read in all.
"""

from __future__ import annotations

import re
import socket

from pulsed.checks.base import ProbeResult, Target
from pulsed.checks.convo import Conversation, ConversationProbe, Dialogue, Verdict, show_bytes
from pulsed.checks.http import tls_context

_LINE = re.compile(rb"([0-9]{3})([ -]?)(.*)")

# Stages, named as a timeout's reason names them.
_BANNER = "the banner"
_EHLO = "the EHLO reply"
_STARTTLS = "the STARTTLS reply"
_HANDSHAKE = "the TLS handshake"
_EHLO_TLS = "the EHLO reply over TLS"


class SmtpProbe(ConversationProbe):
    __slots__ = ("ehlo", "max_bytes", "server_hostname", "ssl")

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        check = target.check
        self.ehlo = f"EHLO {check.helo_name or _host_name()}\r\n".encode()
        self.max_bytes = check.max_bytes
        self.ssl = (
            tls_context(check.tls_verify, check.ca_file, check.client_cert, check.client_key)
            if check.starttls
            else None
        )
        self.server_hostname = check.host or self.address

    def dialogue(self) -> Dialogue:
        return _Smtp(self)


def _host_name() -> str:
    name = socket.gethostname()
    return name if name and re.fullmatch(r"[A-Za-z0-9.-]+", name) else "pulsed"


class _Smtp(Verdict):
    __slots__ = ("_buffer", "_lines", "_probe", "_read", "_talk")

    def __init__(self, probe: SmtpProbe) -> None:
        self._probe = probe
        self._buffer = b""
        self._lines: list[bytes] = []  # of the reply being read
        self._read = 0
        self._talk: Conversation | None = None
        super().__init__(_BANNER)

    def connected(self, talk: Conversation) -> None:
        self._talk = talk

    def secured(self) -> None:
        self.stage = _EHLO_TLS
        assert self._talk is not None
        self._talk.send(self._probe.ehlo)

    def feed(self, data: bytes) -> bool:
        self._read += len(data)
        if self._read > self._probe.max_bytes:
            return self._fail(
                f"more than {self._probe.max_bytes} bytes without a reply", "protocol"
            )
        self._buffer += data
        while not self.finished:
            end = self._buffer.find(b"\n")
            if end < 0:
                return False
            line, self._buffer = self._buffer[:end].rstrip(b"\r"), self._buffer[end + 1 :]
            match = _LINE.fullmatch(line)
            if match is None:
                return self._fail(
                    f"bad reply to {_said(self.stage)}: {show_bytes(line)}", "protocol"
                )
            self._lines.append(line)
            if match.group(2) != b"-":
                code = int(match.group(1))
                reply, self._lines = self._lines, []
                self._buffer = b"" if self.stage in (_STARTTLS,) else self._buffer
                self._on_reply(code, reply)
        return True

    def _on_reply(self, code: int, lines: list[bytes]) -> None:
        talk = self._talk
        assert talk is not None
        stage = self.stage
        want = 220 if stage in (_BANNER, _STARTTLS) else 250
        if code != want:
            text = lines[-1][4:].decode("utf-8", "replace").strip()[:60]
            self._fail(f"{_said(stage)} {code}" + (f" {text}" if text else ""), "status")
            return
        if stage == _BANNER:
            self.stage = _EHLO
            talk.send(self._probe.ehlo)
        elif stage == _EHLO and self._probe.ssl is not None:
            if not any(line[4:].strip().upper() == b"STARTTLS" for line in lines[1:]):
                self._fail("STARTTLS not offered", "tls")
                return
            self.stage = _STARTTLS
            talk.send(b"STARTTLS\r\n")
        elif stage == _STARTTLS:
            self.stage = _HANDSHAKE
            talk.start_tls(self._probe.ssl, self._probe.server_hostname)  # type: ignore[arg-type]
        else:
            secure = " over TLS" if stage == _EHLO_TLS else ""
            self._verdict = ProbeResult(True, f"EHLO accepted{secure}", 0.0)
            talk.send(b"QUIT\r\n")
            talk.close_gracefully()
            self.finished = True


def _said(stage: str) -> str:
    """'banner', 'EHLO reply', ...: the stage without its article."""
    return stage.removeprefix("the ")
