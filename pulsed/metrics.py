"""Prometheus metrics, built from a snapshot of the daemon's state at scrape time.

A custom collector rather than long-lived Gauge objects: every scrape reads
the current config, health, overrides, wanted and kernel tables, so a server
removed from the config loses its series at once and the label sets are
bounded by the config. Only what cannot be read from a snapshot (probe
latency histograms, result counts, transitions, reconcile durations) is
accumulated here, and that store is pruned to the configured servers on
every scrape.

Labels: ``service`` is the service's name from the config, ``server`` the
real server's ``address:port``; ``result`` is a probe's category (a small
fixed set, see pulsed.checks.base.ProbeResult).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector

from pulsed import __version__
from pulsed.model import DestKey, ServiceKey, Stats

RealKey = tuple[ServiceKey, DestKey]

# Probe latency: loopback answers in well under a millisecond, a timeout is
# a second or more; twelve buckets keep 10,000 servers' series affordable.
PROBE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
RECONCILE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    """Counts per bucket, their sum and total; cheap enough for one per server."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)  # observations in each finite bucket (not cumulative)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.bounds, value)
        if i < len(self.counts):
            self.counts[i] += 1
        self.count += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, int]]:
        out, running = [], 0
        for bound, n in zip(self.bounds, self.counts, strict=True):
            running += n
            out.append((_le(bound), running))
        out.append(("+Inf", self.count))
        return out


def _le(bound: float) -> str:
    return repr(float(bound))


@dataclass(slots=True)
class RealRecord:
    latency: Histogram = field(default_factory=lambda: Histogram(PROBE_BUCKETS))
    results: Counter = field(default_factory=Counter)
    transitions: int = 0
    last_up: bool | None = None


class ActivityRecorder:
    """What only events can tell: probe results, health transitions, reconcile passes."""

    def __init__(self) -> None:
        self.reals: dict[RealKey, RealRecord] = {}
        self.reconcile = Histogram(RECONCILE_BUCKETS)

    def on_probe(self, key: RealKey, result: Any) -> None:
        record = self.reals.get(key)
        if record is None:
            record = self.reals[key] = RealRecord()
        record.latency.observe(max(0.0, float(result.latency)))
        record.results[result.category] += 1

    def on_health(self, key: RealKey, health: Any) -> None:
        record = self.reals.get(key)
        if record is None:
            record = self.reals[key] = RealRecord()
        if record.last_up is None or record.last_up != health.up:
            # A change report about a server not seen before is a transition:
            # the monitor reports only up/down flips and weight reports.
            if record.last_up is not None or health.last_ok is not None:
                record.transitions += 1
        record.last_up = health.up

    def on_pass(self, result: Any, elapsed: float) -> None:
        self.reconcile.observe(elapsed)

    def seed(self, health: Mapping[RealKey, Any]) -> None:
        """Drop records of servers no longer monitored; note the state of new ones."""
        for key in [k for k in self.reals if k not in health]:
            del self.reals[key]
        for key, h in health.items():
            record = self.reals.get(key)
            if record is None:
                record = self.reals[key] = RealRecord()
            if record.last_up is None:
                record.last_up = h.up


def attach_recorder(daemon: Any, recorder: ActivityRecorder) -> None:
    """Subscribe the recorder to the daemon's probe, health and reconcile events.

    Uses the daemon's observer lists when it has them; otherwise chains onto
    the HealthMonitor's callbacks (kept so pulsed works with either daemon).
    """
    daemon.pass_observers.append(recorder.on_pass)
    probe_observers = getattr(daemon, "probe_observers", None)
    health_observers = getattr(daemon, "health_observers", None)
    monitor = daemon.monitor
    if probe_observers is not None:
        probe_observers.append(recorder.on_probe)
    else:
        monitor._on_result = _chain(getattr(monitor, "_on_result", None), recorder.on_probe)
    if health_observers is not None:
        health_observers.append(recorder.on_health)
    else:
        monitor._on_change = _chain(getattr(monitor, "_on_change", None), recorder.on_health)
    recorder.seed(monitor.health())


