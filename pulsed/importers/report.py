"""What an import could not translate, or translated with a caveat: one line each.

Lines read ``file:line: reason``, as compilers write them, so that editors
jump to the source. ``untranslated`` findings make the import exit 1;
``notes`` are caveats that go into the TOML only.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
        return f"{self.where}: {self.message}"


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)

    def untranslated(self, where: Where, message: str) -> None:
        self.findings.append(Finding(where, message, left_out=True))

    def warn(self, where: Where, message: str) -> None:
        """Translated as the old program behaves, but probably not as meant."""
        self.findings.append(Finding(where, message, left_out=False))

    @property
    def complete(self) -> bool:
        return not any(f.left_out for f in self.findings)

    def lines(self) -> list[str]:
        return [str(f) for f in self.findings]
