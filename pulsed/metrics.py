"""Prometheus metrics, rendered from a snapshot of the daemon's state at scrape time.

Every scrape reads the current config, health, overrides, wanted and kernel
tables, so a server removed from the config loses its series at once and the
label sets are bounded by the config. Only what a snapshot cannot tell
(probe latency histograms, result counts, transitions, reconcile durations)
is accumulated, in ``ActivityRecorder``, which is pruned to the monitored
servers on every scrape.

Why the text is written here and not by prometheus_client's
``generate_latest`` over a custom collector: at 10,000 real servers (about
230,000 samples) that path took 1.9 s per scrape on the development
machine, against a 100 ms target; it formats every label set of every
sample anew. Here each server's label text is built once and reused, and a
histogram is one ``%`` format of a cached template. prometheus_client still
supplies the process metrics, and the tests parse this output with its
parser and with ``promtool check metrics``.

Labels: ``service`` is the service's name from the config, ``server`` the
real server's ``address:port``; ``result`` is a probe's category (a small
fixed set, see pulsed.checks.base.ProbeResult).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.process_collector import ProcessCollector

from pulsed import __version__
from pulsed.model import DestKey, ServiceKey, Stats
from pulsed.status_view import indexed_reals

RealKey = tuple[ServiceKey, DestKey]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Probe latency: loopback answers in well under a millisecond, a timeout is a
# second or more. Six buckets keep 10,000 servers' histograms affordable.
PROBE_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.5, 2.5)
RECONCILE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
VRRP_ROLES = ("init", "backup", "master", "fault")
OPS = ("add-service", "set-service", "del-service", "add-dest", "set-dest", "del-dest")

PROBE_HISTOGRAM = "pulsed_real_probe_duration_seconds"


class Histogram:
    """Counts per bucket, their sum and total; cheap enough for one per server."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)  # observations per finite bucket (not cumulative)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.bounds, value)
        if i < len(self.counts):
            self.counts[i] += 1
        self.count += 1
        self.sum += value

    def cumulative(self) -> list[int]:
        out, running = [], 0
        for n in self.counts:
            running += n
            out.append(running)
        out.append(self.count)
        return out


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

    def _record(self, key: RealKey) -> RealRecord:
        record = self.reals.get(key)
        if record is None:
            record = self.reals[key] = RealRecord()
        return record

    def on_probe(self, key: RealKey, result: Any) -> None:
        record = self._record(key)
        record.latency.observe(max(0.0, float(result.latency)))
        record.results[result.category] += 1

    def on_health(self, key: RealKey, health: Any) -> None:
        record = self._record(key)
        # The monitor reports up/down flips and weight reports; a report about
        # a server not seen yet, once it has been probed, is a flip.
        if record.last_up != health.up and (record.last_up is not None or health.last_ok):
            record.transitions += 1
        record.last_up = health.up

    def on_pass(self, result: Any, elapsed: float) -> None:
        self.reconcile.observe(elapsed)

    def seed(self, health: Mapping[RealKey, Any]) -> None:
        """Forget servers no longer monitored; note the state of new ones."""
        for key in [k for k in self.reals if k not in health]:
            del self.reals[key]
        for key, h in health.items():
            record = self._record(key)
            if record.last_up is None:
                record.last_up = h.up


def attach_recorder(daemon: Any, recorder: ActivityRecorder) -> None:
    """Subscribe the recorder to the daemon's probe, health and reconcile events."""
    daemon.pass_observers.append(recorder.on_pass)
    daemon.probe_observers.append(recorder.on_probe)
    daemon.health_observers.append(recorder.on_health)
    recorder.seed(daemon.monitor.health())


