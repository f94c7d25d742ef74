"""Admin overrides (drain, disable, weight), persisted in the state directory.

Overrides are runtime state, not config: they are keyed by the real server's
stable identity and survive reloads and restarts. The file is replaced
atomically (write, fsync, rename) so a crash never leaves half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import structlog

from pulsed.addresses import join_host_port, split_host_port
from pulsed.model import AF_INET6, DestKey, ServiceKey

log = structlog.get_logger(__name__)

Mode = Literal["enabled", "drain", "disable"]
MODES: tuple[Mode, ...] = ("enabled", "drain", "disable")
RealKey = tuple[ServiceKey, DestKey]


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


def real_key_text(key: RealKey) -> str:
    """Stable text for a real server: ``tcp:192.0.2.1:80/10.0.0.2:80``."""
    service, dest = key
    return f"{service}/{join_host_port(dest.address, dest.port)}"


def parse_real_key(text: str) -> RealKey:
    """Inverse of real_key_text; raises ValueError naming the problem."""
    service_text, sep, dest_text = text.rpartition("/")
    if not sep:
        raise ValueError(f"{text!r}: expected SERVICE/REAL, e.g. tcp:192.0.2.1:80/10.0.0.2:80")
    address, port = split_host_port(dest_text)
    return parse_service_key(service_text), DestKey(address, port)


def parse_service_key(text: str) -> ServiceKey:
    """``tcp:192.0.2.1:80``, ``udp:[2001:db8::1]:53`` or ``fwmark:7`` (``fwmark:7/ipv6``)."""
    protocol, sep, rest = text.partition(":")
    if not sep:
        raise ValueError(f"{text!r}: expected PROTO:VIP:PORT or fwmark:N")
    if protocol == "fwmark":
        mark, _, fam = rest.partition("/")
        if not mark.isdigit():
            raise ValueError(f"{text!r}: fwmark must be a number")
        return ServiceKey.for_fwmark(int(mark), AF_INET6 if fam == "ipv6" else 2)
    if protocol not in ("tcp", "udp", "sctp"):
        raise ValueError(f"{text!r}: protocol must be tcp, udp, sctp or fwmark")
    address, port = split_host_port(rest)
    return ServiceKey.for_address(protocol, address, port)


class OverrideStore:
    """Overrides in memory, mirrored to ``overrides.json`` in the state dir."""

    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / "overrides.json"
        self._overrides: dict[RealKey, Override] = {}

    def load(self) -> None:
        """Read the file if present. A damaged file is logged and kept aside."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            loaded = {parse_real_key(k): Override(**v) for k, v in raw.get("overrides", {}).items()}
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError) as exc:
            aside = self.path.with_suffix(f".damaged.{int(time.time())}")
            log.error(
                "overrides.unreadable", path=str(self.path), error=str(exc), moved_to=str(aside)
            )
            with contextlib.suppress(OSError):
                self.path.rename(aside)
            return
        self._overrides = loaded

    def all(self) -> dict[RealKey, Override]:
        return dict(self._overrides)

    def get(self, key: RealKey) -> Override:
        return self._overrides.get(key, Override())

    def set_mode(self, key: RealKey, mode: Mode) -> Override:
        return self._put(key, replace(self.get(key), mode=mode, updated_at=time.time()))

    def set_weight(self, key: RealKey, weight: int | None) -> Override:
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
        payload = {
            "version": 1,
            "overrides": {real_key_text(k): asdict(v) for k, v in sorted(overrides.items())},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".overrides.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(payload, f, indent=2, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
