"""The line of a config file that a check-config problem names (pure).

check-config names a problem by its key path (``service[1].real[0].weight``);
the page's editor shows it next to the line. TOML parsers give no positions,
so the file is scanned the way TOML reads it: table headers (``[api]``,
``[[service]]``, ``[[service.real]]``, ``[service.check]``) with a counter per
array of tables, and ``key = value`` lines under them. A path not found
(a value inside an inline table, say) falls back to its nearest enclosing
table; a TOML syntax error carries its own line.
"""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(
    r"""^\s*((?:[\w-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[\w-]+|"[^"]*"|'[^']*'))*)\s*="""
)
_PART = re.compile(r"""\s*("[^"]*"|'[^']*'|[^.]+)\s*(?:\.|$)""")
_AT_LINE = re.compile(r"\(at line (\d+), column \d+\)")


def _parts(dotted: str) -> list[str]:
    return [m.group(1).strip("\"'") for m in _PART.finditer(dotted) if m.group(1)]


def line_index(text: str) -> dict[str, int]:
    """Every table and key path in ``text`` -> its 1-based line."""
    lines: dict[str, int] = {}
    counts: dict[str, int] = {}  # array-of-tables path (with parent indexes) -> entries seen
    current = ""
    open_value = ""  # a multi-line string's quotes, or "[" inside a multi-line array
    depth = 0
    # "\n" only, as TOML and editors count lines (splitlines also splits at U+2028,
    # which a TOML string may hold).
    for number, line in enumerate(text.split("\n"), start=1):
        if open_value:
            depth, open_value = _still_open(line, open_value, depth)
            continue
        header = _HEADER.match(line)
        if header:
            current = ""
            for i, part in enumerate(_parts(header.group(2))):
                current = f"{current}.{part}" if current else part
                if i == len(_parts(header.group(2))) - 1 and header.group(1) == "[[":
                    counts[current] = counts.get(current, 0) + 1
                if current in counts:
                    current = f"{current}[{counts[current] - 1}]"
            lines.setdefault(current, number)
            continue
        key = _KEY.match(line)
        if key:
            path = ".".join(_parts(key.group(1)))
            lines.setdefault(f"{current}.{path}" if current else path, number)
            depth, open_value = _still_open(line[key.end() :], "", 0)
    return lines


def _still_open(text: str, open_value: str, depth: int) -> tuple[int, str]:
    """What a value left open at the end of ``text``: a multi-line string, or an array."""
    for quotes in ('"""', "'''"):
        if open_value == quotes:
            return (0, "") if text.count(quotes) % 2 else (0, quotes)
        if open_value == "" and text.count(quotes) % 2:
            return 0, quotes
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'', "", text.split("#")[0])
    depth += text.count("[") - text.count("]")
    return (depth, "[") if depth > 0 else (0, "")


def issue_line(
    text: str, path: str, message: str = "", index: dict[str, int] | None = None
) -> int | None:
    """The line a problem at ``path`` (with ``message``) is on, or None."""
    found = _AT_LINE.search(message)
    if found:
        return int(found.group(1))
    if not path:
        return None
    index = line_index(text) if index is None else index
    candidates = [path]
    if path.startswith("vrrp[0]"):
        candidates.append("vrrp" + path[len("vrrp[0]") :])
    for candidate in candidates:
        probe = candidate
        while probe:
            if probe in index:
                return index[probe]
            cut = max(probe.rfind("."), probe.rfind("["))
            probe = probe[:cut] if cut > 0 else ""
    return None