def escape(value: str) -> str:
    """A label value as the text format wants it."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float | int | bool) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


class _Family:
    """Samples of one metric family, written under its HELP and TYPE lines."""

    __slots__ = ("help", "lines", "name", "type")

    def __init__(self, name: str, typ: str, help_text: str) -> None:
        self.name, self.type, self.help = name, typ, help_text
        self.lines: list[str] = []

    def add(self, labels: str, value: float | int | bool, suffix: str = "") -> None:
        body = f"{{{labels}}}" if labels else ""
        self.lines.append(f"{self.name}{suffix}{body} {_num(value)}\n")

    def text(self) -> str:
        head = f"# HELP {self.name} {self.help}\n# TYPE {self.name} {self.type}\n"
        return head + "".join(self.lines)


class MetricsRenderer:
    """Renders /metrics for one daemon; caches label text between scrapes."""

    def __init__(self, daemon: Any, recorder: ActivityRecorder) -> None:
        self.daemon = daemon
        self.recorder = recorder
        self._indexed: tuple[Any, list] | None = None
        self._process = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self._process)

    def render(self) -> bytes:
        d = self.daemon
        health = d.monitor.health()
        self.recorder.seed(health)
        parts = [
            *config_families(d),
            *self._real_families(d, health),
            *reconcile_families(d, self.recorder),
            *vrrp_families(getattr(d, "vrrp", None)),
        ]
        text = "".join(p if isinstance(p, str) else p.text() for p in parts)
        return text.encode() + generate_latest(self._process)

    def _index(self, config: Any) -> list[tuple[Any, ServiceKey, str, list[tuple]]]:
        """Per service: (config, key, label text, [(real, dest, key, labels, template)]).

        Built once per config object: label text and histogram templates are
        the same on every scrape until a reload replaces the config.
        """
        if self._indexed is not None and self._indexed[0] is config:
            return self._indexed[1]
        index = []
        for svc, svc_key, reals in indexed_reals(config):
            rows = []
            for real, dest in reals:
                labels = f'service="{escape(svc.name)}",server="{dest}"'
                rows.append((real, dest, (svc_key, dest), labels, _histogram_template(labels)))
            index.append((svc, svc_key, f'service="{escape(svc.name)}"', rows))
        self._indexed = (config, index)
        return index

    def _real_families(self, d: Any, health: Mapping[RealKey, Any]) -> list[Any]:
        up = _Family(
            "pulsed_real_up",
            "gauge",
            "1 if the real server passes its health check (after rise/fall), else 0.",
        )
        configured = _Family(
            "pulsed_real_configured_weight",
            "gauge",
            "Weight from the config, or the admin's weight override.",
        )
        effective = _Family(
            "pulsed_real_effective_weight",
            "gauge",
            "Weight pulsed programs into IPVS (0 while quiesced or drained; absent if removed).",
        )
        admin = _Family(
            "pulsed_real_admin_override",
            "gauge",
            "1 for a real server under an admin override (mode drain or disable).",
        )
        hist_lines: list[str] = []
        results = _Family(
            "pulsed_real_probe_results_total",
            "counter",
            "Health-check probe results by outcome (ok, refused, timeout, status, ...).",
        )
        transitions = _Family(
            "pulsed_real_transitions_total",
            "counter",
            "Health transitions (up to down, down to up) since the daemon started.",
        )
        svc_up = _Family(
            "pulsed_service_real_servers_up",
            "gauge",
            "Real servers of the service that pass their health check.",
        )
        svc_total = _Family(
            "pulsed_service_real_servers", "gauge", "Real servers configured for the service."
        )
        failed_open = _Family(
            "pulsed_service_failed_open",
            "gauge",
            "1 while min_healthy keeps failed servers in the pool.",
        )
        sorry = _Family(
            "pulsed_service_sorry_server_active",
            "gauge",
            "1 while the sorry server takes the service's traffic.",
        )
        present = _Family(
            "pulsed_ipvs_service_present",
            "gauge",
            "1 if the configured service is in the kernel's IPVS table.",
        )
        ipvs = _IpvsFamilies()
        overrides = d.overrides.all()
        pools = d.wanted.pools
        records = self.recorder.reals
        actual = d.reconciler.last_actual
        up_lines, conf_lines, eff_lines = up.lines, configured.lines, effective.lines
        trans_lines = transitions.lines
        for _svc, svc_key, svc_labels, reals in self._index(d.config):
            pool = pools.get(svc_key)
            weights = pool.weights if pool is not None else {}
            kernel = actual.get(svc_key)
            n_up = 0
            dest_labels = {}
            for real, dest, key, labels, template in reals:
                dest_labels[dest] = labels
                h = health.get(key)
                is_up = h is not None and h.up
                n_up += is_up
                up_lines.append(f"pulsed_real_up{{{labels}}} {1 if is_up else 0}\n")
                override = overrides.get(key) if overrides else None
                base = real.weight
                if override is not None:
                    if override.weight is not None:
                        base = override.weight
                    if override.mode != "enabled":
                        admin.add(f'{labels},mode="{override.mode}"', 1)
                conf_lines.append(f"pulsed_real_configured_weight{{{labels}}} {base}\n")
                weight = weights.get(dest)
                if weight is not None:
                    eff_lines.append(f"pulsed_real_effective_weight{{{labels}}} {weight}\n")
                record = records.get(key)
                if record is not None:
                    hist = record.latency
                    hist_lines.append(template % (*hist.cumulative(), hist.sum, hist.count))
                    for result, count in record.results.items():
                        results.add(f'{labels},result="{escape(str(result))}"', count)
                    trans_lines.append(
                        f"pulsed_real_transitions_total{{{labels}}} {record.transitions}\n"
                    )
            svc_up.add(svc_labels, n_up)
            svc_total.add(svc_labels, len(reals))
            failed_open.add(svc_labels, bool(pool is not None and pool.failed_open))
            sorry.add(svc_labels, bool(pool is not None and pool.sorry_in_use))
            present.add(svc_labels, kernel is not None)
            if kernel is not None:
                ipvs.add("service", svc_labels, kernel.stats)
                for kd in kernel.dests:
                    labels = dest_labels.get(kd.key)
                    if labels is not None:  # configured destinations only
                        ipvs.add("real", labels, kd.stats)
        histogram = (
            f"# HELP {PROBE_HISTOGRAM} Duration of health-check probes.\n"
            f"# TYPE {PROBE_HISTOGRAM} histogram\n" + "".join(hist_lines)
        )
        return [
            up,
            configured,
            effective,
            admin,
            histogram,
            results,
            transitions,
            svc_up,
            svc_total,
            failed_open,
            sorry,
            present,
            *ipvs.families(),
        ]


def _histogram_template(labels: str) -> str:
    """The text of one server's probe histogram, to be filled with ``%``."""
    lab = labels.replace("%", "%%")
    rows = [f'{PROBE_HISTOGRAM}_bucket{{{lab},le="{b!r}"}} %d\n' for b in PROBE_BUCKETS]
    rows.append(f'{PROBE_HISTOGRAM}_bucket{{{lab},le="+Inf"}} %d\n')
    rows.append(f"{PROBE_HISTOGRAM}_sum{{{lab}}} %r\n")
    rows.append(f"{PROBE_HISTOGRAM}_count{{{lab}}} %d\n")
    return "".join(rows)


