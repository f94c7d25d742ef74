"""One import: read the source, translate, validate, and say what was left out."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from pulsed.importers import KINDS, keepalived, keepalived_lexer, ldirectord, piranha
from pulsed.importers.common import read_source
from pulsed.importers.emit import Table
from pulsed.importers.report import Report, Where
from pulsed.importers.settle import settle


@dataclass
class Imported:
    text: str
    report: Report


def default_config_id() -> str:
    """keepalived's config id when -i is not given: the host name up to its first dot."""
    return socket.gethostname().split(".")[0]


def import_config(kind: str, path: str, config_id: str | None = None) -> Imported:
    """The pulsed TOML for ``path``. Raises pulsed.files.FileProblem when ``path``
    itself cannot be read; every other problem is in the report."""
    report = Report()
    root: Table
    if kind == "keepalived":
        nodes = keepalived_lexer.parse(path, report, config_id or default_config_id())
        root = keepalived.translate(nodes, report)
    elif kind == "ldirectord":
        root = ldirectord.translate(read_source(path, report), path, report)
    elif kind == "piranha":
        root = piranha.translate(read_source(path, report), path, report)
    else:
        raise ValueError(f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
    if not root.get("service") and not root.get("vrrp") and report.complete:
        # An empty file, or only comments: probably not the file meant.
        report.warn(Where(path), f"no virtual server or VRRP instance found in this {kind} file")
    header = [
        f"pulsed configuration imported from {kind} {path}",
        "by `pulsed import`: each table says where it came from; what could not be",
        'translated is noted where it was ("left out") and was listed on stderr.',
        "Check it with: pulsed check-config FILE",
    ]
    text = settle(root, report, header, Where(path))
    if report.findings:
        lines = ["", "# Not translated, or translated with a caveat (also on stderr):"]
        lines += [f"#   {line}" for line in report.lines()]
        text += "\n".join(lines) + "\n"
    return Imported(text, report)
