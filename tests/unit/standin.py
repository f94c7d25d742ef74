"""A stand-in daemon made of the real parts (config, overrides, wanted table).

The API, /status and /metrics read only the daemon's ``snapshot()`` (a
pulsed.readmodel.Snapshot) and call its few admin methods; this stand-in
builds a real Snapshot from the real config loader, KeyIndex, OverrideStore,
wanted_table and RealHealth, without starting anything.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from pulsed.checks.base import ProbeResult
from pulsed.checks.monitor import LocalFaults
from pulsed.checks.state import RealHealth, apply_result, initial_health
from pulsed.config import Config, parse_config
from pulsed.desired import Wanted, wanted_table
from pulsed.ha.node import VrrpStatus
from pulsed.keys import KeyIndex
from pulsed.model import RealKey, Service, Stats, Table
from pulsed.overrides import Mode, Override, OverrideStore
from pulsed.readmodel import ConfigSource, HaView, PassView, ReloadView, Snapshot
from pulsed.reconcile import ReconcileStatus


def config_text(services: int, reals: int, state_dir: Path) -> str:
    lines = [f'[daemon]\nstate_dir = "{state_dir}"\n']
    for s in range(services):
        a, b = divmod(s, 250)
        lines.append(
            f'[[service]]\nname = "svc{s}"\nvip = "192.0.2.{b + 1}"\nport = {8000 + a}\n'
            '[service.check]\ntype = "tcp"\n'
        )
        for r in range(reals):
            c, e = divmod(s * reals + r, 250)
            lines.append(f'[[service.real]]\naddress = "10.{c // 250}.{c % 250}.{e + 1}:80"\n')
    return "\n".join(lines)


class FakeMonitor:
    def __init__(self, health: dict) -> None:
        self._health = health

    def health(self):
        return dict(self._health)

    def local_faults(self) -> LocalFaults | None:
        return None  # a real HealthMonitor counts them


class DaemonStandIn:
    """What pulsed.api.Daemon asks for, from real parts; ``snapshot()`` is a real Snapshot."""

    def __init__(
        self,
        config: Config,
        health: dict[RealKey, RealHealth],
        overrides: OverrideStore,
        wanted: Wanted,
        actual: Table,
        config_path: Path,
        now: float,
    ) -> None:
        self._config = config
        self._index = KeyIndex(config)
        self.config_path = config_path
        self.reload_status = ReloadView(generation=1, last_time=now)
        self.monitor = FakeMonitor(health)
        self.overrides = overrides
        self.wanted = wanted
        self.actual = actual
        self.reconcile = ReconcileStatus()
        self.vrrp_status: VrrpStatus | None = None
        self.started_at = now
        self.pass_observers: list = []
        self.probe_observers: list = []
        self.health_observers: list = []
        self.source: ConfigSource | None = None  # the config file's text, as loaded

    @property
    def config(self) -> Config:
        return self._config

    @config.setter
    def config(self, config: Config) -> None:
        self._config = config
        self._index = KeyIndex(config, self._index)

    def snapshot(self) -> Snapshot:
        return Snapshot.build(
            self._config,
            index=self._index,
            config_path=str(self.config_path),
            started_at=self.started_at,
            health=self.monitor.health(),
            overrides=self.overrides.all(),
            last_pass=PassView(
                self.wanted.pools,
                self.actual,
                self._index,
                self.wanted.table,
                frozenset(s.key for s in self._config.service),
            ),
            reconcile=self.reconcile,
            reload=self.reload_status,
            ha=HaView(
                (self.vrrp_status.name,) if self.vrrp_status else (),
                (self.vrrp_status,) if self.vrrp_status else (),
            ),
            probes=self.monitor.local_faults(),
            source=self.source,
        )

    def set_mode(self, key: RealKey, mode: Mode, caller: str = "") -> Override:
        return self.overrides.set_mode(key, mode)

    def set_weight(self, key: RealKey, weight: int | None, caller: str = "") -> Override:
        return self.overrides.set_weight(key, weight)

    async def reload(self) -> bool:
        return True


def stand_in(tmp_path: Path, services: int = 2, reals: int = 2, *, stats: bool = True):
    config = parse_config(config_text(services, reals, tmp_path))
    index = KeyIndex(config)
    now = time.time()
    health = {}
    for svc in index:
        for i, key in enumerate(svc.reals):
            h = initial_health(False, now)
            ok = i % 2 == 0
            result = ProbeResult(
                ok, "ok" if ok else "connect refused", 0.002, "ok" if ok else "refused"
            )
            for _ in range(3):
                h = apply_result(h, result, 2, 3, now, time.monotonic())
            health[key] = h
    overrides = OverrideStore(tmp_path)
    wanted = wanted_table(config, health=health, overrides=overrides.all(), index=index)
    actual = Table.of(
        replace(
            svc,
            stats=Stats(10, 20, 30, 4000, 5000, 1, 2) if stats else None,
            dests=tuple(replace(d, stats=Stats(1, 2, 3, 400, 500, 0, 1)) for d in svc.dests),
        )
        for svc in wanted.table
    )
    daemon = DaemonStandIn(config, health, overrides, wanted, actual, tmp_path / "pulsed.toml", now)
    daemon._index = index
    return daemon


def set_health(daemon, key, up: bool, reason: str) -> None:
    """Replace one server's health and recompute the wanted table, as the daemon does."""
    h = daemon.monitor._health[key]
    daemon.monitor._health[key] = replace(h, up=up, reason=reason, last_ok=up)
    daemon.wanted = wanted_table(
        daemon.config, health=daemon.monitor.health(), overrides=daemon.overrides.all()
    )


