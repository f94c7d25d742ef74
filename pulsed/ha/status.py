"""What readers see of the VRRP node: one VrrpStatus per instance, one SyncGroupStatus per
sync group. Plain frozen values; a reader never looks at the config."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VrrpStatus:
    """A snapshot of one VRRP instance, all a reader needs."""

    interface: str
    vrid: int
    state: str
    priority: int
    effective_priority: int
    master: str | None
    advert_interval: float
    master_advert_interval: float
    vips: list[str]
    vips_held: bool
    adverts_sent: int
    adverts_received: int
    priority_zero_sent: int
    priority_zero_received: int
    interval_mismatches: int
    drops: dict[str, int]
    transitions: int
    last_transition: float  # wall clock, seconds since the epoch
    last_transition_reason: str
    faults: list[str]
    sync_daemon: str | None = None  # "master", "backup" or None when not running
    probes_sent: int = 0  # authenticated challenges/answers (see pulsed/ha/auth.py)
    probes_received: int = 0
    name: str = ""
    version: int = 3
    # Adverts of the other VRRP version on our VRID, and the last warning about one.
    version_mismatches: int = 0
    version_mismatch: str | None = None
    # The priority in the current master's last advert, as seen by a backup.
    master_priority: int | None = None


@dataclass(frozen=True)
class SyncGroupStatus:
    name: str
    state: str  # "master", "backup", "fault", "init" or "transition"
    instances: tuple[str, ...]
