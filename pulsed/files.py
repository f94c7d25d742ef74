"""Reading the files a config points at: safely, without blocking, with one-line errors.

Every file pulsed reads on an operator's say-so (the config itself, the API
token, the VRRP key, CA and client certificates, state files) goes through
``read_file``: it opens without blocking (a FIFO or a device is refused, never
waited on), checks the opened descriptor (not the path, so a swap between
check and read changes nothing), caps the size, and for secrets refuses a
file that others may read, as ssh does for private keys.

``check_file`` and ``check_executable`` are the same checks for files that are
only named in the config and read or run later (certificates, exec commands),
so ``check-config`` refuses what would fail at run time.
"""

from __future__ import annotations

import os
import shutil
import stat

# Most bytes of a secret (token, key): they are a few dozen bytes.
MAX_SECRET_BYTES = 64 * 1024
# Most bytes of a config file: 10,000 services take about 3 MiB.
MAX_CONFIG_BYTES = 64 * 1024 * 1024
# Group and others: any permission bit there makes a secret too open (ssh's rule).
_OPEN_TO_OTHERS = 0o077


class FileProblem(ValueError):
    """A file that cannot be used; the message is one line naming the file and why.

    ``reason`` is the why alone, for callers that name the file themselves.
    """

    def __init__(self, what: str, path: str, reason: str) -> None:
        super().__init__(f"{what} {path}: {reason}" if path else f"{what}: {reason}")
        self.reason = reason


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _check_stat(path: str, st: os.stat_result, what: str, secret: bool, max_bytes: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise FileProblem(what, path, f"is {_kind(st.st_mode)}, not a regular file")
    if secret and st.st_mode & _OPEN_TO_OTHERS:
        raise FileProblem(
            what,
            path,
            f"is open to others (mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}",
        )
    if st.st_size > max_bytes:
        raise FileProblem(what, path, f"is {st.st_size} bytes, more than {max_bytes}")


def read_file(
    path: str | os.PathLike[str],
    *,
    what: str = "file",
    secret: bool = False,
    max_bytes: int = MAX_SECRET_BYTES,
) -> bytes:
    """The bytes of ``path``; FileProblem (one line) if it is missing, unreadable,
    not a regular file, too large, or (``secret``) readable by others."""
    text = os.fspath(path)
    if not text:
        raise FileProblem(what, "", "no file named")
    if "\0" in text:  # os.open would raise ValueError, not OSError
        raise FileProblem(
            what, text.replace("\0", "\\0"), "a file name cannot hold a NUL character"
        )
    try:
        fd = os.open(text, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise FileProblem(what, text, f"cannot read: {_strerror(exc)}") from None
    try:
        _check_stat(text, os.fstat(fd), what, secret, max_bytes)
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise FileProblem(what, text, f"cannot read: {_strerror(exc)}") from None
    finally:
        os.close(fd)
    if size > max_bytes:  # grew after the stat
        raise FileProblem(what, text, f"is more than {max_bytes} bytes")
    return b"".join(chunks)


def check_file(
    path: str, *, what: str = "file", secret: bool = False, max_bytes: int = MAX_SECRET_BYTES
) -> str | None:
    """Why ``path`` cannot be read later as ``read_file`` would, or None if it can."""
    try:
        read_file(path, what=what, secret=secret, max_bytes=max_bytes)
    except FileProblem as exc:
        return str(exc)
    return None


def check_executable(command: str, *, what: str = "command") -> str | None:
    """Why ``command`` (a path, or a name looked up in PATH) cannot be run, or None."""
    if not command:
        return f"{what}: no program named"
    if "\0" in command:  # os.stat would raise ValueError, not OSError
        return f"{what}: a file name cannot hold a NUL character"
    found = shutil.which(command) if os.sep not in command else command
    if found is None:
        return f"{what} {command} is not found in PATH ({os.environ.get('PATH', '')})"
    try:
        st = os.stat(found)
    except OSError as exc:
        return f"{what} {found}: {_strerror(exc)}"
    if not stat.S_ISREG(st.st_mode):
        return f"{what} {found} is {_kind(st.st_mode)}, not a regular file"
    if not os.access(found, os.X_OK):
        return f"{what} {found} is not executable"
    return None


def _strerror(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
