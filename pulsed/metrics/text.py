"""The Prometheus text format's small pieces: escaping, numbers, HELP/TYPE heads, families."""

from __future__ import annotations

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def escape(value: str) -> str:
    """A label value as the text format wants it."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def number(value: float | int | bool) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def head(name: str, typ: str, help_text: str) -> str:
    return f"# HELP {name} {help_text}\n# TYPE {name} {typ}\n"


class Family:
    """Samples of one small metric family, written under its HELP and TYPE lines."""

    __slots__ = ("help", "lines", "name", "type")

    def __init__(self, name: str, typ: str, help_text: str) -> None:
        self.name, self.type, self.help = name, typ, help_text
        self.lines: list[str] = []

    def add(self, labels: str, value: float | int | bool, suffix: str = "") -> None:
        body = f"{{{labels}}}" if labels else ""
        self.lines.append(f"{self.name}{suffix}{body} {number(value)}\n")

    def text(self) -> str:
        return head(self.name, self.type, self.help) + "".join(self.lines)


def gauge(name: str, help_text: str, value: float | int | bool, labels: str = "") -> Family:
    family = Family(name, "gauge", help_text)
    family.add(labels, value)
    return family


def counter(name: str, help_text: str, value: float | int, labels: str = "") -> Family:
    family = Family(name, "counter", help_text)
    family.add(labels, value)
    return family
