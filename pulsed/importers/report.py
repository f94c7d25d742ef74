"""What an import could not translate, or translated with a caveat: one line each.

Lines read ``file:line: reason``, as compilers write them, so that editors
jump to the source. ``untranslated`` findings make the import exit 1;
``notes`` are caveats that go into the TOML only.

A hostile input cannot flood the terminal: a finding already made at the same
place is not repeated (100,000 ``{`` on one line make one line), the list
stops at ``MAX_FINDINGS`` with a count of the rest, and every line is one line
of printable text (a NUL, an escape sequence or a newline in the source or in
a file name is shown escaped).
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_FINDINGS = 1000
MAX_LINE = 300


def printable(text: str, limit: int = MAX_LINE) -> str:
    """``text`` on one line, control characters and lone surrogates escaped, cut at ``limit``."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # surrogates
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Where:
    """A place in a source file (line 0: the file as a whole)."""

    file: str
    line: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True)
class Finding:
    where: Where
    message: str
    left_out: bool  # True: something was not translated (exit 1); False: a warning

    def __str__(self) -> str:
        return printable(f"{self.where}: {self.message}")


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    dropped: int = 0  # findings past MAX_FINDINGS: counted, not kept
    _left_out: bool = False
    _seen: set[Finding] = field(default_factory=set, repr=False)

    def untranslated(self, where: Where, message: str) -> None:
        self._add(Finding(where, message, left_out=True))

    def warn(self, where: Where, message: str) -> None:
        """Translated as the old program behaves, but probably not as meant."""
        self._add(Finding(where, message, left_out=False))

    def _add(self, finding: Finding) -> None:
        self._left_out |= finding.left_out
        if finding in self._seen:
            return
        if len(self.findings) >= MAX_FINDINGS:
            self.dropped += 1
            return
        self._seen.add(finding)
        self.findings.append(finding)

    @property
    def complete(self) -> bool:
        return not self._left_out

    def lines(self) -> list[str]:
        lines = [str(f) for f in self.findings]
        if self.dropped:
            lines.append(f"... and {self.dropped} more finding(s) not listed")
        return lines
