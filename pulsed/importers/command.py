"""``pulsed import keepalived|ldirectord|piranha FILE [-o OUT]``.

Exit 0: everything was translated; 1: something was left out (listed on
stderr as ``file:line: reason``, noted in the TOML, which is still written);
2: the input (or the output file) could not be used.
"""

from __future__ import annotations

import argparse
import errno
import os
import stat
import sys
from pathlib import Path

from pulsed.config_store import write_atomically
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
    except (RecursionError, MemoryError):
        print(f"pulsed import: {args.file}: too large or nested too deeply", file=sys.stderr)
        return EXIT_UNREADABLE
    for line in imported.report.lines():
        print(line, file=sys.stderr)
    if args.output is not None:
        try:
            write_output(args.output, imported.text, args.file)
        except FileProblem as exc:
            print(f"pulsed import: {exc}", file=sys.stderr)
            return EXIT_UNREADABLE
    else:
        sys.stdout.write(imported.text)
    return EXIT_OK if imported.report.complete else EXIT_PARTIAL


def write_output(path: str, text: str, source: str) -> None:
    """Write the TOML to ``path``; FileProblem (one line) when it cannot be done.

    A regular file (or a symlink to one) is replaced whole or not at all, with
    its mode and owner kept (pulsed.config_store.write_atomically). A FIFO or
    a device (``-o /dev/stdout``) is written into, as a shell redirection
    would: renaming over it would replace the device node itself. Never the
    input file: that would lose what was imported.
    """
    if not path or "\0" in path:
        raise FileProblem("output", path.replace("\0", "\\0"), "not a usable file name")
    try:
        st: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise FileProblem("output", path, f"cannot write: {exc.strerror}") from None
    try:
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise FileProblem("output", path, "is a directory; name a file")
        if st is not None and not stat.S_ISREG(st.st_mode):
            _write_into(path, text)
            return
        if st is not None and os.path.samefile(path, source):
            raise FileProblem("output", path, "is the input file; name another file")
        # 0600 when new: a keepalived auth_pass is copied into the TOML.
        write_atomically(Path(os.path.realpath(path)), text, new_mode=0o600)
    except OSError as exc:
        raise FileProblem("output", path, f"cannot write: {exc.strerror or exc}") from None


def _write_into(path: str, text: str) -> None:
    """Write into a FIFO or device without waiting for a reader that never comes."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise FileProblem("output", path, "is a FIFO that no one reads") from None
        raise
    os.set_blocking(fd, True)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
