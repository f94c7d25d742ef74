"""The wanted IPVS table: a pure function of config, health and overrides.

Admin overrides sit on top of health: ``disable`` removes a server, ``drain``
pins its weight to 0, a weight override replaces the configured weight and
health then applies to it as usual (pulsed.checks.policy).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pulsed.addresses import split_host_port
from pulsed.checks.policy import PoolPlan, PoolPolicy, RealView, plan_pool
from pulsed.checks.state import RealHealth
from pulsed.config import Config, ServiceConfig, persistence_netmask, scheduler_flag_bits
from pulsed.model import Dest, DestKey, Forwarding, Service, ServiceKey, Table
from pulsed.overrides import Override, RealKey

_DEFAULT_OVERRIDE = Override()
_HEALTHY = RealHealth(up=True, reason="assumed healthy")
_UNKNOWN = RealHealth(up=False, reason="not checked yet")


@dataclass(frozen=True)
class Wanted:
    """The wanted table, with how each pool was decided (for /status)."""

    table: Table
    pools: Mapping[ServiceKey, PoolPlan] = field(default_factory=dict)
    # Monotonic time at which some pool changes by itself (slow start, drain).
    next_change_at: float | None = None


def service_settings(svc: ServiceConfig) -> Service:
    """The kernel-side settings of a configured service, without destinations."""
    return Service(
        key=svc.key,
        scheduler=svc.scheduler,
        flags=scheduler_flag_bits(svc),
        timeout=int(svc.persistence),
        netmask=persistence_netmask(svc),
    )


def pool_policy(svc: ServiceConfig) -> PoolPolicy:
    sorry = DestKey(*split_host_port(svc.sorry_server, svc.port)) if svc.sorry_server else None
    return PoolPolicy(
        on_failure=svc.on_failure,
        drain_timeout=float(svc.drain_timeout),
        slow_start=float(svc.slow_start),
        min_healthy=svc.min_healthy,
        sorry_server=sorry,
        sorry_forwarding=svc.sorry_forwarding,
    )


@dataclass
class _Memo:
    config: ServiceConfig
    dest_keys: tuple[DestKey, ...]
    inputs: tuple
    service: Service
    plan: PoolPlan


class WantedMemo:
    """Each service's last outcome, so unchanged pools are not recomputed.

    A probe result or an admin call changes one pool; with 10,000 services,
    recomputing them all would stall the event loop for a fifth of a second.
    The memo changes nothing in the result: a pool is reused only when its
    config and every input to plan_pool are the same as last time, and it
    has no slow start or drain deadline pending.
    """

    def __init__(self) -> None:
        self.entries: dict[ServiceKey, _Memo] = {}


def wanted_table(
    config: Config,
    health: Mapping[RealKey, RealHealth] | None = None,
    overrides: Mapping[RealKey, Override] | None = None,
    actual: Table | None = None,
    now: float = 0.0,
    assume_healthy: bool = False,
    memo: WantedMemo | None = None,
) -> Wanted:
    """Compute the table pulsed wants.

    ``health`` maps each real server to its RealHealth (a server with no
    entry counts as not yet checked, hence down, unless ``assume_healthy``).
    ``actual`` supplies the kernel's connection counts for draining; ``now``
    is monotonic time for slow start and drain deadlines.
    """
    health = health or {}
    overrides = overrides or {}
    actual = actual or Table()
    memo = memo or WantedMemo()
    previous, memo.entries = memo.entries, {}
    services: list[Service] = []
    pools: dict[ServiceKey, PoolPlan] = {}
    deadlines: list[float] = []
    for svc in config.service:
        key = svc.key
        entry = previous.get(key)
        if entry is not None and (entry.config is svc or entry.config == svc):
            dest_keys = entry.dest_keys
        else:
            entry = None
            dest_keys = tuple(DestKey(*svc.real_endpoint(r)) for r in svc.real)
        have = actual.get(key)
        inputs = (
            tuple(health.get((key, k)) for k in dest_keys),
            tuple(overrides.get((key, k)) for k in dest_keys),
            _connections(have) if svc.on_failure == "remove" else None,
            assume_healthy,
        )
        if entry is None or entry.inputs != inputs or entry.plan.next_change_at is not None:
            settings = service_settings(svc)
            policy = pool_policy(svc)
            views = _views(svc, health, overrides, have, assume_healthy)
            plan = plan_pool(policy, views, now)
            entry = _Memo(svc, dest_keys, inputs, _service(svc, settings, plan, policy), plan)
        memo.entries[key] = entry
        pools[key] = entry.plan
        if entry.plan.next_change_at is not None:
            deadlines.append(entry.plan.next_change_at)
        services.append(entry.service)
    return Wanted(Table.of(services), pools, min(deadlines) if deadlines else None)


def _connections(have: Service | None) -> tuple[tuple[DestKey, int], ...]:
    if have is None:
        return ()
    return tuple((d.key, d.stats.active_connections if d.stats else 0) for d in have.dests)


def _views(
    svc: ServiceConfig,
    health: Mapping[RealKey, RealHealth],
    overrides: Mapping[RealKey, Override],
    have: Service | None,
    assume_healthy: bool,
) -> dict[DestKey, RealView]:
    kernel = have.dest_map() if have is not None else {}
    views: dict[DestKey, RealView] = {}
    for real in svc.real:
        key = DestKey(*svc.real_endpoint(real))
        override = overrides.get((svc.key, key), _DEFAULT_OVERRIDE)
        if override.mode == "disable":
            continue
        state = _HEALTHY if assume_healthy else health.get((svc.key, key), _UNKNOWN)
        in_kernel = kernel.get(key)
        active = None
        if in_kernel is not None:
            active = in_kernel.stats.active_connections if in_kernel.stats else 0
        weight = override.weight if override.weight is not None else real.weight
        if override.mode == "drain":
            weight = 0  # no new connections, and not counted as serving
        views[key] = RealView(weight=weight, health=state, active_connections=active)
    return views


def _service(svc: ServiceConfig, settings: Service, plan: PoolPlan, policy: PoolPolicy) -> Service:
    dests: list[Dest] = []
    for real in svc.real:
        address, port = svc.real_endpoint(real)
        key = DestKey(address, port)
        weight = plan.weights.get(key)
        if weight is None:
            continue
        dests.append(
            Dest(
                address=address,
                port=port,
                weight=weight,
                forwarding=Forwarding(real.forwarding or svc.forwarding),
                upper_threshold=real.upper_threshold,
                lower_threshold=real.lower_threshold,
            )
        )
    sorry = policy.sorry_server
    if plan.sorry_in_use and sorry is not None and sorry not in {d.key for d in dests}:
        dests.append(
            Dest(
                sorry.address,
                sorry.port,
                weight=plan.weights.get(sorry, 1),
                forwarding=Forwarding(svc.sorry_forwarding),
            )
        )
    return Service(
        key=settings.key,
        scheduler=settings.scheduler,
        flags=settings.flags,
        timeout=settings.timeout,
        netmask=settings.netmask,
        dests=tuple(dests),
    )
