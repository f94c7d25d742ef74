"""The read model: one frozen, typed snapshot of the daemon for every reader.

The API, ``/status``, ``/metrics`` and the page read a ``Snapshot`` and
nothing else; only the daemon builds one (``Daemon.snapshot``), in one
place, from its parts. Readers never reach into the daemon's internals, so
those can change without touching them, and a test builds a real snapshot
(``Snapshot.build`` with its parts) rather than a look-alike.

A snapshot holds references to immutable values (the config, the key index,
frozen health records, the kernel table read after the last apply) plus
copies of the few mutable mappings (health, overrides), so it stays true to
the moment it was taken while the daemon goes on.
"""

from __future__ import annotations

import socket
import time
import zlib
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pulsed import __version__
from pulsed.checks.state import RealHealth
from pulsed.config import Config
from pulsed.health_history import Transition
from pulsed.keys import KeyIndex
from pulsed.model import RealKey, ServiceKey, Table
from pulsed.overrides import Override
from pulsed.pool_policy import PoolPlan
from pulsed.rates import Samples
from pulsed.reconcile import ReconcileStatus

if TYPE_CHECKING:  # the HA code (sockets, threads) is imported only when VRRP runs
    from pulsed.announce.base import BgpView
    from pulsed.checks.monitor import LocalFaults
    from pulsed.ha.status import SyncGroupStatus, VrrpStatus

NO_OVERRIDE = Override()


@dataclass(frozen=True, slots=True)
class ReloadView:
    """The last reload (or the start)."""

    generation: int = 1
    last_ok: bool = True
    last_time: float = 0.0  # wall clock of the last attempt
    last_error: str = ""
    last_changed: bool = False


class ConfigSource:
    """The config file's text as the running config was loaded from it (empty when
    not known: the file changed while it was read).

    Kept compressed: at 10,000 real servers the text is ~0.6 MB that only the
    config calls of the API read, against a 64 MiB budget for the whole daemon.
    """

    __slots__ = ("_packed", "digest")

    def __init__(self, text: str = "", digest: str = "") -> None:
        self._packed = zlib.compress(text.encode("utf-8"), 6) if text else b""
        self.digest = digest  # sha256 hex of the file's bytes

    @property
    def text(self) -> str:
        return zlib.decompress(self._packed).decode("utf-8") if self._packed else ""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConfigSource):
            return NotImplemented
        return self.digest == other.digest and self._packed == other._packed

    def __hash__(self) -> int:
        return hash(self.digest)

    def __repr__(self) -> str:
        return f"ConfigSource(digest={self.digest!r})"


NO_SOURCE = ConfigSource()
HOSTNAME = socket.gethostname()


@dataclass(frozen=True, slots=True)
class PassView:
    """One finished reconcile pass: what it wanted and what the kernel then held.

    ``kernel`` was read after the pass's writes (or, when it wrote nothing,
    at its start, which is then the same), so its weights are the kernel's
    own and never lag the ``pools`` beside them.
    """

    pools: Mapping[ServiceKey, PoolPlan] = field(default_factory=dict)
    kernel: Table = field(default_factory=Table)
    index: KeyIndex | None = None  # of the config the pass worked from
    wanted: Table = field(default_factory=Table)  # the table the pass wanted
    owned: AbstractSet[ServiceKey] = frozenset()  # the services pulsed may delete


@dataclass(frozen=True, slots=True)
class HaView:
    """VRRP as readers see it: the configured instances (and sync groups) by name,
    and the node's status of each once it runs (none before it started)."""

    configured: tuple[str, ...] = ()
    instances: tuple[VrrpStatus, ...] = ()  # config order
    groups: tuple[SyncGroupStatus, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The daemon's state at one moment, for every reader."""

    config: Config
    index: KeyIndex
    config_path: str
    started_at: float
    taken_at: float  # wall clock
    health: Mapping[RealKey, RealHealth]
    overrides: Mapping[RealKey, Override]
    last_pass: PassView
    reconcile: ReconcileStatus
    reload: ReloadView
    ha: HaView
    probes: LocalFaults | None = None
    bgp: BgpView | None = None  # route health injection, when [bgp] is configured
    history: Mapping[RealKey, tuple[Transition, ...]] = field(default_factory=dict)
    rates: Samples = field(default_factory=dict)  # two readings of each service's counters
    source: ConfigSource = NO_SOURCE
    # Servers whose probe also feeds others: every server it feeds (one tuple per probe).
    shared_probes: Mapping[RealKey, tuple[RealKey, ...]] = field(default_factory=dict)
    # Servers in maintenance by a file in [checks] maintenance_dir, with the reason.
    maintenance: Mapping[RealKey, str] = field(default_factory=dict)
    version: str = __version__
    hostname: str = HOSTNAME

    @classmethod
    def build(
        cls,
        config: Config,
        *,
        index: KeyIndex | None = None,
        config_path: str = "",
        started_at: float = 0.0,
        taken_at: float | None = None,
        health: Mapping[RealKey, RealHealth] | None = None,
        overrides: Mapping[RealKey, Override] | None = None,
        last_pass: PassView | None = None,
        reconcile: ReconcileStatus | None = None,
        reload: ReloadView | None = None,
        ha: HaView | None = None,
        probes: LocalFaults | None = None,
        bgp: BgpView | None = None,
        history: Mapping[RealKey, tuple[Transition, ...]] | None = None,
        rates: Samples | None = None,
        source: ConfigSource | None = None,
        shared_probes: Mapping[RealKey, tuple[RealKey, ...]] | None = None,
        maintenance: Mapping[RealKey, str] | None = None,
    ) -> Snapshot:
        """A snapshot from its parts; what is left out is empty (nothing known yet)."""
        return cls(
            config=config,
            index=index if index is not None and index.config is config else KeyIndex(config),
            config_path=config_path,
            started_at=started_at,
            taken_at=time.time() if taken_at is None else taken_at,
            health=health if health is not None else {},
            overrides=overrides if overrides is not None else {},
            last_pass=last_pass if last_pass is not None else PassView(),
            reconcile=reconcile if reconcile is not None else ReconcileStatus(),
            reload=reload if reload is not None else ReloadView(),
            ha=ha if ha is not None else HaView(tuple(v.name for v in config.vrrp)),
            probes=probes,
            bgp=bgp,
            history=history if history is not None else {},
            rates=rates if rates is not None else {},
            source=source if source is not None else NO_SOURCE,
            shared_probes=shared_probes if shared_probes is not None else {},
            maintenance=maintenance if maintenance is not None else {},
        )

    @property
    def pools(self) -> Mapping[ServiceKey, PoolPlan]:
        return self.last_pass.pools

    @property
    def kernel(self) -> Table:
        return self.last_pass.kernel

    def override(self, key: RealKey) -> Override:
        return self.overrides.get(key, NO_OVERRIDE)