def render(daemon, recorder) -> str:
    """The whole /metrics text of a stand-in, as a scrape sends it."""
    from pulsed.metrics import MetricsRenderer

    return b"".join(MetricsRenderer(daemon.snapshot, recorder).chunks()).decode()


def status(daemon) -> dict:
    """The whole /status document of a stand-in, as a request gets it."""
    import json

    from pulsed.status_view import status_chunks

    return json.loads(b"".join(status_chunks(daemon.snapshot())))


__all__ = ["DaemonStandIn", "Service", "render", "set_health", "stand_in", "status"]


def vrrp_status(**fields) -> VrrpStatus:
    """A VRRP node's status as the node reports it, with ``fields`` changed."""
    base = dict(
        name="VI_1",
        interface="eth0",
        vrid=51,
        state="BACKUP",
        priority=100,
        effective_priority=100,
        master=None,
        advert_interval=1.0,
        master_advert_interval=1.0,
        vips=["192.0.2.1/32"],
        vips_held=False,
        adverts_sent=0,
        adverts_received=0,
        priority_zero_sent=0,
        priority_zero_received=0,
        interval_mismatches=0,
        drops={},
        transitions=0,
        last_transition=0.0,
        last_transition_reason="started",
        faults=[],
    )
    base.update(fields)
    return VrrpStatus(**base)


# Reading one server's figures from a recorder's columns (row = its slot).


def histogram(recorder, key) -> tuple[list[int], float]:
    """Cumulative bucket counts (the last one is the total) and the sum of latencies."""
    slot = recorder.slots.get(key)
    if slot is None:
        return [0] * len(recorder.counts), 0.0
    return [c[slot] for c in recorder.counts], recorder.sums[slot]


def results(recorder, key) -> dict[str, int]:
    """Probe count per result category (categories never seen are left out)."""
    slot = recorder.slots.get(key)
    if slot is None:
        return {}
    return {name: c[slot] for name, c in recorder.categories.items() if c[slot]}


def transitions_of(recorder, key) -> int:
    slot = recorder.slots.get(key)
    return 0 if slot is None else recorder.transitions[slot]
