"""Whether this director is drained, kept in the state directory across restarts.

``pulsed director drain`` is an operator's decision, like a server's drain
(pulsed.overrides): a restart, a crash or a live upgrade must not announce
the VIPs again behind the operator's back. ``director.json`` is replaced
atomically on every change. A file that cannot be used is moved aside (as
every state file, pulsed.statefile) and the director starts **drained**:
announcing is what moves traffic, so the doubt goes to not attracting it;
the log line says how to announce again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import msgspec
import structlog

from pulsed.statefile import StateProblem, check_version, load_json_state, write_atomic

log = structlog.get_logger(__name__)

FILE_NAME = "director.json"
FILE_VERSION = 1
UpdatedAt = Annotated[float, msgspec.Meta(ge=0, le=2.0**53)]


class DirectorState(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    version: int = FILE_VERSION
    drained: bool
    updated_at: UpdatedAt = 0.0


def decode_director_state(data: bytes) -> DirectorState:
    check_version(data, FILE_VERSION)
    state = msgspec.json.decode(data, type=DirectorState)
    if state.version != FILE_VERSION:
        raise StateProblem(f"version {state.version} is not {FILE_VERSION}")
    return state


def load_drained(state_dir: str | Path) -> bool:
    """True when the director was left drained (or its record is unusable)."""
    path = Path(state_dir) / FILE_NAME
    if not path.exists() and not path.is_symlink():
        return False
    state = load_json_state(path, decode_director_state, what="director state file")
    if state is None:
        log.error(
            "bgp.drain_state_unusable",
            file=str(path),
            action="starting drained: run `pulsed director undrain` to announce",
        )
        return True
    return state.drained


def save_drained(state_dir: str | Path, drained: bool) -> None:
    """Record the drain; OSError if it cannot be written."""
    state = DirectorState(drained=drained, updated_at=time.time())
    write_atomic(Path(state_dir) / FILE_NAME, msgspec.json.encode(state) + b"\n")