def _chain(first: Callable | None, second: Callable) -> Callable:
    if first is None:
        return second

    def both(key: Any, value: Any) -> None:
        first(key, value)
        second(key, value)

    return both


class DaemonCollector:
    """Collects every pulsed metric from the daemon at scrape time."""

    def __init__(self, daemon: Any, recorder: ActivityRecorder) -> None:
        self.daemon = daemon
        self.recorder = recorder

    def describe(self) -> Iterable[Metric]:
        return []  # unchecked collector: the label sets depend on the config

    def collect(self) -> Iterator[Metric]:
        d = self.daemon
        health = d.monitor.health()
        self.recorder.seed(health)
        yield from config_metrics(d)
        yield from real_metrics(d, health, self.recorder)
        yield from ipvs_metrics(d)
        yield from reconcile_metrics(d, self.recorder)
        yield from vrrp_metrics(getattr(d, "vrrp", None))


def build_info() -> Iterator[Metric]:
    info = InfoMetricFamily("pulsed_build", "pulsed version.")
    info.add_metric([], {"version": __version__})
    yield info


def config_metrics(d: Any) -> Iterator[Metric]:
    yield from build_info()
    r = d.reload_status
    yield GaugeMetricFamily(
        "pulsed_config_generation",
        "Config generation: 1 at start, +1 on each reload that changed the config.",
        value=r.generation,
    )
    yield GaugeMetricFamily(
        "pulsed_config_last_reload_successful",
        "1 if the last reload (or the start) succeeded, 0 if it failed and the old config was kept.",
        value=1 if r.last_ok else 0,
    )
    yield GaugeMetricFamily(
        "pulsed_config_last_reload_timestamp_seconds",
        "Unix time of the last reload attempt (or of the start).",
        value=r.last_time,
    )
    services = d.config.service
    yield GaugeMetricFamily(
        "pulsed_config_services", "Services in the running config.", value=len(services)
    )
    yield GaugeMetricFamily(
        "pulsed_config_real_servers",
        "Real servers in the running config.",
        value=sum(len(s.real) for s in services),
    )
    yield GaugeMetricFamily(
        "pulsed_start_time_seconds", "Unix time the daemon started.", value=d.started_at
    )


def real_metrics(d: Any, health: Mapping[RealKey, Any], recorder: ActivityRecorder):
    up = GaugeMetricFamily(
        "pulsed_real_up",
        "1 if the real server passes its health check (after rise/fall), else 0.",
        labels=("service", "server"),
    )
    configured = GaugeMetricFamily(
        "pulsed_real_configured_weight",
        "Weight from the config, or the admin's weight override.",
        labels=("service", "server"),
    )
    effective = GaugeMetricFamily(
        "pulsed_real_effective_weight",
        "Weight pulsed programs into IPVS (0 when quiesced or drained; absent when removed).",
        labels=("service", "server"),
    )
    admin = GaugeMetricFamily(
        "pulsed_real_admin_override",
        "1 for a real server under an admin override (mode drain or disable).",
        labels=("service", "server", "mode"),
    )
    latency = HistogramMetricFamily(
        "pulsed_real_probe_duration_seconds",
        "Duration of health-check probes.",
        labels=("service", "server"),
    )
    results = CounterMetricFamily(
        "pulsed_real_probe_results",
        "Health-check probe results by outcome (ok, refused, timeout, status, ...).",
        labels=("service", "server", "result"),
    )
    transitions = CounterMetricFamily(
        "pulsed_real_transitions",
        "Health transitions (up to down or down to up) since the daemon started.",
        labels=("service", "server"),
    )
    pools_up = GaugeMetricFamily(
        "pulsed_service_real_servers_up",
        "Real servers of the service that pass their health check.",
        labels=("service",),
    )
    failed_open = GaugeMetricFamily(
        "pulsed_service_failed_open",
        "1 while min_healthy keeps failed servers in the pool.",
        labels=("service",),
    )
    sorry = GaugeMetricFamily(
        "pulsed_service_sorry_server_active",
        "1 while the sorry server takes the service's traffic.",
        labels=("service",),
    )
    overrides = d.overrides.all()
    pools = d.wanted.pools
    reals_recorded = recorder.reals
    for svc in d.config.service:
        name = svc.name
        pool = pools.get(svc.key)
        weights = pool.weights if pool is not None else {}
        n_up = 0
        for real in svc.real:
            dest = DestKey(*svc.real_endpoint(real))
            key = (svc.key, dest)
            labels = (name, str(dest))
            h = health.get(key)
            is_up = bool(h is not None and h.up)
            n_up += is_up
            up.add_metric(labels, 1 if is_up else 0)
            override = overrides.get(key)
            base = real.weight
            if override is not None:
                if override.weight is not None:
                    base = override.weight
                if override.mode != "enabled":
                    admin.add_metric((*labels, override.mode), 1)
            configured.add_metric(labels, base)
            weight = weights.get(dest)
            if weight is not None:
                effective.add_metric(labels, weight)
            record = reals_recorded.get(key)
            if record is not None:
                hist = record.latency
                latency.add_metric(labels, hist.buckets(), hist.sum)
                for result, count in record.results.items():
                    results.add_metric((*labels, result), count)
                transitions.add_metric(labels, record.transitions)
        pools_up.add_metric((name,), n_up)
        failed_open.add_metric((name,), 1 if pool is not None and pool.failed_open else 0)
        sorry.add_metric((name,), 1 if pool is not None and pool.sorry_in_use else 0)
    yield from (up, configured, effective, admin, latency, results, transitions)
    yield from (pools_up, failed_open, sorry)


