"""Prometheus metrics, rendered from a snapshot of the daemon's state at scrape time.

Every scrape reads the current config, health, overrides, wanted and kernel
tables, so a server removed from the config loses its series at once and the
label sets are bounded by the config. Only what a snapshot cannot tell
(probe latency histograms, result counts, transitions, reconcile durations)
is accumulated, in ``ActivityRecorder``, which is pruned to the monitored
servers whenever the config changes.

Why the text is written here and not by prometheus_client's
``generate_latest`` over a custom collector: at 10,000 real servers (about
150,000 samples) that path took 1.9 s per scrape on the development
machine, against a 100 ms target; it formats every label set of every
sample anew. Here each server's label text is built once per config, and
each family is written in blocks of servers by one ``%`` format per line
(one per server for the 9-line histogram), from templates shared by all
servers. ``chunks()`` yields the text in pieces of about 256 KiB, so the
API streams it while it renders and the peak memory of a scrape stays
small: a 12 MB document built whole left the process 50 MiB larger.
prometheus_client still supplies the process metrics (imported at the first
scrape: nothing else here needs it), and the tests parse this output with
its parser and with ``promtool check metrics``.

Labels: ``service`` is the service's name from the config, ``server`` the
real server's ``address:port``; ``result`` is a probe's category (a small
fixed set, see pulsed.checks.base.ProbeResult).
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import asdict, is_dataclass
from operator import attrgetter
from typing import Any

from pulsed import __version__
from pulsed.model import DestKey, ServiceKey, Stats
from pulsed.status_view import indexed_reals

RealKey = tuple[ServiceKey, DestKey]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CHUNK_BYTES = 256 * 1024  # what chunks() yields at a time
BLOCK = 256  # servers formatted per step (a histogram block is ~230 KB)

# Probe latency: loopback answers in well under a millisecond, a timeout is a
# second or more. Six buckets keep 10,000 servers' histograms affordable
# (_RealSnapshot._histograms writes the six out by hand: change both together).
PROBE_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.5, 2.5)
RECONCILE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
VRRP_ROLES = ("init", "backup", "master", "fault")
OPS = ("add-service", "set-service", "del-service", "add-dest", "set-dest", "del-dest")

PROBE_HISTOGRAM = "pulsed_real_probe_duration_seconds"


class Histogram:
    """Cumulative counts per bucket (the last one is the total) and their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    @property
    def count(self) -> int:
        return self.counts[-1]

    def observe(self, value: float) -> None:
        counts = self.counts
        for i in range(bisect.bisect_left(self.bounds, value), len(counts)):
            counts[i] += 1
        self.sum += value

    def cumulative(self) -> list[int]:
        return list(self.counts)


# Positions in RealRecord.counts: the histogram's cumulative bucket counts,
# its total, then one count per probe result category.
_TOTAL = len(PROBE_BUCKETS)
_RESULTS = _TOTAL + 1
# Category -> position after _RESULTS. Categories are a small fixed set
# (pulsed.checks.base.ProbeResult), shared by every record.
_CATEGORIES: dict[str, int] = {}
_NO_PROBES = array("q", bytes(8 * _RESULTS))


