"""A daemon-shaped snapshot built from the real parts (config, overrides, wanted table).

The metrics and /status builders read only attributes of the Daemon; this
assembles the same attributes from the real config loader, OverrideStore,
wanted_table and RealHealth, without starting anything.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from pulsed.checks.base import ProbeResult
from pulsed.checks.state import apply_result, initial_health
from pulsed.config import parse_config
from pulsed.daemon import ReloadStatus
from pulsed.desired import wanted_table
from pulsed.model import DestKey, Service, Stats, Table
from pulsed.overrides import OverrideStore
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


def snapshot(tmp_path: Path, services: int = 2, reals: int = 2, *, stats: bool = True):
    config = parse_config(config_text(services, reals, tmp_path))
    now = time.time()
    health = {}
    for svc in config.service:
        for i, real in enumerate(svc.real):
            key = (svc.key, DestKey(*svc.real_endpoint(real)))
            h = initial_health(False, now)
            ok = i % 2 == 0
            result = ProbeResult(
                ok, "ok" if ok else "connect refused", 0.002, "ok" if ok else "refused"
            )
            for _ in range(3):
                h = apply_result(h, result, 2, 3, now, time.monotonic())
            health[key] = h
    overrides = OverrideStore(tmp_path)
    wanted = wanted_table(config, health=health, overrides=overrides.all())
    actual = Table.of(
        replace(
            svc,
            stats=Stats(10, 20, 30, 4000, 5000, 1, 2) if stats else None,
            dests=tuple(replace(d, stats=Stats(1, 2, 3, 400, 500, 0, 1)) for d in svc.dests),
        )
        for svc in wanted.table
    )
    return SimpleNamespace(
        config=config,
        config_path=tmp_path / "pulsed.toml",
        reload_status=ReloadStatus(generation=1, last_time=now),
        monitor=FakeMonitor(health),
        overrides=overrides,
        wanted=wanted,
        reconciler=SimpleNamespace(status=ReconcileStatus(), last_actual=actual),
        vrrp=None,
        started_at=now,
        pass_observers=[],
        probe_observers=[],
        health_observers=[],
    )


def set_health(daemon, key, up: bool, reason: str) -> None:
    """Replace one server's health and recompute the wanted table, as the daemon does."""
    h = daemon.monitor._health[key]
    daemon.monitor._health[key] = replace(h, up=up, reason=reason, last_ok=up)
    daemon.wanted = wanted_table(
        daemon.config, health=daemon.monitor.health(), overrides=daemon.overrides.all()
    )


__all__ = ["Service", "set_health", "snapshot"]
