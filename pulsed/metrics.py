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
sample anew. Here each server's label values (its service's escaped name,
its ``address:port``) are found once per config, and each family is
written in blocks of servers by one ``%`` format per line (one per server
for the 9-line histogram), from templates shared by all servers.
``chunks()`` yields the text in pieces of about 64 KiB, so the API streams
it while it renders and the peak memory of a scrape stays small: a 12 MB
document built whole left the process 50 MiB larger.
prometheus_client still supplies the process metrics (imported at the first
scrape: nothing else here needs it), and the tests parse this output with
its parser and with ``promtool check metrics``.

Labels: ``service`` is the service's name from the config, ``server`` the
real server's ``address:port``; ``result`` is a probe's category (a small
fixed set, see pulsed.checks.base.ProbeResult); ``reason`` of
``pulsed_probe_local_errors_total`` is one of pulsed.checks.base.LOCAL_FAULTS.
A server's local errors are its ``pulsed_real_probe_results_total`` with
``result="local"``.
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
# What chunks() yields at a time, and servers formatted per step (a block of
# histograms is ~58 KB). Larger pieces are no faster to send and leave the
# allocator holding more after a scrape: with 256 KiB and 256 servers, the
# process stayed ~2 MiB larger at 10,000 servers.
CHUNK_BYTES = 64 * 1024
BLOCK = 64

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


# Columns of ActivityRecorder.counts: the probe histogram's cumulative bucket
# counts, then its total.
_TOTAL = len(PROBE_BUCKETS)
_RESULTS = _TOTAL + 1
# ActivityRecorder.last_up: what the last health report said.
_SEEN_NOTHING, _SEEN_DOWN, _SEEN_UP = 0, 1, 2


class ActivityRecorder:
    """What only events can tell: probe results, health transitions, reconcile passes.

    Per-server figures are kept in columns, one array per figure, a server's
    row being its slot in ``slots``, rather than in one object per server:
    at 10,000 servers that is about 1.4 MB instead of 2.9 (an object, an
    array of counts and a float each), and counts never become int objects.
    ``layout`` puts the rows in the order the scrape writes them.
    """

    def __init__(self) -> None:
        self.slots: dict[RealKey, int] = {}
        self.counts: list[array] = [array("q") for _ in range(_RESULTS)]
        self.sums = array("d")
        self.transitions = array("q")
        self.last_up = bytearray()
        # Probe count per result category (a small fixed set, see
        # pulsed.checks.base.ProbeResult), in the order first seen.
        self.categories: dict[str, array] = {}
        self.reconcile = Histogram(RECONCILE_BUCKETS)
        self._tails = self._bucket_tails()

    def _bucket_tails(self) -> list[list[array]]:
        # A probe in bucket i counts in buckets i.. and in the total.
        return [self.counts[i:] for i in range(_RESULTS)]

    def _slot(self, key: RealKey) -> int:
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = len(self.slots)
            for column in (*self.counts, self.transitions, *self.categories.values()):
                column.append(0)
            self.sums.append(0.0)
            self.last_up.append(_SEEN_NOTHING)
        return slot

    def on_probe(self, key: RealKey, result: Any) -> None:
        slot = self._slot(key)
        category = str(result.category)
        # A local error (the router's fault) is counted as a result, but its
        # duration says nothing about the server: kept out of the histogram.
        if category != "local":
            latency = max(0.0, float(result.latency))
            for column in self._tails[bisect.bisect_left(PROBE_BUCKETS, latency)]:
                column[slot] += 1
            self.sums[slot] += latency
        column = self.categories.get(category)
        if column is None:
            column = self.categories[category] = array("q", bytes(8 * len(self.slots)))
        column[slot] += 1

    def on_health(self, key: RealKey, health: Any) -> None:
        slot = self._slot(key)
        last = self.last_up[slot]
        # The monitor reports up/down flips and weight reports. For the first
        # report about a server the previous state is not known here; a flip
        # is the probe that made the transition (pulsed.checks.state sets
        # both times from the same clock reading).
        if last != _SEEN_NOTHING:
            flipped = (last == _SEEN_UP) != health.up
        else:
            checked = getattr(health, "last_check", None)
            flipped = checked is not None and getattr(health, "last_transition", None) == checked
        if flipped:
            self.transitions[slot] += 1
        self.last_up[slot] = _SEEN_UP if health.up else _SEEN_DOWN

    def on_pass(self, result: Any, elapsed: float) -> None:
        self.reconcile.observe(elapsed)

    def seed(self, health: Mapping[RealKey, Any]) -> None:
        """Rows for the monitored servers; forget the others."""
        self.layout(list(health))

    def layout(self, keys: list[RealKey]) -> None:
        """Give ``keys`` the rows 0, 1, ... in this order; forget every other server.

        Rows are moved into new arrays: a scrape under way keeps reading the
        old ones.
        """
        if list(self.slots) == keys:
            return
        where = [self.slots.get(key, -1) for key in keys]

        def moved(column: array) -> array:
            return array(column.typecode, [column[j] if j >= 0 else 0 for j in where])

        self.counts = [moved(c) for c in self.counts]
        self.sums = moved(self.sums)
        self.transitions = moved(self.transitions)
        self.last_up = bytearray(self.last_up[j] if j >= 0 else _SEEN_NOTHING for j in where)
        self.categories = {name: moved(c) for name, c in self.categories.items()}
        self.slots = {key: i for i, key in enumerate(keys)}
        self._tails = self._bucket_tails()

    # Reading one server's figures (tests, debugging).

    def histogram(self, key: RealKey) -> tuple[list[int], float]:
        """Cumulative bucket counts (the last one is the total) and the sum of latencies."""
        slot = self.slots.get(key)
        if slot is None:
            return [0] * _RESULTS, 0.0
        return [c[slot] for c in self.counts], self.sums[slot]

    def results(self, key: RealKey) -> dict[str, int]:
        """Probe count per result category (categories never seen are left out)."""
        slot = self.slots.get(key)
        if slot is None:
            return {}
        return {name: c[slot] for name, c in self.categories.items() if c[slot]}

    def transitions_of(self, key: RealKey) -> int:
        slot = self.slots.get(key)
        return 0 if slot is None else self.transitions[slot]


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
    """A one-sample template: the service's name, the server's text, then the value."""
    return f'{name}{{service="%s",server="%s"{extra}}} {value}\n'