class RealRecord:
    """What events told about one real server, in ~265 bytes; made at its first event.

    ``counts`` is one array of integers (see _TOTAL, _RESULTS) rather than a
    histogram object, a list and a Counter (~470 bytes): at 10,000 servers
    that is 2 MB less, and counts never become separate int objects.
    """

    __slots__ = ("counts", "last_up", "sum", "transitions")

    def __init__(self, last_up: bool | None = None) -> None:
        self.counts: array | None = None  # made at the first probe
        self.sum = 0.0
        self.transitions = 0
        self.last_up = last_up

    def observe(self, latency: float, category: str) -> None:
        counts = self.counts
        if counts is None:
            counts = self.counts = array("q", _NO_PROBES)
        for i in range(bisect.bisect_left(PROBE_BUCKETS, latency), _RESULTS):
            counts[i] += 1
        self.sum += latency
        slot = _CATEGORIES.get(category)
        if slot is None:
            slot = _CATEGORIES[category] = len(_CATEGORIES)
        at = _RESULTS + slot
        if at >= len(counts):
            counts.extend([0] * (at + 1 - len(counts)))
        counts[at] += 1

    def results(self) -> dict[str, int]:
        """Probe count per result category (categories never seen are left out)."""
        if self.counts is None:
            return {}
        names = list(_CATEGORIES)
        return {names[j]: n for j, n in enumerate(self.counts[_RESULTS:]) if n}


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
        self._record(key).observe(max(0.0, float(result.latency)), str(result.category))

    def on_health(self, key: RealKey, health: Any) -> None:
        record = self._record(key)
        # The monitor reports up/down flips and weight reports. For the first
        # report about a server the previous state is not known here; a flip
        # is the probe that made the transition (pulsed.checks.state sets
        # both times from the same clock reading).
        if record.last_up is not None:
            flipped = record.last_up != health.up
        else:
            checked = getattr(health, "last_check", None)
            flipped = checked is not None and getattr(health, "last_transition", None) == checked
        if flipped:
            record.transitions += 1
        record.last_up = health.up

    def on_pass(self, result: Any, elapsed: float) -> None:
        self.reconcile.observe(elapsed)

    def seed(self, health: Mapping[RealKey, Any]) -> None:
        """Forget servers no longer monitored (records of the others come with events)."""
        for key in [k for k in self.reals if k not in health]:
            del self.reals[key]


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


def _head(name: str, typ: str, help_text: str) -> str:
    return f"# HELP {name} {help_text}\n# TYPE {name} {typ}\n"


class _Family:
    """Samples of one small metric family, written under its HELP and TYPE lines."""

    __slots__ = ("help", "lines", "name", "type")

    def __init__(self, name: str, typ: str, help_text: str) -> None:
        self.name, self.type, self.help = name, typ, help_text
        self.lines: list[str] = []

    def add(self, labels: str, value: float | int | bool, suffix: str = "") -> None:
        body = f"{{{labels}}}" if labels else ""
        self.lines.append(f"{self.name}{suffix}{body} {_num(value)}\n")

    def text(self) -> str:
        return _head(self.name, self.type, self.help) + "".join(self.lines)


def _line(name: str, extra: str = "", value: str = "%s") -> str:
    """A one-sample template: ``%s`` takes the server's label text, then the value."""
    return f"{name}{{%s{extra}}} {value}\n"


# One server's probe histogram: its label text goes in before every value.
_HISTOGRAM_TEMPLATE = (
    "".join(_line(f"{PROBE_HISTOGRAM}_bucket", f',le="{b!r}"', "%d") for b in PROBE_BUCKETS)
    + _line(f"{PROBE_HISTOGRAM}_bucket", ',le="+Inf"', "%d")
    + _line(f"{PROBE_HISTOGRAM}_sum", "", "%r")
    + _line(f"{PROBE_HISTOGRAM}_count", "", "%d")
)
_UP = _line("pulsed_real_up", value="%d")
_CONFIGURED = _line("pulsed_real_configured_weight")
_EFFECTIVE = _line("pulsed_real_effective_weight")
_ADMIN = _line("pulsed_real_admin_override", ',mode="%s"', "1")
_RESULT = _line("pulsed_real_probe_results_total", ',result="%s"', "%d")
_TRANSITIONS = _line("pulsed_real_transitions_total", value="%d")


