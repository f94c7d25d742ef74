"""The /status document: the daemon's whole state as plain JSON-ready data (pure).

Every entity carries ``last_check``, ``last_transition`` (Unix times, or
null when not known yet) and a human-readable ``reason``. The schema is
documented in docs/openapi.yaml (``Status``); keep the two in step.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, fields, is_dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from pulsed.checks.agent import AgentState
from pulsed.checks.state import RealHealth
from pulsed.config import RealConfig
from pulsed.health_history import Transition
from pulsed.keys import IndexedService, real_key_text
from pulsed.model import Dest, RealKey, Service, ServiceKey, Stats
from pulsed.overrides import Override
from pulsed.pool_digest import pool_digest
from pulsed.pool_policy import PoolPlan
from pulsed.rates import Rates, Samples, dest_rates, service_rates
from pulsed.readmodel import NO_OVERRIDE, HaView, Snapshot
from pulsed.reconcile import ReconcileStatus

if TYPE_CHECKING:
    from pulsed.announce.base import BgpView
    from pulsed.checks.monitor import LocalFaults
    from pulsed.ha.status import VrrpStatus


def stats_view(stats: Stats | None) -> dict[str, int] | None:
    # Written out rather than dataclasses.asdict, which deep-copies every field:
    # with the kernel's counters on 10,000 destinations it was most of /status.
    if stats is None:
        return None
    return {
        "connections": stats.connections,
        "packets_in": stats.packets_in,
        "packets_out": stats.packets_out,
        "bytes_in": stats.bytes_in,
        "bytes_out": stats.bytes_out,
        "active_connections": stats.active_connections,
        "inactive_connections": stats.inactive_connections,
    }


def rates_view(rates: Rates | None) -> dict[str, float] | None:
    """Per second, between the last two readings of the kernel's counters."""
    if rates is None:
        return None
    return {
        "connections": round(rates.connections, 3),
        "bytes_in": round(rates.bytes_in, 1),
        "bytes_out": round(rates.bytes_out, 1),
    }


def history_view(history: tuple[Transition, ...]) -> list[dict[str, Any]]:
    return [{"at": t.at, "state": t.state, "reason": t.reason} for t in history]


def real_view(
    svc: IndexedService,
    real: RealConfig,
    key: RealKey,
    health: RealHealth | None,
    override: Override,
    effective: int | None,
    kernel: Dest | None,
    history: tuple[Transition, ...] = (),
    rates: Rates | None = None,
    shared_with: tuple[RealKey, ...] = (),
    maintenance: str | None = None,
    *,
    key_text: str,
) -> dict[str, Any]:
    """One real server's entry; ``key_text`` is real_key_text(key)."""
    dest = key[1]
    agent = None
    if health is None:
        state, reason, up = "unknown", "not monitored yet", False
        category, last_check, last_transition, latency = "pending", None, None, None
        local_errors, local_error, local_at = 0, None, None
    else:
        state = "up" if health.up else ("down" if health.last_ok is not None else "pending")
        reason = health.reason
        local_at = health.local_error_at
        local_error = health.local_error
        if local_at is not None and local_at >= (health.last_check or 0.0):
            # The latest probe said nothing about the server; the state stands.
            reason = f"{reason}; latest probe unknown ({local_error})"
        agent = health.agent
        up = health.serving
        if agent is not None:
            if agent.op == "down" and health.up:
                state, reason = "down", f"{agent.reason}; check: {reason}"
            elif agent.admin is not None:
                reason = f"drained by its agent ({agent.admin}); {agent.reason}; check: {reason}"
            elif not agent.reachable or agent.weight_pct is not None:
                reason = f"{reason}; {agent.reason}"
        category, last_check = health.category, health.last_check
        last_transition, latency = health.last_transition, health.latency
        local_errors = health.local_errors
    mode = override.mode
    if mode == "disable":
        reason = f"disabled by admin; health: {reason}"
    elif mode == "drain":
        reason = f"drained by admin; health: {reason}"
    if maintenance is not None and mode != "disable":
        reason = f"in maintenance ({maintenance}); health: {reason}"
    weight = real.weight
    return {
        "key": key_text,
        "address": dest.address,
        "port": dest.port,
        "health": state,
        "up": up,
        "reason": reason,
        "category": category,
        "last_check": last_check,
        "last_transition": last_transition,
        "latency": latency,
        "local_errors": local_errors,
        "last_local_error": local_error,
        "last_local_error_at": local_at,
        "check": (real.check or svc.config.check).type,
        "mode": mode,
        "weight_override": override.weight,
        "override_updated_at": override.updated_at or None,
        "config_weight": weight,
        "configured_weight": weight if override.weight is None else override.weight,
        "effective_weight": effective,
        "kernel_weight": None if kernel is None else kernel.weight,
        "forwarding": real.forwarding or svc.config.forwarding,
        "stats": None if kernel is None else stats_view(kernel.stats),
        "rates": None if rates is None else rates_view(rates),
        "history": history_view(history) if history else [],
        # The other real servers this server's probe feeds: how many, and the first few.
        "probe_shared_count": max(len(shared_with) - 1, 0),
        "probe_shared_with": _others(shared_with, key) if shared_with else [],
        # Why the server is in maintenance (drained by a file), or None.
        "maintenance": maintenance,
        "agent": None if agent is None else agent_view(agent),
    }


