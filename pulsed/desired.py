"""The wanted IPVS table: a pure function of config, health and overrides."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pulsed.config import Config, ServiceConfig, persistence_netmask, scheduler_flag_bits
from pulsed.model import Dest, DestKey, Forwarding, Service, ServiceKey, Table
from pulsed.overrides import Override, RealKey

_DEFAULT_OVERRIDE = Override()


@dataclass(frozen=True)
class PoolOutcome:
    """How one service's pool was decided, for /status and logging."""

    weights: Mapping[DestKey, int]
    sorry_in_use: bool = False
    failed_open: bool = False
    kept_open: tuple[DestKey, ...] = ()


@dataclass(frozen=True)
class Wanted:
    table: Table
    pools: Mapping[ServiceKey, PoolOutcome] = field(default_factory=dict)


def service_settings(svc: ServiceConfig) -> Service:
    """The kernel-side settings of a configured service, without destinations."""
    return Service(
        key=svc.key,
        scheduler=svc.scheduler,
        flags=scheduler_flag_bits(svc),
        timeout=int(svc.persistence),
        netmask=persistence_netmask(svc),
    )


def wanted_table(
    config: Config,
    health: Mapping[RealKey, object] | None = None,
    overrides: Mapping[RealKey, Override] | None = None,
    actual: Table | None = None,
    now: float = 0.0,
    assume_healthy: bool = False,
) -> Wanted:
    """Compute the table pulsed wants from config, health and admin overrides.

    ``health`` maps each real server to its RealHealth (absent: not yet
    known); ``actual`` supplies the kernel's connection counts for draining.
    """
    health = health or {}
    overrides = overrides or {}
    actual = actual or Table()
    services: list[Service] = []
    pools: dict[ServiceKey, PoolOutcome] = {}
    for svc in config.service:
        settings = service_settings(svc)
        outcome = pool_outcome(svc, health, overrides, actual.get(settings.key), now)
        pools[settings.key] = outcome
        dests = tuple(_dests(svc, outcome))
        services.append(
            Service(
                key=settings.key,
                scheduler=settings.scheduler,
                flags=settings.flags,
                timeout=settings.timeout,
                netmask=settings.netmask,
                dests=dests,
            )
        )
    return Wanted(Table.of(services), pools)


def real_forwarding(svc: ServiceConfig) -> dict[DestKey, Forwarding]:
    """Forwarding method per real server (the real's override, else the service's)."""
    result = {}
    for real in svc.real:
        address, port = svc.real_endpoint(real)
        result[DestKey(address, port)] = Forwarding(real.forwarding or svc.forwarding)
    return result


def _dests(svc: ServiceConfig, outcome: PoolOutcome) -> list[Dest]:
    dests = []
    for real in svc.real:
        address, port = svc.real_endpoint(real)
        weight = outcome.weights.get(DestKey(address, port))
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
    if outcome.sorry_in_use and svc.sorry_server:
        address, port = (
            svc.real_endpoint_of(svc.sorry_server)
            if hasattr(svc, "real_endpoint_of")
            else _endpoint(svc, svc.sorry_server)
        )
        dests.append(Dest(address, port, weight=1, forwarding=Forwarding(svc.sorry_forwarding)))
    return dests


def _endpoint(svc: ServiceConfig, text: str) -> tuple[str, int]:
    from pulsed.addresses import split_host_port

    return split_host_port(text, svc.port or 0)


def pool_outcome(
    svc: ServiceConfig,
    health: Mapping[RealKey, object],
    overrides: Mapping[RealKey, Override],
    have: Service | None,
    now: float,
) -> PoolOutcome:
    """Kernel weight per real server: admin overrides on top of health."""
    weights: dict[DestKey, int] = {}
    for real in svc.real:
        dest_key = DestKey(*svc.real_endpoint(real))
        override = overrides.get((svc.key, dest_key), _DEFAULT_OVERRIDE)
        if override.mode == "disable":
            continue
        base = override.weight if override.weight is not None else real.weight
        weights[dest_key] = 0 if override.mode == "drain" else base
    return PoolOutcome(weights)