class _Index:
    """Per config: each real server's label text and key, grouped by service.

    ``keys`` are the monitor's own key objects where it has them, so the
    lookups in its health snapshot find them by identity.
    """

    __slots__ = ("config", "configured", "keys", "labels", "records", "services")

    def __init__(self, config: Any, health: Mapping[RealKey, Any], recorder: ActivityRecorder):
        records = recorder.reals
        self.config = config
        self.labels: list[str] = []
        self.keys: list[RealKey] = []
        self.configured: list[int] = []
        # Per service: (service, key, label text, first row, end row).
        self.services: list[tuple[Any, ServiceKey, str, int, int]] = []
        canonical = {key: key for key in health}
        for svc, svc_key, dests in indexed_reals(config, health):
            name = escape(svc.name)
            start = len(self.keys)
            for real, dest in zip(svc.real, dests, strict=True):
                key = (svc_key, dest)
                self.keys.append(canonical.get(key, key))
                self.labels.append(f'service="{name}",server="{dest}"')
                self.configured.append(real.weight)
            self.services.append((svc, svc_key, f'service="{name}"', start, len(self.keys)))
        # Records are dropped only when the config changes (seed), which
        # rebuilds this index: a server's record stays the same object.
        self.records: list[RealRecord | None] = [records.get(key) for key in self.keys]