def agent_view(agent: AgentState | None) -> dict[str, Any] | None:
    """What the server's agent said last (None: no agent, or no reply yet)."""
    if agent is None:
        return None
    return {
        "state": agent.op,
        "admin": agent.admin,
        "weight_pct": agent.weight_pct,
        "reachable": agent.reachable,
        "reason": agent.reason,
        "last_check": agent.last_check,
    }


# Most servers listed in probe_shared_with: a backend behind 1,000 services
# would otherwise list 999 keys in each of its 1,000 entries.
MAX_SHARED_SHOWN = 4


def _others(group: tuple[RealKey, ...], key: RealKey) -> list[str]:
    shown: list[str] = []
    for other in group:
        if other != key:
            shown.append(real_key_text(other))
            if len(shown) == MAX_SHARED_SHOWN:
                break
    return shown


def service_view(
    svc: IndexedService,
    health: Mapping[RealKey, RealHealth],
    overrides: Mapping[RealKey, Override],
    pool: PoolPlan | None,
    kernel: Service | None,
    failing: str | None,
    history: Mapping[RealKey, tuple[Transition, ...]] | None = None,
    samples: Samples | None = None,
    shared: Mapping[RealKey, tuple[RealKey, ...]] | None = None,
    maintenance: Mapping[RealKey, str] | None = None,
) -> dict[str, Any]:
    weights = pool.weights if pool is not None else {}
    shared = shared or {}
    maintenance = maintenance or {}
    # By (address, port): a tuple's hash runs in C, a DestKey's in Python.
    kernel_dests = {(d.address, d.port): d for d in kernel.dests} if kernel is not None else {}
    history = history or {}
    samples = samples or {}
    real_rates = dest_rates(samples, svc.key)
    reals = []
    service_text = str(svc.key)  # once: /status makes 10,000 key texts
    for real, key in zip(svc.config.real, svc.reals, strict=True):
        dest = key[1]
        reals.append(
            real_view(
                svc,
                real,
                key,
                health.get(key),
                overrides.get(key, NO_OVERRIDE),
                weights.get(dest),
                kernel_dests.get((dest.address, dest.port)),
                history.get(key, ()),
                real_rates.get(dest),
                shared.get(key, ()),
                maintenance.get(key),
                key_text=real_key_text(key, service_text),
            )
        )
    up = sum(r["up"] for r in reals)
    serving = sum(1 for r in reals if (r["effective_weight"] or 0) > 0)
    failed_open = bool(pool is not None and pool.failed_open)
    sorry = bool(pool is not None and pool.sorry_in_use)
    reason = f"{up} of {len(reals)} real servers up, {serving} taking new connections"
    if failed_open:
        reason += "; failed open (min_healthy keeps failed servers in the pool)"
    if sorry:
        reason += "; sorry server in use"
    if failing:
        reason += f"; kernel refused: {failing}"
    checks = [r["last_check"] for r in reals if r["last_check"] is not None]
    changes = [r["last_transition"] for r in reals if r["last_transition"] is not None]
    config = svc.config
    return {
        "key": str(svc.key),
        "name": config.name,
        "protocol": config.protocol if config.fwmark is None else "fwmark",
        "vip": config.vip,
        "port": config.port,
        "fwmark": config.fwmark,
        "scheduler": config.scheduler,
        "scheduler_flags": list(config.scheduler_flags),
        "persistence": float(config.persistence),
        "forwarding": config.forwarding,
        "state": _service_state(up, serving, len(reals), sorry),
        "reason": reason,
        "last_check": max(checks) if checks else None,
        "last_transition": max(changes) if changes else None,
        "reals_up": up,
        "reals_total": len(reals),
        "reals_serving": serving,
        "failed_open": failed_open,
        "sorry_in_use": sorry,
        "sorry_server": config.sorry_server,
        "in_kernel": kernel is not None,
        "pool_digest": pool_digest(kernel) or None,
        "kernel_error": failing,
        "stats": stats_view(None if kernel is None else kernel.stats),
        "rates": rates_view(service_rates(samples, svc.key)),
        "reals": reals,
    }


