"""keepalived.conf as a tree of statements, the way keepalived reads it.

What is handled, as keepalived 2.2 does it:
- comments start at ``!`` or ``#`` outside double quotes, at the start of a word;
- ``include PATTERN`` (anywhere, also inside blocks) reads the files the glob
  names, in sorted order, relative to the directory of the including file.
  A file that includes itself, directly or through others, is reported once
  and not read again (keepalived would recurse until it runs out of file
  descriptors), and at most ``MAX_INCLUDED_FILES`` files are read in all, so
  that a few files including each other by glob cannot take exponential time;
- a brace opens a block on the same line or on the next one; ``}`` may close
  it on a line with other words (``virtual_ipaddress { 10.0.0.1 }``);
- ``$NAME=value`` defines a macro, ``$NAME`` and ``${NAME}`` use it;
- ``@ID line`` is read only when ID is the config id (keepalived -i, by
  default the host name), ``@^ID line`` only when it is not.

Not handled (reported): parameterised macros, ``~SEQ``, ``$NAME`` over
several lines. Nothing here raises on bad input: problems go to the Report.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field

from pulsed.files import FileProblem
from pulsed.importers.common import read_source, source_lines
from pulsed.importers.report import Report, Where

MAX_INCLUDE_DEPTH = 16
MAX_INCLUDED_FILES = 4096
MAX_MACRO_SIZE = 64 * 1024  # a macro expanding into itself stops growing here
_MACRO_DEF = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")
_MACRO_USE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass
class Node:
    """One statement: ``keyword args...`` and, when it opens a block, its children."""

    keyword: str
    args: list[str]
    where: Where
    children: list[Node] | None = None

    def text(self) -> str:
        return " ".join([self.keyword, *self.args])[:200]


@dataclass
class _Token:
    text: str
    where: Where
    quoted: bool = False


@dataclass
class _Reader:
    report: Report
    config_id: str
    macros: dict[str, str] = field(default_factory=dict)
    tokens: list[_Token | None] = field(default_factory=list)  # None: end of a line
    reading: list[str] = field(default_factory=list)  # the files open now, outermost first
    files_read: int = 0

    def read(self, path: str, depth: int, origin: Where | None) -> bool:
        real = os.path.realpath(path)
        if real in self.reading and origin is not None:
            self.report.untranslated(
                origin, f"include {path}: an include loop ({path} is being read already)"
            )
            return False
        if self.files_read >= MAX_INCLUDED_FILES and origin is not None:
            self.report.untranslated(origin, f"more than {MAX_INCLUDED_FILES} files included")
            return False
        try:
            text = read_source(path, self.report)
        except FileProblem as exc:
            if origin is None:
                raise
            self.report.untranslated(origin, f"cannot include: {exc}")
            return False
        self.files_read += 1
        self.reading.append(real)
        try:
            for number, raw in enumerate(source_lines(text), 1):
                self.line(raw, Where(path, number), depth)
        finally:
            self.reading.pop()
        return True

    def line(self, raw: str, where: Where, depth: int) -> None:
        line = raw.strip()
        if line.startswith("@"):
            ident, _, rest = line[1:].partition(" ")
            wanted = not ident.startswith("^")
            if (ident.lstrip("^") == self.config_id) != wanted:
                return
            line = rest.strip()
        match = _MACRO_DEF.match(line)
        if match:
            self.macros[match.group(1)] = match.group(2).strip()
            return
        if "$" in line:
            line = self.expand(line, where)
        words = split_words(line, where)
        if words and words[0].text == "include" and not words[0].quoted:
            self.include(words[1:], where, depth)
            return
        if words and words[0].text.startswith("~"):
            self.report.untranslated(where, f"{words[0].text}: keepalived sequences are not read")
            return
        self.tokens.extend(words)
        self.tokens.append(None)

    def expand(self, line: str, where: Where) -> str:
        unknown: list[str] = []

        def one(match: re.Match[str]) -> str:
            name = match.group(1) or match.group(2)
            if name in self.macros:
                return self.macros[name]
            unknown.append(name)
            return match.group(0)

        for _ in range(8):  # macros may use macros; a loop stops here
            expanded = _MACRO_USE.sub(one, line)
            if expanded == line or len(expanded) > MAX_MACRO_SIZE:
                break
            line = expanded
        for name in dict.fromkeys(unknown):
            self.report.warn(where, f"${name} is not defined here; kept as written")
        return line[:MAX_MACRO_SIZE]

    def include(self, words: list[_Token], where: Where, depth: int) -> None:
        if not words:
            self.report.untranslated(where, "include without a file name")
            return
        if depth >= MAX_INCLUDE_DEPTH:
            self.report.untranslated(where, f"includes nested deeper than {MAX_INCLUDE_DEPTH}")
            return
        base = os.path.dirname(where.file)
        for word in words:
            pattern = word.text if os.path.isabs(word.text) else os.path.join(base, word.text)
            try:
                names = sorted(glob.glob(pattern))
            except (OSError, ValueError) as exc:
                self.report.untranslated(where, f"include {word.text}: {exc}")
                continue
            if not names:
                # keepalived goes on without it, and so does the import.
                self.report.warn(where, f"include {word.text}: no file matches")
            for name in names:
                self.read(name, depth + 1, where)


def split_words(line: str, where: Where) -> list[_Token]:
    """The words of one line: double quotes group, braces stand alone, comments end it."""
    words: list[_Token] = []
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if ch.isspace():
            i += 1
        elif ch in "!#":
            break
        elif ch in "{}":
            words.append(_Token(ch, where))
            i += 1
        elif ch == '"':
            end = line.find('"', i + 1)
            if end < 0:  # keepalived takes an unclosed quote to the end of the line
                end = n
            words.append(_Token(line[i + 1 : end], where, quoted=True))
            i = end + 1
        else:
            start = i
            while i < n and not line[i].isspace() and line[i] not in '{}"':
                i += 1
            words.append(_Token(line[start:i], where))
    return words


def parse(path: str, report: Report, config_id: str) -> list[Node]:
    """The statements of ``path`` and what it includes. Raises FileProblem only when
    ``path`` itself cannot be read."""
    reader = _Reader(report, config_id)
    reader.read(path, 0, None)
    return build_tree(reader.tokens, report, Where(path))


def build_tree(tokens: list[_Token | None], report: Report, top: Where) -> list[Node]:
    root: list[Node] = []
    stack: list[tuple[list[Node], Node | None]] = [(root, None)]
    words: list[_Token] = []

    def flush() -> None:
        if words:
            first = words[0]
            stack[-1][0].append(Node(first.text, [w.text for w in words[1:]], first.where))
            words.clear()

    for token in tokens:
        if token is None:
            flush()
        elif token.text == "{" and not token.quoted:
            siblings = stack[-1][0]
            if words:
                flush()
            elif not siblings or siblings[-1].children is not None:
                report.warn(token.where, "a block without a keyword; read as its own block")
                siblings.append(Node("", [], token.where))
            owner = siblings[-1]
            owner.children = []
            stack.append((owner.children, owner))  # a list, not recursion: any depth is safe
        elif token.text == "}" and not token.quoted:
            flush()
            if len(stack) == 1:
                report.warn(token.where, "a '}' that closes no block; ignored")
            else:
                stack.pop()
        else:
            words.append(token)
    flush()
    for _, unclosed in stack[1:]:
        if unclosed is not None:
            report.warn(unclosed.where, f"{unclosed.keyword}: block not closed before the end")
    return root
