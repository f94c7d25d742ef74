"""Network namespace helpers: run a command in one, or move one thread into one.

``setns(CLONE_NEWNET)`` changes only the calling thread, so a thread can open
its sockets inside a namespace while the rest of the process stays outside.
Python 3.11 has no ``os.setns``, hence ctypes.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from collections.abc import Sequence

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(name: str) -> None:
    """Move the calling thread into network namespace ``name`` (made by ``ip netns add``)."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def netns_exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


def ns_argv(ns: str | None, argv: Sequence[str]) -> list[str]:
    """``argv`` prefixed so that it runs inside namespace ``ns`` (None: here)."""
    return ["ip", "netns", "exec", ns, *argv] if ns else list(argv)


def run(
    argv: Sequence[str], ns: str | None = None, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command (inside ``ns``), capture its output, raise a one-line error on failure."""
    full = ns_argv(ns, argv)
    proc = subprocess.run(full, capture_output=True, text=True, check=False, input=input)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        reason = detail[-1] if detail else f"exit {proc.returncode}"
        raise LabError(f"`{' '.join(full)}` failed: {reason}")
    return proc


class LabError(Exception):
    """A lab step that could not be carried out; the message is one line for the user."""
