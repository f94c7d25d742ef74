"""The hand-off file of a live upgrade: the old process's VRRP roles, for the new process.

``handoff.json`` in the state directory, written by the running pulsed just
before it starts its successor (pulsed.upgrade), read once by that successor
and removed. It says, per VRRP instance, the role and whether the VIPs are on
the interfaces, so the new process starts a master instance as MASTER with
its VIPs in place instead of starting as backup (which would move them).

It is trusted only when everything holds: it decodes (version, fields), it
was written by the process that started the reader (its pid is the reader's
parent), and it is fresh (at most ``MAX_AGE`` seconds old, and not from the
future). Anything else is logged in one line and ignored; a corrupt file is
moved aside as every state file is (pulsed.statefile). A hand-off found at an
ordinary start, not an upgrade, is stale by definition: it is removed with
one line and never read.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import msgspec
import structlog

from pulsed.statefile import check_version, load_json_state, write_atomic

log = structlog.get_logger(__name__)

FILE_NAME = "handoff.json"
FILE_VERSION = 1
# Seconds a hand-off stays usable: the new process reads it right after it
# starts (before it parses the config), well within this.
MAX_AGE = 5.0
# Allowed clock difference the other way (a written_at slightly ahead of now).
FUTURE_SLACK = 1.0


class InstanceRole(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    role: Literal["master", "backup", "fault", "init"]
    vips_held: bool


class HandOff(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    version: int = FILE_VERSION
    written_at: float  # wall clock, seconds since the epoch
    pid: int  # the process that wrote it
    instances: dict[str, InstanceRole]

    def adopt(self) -> dict[str, str]:
        """Instance name -> "master" | "backup" for the node's ``start(adopt=...)``: master
        only where the VIPs are on the interfaces; fault and init instances start as usual."""
        out: dict[str, str] = {}
        for name, inst in self.instances.items():
            if inst.role == "master" and inst.vips_held:
                out[name] = "master"
            elif inst.role == "backup":
                out[name] = "backup"
        return out


def handoff_path(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / FILE_NAME


def decode_handoff(data: bytes) -> HandOff:
    check_version(data, FILE_VERSION)
    return msgspec.json.decode(data, type=HandOff)


def write_handoff(
    state_dir: str | os.PathLike[str],
    instances: Mapping[str, InstanceRole],
    *,
    now: float | None = None,
    pid: int | None = None,
) -> Path:
    """Write the hand-off atomically; its path. OSError if it cannot be written."""
    doc = HandOff(
        written_at=time.time() if now is None else now,
        pid=os.getpid() if pid is None else pid,
        instances=dict(instances),
    )
    path = handoff_path(state_dir)
    write_atomic(path, msgspec.json.encode(doc) + b"\n")
    return path


def take_handoff(
    path: str | os.PathLike[str],
    *,
    writer: int,
    now: float | None = None,
    max_age: float = MAX_AGE,
) -> tuple[HandOff | None, str]:
    """Read and remove the hand-off at ``path``: (the hand-off, "") when it can be trusted,
    else (None, why not). ``writer`` is the pid that must have written it (the parent).

    A corrupt file is moved aside and logged by pulsed.statefile; the other
    refusals are for the caller to log (one line, with the reason returned).
    """
    path = Path(path)
    doc = load_json_state(path, decode_handoff, what="upgrade hand-off file")
    if doc is None:  # missing, or corrupt (then moved aside and logged)
        return None, f"no usable hand-off file {path}"
    path.unlink(missing_ok=True)  # read once: never trusted a second time
    now = time.time() if now is None else now
    age = now - doc.written_at
    if doc.pid != writer:
        return None, f"the hand-off was written by pid {doc.pid}, not by pid {writer}"
    if age > max_age:
        return None, f"the hand-off is {age:.1f}s old (at most {max_age:g}s)"
    if age < -FUTURE_SLACK:
        return None, f"the hand-off is dated {-age:.1f}s in the future"
    return doc, ""


def discard_stale_handoff(state_dir: str | os.PathLike[str]) -> bool:
    """At an ordinary start: remove a hand-off left by an upgrade that did not finish
    (one line). True if there was one."""
    path = handoff_path(state_dir)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("upgrade.handoff_stale", file=str(path), error=exc.strerror or str(exc))
        return True
    log.warning(
        "upgrade.handoff_stale", file=str(path), action="removed, not read (not an upgrade)"
    )
    return True