class _IpvsFamilies:
    """The kernel's IPVS counters, per configured service and per destination."""

    def __init__(self) -> None:
        self.by_level: dict[str, list[_Family]] = {}
        for level, what in (("service", "virtual service"), ("real", "real server")):
            self.by_level[level] = [
                _Family(
                    f"pulsed_ipvs_{level}_connections_total",
                    "counter",
                    f"Connections the kernel scheduled to this {what}.",
                ),
                _Family(
                    f"pulsed_ipvs_{level}_packets_total",
                    "counter",
                    f"Packets through this {what}, by direction.",
                ),
                _Family(
                    f"pulsed_ipvs_{level}_bytes_total",
                    "counter",
                    f"Bytes through this {what}, by direction.",
                ),
                _Family(
                    f"pulsed_ipvs_{level}_active_connections",
                    "gauge",
                    f"Active (established) connections of this {what}.",
                ),
                _Family(
                    f"pulsed_ipvs_{level}_inactive_connections",
                    "gauge",
                    f"Inactive connections of this {what}.",
                ),
            ]

    def add(self, level: str, labels: str, s: Stats | None) -> None:
        if s is None:
            return
        conns, packets, octets, active, inactive = self.by_level[level]
        conns.lines.append(f"{conns.name}{{{labels}}} {s.connections}\n")
        packets.lines.append(
            f'{packets.name}{{{labels},direction="in"}} {s.packets_in}\n'
            f'{packets.name}{{{labels},direction="out"}} {s.packets_out}\n'
        )
        octets.lines.append(
            f'{octets.name}{{{labels},direction="in"}} {s.bytes_in}\n'
            f'{octets.name}{{{labels},direction="out"}} {s.bytes_out}\n'
        )
        active.lines.append(f"{active.name}{{{labels}}} {s.active_connections}\n")
        inactive.lines.append(f"{inactive.name}{{{labels}}} {s.inactive_connections}\n")

    def families(self) -> list[_Family]:
        return [f for level in ("service", "real") for f in self.by_level[level]]


def _gauge(name: str, help_text: str, value: float | int | bool, labels: str = "") -> _Family:
    family = _Family(name, "gauge", help_text)
    family.add(labels, value)
    return family


def _counter(name: str, help_text: str, value: float | int, labels: str = "") -> _Family:
    family = _Family(name, "counter", help_text)
    family.add(labels, value)
    return family


def config_families(d: Any) -> list[_Family]:
    r = d.reload_status
    services = d.config.service
    return [
        _gauge("pulsed_build_info", "pulsed version.", 1, f'version="{escape(__version__)}"'),
        _gauge(
            "pulsed_config_generation",
            "Config generation: 1 at start, +1 on each reload that changed the config.",
            r.generation,
        ),
        _gauge(
            "pulsed_config_last_reload_successful",
            "1 if the last reload (or the start) succeeded, 0 if it failed (old config kept).",
            bool(r.last_ok),
        ),
        _gauge(
            "pulsed_config_last_reload_timestamp_seconds",
            "Unix time of the last reload attempt (or of the start).",
            float(r.last_time),
        ),
        _gauge("pulsed_config_services", "Services in the running config.", len(services)),
        _gauge(
            "pulsed_config_real_servers",
            "Real servers in the running config.",
            sum(len(s.real) for s in services),
        ),
        _gauge("pulsed_start_time_seconds", "Unix time the daemon started.", float(d.started_at)),
    ]