def ipvs_metrics(d: Any) -> Iterator[Metric]:
    """The kernel's counters, for configured services and their destinations only."""
    families: dict[str, Any] = {}
    for level, labels in (("service", ("service",)), ("real", ("service", "server"))):
        families[f"{level}_conns"] = CounterMetricFamily(
            f"pulsed_ipvs_{level}_connections",
            f"Connections the kernel scheduled to this {level} (IPVS counter).",
            labels=labels,
        )
        families[f"{level}_packets"] = CounterMetricFamily(
            f"pulsed_ipvs_{level}_packets",
            f"Packets through this {level}, by direction (IPVS counter).",
            labels=(*labels, "direction"),
        )
        families[f"{level}_bytes"] = CounterMetricFamily(
            f"pulsed_ipvs_{level}_bytes",
            f"Bytes through this {level}, by direction (IPVS counter).",
            labels=(*labels, "direction"),
        )
        families[f"{level}_active"] = GaugeMetricFamily(
            f"pulsed_ipvs_{level}_active_connections",
            f"Active connections of this {level} (IPVS).",
            labels=labels,
        )
        families[f"{level}_inactive"] = GaugeMetricFamily(
            f"pulsed_ipvs_{level}_inactive_connections",
            f"Inactive connections of this {level} (IPVS).",
            labels=labels,
        )
    in_kernel = GaugeMetricFamily(
        "pulsed_ipvs_service_present",
        "1 if the configured service is in the kernel's IPVS table.",
        labels=("service",),
    )
    actual = d.reconciler.last_actual
    for svc in d.config.service:
        have = actual.get(svc.key)
        in_kernel.add_metric((svc.name,), 1 if have is not None else 0)
        if have is None:
            continue
        _add_stats(families, "service", (svc.name,), have.stats)
        for dest in have.dests:
            _add_stats(families, "real", (svc.name, str(dest.key)), dest.stats)
    yield in_kernel
    yield from families.values()


def _add_stats(families: dict[str, Any], level: str, labels: tuple[str, ...], s: Stats | None):
    if s is None:
        return
    families[f"{level}_conns"].add_metric(labels, s.connections)
    families[f"{level}_packets"].add_metric((*labels, "in"), s.packets_in)
    families[f"{level}_packets"].add_metric((*labels, "out"), s.packets_out)
    families[f"{level}_bytes"].add_metric((*labels, "in"), s.bytes_in)
    families[f"{level}_bytes"].add_metric((*labels, "out"), s.bytes_out)
    families[f"{level}_active"].add_metric(labels, s.active_connections)
    families[f"{level}_inactive"].add_metric(labels, s.inactive_connections)


