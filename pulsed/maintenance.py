"""The maintenance directory (ldirectord's ``maintenancedir``): files that drain servers.

An entry in ``[checks] maintenance_dir`` named after a real server puts it
into maintenance: weight 0 and drained, as an admin ``drain`` (existing
connections go on, no new ones), whatever its health, until the entry is
removed. A name matches as:

- ``10.0.0.5:80`` or ``[2001:db8::5]:80``: that address and port, in every service;
- ``10.0.0.5`` or ``2001:db8::5``: that address, every port;
- anything else: the real servers whose ``name`` it is.

Names starting with "." are ignored (editors' and rsync's temporary files).
The directory is read again on every reconcile pass (level-triggered: what
the files say now is what holds, so a missed event cannot leave a server
behind; a change shows within ``[daemon] resync_interval`` at most). A
directory that cannot be read is one warning, and the servers stay as the
last good read left them: a glitch never drains every server, nor brings
back every drained one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import structlog

from pulsed.addresses import split_host_port
from pulsed.keys import KeyIndex
from pulsed.model import RealKey, normalize_address

log = structlog.get_logger(__name__)

# Most entries read from the directory: a directory flooded by mistake must
# not stall the pass that reads it. Beyond this, the rest are ignored, with a warning.
MAX_ENTRIES = 65536


class MaintenanceDir:
    """The maintenance directory's names, read level-triggered, and the servers they hold."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._names: frozenset[str] = frozenset()
        self._failing = False
        self._truncated = False
        # The last answer of held(), for the names and the index it was built from.
        self._memo: tuple[frozenset[str], KeyIndex | None, Mapping[RealKey, str]] = (
            frozenset(),
            None,
            {},
        )

    def read(self) -> frozenset[str]:
        """The directory's names now; the last good read's when it cannot be read."""
        if self.path is None:
            return self._names
        try:
            names: set[str] = set()
            with os.scandir(self.path) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    if len(names) >= MAX_ENTRIES:
                        if not self._truncated:
                            log.warning(
                                "maintenance.too_many_entries", path=self.path, read=MAX_ENTRIES
                            )
                        self._truncated = True
                        break
                    names.add(entry.name)
                else:
                    self._truncated = False
        except OSError as exc:
            if not self._failing:
                log.warning(
                    "maintenance.unreadable",
                    path=self.path,
                    reason=(exc.strerror or type(exc).__name__).lower(),
                    kept=len(self._names),
                )
            self._failing = True
            return self._names
        if self._failing:
            log.info("maintenance.readable", path=self.path, entries=len(names))
            self._failing = False
        if names != self._names:
            self._names = frozenset(names)
        return self._names

    def held(self, index: KeyIndex) -> Mapping[RealKey, str]:
        """Each real server in maintenance now, with the reason (read() first)."""
        names = self.read()
        memo_names, memo_index, memo = self._memo
        if names == memo_names and index is memo_index:
            return memo
        held = servers_in_maintenance(names, index, self.path or "")
        self._memo = (names, index, held)
        return held


def servers_in_maintenance(names: frozenset[str], index: KeyIndex, path: str) -> dict[RealKey, str]:
    """The real servers ``names`` put into maintenance, each with its reason (pure)."""
    if not names:
        return {}
    endpoints: dict[tuple[str, int], str] = {}
    addresses: dict[str, str] = {}
    labels: dict[str, str] = {}
    for name in names:
        try:
            addresses.setdefault(normalize_address(name), name)
            continue
        except ValueError:
            pass
        try:
            endpoints.setdefault(split_host_port(name), name)
        except ValueError:
            labels[name] = name
    held: dict[RealKey, str] = {}
    for svc in index:
        for real, key in zip(svc.config.real, svc.reals, strict=True):
            dest = key[1]
            found = (
                endpoints.get((dest.address, dest.port))
                or addresses.get(dest.address)
                or (labels.get(real.name) if real.name else None)
            )
            if found is not None:
                held[key] = f"maintenance file {os.path.join(path, found)}"
    return held