def _service_state(up: int, serving: int, total: int, sorry: bool) -> str:
    if total and up == total:
        return "ok"
    if serving > 0 and not sorry:
        return "degraded"
    return "down"


def instance_view(status: VrrpStatus) -> dict[str, Any]:
    """One VRRP instance, with the keys every /status entity has."""
    view = {f.name: _jsonable(getattr(status, f.name)) for f in fields(status)}
    view["role"] = str(view.pop("state")).lower()
    view["reason"] = status.version_mismatch or status.last_transition_reason
    view["last_check"] = status.last_transition
    return view


def _not_started(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "role": "init",
        "reason": "VRRP not started yet",
        "last_check": None,
        "last_transition": None,
    }


def vrrp_views(ha: HaView) -> list[dict[str, Any]]:
    """Every configured instance: its status, or "init" before the node started."""
    running = {s.name: s for s in ha.instances}
    return [
        instance_view(running[name]) if name in running else _not_started(name)
        for name in ha.configured
    ]


def group_views(ha: HaView) -> list[dict[str, Any]]:
    return [
        {
            "name": g.name,
            "state": g.state,
            "instances": list(g.instances),
            "reason": f"{len(g.instances)} instance(s) moving together",
            "last_check": None,
            "last_transition": None,
        }
        for g in ha.groups
    ]


def ha_view(ha: HaView) -> dict[str, Any] | None:
    """The first instance (the /status of a single [vrrp] table); every instance is in
    ``vrrp``. None without VRRP."""
    views = vrrp_views(ha)
    return views[0] if views else None


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    return str(value)


def status_chunks(snapshot: Snapshot, size: int = 64 * 1024) -> Iterator[bytes]:
    """The /status document as JSON, in pieces of about ``size`` bytes.

    Only one piece's services exist as dicts at a time: at 10,000 real
    servers the whole document is over 100,000 small objects and 5 MB of
    JSON; built whole, the first request grew the process by ~8 MiB and
    later ones by more.
    """
    parts = _StatusParts(snapshot)
    encode = msgspec.json.encode
    head = encode(parts.head)
    pieces = [head[:-1], b',"services":[']  # the head is a JSON object: reopen it
    held = 0
    first = True
    for service in parts.services():
        body = encode(service)
        pieces.append(body if first else b"," + body)
        first = False
        held += len(body)
        if held >= size:
            yield b"".join(pieces)
            pieces.clear()
            held = 0
    pieces += [b'],"orphan_overrides":', encode(parts.orphans), b"}"]
    yield b"".join(pieces)


def service_status(snapshot: Snapshot, key: ServiceKey) -> dict[str, Any] | None:
    """One service's part of /status (None if not configured)."""
    return next(_StatusParts(snapshot).services(key), None)


