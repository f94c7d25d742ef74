"""The wanted IPVS table: a pure function of config, health and overrides.

Admin overrides sit on top of health: ``disable`` removes a server, ``drain``
pins its weight to 0, a weight override replaces the configured weight and
health then applies to it as usual (pulsed.pool_policy). A server in
maintenance (a file in ``[checks] maintenance_dir``, pulsed.maintenance) is
drained as by ``drain``. A server's agent (pulsed.checks.agent) may take it
down, drain it (``drain``, ``maint``) or scale its weight.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter, is_

from pulsed.addresses import split_host_port
from pulsed.checks.state import RealHealth, effective
from pulsed.config import Config, ServiceConfig, persistence_netmask, scheduler_flag_bits
from pulsed.keys import IndexedService, KeyIndex
from pulsed.model import Dest, DestKey, Forwarding, RealKey, Service, ServiceKey, Table
from pulsed.overrides import Override
from pulsed.pool_policy import (
    PLAN_FIELDS,
    PoolPlan,
    PoolPolicy,
    RealView,
    held_servers,
    plan_pool,
)

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
    # Per service name with real servers: the share of them that pass their
    # check (what VRRP's track_services reads).
    healthy: Mapping[str, float] = field(default_factory=dict)


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
    )


@dataclass
class _Memo:
    svc: IndexedService
    healths: tuple[RealHealth | None, ...]  # the monitor's records, in svc.reals order
    others: tuple  # every other input of plan_pool
    service: Service
    plan: PoolPlan
    up: int  # servers whose health says up


# What plan_pool reads of a record, and the agent's word laid over it (effective()).
_PLAN_INPUTS = attrgetter(*PLAN_FIELDS, "agent")


def _same_for_plan(old: tuple, new: tuple) -> bool:
    """Whether two tuples of health records give plan_pool the same input."""
    if all(map(is_, old, new)):
        return True
    for a, b in zip(old, new, strict=True):
        if a is not b and _PLAN_INPUTS(a or _UNKNOWN) != _PLAN_INPUTS(b or _UNKNOWN):
            return False
    return True


class WantedMemo:
    """Each service's last outcome, so unchanged pools are not recomputed.

    A probe result or an admin call changes one pool; with 10,000 services,
    recomputing them all would stall the event loop for a fifth of a second.
    The memo changes nothing in the result: a pool is reused only when its
    config and every input to plan_pool (of health records, the fields in
    PLAN_FIELDS) are the same as last time, and it has no slow start or
    drain deadline pending.
    """

    def __init__(self) -> None:
        self.entries: dict[ServiceKey, _Memo] = {}
        self.healthy: Mapping[str, float] = {}
        self.index: KeyIndex | None = None  # when the caller gives none


def wanted_table(
    config: Config,
    health: Mapping[RealKey, RealHealth] | None = None,
    overrides: Mapping[RealKey, Override] | None = None,
    actual: Table | None = None,
    now: float = 0.0,
    assume_healthy: bool = False,
    memo: WantedMemo | None = None,
    previous: Mapping[ServiceKey, PoolPlan] | None = None,
    index: KeyIndex | None = None,
    maintenance: Mapping[RealKey, str] | None = None,
) -> Wanted:
    """Compute the table pulsed wants.

    ``health`` maps each real server to its RealHealth (a server with no
    entry counts as not yet checked, hence down, unless ``assume_healthy``).
    ``actual`` supplies the kernel's connection counts for draining; ``now``
    is monotonic time for slow start and drain deadlines; ``previous`` is
    the last outcome's pools (a server min_healthy kept at full weight is
    spared slow start when it comes up). ``index`` is the config's KeyIndex
    (the daemon's, so every key is the one object it hands out everywhere).
    ``maintenance``: servers in maintenance (drained), with the reason.
    """
    health = health or {}
    overrides = overrides or {}
    maintenance = maintenance or {}
    actual = actual or Table()
    previous = previous or {}
    memo = memo or WantedMemo()
    if index is None or index.config is not config:
        index = memo.index if memo.index is not None and memo.index.config is config else None
        index = memo.index = index or KeyIndex(config, memo.index)
    prior_entries, memo.entries = memo.entries, {}
    services: list[Service] = []
    pools: dict[ServiceKey, PoolPlan] = {}
    deadlines: list[float] = []
    recomputed = len(prior_entries) != len(index)
    for svc in index.services:
        key = svc.key
        entry = prior_entries.get(key)
        if entry is not None and entry.svc is not svc:
            entry = None  # the service's config changed
        have = actual.get(key)
        healths = tuple(map(health.get, svc.reals))
        others = (
            tuple(map(overrides.get, svc.reals)) if overrides else (),
            _connections(have) if svc.config.on_failure == "remove" else None,
            assume_healthy,
            held_servers(previous.get(key)),
            tuple(k in maintenance for k in svc.reals) if maintenance else (),
        )
        if (
            entry is None
            or entry.plan.next_change_at is not None
            or entry.others != others
            or not _same_for_plan(entry.healths, healths)
        ):
            policy = pool_policy(svc.config)
            views = _views(svc, health, overrides, have, assume_healthy, maintenance)
            plan = plan_pool(policy, views, now, others[3])
            prior = prior_entries.get(key)
            before = prior.service if prior is not None else None
            service = _service(svc, service_settings(svc.config), plan, policy, before)
            up = sum(1 for h in healths if h is not None and h.serving)
            if prior is None or prior.up != up or prior.svc is not svc:
                recomputed = True
            entry = _Memo(svc, healths, others, service, plan, up)
        else:
            # At most what plan_pool does not read changed (check time,
            # latency, reason): the plan stands. Hold the current records,
            # not superseded ones (~1 MB at 10,000 servers).
            entry.healths = healths
        memo.entries[key] = entry
        pools[key] = entry.plan
        if entry.plan.next_change_at is not None:
            deadlines.append(entry.plan.next_change_at)
        services.append(entry.service)
    if recomputed:
        memo.healthy = _fractions(memo.entries.values())
    return Wanted(Table.of(services), pools, min(deadlines) if deadlines else None, memo.healthy)


def _fractions(entries: Iterable[_Memo]) -> dict[str, float]:
    """Each service's share of up servers, by name. Services share one float
    object per value (0.0, 0.5, 1.0...): 10,000 copies would cost 240 KB."""
    shared: dict[float, float] = {}
    return {
        e.svc.name: shared.setdefault(e.up / len(e.svc.reals), e.up / len(e.svc.reals))
        for e in entries
        if e.svc.reals
    }


def _connections(have: Service | None) -> tuple[tuple[DestKey, int], ...]:
    if have is None:
        return ()
    return tuple((d.key, d.stats.active_connections if d.stats else 0) for d in have.dests)


def _views(
    svc: IndexedService,
    health: Mapping[RealKey, RealHealth],
    overrides: Mapping[RealKey, Override],
    have: Service | None,
    assume_healthy: bool,
    maintenance: Mapping[RealKey, str],
) -> dict[DestKey, RealView]:
    kernel = have.dest_map() if have is not None else {}
    views: dict[DestKey, RealView] = {}
    for real, key in zip(svc.config.real, svc.reals, strict=True):
        override = overrides.get(key, _DEFAULT_OVERRIDE)
        if override.mode == "disable":
            continue
        dest = key[1]
        state = _HEALTHY if assume_healthy else effective(health.get(key, _UNKNOWN))
        in_kernel = kernel.get(dest)
        active = None
        if in_kernel is not None:
            active = in_kernel.stats.active_connections if in_kernel.stats else 0
        weight = override.weight if override.weight is not None else real.weight
        agent = state.agent
        if override.mode == "drain" or key in maintenance or (agent and agent.admin):
            weight = 0  # no new connections, and not counted as serving
        views[dest] = RealView(weight=weight, health=state, active_connections=active)
    return views


def _service(
    indexed: IndexedService,
    settings: Service,
    plan: PoolPlan,
    policy: PoolPolicy,
    before: Service | None,
) -> Service:
    # Destinations equal to the ones of the service's previous outcome are
    # those very objects: a probe result changes one destination, and the
    # other copies would live on in the kernel-side table (the memory backend
    # keeps what it was given) and in the memo.
    reuse = {(d.address, d.port): d for d in before.dests} if before is not None else {}
    svc = indexed.config
    dests: list[Dest] = []
    for real, (_, key) in zip(svc.real, indexed.reals, strict=True):
        weight = plan.weights.get(key)
        if weight is None:
            continue
        dest = Dest(
            address=key.address,
            port=key.port,
            weight=weight,
            forwarding=Forwarding(real.forwarding or svc.forwarding),
            upper_threshold=real.upper_threshold,
            lower_threshold=real.lower_threshold,
        )
        old = reuse.get((key.address, key.port))
        dests.append(old if old is not None and old == dest else dest)
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
