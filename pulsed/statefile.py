"""The files pulsed keeps in its state directory: written atomically, trusted only after checks.

A state file outlives the process that wrote it, so the next start may find it
half-written by a crash on an old kernel, edited by hand, or replaced by
something that is not a file at all. ``load_json_state`` reads it with
``read_file`` (non-blocking, regular files only, size cap) and a strict
decoder; on any problem the file is moved aside to
``<name>.corrupt-<UTC time>`` for a human to look at, one error line says what
was wrong and where the file went, and the caller starts with empty state.
Starting empty is safe: overrides are an operator's extra wish, and the set of
owned services is rebuilt from the config.

``write_atomic`` never leaves half a file: a temporary file in the same
directory is written and fsynced, renamed over the old one, and the directory
is fsynced so the rename itself survives a power cut.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import msgspec
import structlog

from pulsed.files import FileProblem, read_file

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Most bytes of a state file. 10,000 services with 10 overridden servers each
# take about 12 MiB of overrides.json; anything far larger is not ours.
MAX_STATE_BYTES = 64 * 1024 * 1024


class StateProblem(ValueError):
    """A state file's content that pulsed will not use; the message is one line."""


class _Header(msgspec.Struct):
    version: int | None = None


def check_version(data: bytes, known: int, *, missing: int | None = None) -> None:
    """Refuse a state file of a version this pulsed does not read.

    ``missing`` is the version a file without a ``version`` field has (files
    written before versions were added), or None if such a file is refused.
    Checked before the full schema so the error names the version, not a field.
    """
    version = msgspec.json.decode(data, type=_Header).version
    if version is None:
        version = missing
        if version is None:
            raise StateProblem("no version field")
    if version != known:
        raise StateProblem(f"version {version} is not one this pulsed reads ({known})")


def load_json_state(
    path: str | os.PathLike[str],
    decode: Callable[[bytes], T],
    *,
    what: str = "state file",
    read_only: bool = False,
) -> T | None:
    """The decoded content of ``path``; None if it is missing or unusable.

    ``decode`` turns the bytes into a value, or raises ValueError or
    TypeError (msgspec's errors are ValueErrors) naming the problem. An
    unusable file is moved aside and logged at error in one line; nothing
    is raised. ``read_only`` (a reader that is not the daemon, such as
    ``pulsed plan``): the file is logged but left where it is.
    """
    path = Path(path)
    try:
        os.lstat(path)
    except FileNotFoundError:
        return None  # never written: empty state
    except OSError as exc:
        # Nothing there can be read or moved (e.g. the state directory is a
        # file, or not searchable): say so once and start empty.
        log.error(
            "state.unreadable",
            file=str(path),
            what=what,
            problem=_strerror(exc),
            action="starting with empty state",
        )
        return None
    try:
        data = read_file(path, what=what, max_bytes=MAX_STATE_BYTES)
        return decode(data)
    except FileProblem as exc:
        _reject(path, what, str(exc), read_only)
    except (ValueError, TypeError, RecursionError) as exc:
        # msgspec raises RecursionError for deep nesting, even in a value it skips.
        _reject(path, what, _one_line(exc), read_only)
    return None


def _reject(path: Path, what: str, problem: str, read_only: bool = False) -> None:
    """Move an unusable state file aside and log it at error (one line)."""
    if read_only:
        log.error("state.corrupt", file=str(path), what=what, problem=problem, moved_to=None)
        return
    try:
        aside = move_aside(path)
    except OSError as exc:
        log.error(
            "state.corrupt",
            file=str(path),
            what=what,
            problem=problem,
            moved_to=None,
            move_error=_strerror(exc),
            action="starting with empty state",
        )
        return
    log.error(
        "state.corrupt",
        file=str(path),
        what=what,
        problem=problem,
        moved_to=str(aside),
        action="starting with empty state",
    )


def move_aside(path: str | os.PathLike[str], now: float | None = None) -> Path:
    """Rename ``path`` to ``<name>.corrupt-<UTC time>`` without replacing an earlier one.

    Returns the new path; raises OSError if the file cannot be moved.
    """
    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    base = f"{path.name}.corrupt-{stamp}"
    is_dir = stat.S_ISDIR(os.lstat(path).st_mode)
    for n in range(1000):
        aside = path.with_name(base if n == 0 else f"{base}.{n}")
        try:
            _rename_no_replace(path, aside, is_dir)
        except FileExistsError:
            continue
        return aside
    raise OSError(errno.EEXIST, f"1000 files named {base}* already exist")


def _rename_no_replace(src: Path, dst: Path, is_dir: bool) -> None:
    # os.rename replaces an existing file, so a file (or FIFO, socket...) is
    # hard-linked to its new name, which fails with EEXIST instead, then
    # unlinked. A directory cannot be linked; renaming it can only replace an
    # empty directory, which holds nothing to lose.
    if not is_dir:
        try:
            os.link(src, dst, follow_symlinks=False)
        except FileExistsError:
            raise
        except OSError:
            pass  # no hard links here (a filesystem or a protected_hardlinks rule): rename
        else:
            os.unlink(src)
            return
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "exists", str(dst))
    os.rename(src, dst)


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data``, mode 0600: all of it or none of it, durably.

    Raises OSError; the old file is then untouched and no temporary is left.
    """
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkstemp creates the file with mode 0600, whatever the umask.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or a new file in ``path`` durable."""
    dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def check_state_dir(path: str | os.PathLike[str]) -> str | None:
    """Why the state directory cannot hold pulsed's state files, or None if it can.

    Creates the directory (mode 0700) if it is missing, and proves it is
    writable by creating and removing a file in it: only a real write meets
    every reason one can fail (a read-only mount, an immutable flag, a
    sandbox), where ``os.access`` says yes to root. A directory others may
    write to is refused. Meant for start-up, before the first kernel write.
    """
    path = Path(path)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        return f"state directory {path} exists and is not a directory"
    except OSError as exc:
        return f"cannot create state directory {path}: {_strerror(exc)}"
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".pulsed-write-check.")
    except NotADirectoryError:
        return f"state directory {path} exists and is not a directory"
    except OSError as exc:
        return f"state directory {path} is not writable: {_strerror(exc)}"
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError as exc:
        return f"state directory {path}: cannot remove a file: {_strerror(exc)}"
    # Whoever can write here can plant an overrides.json that disables every
    # server at the next start: refuse it, as ssh refuses an open ~/.ssh.
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o022:
        return (
            f"state directory {path} is writable by others (mode {mode:04o}); run: chmod 700 {path}"
        )
    return None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _strerror(exc: OSError) -> str:
    return (exc.strerror or str(exc) or type(exc).__name__).lower()