class _StatusParts:
    """Everything /status shows but the services, and the services one by one."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        index = snap.index
        self.orphans = [
            {"key": real_key_text(k), "mode": o.mode, "weight_override": o.weight}
            for k, o in sorted(snap.overrides.items())
            if index.real(k) is None
        ]
        reload = snap.reload
        reload_reason = "config loaded" if reload.last_ok else f"reload failed: {reload.last_error}"
        rs = snap.reconcile
        self.head = {
            "version": snap.version,
            "hostname": snap.hostname,
            "now": snap.taken_at,
            "started_at": snap.started_at,
            "refresh_seconds": float(snap.config.api.status_refresh),
            "config": {
                "path": snap.config_path,
                "generation": reload.generation,
                "digest": snap.source.digest or None,
                "writable": snap.config.api.config_write,
                "last_reload_ok": reload.last_ok,
                "last_reload_error": reload.last_error or None,
                "last_check": reload.last_time,
                "last_transition": reload.last_time,
                "reason": reload_reason,
            },
            "reconcile": {
                "passes": rs.passes,
                "in_sync": rs.in_sync,
                "pending": rs.pending,
                "errors": rs.errors,
                "operations": dict(rs.ops_applied),
                "last_duration": rs.last_duration,
                "last_check": rs.last_run or None,
                "last_transition": rs.last_run or None,
                "reason": _reconcile_reason(rs),
            },
            "ha": ha_view(snap.ha),
            "vrrp": vrrp_views(snap.ha),
            "sync_groups": group_views(snap.ha),
            "probes": probes_view(snap.probes),
            "bgp": bgp_view(snap.bgp, snap.taken_at),
        }

    def services(self, only: ServiceKey | None = None) -> Iterator[dict[str, Any]]:
        snap = self.snap
        failing = snap.reconcile.failing_services
        if only is not None:
            one = snap.index.by_key(only)
            chosen: tuple[IndexedService, ...] = (one,) if one is not None else ()
        else:
            chosen = snap.index.services
        for svc in chosen:
            key = svc.key
            yield service_view(
                svc,
                snap.health,
                snap.overrides,
                snap.pools.get(key),
                snap.kernel.get(key),
                failing.get(key),
                snap.history,
                snap.rates,
                snap.shared_probes,
                snap.maintenance,
            )


def bgp_view(view: BgpView | None, now: float) -> dict[str, Any] | None:
    """Route health injection: each VIP announced or not and why, the routing
    daemon's sessions and BFD as last read (with the age of that read)."""
    if view is None:
        return None
    st = view.status
    routing = st.routing
    return {
        "daemon": st.daemon,
        "interface": st.interface,
        "interface_ok": st.interface_ok,
        "problem": st.problem or (None if routing.ok else routing.problem) or None,
        "drained": view.drained,
        "idle": view.idle,
        "active_connections": view.active_connections,
        "vips": [
            {
                "vip": d.vip,
                "wanted": d.announce,
                "announced": d.vip in st.announced,
                "reason": d.reason,
                "min_healthy": d.min_healthy,
                "lowest_healthy": d.lowest,
            }
            for d in view.decisions
        ],
        "routing_daemon": {
            "ok": routing.ok,
            "problem": routing.problem or None,
            "read_at": routing.read_at or None,
            "age": round(now - routing.read_at, 3) if routing.read_at else None,
            "read_took": round(routing.took, 3),
            "peers": [
                {
                    "address": p.address,
                    "state": p.state,
                    "uptime_ms": p.uptime_ms,
                    "prefixes_sent": p.prefixes_sent,
                    "bfd": p.bfd or None,
                }
                for p in routing.peers
            ],
        },
    }


def probes_view(faults: LocalFaults | None) -> dict[str, Any] | None:
    """The monitor's local errors: probes that failed for a reason on the router
    (they never count against a server; see pulsed.checks.base.local_fault)."""
    if faults is None:
        return None
    total = faults.total
    if total:
        reason = f"{total} probe(s) failed for a local reason; last: {faults.last_reason}"
    else:
        reason = "no local errors"
    return {
        "local_errors": total,
        "local_errors_by_reason": {k: v for k, v in faults.totals.items() if v},
        "last_local_error": faults.last_reason,
        "last_local_error_fault": faults.last_fault,
        "last_local_error_server": None
        if faults.last_key is None
        else real_key_text(faults.last_key),
        "last_check": faults.last_at,
        "last_transition": faults.last_at,
        "reason": reason,
    }


def _reconcile_reason(rs: ReconcileStatus) -> str:
    if rs.passes == 0:
        return "no pass yet"
    if rs.in_sync:
        return "kernel table matches the wanted table"
    if rs.pending and not rs.failing_services:
        return "a change waits for the next pass"
    n = len(rs.failing_services)
    if n == 0:
        return f"the kernel table could not be read: {rs.last_error}"
    return f"{n} service(s) refused by the kernel: {rs.last_error}"
