"""The config file on disk: read with its digest, written atomically, its history and audit log.

``pulsed config apply|rollback`` (pulsed.config_api) write the config file
through here: the new text goes to a temporary file in the same directory,
is synced, and renamed over the old one, so a reader (a reload, an editor,
a crash) sees the old file or the new one, never half of either.

Every applied text is kept in the history directory (``NNNNNN.toml`` with
``NNNNNN.json`` beside it: when, who, what); the last ``keep`` entries stay.
Every apply and rollback appends one JSON line to ``audit.log`` there, with
the unified diff: who (the token's name and the client's address), when,
what changed. The audit log is never pruned.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pulsed.config import MAX_CONFIG_BYTES, Config, ParseCache, load_config, parse_config
from pulsed.files import FileProblem, read_file
from pulsed.readmodel import ConfigSource

HISTORY_DIR = "config-history"
AUDIT_LOG = "audit.log"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_source(path: str | Path) -> ConfigSource:
    """The file as it is now (an empty ConfigSource when it cannot be read as text)."""
    try:
        data = read_file(path, what="config file", max_bytes=MAX_CONFIG_BYTES)
        return ConfigSource(data.decode("utf-8"), digest(data))
    except (FileProblem, UnicodeDecodeError):
        return ConfigSource()


def load_with_source(
    path: str | Path, cache: ParseCache | None = None
) -> tuple[Config, ConfigSource]:
    """``load_config``, and the very text it validated (read once, so the digest is
    of what runs). ConfigError as from load_config."""
    source = read_source(path)
    if not source.digest:
        return load_config(path, cache), ConfigSource()  # load_config says what is wrong
    return parse_config(source.text, str(path), cache), source


def unified_diff(old: str, new: str, old_name: str, new_name: str) -> str:
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True), old_name, new_name
        )
    )


def write_atomically(path: Path, text: str, new_mode: int = 0o644) -> None:
    """Replace ``path`` with ``text``: same mode and owner as the old file (``new_mode``
    when there is none), synced, renamed into place, the directory synced. OSError
    when it cannot be done (the old file is then untouched)."""
    data = text.encode("utf-8")
    try:
        old = path.stat()
        mode, owner = old.st_mode & 0o7777, (old.st_uid, old.st_gid)
    except FileNotFoundError:
        mode, owner = new_mode, None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            if owner is not None and owner != (os.geteuid(), os.getegid()):
                os.fchown(f.fileno(), *owner)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    id: int
    time: float
    action: str  # "loaded", "apply" or "rollback to N"
    who: str
    digest: str


class ConfigHistory:
    """The last ``keep`` applied configs and the audit log, in ``directory``."""

    def __init__(self, directory: str | Path, keep: int) -> None:
        self.directory = Path(directory)
        self.keep = keep

    def entries(self) -> list[HistoryEntry]:
        """Newest first; unreadable entries are left out."""
        found = []
        try:
            names = sorted(self.directory.glob("[0-9]*.json"), reverse=True)
        except OSError:
            return []
        for meta in names:
            try:
                raw = json.loads(meta.read_text(encoding="utf-8"))
                found.append(HistoryEntry(**raw))
            except (OSError, ValueError, TypeError):
                continue
        return found

    def text(self, entry_id: int) -> str | None:
        try:
            return self._path(entry_id, ".toml").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    def save(self, text: str, action: str, who: str) -> HistoryEntry:
        """Keep ``text`` as the newest entry (and drop those beyond ``keep``)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        entries = self.entries()
        entry = HistoryEntry(
            id=(entries[0].id + 1) if entries else 1,
            time=time.time(),
            action=action,
            who=who,
            digest=digest(text.encode("utf-8")),
        )
        write_atomically(self._path(entry.id, ".toml"), text)
        write_atomically(self._path(entry.id, ".json"), json.dumps(asdict(entry)) + "\n")
        for old in entries[self.keep - 1 :]:
            for suffix in (".toml", ".json"):
                with contextlib.suppress(OSError):
                    self._path(old.id, suffix).unlink()
        return entry

    def audit(self, record: dict[str, Any]) -> None:
        """Append one line to the audit log (synced: an apply is never unrecorded)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        line = json.dumps({"time": time.time(), **record}, sort_keys=True) + "\n"
        fd = os.open(
            self.directory / AUDIT_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def audit_records(self, limit: int = 50) -> list[dict[str, Any]]:
        """The last ``limit`` audit records, newest first."""
        try:
            lines = (self.directory / AUDIT_LOG).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return []
        records = []
        for line in reversed(lines[-limit:]):
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        return records

    def _path(self, entry_id: int, suffix: str) -> Path:
        return self.directory / f"{entry_id:06d}{suffix}"
