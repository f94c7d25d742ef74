"""One command started through the reaper, with the first bytes of one of its outputs.

Exec checks read a command's stdout (its weight report), notify hooks its
stderr (the first line of a failure): both need the same thing. The pipe is
read as the command writes, so a chatty command never blocks on a full pipe,
and only the first ``MAX_KEPT`` bytes are kept, so it never fills pulsed's
memory. ``end()`` kills what is left of the command's group, reaps it
(pulsed.checks.reaper) and lets go of the pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
from typing import Literal

from pulsed.checks.base import local_fault
from pulsed.checks.reaper import Spawned, reaper, watch_exit

MAX_KEPT = 4096
_READ_SIZE = 65536
# What a chatty helper still writing after the command exited may add to the
# final drain of the pipe: it is read and dropped, never waited for.
_MAX_DRAIN = 4 * _READ_SIZE


class PipedRun:
    """One running command: its process, its exit, and the first bytes it wrote
    to ``stream`` (the other one goes to /dev/null)."""

    def __init__(
        self, argv: list[str], env: dict[str, str], stream: Literal["stdout", "stderr"]
    ) -> None:
        self._loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()  # both close-on-exec; Popen dups the write end
        try:
            if stream == "stdout":
                self.spawned: Spawned = reaper.spawn(argv, env, write_fd)
            else:
                self.spawned = reaper.spawn(argv, env, subprocess.DEVNULL, stderr=write_fd)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self._fd = read_fd
        self._kept = bytearray()
        os.set_blocking(read_fd, False)
        self._loop.add_reader(read_fd, self._read, _READ_SIZE)
        self._reading = True
        self.exited = watch_exit(self.spawned.pid)

    @property
    def output(self) -> bytes:
        return bytes(self._kept)

    def _read(self, budget: int) -> None:
        """Read up to ``budget`` bytes of what is there; keep the first MAX_KEPT."""
        while budget > 0:
            try:
                chunk = os.read(self._fd, min(budget, _READ_SIZE))
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self._stop_reading()
                return
            budget -= len(chunk)
            room = MAX_KEPT - len(self._kept)
            if room > 0:
                self._kept += chunk[:room]

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    async def end(self) -> int:
        """Kill what is left of the group, reap, let go of the pipe; the exit status."""
        try:
            code = await reaper.end(self.spawned, self.exited)
        finally:
            self.exited.cancel()  # a no-op once it resolved; else frees its pidfd
            if self._reading:
                self._read(_MAX_DRAIN)  # what the command wrote before it exited
            self._stop_reading()
            with contextlib.suppress(OSError):
                os.close(self._fd)
        return code


def spawn_problem(exc: BaseException) -> tuple[str, str | None]:
    """Why a command could not be started, in a few words, and the router's
    fault it was (pulsed.checks.base.local_fault) or None when it is the
    command's: EACCES is the command's (check-config refuses a file that
    cannot run), as is an argument the kernel refuses (a NUL byte)."""
    if isinstance(exc, OSError):
        text = (exc.strerror or errno.errorcode.get(exc.errno or 0, "error")).lower()
        return text, None if exc.errno == errno.EACCES else local_fault(exc)
    if isinstance(exc, MemoryError):
        return "out of memory", local_fault(exc)
    return str(exc) or type(exc).__name__, local_fault(exc)