def reconcile_families(d: Any, recorder: ActivityRecorder) -> list[Any]:
    st = d.reconciler.status
    ops = _Family(
        "pulsed_reconcile_operations_total",
        "counter",
        "IPVS writes the kernel accepted, by operation.",
    )
    for op in OPS:
        ops.add(f'op="{op}"', st.ops_applied.get(op, 0))
    hist = recorder.reconcile
    duration = _Family(
        "pulsed_reconcile_duration_seconds", "histogram", "Duration of reconcile passes."
    )
    for bound, count in zip((*hist.bounds, "+Inf"), hist.cumulative(), strict=True):
        le = bound if isinstance(bound, str) else repr(float(bound))
        duration.add(f'le="{le}"', count, "_bucket")
    duration.add("", hist.sum, "_sum")
    duration.add("", hist.count, "_count")
    return [
        _counter(
            "pulsed_reconcile_passes_total", "Reconcile passes (read, diff, apply).", st.passes
        ),
        ops,
        _counter("pulsed_reconcile_errors_total", "IPVS writes the kernel refused.", st.errors),
        duration,
        _gauge(
            "pulsed_reconcile_in_sync",
            "1 if the last pass left the kernel equal to the wanted table.",
            bool(st.in_sync),
        ),
        _gauge(
            "pulsed_reconcile_failing_services",
            "Services whose last pass had a kernel refusal.",
            len(st.failing_services),
        ),
        _gauge(
            "pulsed_reconcile_last_run_timestamp_seconds",
            "Unix time of the last reconcile pass.",
            float(st.last_run),
        ),
    ]


def vrrp_status(node: Any) -> dict[str, Any] | None:
    """The node's status() as a plain dict (None before the node started).

    Accepts pulsed.ha.node.VrrpStatus (``state``, ``priority`` configured,
    ``effective_priority``) or a mapping with the same keys; ``role`` is
    taken as a synonym of ``state``. Interface and VRID come from ``node.cfg``.
    """
    status = node.status()
    if status is None:
        return None
    if isinstance(status, Mapping):
        out = dict(status)
    elif is_dataclass(status) and not isinstance(status, type):
        out = asdict(status)
    else:
        out = dict(vars(status))
    out.setdefault("state", out.get("role", "init"))
    cfg = getattr(node, "cfg", None)
    if cfg is not None:
        out.setdefault("interface", getattr(cfg, "interface", ""))
        out.setdefault("vrid", getattr(cfg, "vrid", ""))
    if "effective_priority" in out:
        out["configured_priority"] = out["priority"]
        out["priority"] = out["effective_priority"]
    return out


def vrrp_families(node: Any) -> list[_Family]:
    """VRRP role, priority and advert counters, when this router runs VRRP."""
    s = vrrp_status(node) if node is not None else None
    if s is None:
        return []
    labels = f'interface="{escape(str(s.get("interface", "")))}",vrid="{s.get("vrid", "")}"'
    role = _Family("pulsed_vrrp_state", "gauge", "1 for the router's current VRRP role.")
    current = str(s["state"]).lower()
    for name in VRRP_ROLES:
        role.add(f'{labels},state="{name}"', current == name)
    families = [role]
    for key, name, text in (
        ("priority", "pulsed_vrrp_priority", "Effective VRRP priority (after tracking)."),
        ("configured_priority", "pulsed_vrrp_configured_priority", "Configured VRRP priority."),
    ):
        if s.get(key) is not None:
            families.append(_gauge(name, text, s[key], labels))
    for key, name, text in (
        ("adverts_sent", "pulsed_vrrp_adverts_sent_total", "VRRP adverts sent."),
        ("adverts_received", "pulsed_vrrp_adverts_received_total", "Valid VRRP adverts received."),
        ("transitions", "pulsed_vrrp_transitions_total", "VRRP role changes."),
    ):
        if s.get(key) is not None:
            families.append(_counter(name, text, s[key], labels))
    drops = s.get("drops")
    if isinstance(drops, Mapping):
        dropped = _Family(
            "pulsed_vrrp_packets_dropped_total", "counter", "VRRP packets dropped, by reason."
        )
        for reason, count in sorted(drops.items()):
            dropped.add(f'{labels},reason="{escape(str(reason))}"', count)
        families.append(dropped)
    return families
