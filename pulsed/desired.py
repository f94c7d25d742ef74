"""The wanted IPVS table: a pure function of config, health and overrides.

Admin overrides sit on top of health: ``disable`` removes a server, ``drain``
pins its weight to 0, a weight override replaces the configured weight and
health then applies to it as usual (pulsed.checks.policy).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from operator import attrgetter, is_

from pulsed.addresses import split_host_port
from pulsed.checks.policy import PLAN_FIELDS, PoolPlan, PoolPolicy, RealView, plan_pool
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
    healths: tuple[RealHealth | None, ...]  # the monitor's records, in dest_keys order
    others: tuple  # every other input of plan_pool
    service: Service
    plan: PoolPlan


_PLAN_INPUTS = attrgetter(*PLAN_FIELDS)


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

    It also hands out one ``DestKey`` per configured real server
    (``dest_keys``), shared by the health monitor's keys, the plans and the
    wanted table: at 10,000 servers each copy costs about 0.5 MB.
    """

    def __init__(self) -> None:
        self.entries: dict[ServiceKey, _Memo] = {}
        self._keys: dict[ServiceKey, tuple[ServiceConfig, tuple[DestKey, ...]]] = {}

    def dest_keys(self, svc: ServiceConfig) -> tuple[DestKey, ...]:
        """The DestKeys of ``svc.real``, in order; the same objects while they stay equal."""
        known = self._keys.get(svc.key)
        if known is not None and known[0] is svc:
            return known[1]
        if known is not None and known[0] == svc:  # a reload that left it as it was
            self._keys[svc.key] = (svc, known[1])
            return known[1]
        keys = tuple(DestKey(*svc.real_endpoint(r)) for r in svc.real)
        if known is not None:  # a changed service: keep the objects of unchanged reals
            same = {k: k for k in known[1]}
            keys = tuple(same.get(k, k) for k in keys)
        self._keys[svc.key] = (svc, keys)
        return keys

    def forget_others(self, config: Config) -> None:
        """Drop the keys of services no longer configured."""
        if len(self._keys) > len(config.service):
            current = {svc.key for svc in config.service}
            for key in [k for k in self._keys if k not in current]:
                del self._keys[key]


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
        dest_keys = memo.dest_keys(svc)
        if entry is not None and entry.dest_keys is not dest_keys:
            entry = None  # the service's config changed
        have = actual.get(key)
        healths = tuple(health.get((key, k)) for k in dest_keys)
        others = (
            tuple(overrides.get((key, k)) for k in dest_keys) if overrides else (),
            _connections(have) if svc.on_failure == "remove" else None,
            assume_healthy,
        )
        if (
            entry is None
            or entry.plan.next_change_at is not None
            or entry.others != others
            or not _same_for_plan(entry.healths, healths)
        ):
            settings = service_settings(svc)
            policy = pool_policy(svc)
            views = _views(svc, dest_keys, health, overrides, have, assume_healthy)
            plan = plan_pool(policy, views, now)
            prior = previous.get(key)
            before = prior.service if prior is not None else None
            service = _service(svc, dest_keys, settings, plan, policy, before)
            entry = _Memo(svc, dest_keys, healths, others, service, plan)
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
    memo.forget_others(config)
    return Wanted(Table.of(services), pools, min(deadlines) if deadlines else None)


def _connections(have: Service | None) -> tuple[tuple[DestKey, int], ...]:
    if have is None:
        return ()
    return tuple((d.key, d.stats.active_connections if d.stats else 0) for d in have.dests)


def _views(
    svc: ServiceConfig,
    dest_keys: tuple[DestKey, ...],
    health: Mapping[RealKey, RealHealth],
    overrides: Mapping[RealKey, Override],
    have: Service | None,
    assume_healthy: bool,
) -> dict[DestKey, RealView]:
    kernel = have.dest_map() if have is not None else {}
    views: dict[DestKey, RealView] = {}
    for real, key in zip(svc.real, dest_keys, strict=True):
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


def _service(
    svc: ServiceConfig,
    dest_keys: tuple[DestKey, ...],
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
    dests: list[Dest] = []
    for real, key in zip(svc.real, dest_keys, strict=True):
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
