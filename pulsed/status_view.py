"""The /status document: the daemon's whole state as plain JSON-ready data (pure).

Every entity carries ``last_check``, ``last_transition`` (Unix times, or
null when not known yet) and a human-readable ``reason``. The schema is
documented in docs/openapi.yaml (``Status``); keep the two in step.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, is_dataclass
from typing import Any

import msgspec

from pulsed import __version__
from pulsed.model import DestKey, ServiceKey, Stats
from pulsed.overrides import Override, RealKey, real_key_text

_NO_OVERRIDE = Override()
_index: tuple[Any, list] | None = None


def indexed_reals(
    config: Any, health: Mapping[RealKey, Any] | None = None
) -> list[tuple[Any, ServiceKey, tuple[DestKey, ...]]]:
    """[(service, its key, its reals' DestKeys in ``svc.real`` order), ...], once per config.

    ``ServiceConfig.key`` and ``real_endpoint`` parse addresses on every call;
    at 10,000 servers that cost more than rendering the metrics. Given the
    monitor's health snapshot, its DestKey objects are reused, not copied.
    """
    global _index
    cached = _index
    if cached is not None and cached[0] is config:
        return cached[1]
    canonical = {key: key for key in health} if health else {}
    index = []
    for svc in config.service:
        key = svc.key
        dests = []
        for real in svc.real:
            dest = DestKey(*svc.real_endpoint(real))
            dests.append(canonical.get((key, dest), (key, dest))[1])
        index.append((svc, key, tuple(dests)))
    _index = (config, index)
    return index


def stats_view(stats: Stats | None) -> dict[str, int] | None:
    return None if stats is None else asdict(stats)


def real_view(
    svc: Any,
    real: Any,
    key: RealKey,
    health: Any,
    override: Override,
    effective: int | None,
    kernel: Any,
) -> dict[str, Any]:
    dest = key[1]
    if health is None:
        state, reason = "unknown", "not monitored yet"
    elif not health.up and not health.checked:
        state, reason = "pending", health.reason
    else:
        state, reason = ("up" if health.up else "down"), health.reason
    local_at = getattr(health, "local_error_at", None)
    if local_at is not None and local_at >= (health.last_check or 0.0):
        # The latest probe said nothing about the server; the state stands.
        reason = f"{reason}; latest probe unknown ({health.local_error})"
    if override.mode == "disable":
        reason = f"disabled by admin; health: {reason}"
    elif override.mode == "drain":
        reason = f"drained by admin; health: {reason}"
    configured = real.weight if override.weight is None else override.weight
    return {
        "key": real_key_text(key),
        "address": dest.address,
        "port": dest.port,
        "health": state,
        "up": bool(health is not None and health.up),
        "reason": reason,
        "category": getattr(health, "category", "pending"),
        "last_check": getattr(health, "last_check", None),
        "last_transition": getattr(health, "last_transition", None),
        "latency": getattr(health, "latency", None),
        "local_errors": getattr(health, "local_errors", 0),
        "last_local_error": getattr(health, "local_error", None),
        "last_local_error_at": local_at,
        "check": (real.check or svc.check).type,
        "mode": override.mode,
        "weight_override": override.weight,
        "override_updated_at": override.updated_at or None,
        "config_weight": real.weight,
        "configured_weight": configured,
        "effective_weight": effective,
        "kernel_weight": None if kernel is None else kernel.weight,
        "forwarding": real.forwarding or svc.forwarding,
        "stats": stats_view(None if kernel is None else kernel.stats),
    }


def service_view(
    svc: Any,
    svc_key: ServiceKey,
    dests: tuple[DestKey, ...],
    health: Mapping[RealKey, Any],
    overrides: Mapping[RealKey, Override],
    pool: Any,
    kernel: Any,
    failing: str | None,
) -> dict[str, Any]:
    weights = pool.weights if pool is not None else {}
    kernel_dests = kernel.dest_map() if kernel is not None else {}
    reals = []
    for real, dest in zip(svc.real, dests, strict=True):
        key = (svc_key, dest)
        reals.append(
            real_view(
                svc,
                real,
                key,
                health.get(key),
                overrides.get(key, _NO_OVERRIDE),
                weights.get(dest),
                kernel_dests.get(dest),
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
    return {
        "key": str(svc_key),
        "name": svc.name,
        "protocol": svc.protocol if svc.fwmark is None else "fwmark",
        "vip": svc.vip,
        "port": svc.port,
        "fwmark": svc.fwmark,
        "scheduler": svc.scheduler,
        "forwarding": svc.forwarding,
        "state": _service_state(up, serving, len(reals), sorry),
        "reason": reason,
        "last_check": max(checks) if checks else None,
        "last_transition": max(changes) if changes else None,
        "reals_up": up,
        "reals_total": len(reals),
        "reals_serving": serving,
        "failed_open": failed_open,
        "sorry_in_use": sorry,
        "in_kernel": kernel is not None,
        "kernel_error": failing,
        "stats": stats_view(None if kernel is None else kernel.stats),
        "reals": reals,
    }


def _service_state(up: int, serving: int, total: int, sorry: bool) -> str:
    if total and up == total:
        return "ok"
    if serving > 0 and not sorry:
        return "degraded"
    return "down"


def ha_view(node: Any) -> dict[str, Any] | None:
    """The VRRP node's status, with the keys every /status entity has."""
    if node is None:
        return None
    from pulsed.metrics import vrrp_status

    raw = vrrp_status(node)
    if raw is None:
        return {
            "role": "init",
            "reason": "VRRP not started yet",
            "last_check": None,
            "last_transition": None,
        }
    view = {k: _jsonable(v) for k, v in raw.items()}
    view["role"] = str(view.pop("state", "init")).lower()
    view.pop("configured_priority", None)
    view["priority"] = raw.get("configured_priority", raw.get("priority"))
    view["effective_priority"] = raw.get("priority")
    view.setdefault("reason", view.get("last_transition_reason") or "")
    view.setdefault("last_check", view.get("last_transition"))
    view.setdefault("last_transition", view.get("since"))
    return view


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


def build_status(daemon: Any, now: float | None = None) -> dict[str, Any]:
    """The whole /status document for ``daemon`` (reads only)."""
    parts = _StatusParts(daemon, now)
    return {**parts.head, "services": list(parts.services()), "orphan_overrides": parts.orphans}


def status_chunks(daemon: Any, size: int = 64 * 1024, now: float | None = None) -> Iterator[bytes]:
    """The /status document as JSON, in pieces of about ``size`` bytes.

    The same bytes as encoding ``build_status`` whole, but only one piece's
    services exist as dicts at a time: at 10,000 real servers the whole
    document is over 100,000 small objects and 5 MB of JSON; built whole, the
    first request grew the process by ~8 MiB and later ones by more.
    """
    parts = _StatusParts(daemon, now)
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


def service_status(daemon: Any, key: ServiceKey) -> dict[str, Any] | None:
    """One service's part of /status (None if not configured)."""
    return next(_StatusParts(daemon).services(key), None)


class _StatusParts:
    """Everything /status shows but the services, and the services one by one."""

    def __init__(self, daemon: Any, now: float | None = None) -> None:
        d = daemon
        self.health = d.monitor.health()
        self.overrides = d.overrides.all()
        self.pools = d.wanted.pools
        self.actual = d.reconciler.last_actual
        rs = d.reconciler.status
        self.failing = dict(rs.failing_services)
        self.index = indexed_reals(d.config, self.health)
        configured = {(key, dest) for _, key, dests in self.index for dest in dests}
        self.orphans = [
            {"key": real_key_text(k), "mode": o.mode, "weight_override": o.weight}
            for k, o in sorted(self.overrides.items())
            if k not in configured
        ]
        reload = d.reload_status
        reload_reason = "config loaded" if reload.last_ok else f"reload failed: {reload.last_error}"
        self.head = {
            "version": __version__,
            "now": time.time() if now is None else now,
            "started_at": d.started_at,
            "refresh_seconds": float(d.config.api.status_refresh),
            "config": {
                "path": str(d.config_path),
                "generation": reload.generation,
                "last_reload_ok": reload.last_ok,
                "last_reload_error": reload.last_error or None,
                "last_check": reload.last_time,
                "last_transition": reload.last_time,
                "reason": reload_reason,
            },
            "reconcile": {
                "passes": rs.passes,
                "in_sync": rs.in_sync,
                "errors": rs.errors,
                "operations": dict(rs.ops_applied),
                "last_duration": rs.last_duration,
                "last_check": rs.last_run or None,
                "last_transition": rs.last_run or None,
                "reason": _reconcile_reason(rs),
            },
            "ha": ha_view(getattr(d, "vrrp", None)),
            "probes": probes_view(d.monitor),
        }

    def services(self, only: ServiceKey | None = None) -> Iterator[dict[str, Any]]:
        for svc, key, dests in self.index:
            if only is not None and key != only:
                continue
            yield service_view(
                svc,
                key,
                dests,
                self.health,
                self.overrides,
                self.pools.get(key),
                self.actual.get(key),
                self.failing.get(key),
            )


def probes_view(monitor: Any) -> dict[str, Any] | None:
    """The monitor's local errors: probes that failed for a reason on the router
    (they never count against a server; see pulsed.checks.base.local_fault)."""
    local_faults = getattr(monitor, "local_faults", None)
    if local_faults is None:
        return None
    faults = local_faults()
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


def _reconcile_reason(rs: Any) -> str:
    if rs.passes == 0:
        return "no pass yet"
    if rs.in_sync:
        return "kernel table matches the wanted table"
    n = len(rs.failing_services)
    return f"{n} service(s) refused by the kernel: {rs.last_error}"