# One server's probe histogram: its name and server text go in before every value.
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
    """Per config: each real server's label values and key, grouped by service.

    ``keys`` are the monitor's own key objects where it has them, so the
    lookups in its health snapshot find them by identity. A server's labels
    are its service's escaped name (one string per service) and its
    ``address:port`` text, which is the config's own string when that is
    how the config wrote it: no label text per server (~1 MB at 10,000).
    """

    __slots__ = ("config", "configured", "keys", "names", "servers", "services")

    def __init__(self, config: Any, health: Mapping[RealKey, Any]) -> None:
        self.config = config
        self.names: list[str] = []
        self.servers: list[str] = []
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
                self.names.append(name)
                server = str(dest)
                self.servers.append(real.address if real.address == server else server)
                self.configured.append(real.weight)
            self.services.append((svc, svc_key, f'service="{name}"', start, len(self.keys)))


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
            # A new config is the only way servers come and go. The recorder's
            # rows follow the index: a server's row is its line number.
            index = self._index = _Index(config, health)
            self.recorder.layout(index.keys)
        return index

    def _pieces(self) -> Iterator[str]:
        d = self.daemon
        health = d.monitor.health()
        index = self._index_for(d.config, health)
        real = _RealSnapshot(d, index, health, self.recorder)
        yield "".join(f.text() for f in config_families(d))
        yield from real.pieces()
        yield "".join(f.text() for f in probe_families(d))
        yield "".join(
            p if isinstance(p, str) else p.text() for p in reconcile_families(d, self.recorder)
        )
        yield "".join(f.text() for f in vrrp_families(getattr(d, "vrrp", None)))


