"""``pulsed import keepalived|ldirectord|piranha FILE [-o OUT]``.

Exit 0: everything was translated; 1: something was left out (listed on
stderr as ``file:line: reason``, noted in the TOML, which is still written);
2: the input (or the output file) could not be used.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile

from pulsed.files import FileProblem
from pulsed.importers import KINDS

EXIT_OK, EXIT_PARTIAL, EXIT_UNREADABLE = 0, 1, 2


def add_import_command(sub) -> None:
    cmd = sub.add_parser(
        "import",
        help="translate a keepalived, ldirectord or piranha config into pulsed TOML"
        " (exit 0 complete, 1 something left out, 2 unreadable)",
    )
    cmd.add_argument("kind", choices=KINDS)
    cmd.add_argument("file")
    cmd.add_argument("-o", "--output", help="write the TOML here (default: stdout)")
    cmd.add_argument(
        "-i",
        "--config-id",
        help="keepalived's -i: which '@ID' lines apply (default: the host name, as keepalived)",
    )
    cmd.set_defaults(func=cmd_import)


def cmd_import(args: argparse.Namespace) -> int:
    # Loaded here: every pulsed command builds this parser, the daemon included,
    # and the parsers cost it 1.7 MiB it never uses.
    from pulsed.importers.run import import_config

    try:
        imported = import_config(args.kind, args.file, args.config_id)
    except FileProblem as exc:
        print(f"pulsed import: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    for line in imported.report.lines():
        print(line, file=sys.stderr)
    if args.output:
        try:
            _write(args.output, imported.text)
        except OSError as exc:
            print(f"pulsed import: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
            return EXIT_UNREADABLE
    else:
        sys.stdout.write(imported.text)
    return EXIT_OK if imported.report.complete else EXIT_PARTIAL


def _write(path: str, text: str) -> None:
    """Whole or not at all: a temporary file beside the target, then a rename."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".pulsed-import-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