class MetricsRenderer:
    """Renders /metrics for one daemon; caches label text between scrapes."""

    def __init__(self, daemon: Any, recorder: ActivityRecorder) -> None:
        self.daemon = daemon
        self.recorder = recorder
        self._index: _Index | None = None
        self._process: Any = None  # prometheus_client registry, made at the first scrape

    def render(self) -> bytes:
        """The whole document at once (tests, small daemons)."""
        return b"".join(self.chunks())

    def chunks(self, size: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The document in pieces of about ``size`` bytes.

        The state is read when the first piece is made; what later pieces
        show comes from that snapshot, except probe counters, which may have
        grown meanwhile.
        """
        pieces = self._pieces()
        buffer: list[str] = []
        held = 0
        for piece in pieces:
            buffer.append(piece)
            held += len(piece)
            if held >= size:
                yield "".join(buffer).encode()
                buffer.clear()
                held = 0
        yield "".join(buffer).encode() + self._process_metrics()

    def _process_metrics(self) -> bytes:
        if self._process is None:
            from prometheus_client import CollectorRegistry
            from prometheus_client.process_collector import ProcessCollector

            self._process = CollectorRegistry(auto_describe=False)
            ProcessCollector(registry=self._process)
        from prometheus_client import generate_latest

        return generate_latest(self._process)

    def _index_for(self, config: Any, health: Mapping[RealKey, Any]) -> _Index:
        index = self._index
        if index is None or index.config is not config:
            # A new config is the only way servers come and go.
            self.recorder.seed(health)
            index = self._index = _Index(config, health, self.recorder)
        return index

    def _pieces(self) -> Iterator[str]:
        d = self.daemon
        health = d.monitor.health()
        index = self._index_for(d.config, health)
        real = _RealSnapshot(d, index, health, self.recorder.reals)
        yield "".join(f.text() for f in config_families(d))
        yield from real.pieces()
        yield "".join(
            p if isinstance(p, str) else p.text() for p in reconcile_families(d, self.recorder)
        )
        yield "".join(f.text() for f in vrrp_families(getattr(d, "vrrp", None)))


class _RealSnapshot:
    """Per-server values read at the start of a scrape, then written family by family."""

    def __init__(
        self, d: Any, index: _Index, health: Mapping[RealKey, Any], records: Mapping
    ) -> None:
        self.index = index
        keys = index.keys
        if list(health) == keys:  # the monitor's order is the config's: no lookups
            states = list(health.values())
        else:
            states = [health.get(key) for key in keys]
        self.monitored = [h is not None for h in states]
        self.up = [1 if h is not None and h.up else 0 for h in states]
        self.records = index.records
        if None in self.records:  # servers the recorder had not seen when the index was built
            for i, record in enumerate(self.records):
                if record is None:
                    self.records[i] = records.get(keys[i])
        self.configured: list[int] = index.configured
        self.admin: list[str] = []
        overrides = d.overrides.all()
        if overrides:
            self.configured = list(index.configured)
            for i, key in enumerate(keys):
                override = overrides.get(key)
                if override is None:
                    continue
                if override.weight is not None:
                    self.configured[i] = override.weight
                if override.mode != "enabled":
                    self.admin.append(_ADMIN % (index.labels[i], override.mode))
        pools = d.wanted.pools
        actual = d.reconciler.last_actual
        labels, keys = index.labels, index.keys
        self.effective: list[tuple[str, int]] = []
        self.services: list[tuple[str, int, int, Any, Any]] = []
        self.kernel_reals: list[tuple[str, Stats]] = []
        for _svc, svc_key, svc_labels, start, end in index.services:
            pool = pools.get(svc_key)
            if pool is not None:
                get = pool.weights.get
                self.effective += [
                    (labels[i], w) for i in range(start, end) if (w := get(keys[i][1])) is not None
                ]
            kernel = actual.get(svc_key)
            self.services.append((svc_labels, sum(self.up[start:end]), end - start, pool, kernel))
            if kernel is not None and kernel.dests:
                by_endpoint = {
                    (keys[i][1].address, keys[i][1].port): labels[i] for i in range(start, end)
                }
                for kd in kernel.dests:
                    lab = by_endpoint.get((kd.address, kd.port))
                    if lab is not None and kd.stats is not None:  # configured destinations only
                        self.kernel_reals.append((lab, kd.stats))

    def pieces(self) -> Iterator[str]:
        labels, n = self.index.labels, len(self.index.labels)
        blocks = range(0, n, BLOCK)
        yield _head(
            "pulsed_real_up",
            "gauge",
            "1 if the real server passes its health check (after rise/fall), else 0.",
        )
        yield from _per_server(_UP, labels, self.up)
        yield _head(
            "pulsed_real_configured_weight",
            "gauge",
            "Weight from the config, or the admin's weight override.",
        )
        yield from _per_server(_CONFIGURED, labels, self.configured)
        yield _head(
            "pulsed_real_effective_weight",
            "gauge",
            "Weight pulsed programs into IPVS (0 while quiesced or drained; absent if removed).",
        )
        eff = self.effective
        for a in range(0, len(eff), BLOCK):
            yield "".join(map(_EFFECTIVE.__mod__, eff[a : a + BLOCK]))
        yield _head(
            "pulsed_real_admin_override",
            "gauge",
            "1 for a real server under an admin override (mode drain or disable).",
        )
        yield "".join(self.admin)
        yield _head(PROBE_HISTOGRAM, "histogram", "Duration of health-check probes.")
        for a in blocks:
            yield self._histograms(a, min(n, a + BLOCK))
        yield _head(
            "pulsed_real_probe_results_total",
            "counter",
            "Health-check probe results by outcome (ok, refused, timeout, status, ...).",
        )
        for a in blocks:
            yield self._results(a, min(n, a + BLOCK))
        yield _head(
            "pulsed_real_transitions_total",
            "counter",
            "Health transitions (up to down, down to up) since the daemon started.",
        )
        for a in blocks:
            yield "".join(
                [
                    _TRANSITIONS % (labels[i], r.transitions if r is not None else 0)
                    for i, r in enumerate(self.records[a : a + BLOCK], a)
                    if self.monitored[i]
                ]
            )
        yield "".join(f.text() for f in self._service_families())
        yield from _ipvs_pieces(
            [
                (lab, k.stats)
                for lab, _, _, _, k in self.services
                if k is not None and k.stats is not None
            ],
            self.kernel_reals,
        )

    def _histograms(self, start: int, end: int) -> str:
        labels, records, monitored = self.index.labels, self.records, self.monitored
        out = []
        for i in range(start, end):
            if not monitored[i]:
                continue
            r = records[i]
            if r is None or r.counts is None:
                c, total = _NO_PROBES, 0.0
            else:
                c, total = r.counts, r.sum
            lab = labels[i]
            n = c[_TOTAL]
            # One format per server, its arguments written out: a loop costs more.
            # fmt: off
            out.append(_HISTOGRAM_TEMPLATE % (
                lab, c[0], lab, c[1], lab, c[2], lab, c[3], lab, c[4], lab, c[5],
                lab, n, lab, total, lab, n,
            ))
            # fmt: on
        return "".join(out)

    def _results(self, start: int, end: int) -> str:
        labels, records = self.index.labels, self.records
        names = [escape(c) for c in _CATEGORIES]
        out = []
        for i in range(start, end):
            r = records[i]
            if r is not None and r.counts is not None and self.monitored[i]:
                lab = labels[i]
                for j, count in enumerate(r.counts[_RESULTS:]):
                    if count:
                        out.append(_RESULT % (lab, names[j], count))
        return "".join(out)

    def _service_families(self) -> list[_Family]:
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
        for svc_labels, n_up, total, pool, kernel in self.services:
            svc_up.add(svc_labels, n_up)
            svc_total.add(svc_labels, total)
            failed_open.add(svc_labels, bool(pool is not None and pool.failed_open))
            sorry.add(svc_labels, bool(pool is not None and pool.sorry_in_use))
            present.add(svc_labels, kernel is not None)
        return [svc_up, svc_total, failed_open, sorry, present]


def _per_server(template: str, labels: list[str], values: list[Any]) -> Iterator[str]:
    """One line per server, BLOCK servers at a time, formatted without a Python loop."""
    fill = template.__mod__
    for a in range(0, len(labels), BLOCK):
        yield "".join(map(fill, zip(labels[a : a + BLOCK], values[a : a + BLOCK], strict=True)))


_STATS = attrgetter(
    "connections",
    "packets_in",
    "packets_out",
    "bytes_in",
    "bytes_out",
    "active_connections",
    "inactive_connections",
)
_ONE = "{%s} %d\n"
_TWO = '{%s,direction="in"} %d\n@{%s,direction="out"} %d\n'  # @: the metric's name


def _ipvs_pieces(
    services: list[tuple[str, Stats]], reals: list[tuple[str, Stats]]
) -> Iterator[str]:
    """The kernel's IPVS counters, per configured service and per destination."""
    for level, what, rows in (
        ("service", "virtual service", services),
        ("real", "real server", reals),
    ):
        prefix = f"pulsed_ipvs_{level}"
        labels = [lab for lab, _ in rows]
        # Columns: connections, packets in/out, bytes in/out, active, inactive.
        cols = list(zip(*map(_STATS, [s for _, s in rows]), strict=True)) or [()] * 7
        for name, typ, help_text, template, columns in (
            (
                f"{prefix}_connections_total",
                "counter",
                f"Connections the kernel scheduled to this {what}.",
                _ONE,
                (labels, cols[0]),
            ),
            (
                f"{prefix}_packets_total",
                "counter",
                f"Packets through this {what}, by direction.",
                _TWO,
                (labels, cols[1], labels, cols[2]),
            ),
            (
                f"{prefix}_bytes_total",
                "counter",
                f"Bytes through this {what}, by direction.",
                _TWO,
                (labels, cols[3], labels, cols[4]),
            ),
            (
                f"{prefix}_active_connections",
                "gauge",
                f"Active (established) connections of this {what}.",
                _ONE,
                (labels, cols[5]),
            ),
            (
                f"{prefix}_inactive_connections",
                "gauge",
                f"Inactive connections of this {what}.",
                _ONE,
                (labels, cols[6]),
            ),
        ):
            fill = (name + template.replace("@", name)).__mod__
            yield _head(name, typ, help_text)
            for a in range(0, len(labels), BLOCK):
                block = [c[a : a + BLOCK] for c in columns]
                yield "".join(map(fill, zip(*block, strict=True)))


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