def reconcile_metrics(d: Any, recorder: ActivityRecorder) -> Iterator[Metric]:
    st = d.reconciler.status
    yield CounterMetricFamily(
        "pulsed_reconcile_passes", "Reconcile passes (read, diff, apply).", value=st.passes
    )
    ops = CounterMetricFamily(
        "pulsed_reconcile_operations",
        "IPVS writes the kernel accepted, by operation.",
        labels=("op",),
    )
    for op in ("add-service", "set-service", "del-service", "add-dest", "set-dest", "del-dest"):
        ops.add_metric((op,), st.ops_applied.get(op, 0))
    yield ops
    yield CounterMetricFamily(
        "pulsed_reconcile_errors", "IPVS writes the kernel refused.", value=st.errors
    )
    hist = recorder.reconcile
    duration = HistogramMetricFamily(
        "pulsed_reconcile_duration_seconds", "Duration of reconcile passes."
    )
    duration.add_metric([], hist.buckets(), hist.sum)
    yield duration
    yield GaugeMetricFamily(
        "pulsed_reconcile_in_sync",
        "1 if the last pass left the kernel equal to the wanted table.",
        value=1 if st.in_sync else 0,
    )
    yield GaugeMetricFamily(
        "pulsed_reconcile_failing_services",
        "Services whose last pass had a kernel refusal.",
        value=len(st.failing_services),
    )
    yield GaugeMetricFamily(
        "pulsed_reconcile_last_run_timestamp_seconds",
        "Unix time of the last reconcile pass.",
        value=st.last_run,
    )


VRRP_ROLES = ("init", "backup", "master", "fault")


def vrrp_metrics(node: Any) -> Iterator[Metric]:
    """VRRP role, priority and advert counters, when this router runs VRRP."""
    if node is None:
        return
    status = vrrp_status(node)
    labels = ("interface", "vrid")
    lv = (str(status.get("interface", "")), str(status.get("vrid", "")))
    role = GaugeMetricFamily(
        "pulsed_vrrp_state", "1 for the router's current VRRP role.", labels=(*labels, "state")
    )
    current = str(status.get("role", "init")).lower()
    for name in VRRP_ROLES:
        role.add_metric((*lv, name), 1 if current == name else 0)
    yield role
    for key, name, text in (
        ("priority", "pulsed_vrrp_priority", "Effective VRRP priority (after tracking)."),
        ("configured_priority", "pulsed_vrrp_configured_priority", "Configured VRRP priority."),
    ):
        if status.get(key) is not None:
            g = GaugeMetricFamily(name, text, labels=labels)
            g.add_metric(lv, status[key])
            yield g
    for key, name, text in (
        ("adverts_sent", "pulsed_vrrp_adverts_sent", "VRRP adverts sent."),
        ("adverts_received", "pulsed_vrrp_adverts_received", "Valid VRRP adverts received."),
        ("transitions", "pulsed_vrrp_transitions", "VRRP role changes."),
    ):
        if status.get(key) is not None:
            c = CounterMetricFamily(name, text, labels=labels)
            c.add_metric(lv, status[key])
            yield c
    drops = status.get("drops")
    if isinstance(drops, Mapping):
        c = CounterMetricFamily(
            "pulsed_vrrp_adverts_dropped",
            "VRRP packets dropped, by reason.",
            labels=(*labels, "reason"),
        )
        for reason, count in sorted(drops.items()):
            c.add_metric((*lv, str(reason)), count)
        yield c


def vrrp_status(node: Any) -> dict[str, Any]:
    """The node's status() as a plain dict (it may be a dict or a dataclass)."""
    status = node.status()
    if isinstance(status, Mapping):
        return dict(status)
    if hasattr(status, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(status)
    return dict(vars(status))


def make_registry(daemon: Any, recorder: ActivityRecorder) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonCollector(daemon, recorder))
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
