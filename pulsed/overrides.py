"""Admin overrides (drain, disable, weight), persisted in the state directory.

Overrides are runtime state, not config: they are keyed by the real server's
stable identity and survive reloads and restarts. The file is replaced
atomically (write, fsync, rename) so a crash never leaves half a file, and is
checked field by field on load (modes, weights in the kernel's range, keys):
a damaged or hand-broken file is moved aside and pulsed starts without
overrides (see pulsed.statefile).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from pulsed.keys import parse_real_key, real_key_text
from pulsed.model import RealKey
from pulsed.statefile import StateProblem, check_version, load_json_state, write_atomic

Mode = Literal["enabled", "drain", "disable"]
MODES: tuple[Mode, ...] = ("enabled", "drain", "disable")
MAX_WEIGHT = 65535  # the kernel's range, as config.Weight
FILE_VERSION = 1


@dataclass(frozen=True, slots=True)
class Override:
    """What an operator asked for one real server.

    ``drain``: weight 0, existing connections continue.
    ``disable``: removed from the table.
    ``weight``: replaces the configured weight (health still applies).
    """

    mode: Mode = "enabled"
    weight: int | None = None
    updated_at: float = 0.0

    @property
    def is_default(self) -> bool:
        return self.mode == "enabled" and self.weight is None


class OverrideStore:
    """Overrides in memory, mirrored to ``overrides.json`` in the state dir."""

    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / "overrides.json"
        self._overrides: dict[RealKey, Override] = {}

    def load(self, *, read_only: bool = False) -> None:
        """Read the file if present. A damaged file is logged, not used, and moved
        aside unless ``read_only`` (readers other than the daemon leave it be)."""
        self._overrides = (
            load_json_state(self.path, decode_overrides, what="overrides file", read_only=read_only)
            or {}
        )

    def all(self) -> dict[RealKey, Override]:
        return dict(self._overrides)

    def get(self, key: RealKey) -> Override:
        return self._overrides.get(key, Override())

    def set_mode(self, key: RealKey, mode: Mode) -> Override:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        return self._put(key, replace(self.get(key), mode=mode, updated_at=time.time()))

    def set_weight(self, key: RealKey, weight: int | None) -> Override:
        # The API checks this too; here it guards the file and the kernel.
        if weight is not None and (
            isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= MAX_WEIGHT
        ):
            raise ValueError(f"weight {weight!r} is not an integer between 0 and {MAX_WEIGHT}")
        return self._put(key, replace(self.get(key), weight=weight, updated_at=time.time()))

    def _put(self, key: RealKey, override: Override) -> Override:
        updated = dict(self._overrides)
        if override.is_default:
            updated.pop(key, None)
        else:
            updated[key] = override
        self._write(updated)  # persist first: an override that is not on disk is not made
        self._overrides = updated
        return override

    def _write(self, overrides: dict[RealKey, Override]) -> None:
        write_atomic(self.path, encode_overrides(overrides))


# The file, as msgspec checks it. Every field is typed and ranged: a weight the
# kernel would refuse with ERANGE never gets past here.
Weight = Annotated[int, msgspec.Meta(ge=0, le=MAX_WEIGHT)]
UpdatedAt = Annotated[float, msgspec.Meta(ge=0, le=2.0**53)]  # finite, not before 1970


class _OverrideEntry(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    mode: Mode = "enabled"
    weight: Weight | None = None
    updated_at: UpdatedAt = 0.0


class _OverridesFile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    version: int
    # Each entry is decoded on its own, so an error names the entry's key.
    overrides: dict[str, msgspec.Raw]


def decode_overrides(data: bytes) -> dict[RealKey, Override]:
    """The overrides in an ``overrides.json``; StateProblem or msgspec's error if invalid."""
    check_version(data, FILE_VERSION)
    doc = msgspec.json.decode(data, type=_OverridesFile)
    loaded: dict[RealKey, Override] = {}
    for text, raw in doc.overrides.items():
        try:
            key = parse_real_key(text)
            entry = msgspec.json.decode(raw, type=_OverrideEntry)
        except ValueError as exc:  # msgspec's errors are ValueErrors
            raise StateProblem(f"overrides[{text!r}]: {exc}") from None
        if key in loaded:
            raise StateProblem(f"overrides[{text!r}]: the same real server as another entry")
        override = Override(entry.mode, entry.weight, entry.updated_at)
        if not override.is_default:
            loaded[key] = override
    return loaded


def encode_overrides(overrides: dict[RealKey, Override]) -> bytes:
    doc = _OverridesFile(
        version=FILE_VERSION,
        overrides={
            real_key_text(k): msgspec.Raw(
                msgspec.json.encode(
                    _OverrideEntry(mode=v.mode, weight=v.weight, updated_at=v.updated_at)
                )
            )
            for k, v in sorted(overrides.items())
        },
    )
    # Indented: operators read this file, and sometimes edit it.
    return msgspec.json.format(msgspec.json.encode(doc), indent=2) + b"\n"
