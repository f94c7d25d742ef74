"""A small TOML document model that remembers where each part came from, and its writer.

Why not a library: pulsed depends on no TOML writer (tomli only reads), and
the one that writes comments (tomlkit) would be a new runtime dependency for
one command; tomli-w writes no comments at all. What an import writes is
narrow (strings, integers, booleans, arrays, inline and nested tables), so
the writer is short, and every import's output is read back by tomli and
validated (pulsed.importers.settle), which keeps it honest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pulsed.importers.report import Where

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
MAX_COMMENT = 120


@dataclass
class Table:
    """One TOML table: plain values, sub-tables (``Table``) and arrays of tables
    (``list[Table]``). ``where`` and ``origin`` (the source text) head it as a
    comment; ``notes`` are comment lines written under its header."""

    where: Where | None = None
    origin: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, Where] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    dead: bool = False  # left out by pulsed.importers.settle; gone at its next compact

    def set(self, key: str, value: Any, where: Where | None = None) -> None:
        self.values[key] = value
        if where is not None:
            self.sources[key] = where
        else:
            self.sources.pop(key, None)

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def table(self, key: str, where: Where | None = None) -> Table:
        """The sub-table ``key``, made when missing."""
        sub = self.values.get(key)
        if not isinstance(sub, Table):
            sub = Table(where)
            self.values[key] = sub
        return sub

    def append(self, key: str, item: Table) -> Table:
        """``item`` added to the array of tables ``key``."""
        items = self.values.setdefault(key, [])
        items.append(item)
        return item

    def drop(self, key: str) -> None:
        self.values.pop(key, None)
        self.sources.pop(key, None)


def is_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Table) for v in value)


def render(root: Table, header: list[str] | None = None) -> str:
    """The document as TOML text, comments included."""
    out: list[str] = [f"# {_clean(line)}" if line else "#" for line in header or []]
    _table(out, root, [], None)
    return "\n".join(out).rstrip("\n") + "\n"


def _table(out: list[str], table: Table, path: list[str], title: str | None) -> None:
    if title is not None:
        out.append("")
        if table.where is not None:
            origin = f": {table.origin}" if table.origin else ""
            out.append(f"# from {_clean(str(table.where) + origin)}")
        out.append(title)
    out.extend(f"# {_clean(note)}" for note in table.notes)
    nested: list[tuple[str, Any]] = []
    for key, value in table.values.items():
        if isinstance(value, Table) or is_tables(value):
            nested.append((key, value))
            continue
        line = f"{_key(key)} = {value_text(value)}"
        where = table.sources.get(key)
        if where is not None:
            line += f"  # {_clean(_short(where, table.where))}"
        out.append(line)
    for key, value in nested:
        sub = [*path, _key(key)]
        if isinstance(value, Table):
            _table(out, value, sub, f"[{'.'.join(sub)}]")
        else:
            for item in value:
                _table(out, item, sub, f"[[{'.'.join(sub)}]]")


def _short(where: Where, parent: Where | None) -> str:
    """``line 12`` when the file is the table's own, else ``file:12``."""
    if parent is not None and parent.file == where.file and where.line:
        return f"line {where.line}"
    return str(where)


def value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if value == value and value not in (float("inf"), float("-inf")) else "0"
    if isinstance(value, str):
        return string_text(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{_key(str(k))} = {value_text(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def string_text(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    parts = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            parts.append('\\"')
        elif ch == "\\":
            parts.append("\\\\")
        elif ch == "\n":
            parts.append("\\n")
        elif ch == "\t":
            parts.append("\\t")
        elif code < 0x20 or code == 0x7F:
            parts.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:  # a lone surrogate cannot be written: U+FFFD
            parts.append("\ufffd")
        else:
            parts.append(ch)
    parts.append('"')
    return "".join(parts)


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else string_text(key)


def _clean(text: str) -> str:
    """One comment line: no control characters, bounded length."""
    text = "".join(c if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF else "?" for c in text)
    return text if len(text) <= MAX_COMMENT else text[: MAX_COMMENT - 3] + "..."
