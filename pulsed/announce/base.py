"""The announcer interface and the values readers see (pulsed.readmodel's ``bgp``).

An announcer puts VIPs in front of the routing daemon and takes them away;
it never decides which (pulsed.announce.decide does). One backend exists:
FRR (pulsed.announce.frr).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from pulsed.announce.decide import VipDecision


@dataclass(frozen=True, slots=True)
class PeerView:
    """One BGP neighbour, as the routing daemon reports it."""

    address: str
    state: str  # "Established", "Active", "Connect"...
    uptime_ms: int | None = None
    prefixes_sent: int | None = None
    bfd: str = ""  # "up" / "down" / "init" / "" (no BFD session)


@dataclass(frozen=True, slots=True)
class DaemonView:
    """The routing daemon's state, read off the event loop and cached."""

    ok: bool = False
    problem: str = "not read yet"  # one line saying what to do, when not ok
    peers: tuple[PeerView, ...] = ()
    read_at: float = 0.0  # wall clock of the last read; 0: never
    took: float = 0.0  # seconds the read took


@dataclass(frozen=True, slots=True)
class AnnounceStatus:
    daemon: str  # "frr"
    interface: str
    interface_ok: bool
    problem: str  # the interface's, one line; "" when fine
    announced: tuple[str, ...]  # the VIPs on the interface now
    routing: DaemonView


class Announcer(Protocol):
    async def start(self) -> None:
        """Create what the announcements need; never raises for a missing daemon."""

    async def announce(self, vips: Collection[str]) -> None:
        """Announce exactly ``vips`` (every other VIP is withdrawn)."""

    async def stop(self, withdraw: bool) -> int | None:
        """Withdraw everything (``withdraw``), or keep the announcements for a
        successor and return the descriptor that holds them."""

    def descriptor(self) -> int:
        """The descriptor that holds the announcements (a live upgrade passes it
        on; this announcer keeps its own copy), or -1 when none is open."""

    def status(self) -> AnnounceStatus: ...


@dataclass(frozen=True, slots=True)
class BgpView:
    """Route health injection as readers see it."""

    decisions: tuple[VipDecision, ...]
    status: AnnounceStatus
    drained: bool = False
    # Active connections in this director's IPVS services on the BGP VIPs.
    active_connections: int = 0

    @property
    def idle(self) -> bool:
        """Drained and no connection left: the director can be taken away."""
        return self.drained and self.active_connections == 0
