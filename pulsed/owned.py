"""The services pulsed has put in the kernel, remembered across restarts.

A service dropped from the config while pulsed was down is still cleaned up at
the next start, and a service someone else created is never touched. The file
is ``owned-services.json`` in the state directory, written atomically and
checked on load like every state file (see pulsed.statefile): a damaged one is
moved aside, and the daemon starts owning only what its config names.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import structlog

from pulsed.keys import parse_service_key
from pulsed.model import ServiceKey
from pulsed.statefile import StateProblem, check_version, load_json_state, write_atomic

log = structlog.get_logger(__name__)

FILE_VERSION = 1


class _OwnedFile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    version: int = FILE_VERSION
    services: list[str]


def decode_owned(data: bytes) -> set[ServiceKey]:
    """The keys in an ``owned-services.json``; StateProblem or msgspec's error if invalid."""
    # Files written before the version field was added are version 1.
    check_version(data, FILE_VERSION, missing=FILE_VERSION)
    doc = msgspec.json.decode(data, type=_OwnedFile)
    keys: set[ServiceKey] = set()
    for i, text in enumerate(doc.services):
        try:
            keys.add(parse_service_key(text))
        except ValueError as exc:
            raise StateProblem(f"services[{i}]: {exc}") from None
    return keys


def encode_owned(services: set[ServiceKey]) -> bytes:
    doc = _OwnedFile(version=FILE_VERSION, services=sorted(str(k) for k in services))
    return msgspec.json.format(msgspec.json.encode(doc), indent=2) + b"\n"


class OwnedServices:
    """``owned-services.json`` in the state directory."""

    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / "owned-services.json"

    def load(self) -> set[ServiceKey]:
        """The services remembered; empty if none, or if the file was unusable (moved aside)."""
        return load_json_state(self.path, decode_owned, what="owned services file") or set()

    def save(self, services: set[ServiceKey]) -> bool:
        """Write the set; False (and one error line) if the state directory refuses it.

        Not fatal: the kernel table stays right, only a restart after a config
        change would then leave a dropped service behind.
        """
        try:
            write_atomic(self.path, encode_owned(services))
        except OSError as exc:
            log.error(
                "state.write_failed",
                file=str(self.path),
                error=(exc.strerror or str(exc)).lower(),
            )
            return False
        return True