class _RealSnapshot:
    """Per-server values read at the start of a scrape, then written family by family."""

    def __init__(
        self, d: Any, index: _Index, health: Mapping[RealKey, Any], recorder: ActivityRecorder
    ) -> None:
        self.index = index
        keys = index.keys
        if list(health) == keys:  # the monitor's order is the config's: no lookups
            states = list(health.values())
        else:
            states = [health.get(key) for key in keys]
        self.monitored = [h is not None for h in states]
        self.up = [1 if h is not None and h.up else 0 for h in states]
        # The recorder's columns, row i being index line i (see _index_for).
        # Held here: a layout for a new config during the scrape makes new ones.
        self.counts = recorder.counts
        self.sums = recorder.sums
        self.transitions = recorder.transitions
        self.categories = [(escape(name), c) for name, c in recorder.categories.items()]
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
                    self.admin.append(_ADMIN % (index.names[i], index.servers[i], override.mode))
        pools = d.wanted.pools
        actual = d.reconciler.last_actual
        names, servers, keys = index.names, index.servers, index.keys
        # Weight in the wanted table, by line (None: not in it).
        self.effective: list[int | None] = [None] * len(keys)
        self.services: list[tuple[str, int, int, Any, Any]] = []
        self.kernel_reals: list[tuple[str, Stats]] = []
        for _svc, svc_key, svc_labels, start, end in index.services:
            pool = pools.get(svc_key)
            if pool is not None:
                get = pool.weights.get
                self.effective[start:end] = [get(keys[i][1]) for i in range(start, end)]
            kernel = actual.get(svc_key)
            self.services.append((svc_labels, sum(self.up[start:end]), end - start, pool, kernel))
            if kernel is not None and kernel.dests:
                by_endpoint = {(keys[i][1].address, keys[i][1].port): i for i in range(start, end)}
                for kd in kernel.dests:
                    i = by_endpoint.get((kd.address, kd.port))
                    if i is not None and kd.stats is not None:  # configured destinations only
                        lab = f'service="{names[i]}",server="{servers[i]}"'
                        self.kernel_reals.append((lab, kd.stats))

    def pieces(self) -> Iterator[str]:
        names, servers = self.index.names, self.index.servers
        n = len(names)
        blocks = range(0, n, BLOCK)
        yield _head(
            "pulsed_real_up",
            "gauge",
            "1 if the real server passes its health check (after rise/fall), else 0.",
        )
        yield from _per_server(_UP, names, servers, self.up)
        yield _head(
            "pulsed_real_configured_weight",
            "gauge",
            "Weight from the config, or the admin's weight override.",
        )
        yield from _per_server(_CONFIGURED, names, servers, self.configured)
        yield _head(
            "pulsed_real_effective_weight",
            "gauge",
            "Weight pulsed programs into IPVS (0 while quiesced or drained; absent if removed).",
        )
        eff = self.effective
        for a in blocks:
            yield "".join(
                [
                    _EFFECTIVE % (names[i], servers[i], w)
                    for i, w in enumerate(eff[a : a + BLOCK], a)
                    if w is not None
                ]
            )
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
        transitions, monitored = self.transitions, self.monitored
        for a in blocks:
            yield "".join(
                [
                    _TRANSITIONS % (names[i], servers[i], transitions[i])
                    for i in range(a, min(n, a + BLOCK))
                    if monitored[i]
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
        names, servers = self.index.names, self.index.servers
        monitored, total = self.monitored, self.sums
        c0, c1, c2, c3, c4, c5, c6 = self.counts
        out = []
        for i in range(start, end):
            if not monitored[i]:
                continue
            a, b = names[i], servers[i]
            n = c6[i]
            # One format per server, its arguments written out: a loop costs more.
            # fmt: off
            out.append(_HISTOGRAM_TEMPLATE % (
                a, b, c0[i], a, b, c1[i], a, b, c2[i], a, b, c3[i], a, b, c4[i],
                a, b, c5[i], a, b, n, a, b, total[i], a, b, n,
            ))
            # fmt: on
        return "".join(out)

    def _results(self, start: int, end: int) -> str:
        names, servers = self.index.names, self.index.servers
        monitored, categories = self.monitored, self.categories
        out = []
        for i in range(start, end):
            if monitored[i]:
                for category, counts in categories:
                    count = counts[i]
                    if count:
                        out.append(_RESULT % (names[i], servers[i], category, count))
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


def _per_server(
    template: str, names: list[str], servers: list[str], values: list[Any]
) -> Iterator[str]:
    """One line per server, BLOCK servers at a time, formatted without a Python loop."""
    fill = template.__mod__
    for a in range(0, len(names), BLOCK):
        b = a + BLOCK
        yield "".join(map(fill, zip(names[a:b], servers[a:b], values[a:b], strict=True)))


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


def probe_families(d: Any) -> list[_Family]:
    """Daemon-wide probe figures: local errors by reason (every reason, 0 included)."""
    local_faults = getattr(d.monitor, "local_faults", None)
    if local_faults is None:
        return []
    faults = local_faults()
    family = _Family(
        "pulsed_probe_local_errors_total",
        "counter",
        "Probes that failed for a reason on the router (descriptors, memory, sandbox, a "
        "stalled engine), by reason; they never count against a server.",
    )
    for reason, count in faults.totals.items():
        family.add(f'reason="{escape(reason)}"', count)
    return [family]


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
