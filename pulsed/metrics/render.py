"""/metrics text from one snapshot of the daemon (pulsed.readmodel) and the recorder.

Why the text is written here and not by prometheus_client's
``generate_latest`` over a custom collector: see pulsed.metrics. Each
server's label values are found once per config (``_Labels``), and each
family is written in blocks of servers by one ``%`` format per line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from operator import attrgetter
from typing import Any

from pulsed.checks.state import RealHealth
from pulsed.keys import KeyIndex
from pulsed.metrics.process import process_metrics
from pulsed.metrics.recorder import PROBE_BUCKETS, ActivityRecorder
from pulsed.metrics.text import Family, counter, escape, gauge, head
from pulsed.model import RealKey, Service, ServiceKey, Stats
from pulsed.pool_digest import pool_digest
from pulsed.pool_policy import PoolPlan
from pulsed.readmodel import Snapshot
from pulsed.reconcile import DURATION_BUCKETS, ReconcileStatus

# What chunks() yields at a time, and servers formatted per step (a block of
# histograms is ~58 KB). Larger pieces are no faster to send and leave the
# allocator holding more after a scrape: with 256 KiB and 256 servers, the
# process stayed ~2 MiB larger at 10,000 servers.
CHUNK_BYTES = 64 * 1024
BLOCK = 64
VRRP_ROLES = ("init", "backup", "master", "fault")
OPS = ("add-service", "set-service", "del-service", "add-dest", "set-dest", "del-dest")

PROBE_HISTOGRAM = "pulsed_real_probe_duration_seconds"
# The ``result`` label of pulsed_real_probe_results_total: a probe's category
# (pulsed.checks.base.ProbeResult), spelled so that it says what happened.
RESULT_LABELS = {
    "ok": "ok",
    "refused": "connection_refused",
    "timeout": "timeout",
    "reset": "connection_reset",
    "closed": "connection_closed",
    "unreachable": "unreachable",
    "tls": "tls_error",
    "status": "unexpected_status",
    "body": "unexpected_body",
    "protocol": "protocol_error",
    "exit": "nonzero_exit",
    "error": "error",
    "local": "local_error",
}


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
_OVERRIDE = _line("pulsed_real_weight_override")
_RESULT = _line("pulsed_real_probe_results_total", ',result="%s"', "%d")
_TRANSITIONS = _line("pulsed_real_transitions_total", value="%d")


class _Labels:
    """Per config: each real server's label values and key, grouped by service.

    ``keys`` are the KeyIndex's own objects, which the health snapshot is
    keyed by. A server's labels are its service's escaped name (one string
    per service) and its ``address:port`` text, which is the config's own
    string when that is how the config wrote it: no label text per server
    (~1 MB at 10,000).
    """

    __slots__ = ("configured", "index", "keys", "names", "servers", "services")

    def __init__(self, index: KeyIndex) -> None:
        self.index = index
        self.names: list[str] = []
        self.servers: list[str] = []
        self.keys: list[RealKey] = []
        self.configured: list[int] = []
        # Per service: (its key, label text, first row, end row).
        self.services: list[tuple[ServiceKey, str, int, int]] = []
        for svc in index:
            name = escape(svc.name)
            start = len(self.keys)
            for real, key in zip(svc.config.real, svc.reals, strict=True):
                self.keys.append(key)
                self.names.append(name)
                server = str(key[1])
                self.servers.append(real.address if real.address == server else server)
                self.configured.append(real.weight)
            self.services.append((svc.key, f'service="{name}"', start, len(self.keys)))


class MetricsRenderer:
    """Renders /metrics from the daemon's snapshots; keeps label text between scrapes.

    ``snapshot`` is called once per scrape (pulsed.readmodel); ``recorder``
    holds what only events tell (pulsed.metrics.recorder).
    """

    def __init__(self, snapshot: Callable[[], Snapshot], recorder: ActivityRecorder) -> None:
        self._snapshot = snapshot
        self.recorder = recorder
        self._labels: _Labels | None = None

    def chunks(self, size: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The document in pieces of about ``size`` bytes.

        The snapshot is taken when the first piece is made; what later pieces
        show comes from it, except probe counters, which may have grown
        meanwhile.
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
        yield ("".join(buffer) + process_metrics()).encode()

    def _labels_for(self, index: KeyIndex) -> _Labels:
        labels = self._labels
        if labels is None or labels.index is not index:
            # A new config is the only way servers come and go. The recorder's
            # rows follow the labels: a server's row is its line number.
            labels = self._labels = _Labels(index)
            self.recorder.layout(labels.keys)
        return labels

    def _pieces(self) -> Iterator[str]:
        snap = self._snapshot()
        labels = self._labels_for(snap.index)
        real = _RealSnapshot(snap, labels, self.recorder)
        yield "".join(f.text() for f in (*config_families(snap), service_info(snap)))
        yield from real.pieces()
        yield "".join(f.text() for f in probe_families(snap))
        yield "".join(f.text() for f in reconcile_families(snap.reconcile))
        yield "".join(f.text() for f in vrrp_families(snap))
        yield "".join(f.text() for f in pool_digest_families(snap))
        yield "".join(f.text() for f in bgp_families(snap))


class _RealSnapshot:
    """Per-server values read at the start of a scrape, then written family by family."""

    def __init__(self, snap: Snapshot, index: _Labels, recorder: ActivityRecorder) -> None:
        self.index = index
        health = snap.health
        keys = index.keys
        states: list[RealHealth | None]
        if list(health) == keys:  # the monitor's order is the config's: no lookups
            states = list(health.values())
        else:
            states = [health.get(key) for key in keys]
        self.monitored = [h is not None for h in states]
        self.up = [1 if h is not None and h.serving else 0 for h in states]
        # The recorder's columns, row i being index line i (see _index_for).
        # Held here: a layout for a new config during the scrape makes new ones.
        self.counts = recorder.counts
        self.sums = recorder.sums
        self.transitions = recorder.transitions
        self.categories = [
            (escape(RESULT_LABELS.get(name, name)), c) for name, c in recorder.categories.items()
        ]
        self.configured: list[int] = index.configured  # the config's, never an override
        self.admin: list[str] = []
        self.weight_overrides: list[str] = []
        overrides = snap.overrides
        if overrides:
            for i, key in enumerate(keys):
                override = overrides.get(key)
                if override is None:
                    continue
                if override.weight is not None:
                    self.weight_overrides.append(
                        _OVERRIDE % (index.names[i], index.servers[i], override.weight)
                    )
                if override.mode != "enabled":
                    self.admin.append(_ADMIN % (index.names[i], index.servers[i], override.mode))
        pools = snap.pools
        actual = snap.kernel
        names, servers, keys = index.names, index.servers, index.keys
        # Weight in the wanted table, by line (None: not in it).
        self.effective: list[int | None] = [None] * len(keys)
        self.services: list[tuple[str, int, int, PoolPlan | None, Service | None]] = []
        self.kernel_reals: list[tuple[str, Stats]] = []
        for svc_key, svc_labels, start, end in index.services:
            pool = pools.get(svc_key)
            if pool is not None:
                get = pool.weights.get
                self.effective[start:end] = [get(keys[i][1]) for i in range(start, end)]
            kernel = actual.get(svc_key)
            self.services.append((svc_labels, sum(self.up[start:end]), end - start, pool, kernel))
            if kernel is not None and kernel.dests:
                by_endpoint = {(keys[i][1].address, keys[i][1].port): i for i in range(start, end)}
                for kd in kernel.dests:
                    row = by_endpoint.get((kd.address, kd.port))
                    if row is not None and kd.stats is not None:  # configured destinations only
                        lab = f'service="{names[row]}",server="{servers[row]}"'
                        self.kernel_reals.append((lab, kd.stats))

    def pieces(self) -> Iterator[str]:
        names, servers = self.index.names, self.index.servers
        n = len(names)
        blocks = range(0, n, BLOCK)
        yield head(
            "pulsed_real_up",
            "gauge",
            "1 if the real server passes its health check (after rise/fall) and its agent,"
            " if any, does not say it is down, else 0.",
        )
        yield from _per_server(_UP, names, servers, self.up)
        yield head(
            "pulsed_real_configured_weight",
            "gauge",
            "Weight from the config (an admin's override is pulsed_real_weight_override).",
        )
        yield from _per_server(_CONFIGURED, names, servers, self.configured)
        yield head(
            "pulsed_real_weight_override",
            "gauge",
            "Weight an admin set in place of the configured one (absent when none is set).",
        )
        yield "".join(self.weight_overrides)
        yield head(
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
        yield head(
            "pulsed_real_admin_override",
            "gauge",
            "1 for a real server under an admin override (mode drain or disable).",
        )
        yield "".join(self.admin)
        yield head(PROBE_HISTOGRAM, "histogram", "Duration of health-check probes.")
        for a in blocks:
            yield self._histograms(a, min(n, a + BLOCK))
        yield head(
            "pulsed_real_probe_results_total",
            "counter",
            "Health-check probe results by outcome (ok, refused, timeout, status, ...).",
        )
        for a in blocks:
            yield self._results(a, min(n, a + BLOCK))
        yield head(
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

    def _service_families(self) -> list[Family]:
        svc_up = Family(
            "pulsed_service_real_servers_up",
            "gauge",
            "Real servers of the service that pass their health check.",
        )
        svc_total = Family(
            "pulsed_service_real_servers", "gauge", "Real servers configured for the service."
        )
        failed_open = Family(
            "pulsed_service_failed_open",
            "gauge",
            "1 while min_healthy keeps failed servers in the pool.",
        )
        sorry = Family(
            "pulsed_service_sorry_server_active",
            "gauge",
            "1 while the sorry server takes the service's traffic.",
        )
        present = Family(
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
            yield head(name, typ, help_text)
            for a in range(0, len(labels), BLOCK):
                block = [c[a : a + BLOCK] for c in columns]
                yield "".join(map(fill, zip(*block, strict=True)))


def config_families(snap: Snapshot) -> list[Family]:
    r = snap.reload
    return [
        gauge("pulsed_build_info", "pulsed version.", 1, f'version="{escape(snap.version)}"'),
        gauge(
            "pulsed_config_generation",
            "Config generation: 1 at start, +1 on each reload that changed the config.",
            r.generation,
        ),
        gauge(
            "pulsed_config_last_reload_successful",
            "1 if the last reload (or the start) succeeded, 0 if it failed (old config kept).",
            bool(r.last_ok),
        ),
        gauge(
            "pulsed_config_last_reload_timestamp_seconds",
            "Unix time of the last reload attempt (or of the start).",
            float(r.last_time),
        ),
        gauge("pulsed_config_services", "Services in the running config.", len(snap.index)),
        gauge(
            "pulsed_config_real_servers",
            "Real servers in the running config.",
            snap.index.real_count(),
        ),
    ]


def service_info(snap: Snapshot) -> Family:
    """Each service's name with its identity, to join on ``service``."""
    family = Family(
        "pulsed_service_info",
        "gauge",
        "1 per configured service: its name, protocol, VIP and port (or fwmark).",
    )
    for svc in snap.index:
        c = svc.config
        protocol = "fwmark" if c.fwmark is not None else c.protocol
        family.add(
            f'service="{escape(c.name)}",protocol="{protocol}",vip="{escape(c.vip or "")}",'
            f'port="{c.port or 0}",fwmark="{c.fwmark or 0}"',
            1,
        )
    return family


def probe_families(snap: Snapshot) -> list[Family]:
    """Daemon-wide probe figures: local errors by reason (every reason, 0 included)."""
    faults = snap.probes
    if faults is None:
        return []
    family = Family(
        "pulsed_probe_local_errors_total",
        "counter",
        "Probes that failed for a reason on the router (descriptors, memory, sandbox, a "
        "stalled engine), by reason; they never count against a server.",
    )
    for reason, count in faults.totals.items():
        family.add(f'reason="{escape(reason)}"', count)
    return [family]


def reconcile_families(st: ReconcileStatus) -> list[Family]:
    ops = Family(
        "pulsed_reconcile_operations_total",
        "counter",
        "IPVS writes the kernel accepted, by operation.",
    )
    for op in OPS:
        ops.add(f'op="{op}"', st.ops_applied.get(op, 0))
    duration = Family(
        "pulsed_reconcile_duration_seconds", "histogram", "Duration of reconcile passes."
    )
    # From the same record as passes_total: its count is the number of passes.
    bounds = [repr(float(b)) for b in DURATION_BUCKETS] + ["+Inf"]
    for le, count in zip(bounds, st.durations, strict=True):
        duration.add(f'le="{le}"', count, "_bucket")
    duration.add("", st.duration_sum, "_sum")
    duration.add("", st.durations[-1], "_count")
    return [
        counter(
            "pulsed_reconcile_passes_total", "Reconcile passes (read, diff, apply).", st.passes
        ),
        ops,
        counter("pulsed_reconcile_errors_total", "IPVS writes the kernel refused.", st.errors),
        duration,
        gauge(
            "pulsed_reconcile_in_sync",
            "1 if the last pass left the kernel equal to the wanted table.",
            bool(st.in_sync),
        ),
        gauge(
            "pulsed_reconcile_failing_services",
            "Services whose last pass had a kernel refusal.",
            len(st.failing_services),
        ),
        gauge(
            "pulsed_reconcile_last_run_timestamp_seconds",
            "Unix time of the last reconcile pass.",
            float(st.last_run),
        ),
    ]


def vrrp_families(snap: Snapshot) -> list[Family]:
    """Per VRRP instance (label ``instance``, with its interface and VRID): role,
    priorities, advert and version-mismatch counters, drops by reason."""
    instances = snap.ha.instances
    if not instances:
        return []
    role = Family("pulsed_vrrp_state", "gauge", "1 for the instance's current VRRP role.")
    priority = Family("pulsed_vrrp_priority", "gauge", "Effective VRRP priority (after tracking).")
    configured = Family("pulsed_vrrp_configured_priority", "gauge", "Configured VRRP priority.")
    version = Family("pulsed_vrrp_version", "gauge", "The VRRP version the instance speaks.")
    sent = Family("pulsed_vrrp_adverts_sent_total", "counter", "VRRP adverts sent.")
    received = Family(
        "pulsed_vrrp_adverts_received_total", "counter", "Valid VRRP adverts received."
    )
    transitions = Family("pulsed_vrrp_transitions_total", "counter", "VRRP role changes.")
    mismatches = Family(
        "pulsed_vrrp_version_mismatches_total",
        "counter",
        "Adverts of the other VRRP version on the instance's VRID (a misconfigured pair).",
    )
    dropped = Family(
        "pulsed_vrrp_packets_dropped_total", "counter", "VRRP packets dropped, by reason."
    )
    for s in instances:
        labels = f'instance="{escape(s.name)}",interface="{escape(s.interface)}",vrid="{s.vrid}"'
        current = s.state.lower()
        for name in VRRP_ROLES:
            role.add(f'{labels},state="{name}"', current == name)
        priority.add(labels, s.effective_priority)
        configured.add(labels, s.priority)
        version.add(labels, s.version)
        sent.add(labels, s.adverts_sent)
        received.add(labels, s.adverts_received)
        transitions.add(labels, s.transitions)
        mismatches.add(labels, s.version_mismatches)
        for reason, count in sorted(s.drops.items()):
            dropped.add(f'{labels},reason="{escape(str(reason))}"', count)
    families = [role, priority, configured, version, sent, received, transitions, mismatches]
    families.append(dropped)
    if snap.ha.groups:
        group = Family(
            "pulsed_vrrp_sync_group_state", "gauge", "1 for the sync group's current state."
        )
        for g in snap.ha.groups:
            for name in (*VRRP_ROLES, "transition"):
                group.add(f'group="{escape(g.name)}",state="{name}"', g.state == name)
        families.append(group)
    return families


def pool_digest_families(snap: Snapshot) -> list[Family]:
    """Each pool's digest (pulsed.pool_digest) as a label: directors that agree show
    the same value (``count by (service, digest)`` across directors)."""
    family = Family(
        "pulsed_service_pool_digest_info",
        "gauge",
        "1 per service in the kernel, labelled with the digest of its real servers and weights.",
    )
    for svc in snap.index:
        digest = pool_digest(snap.kernel.get(svc.key))
        if digest:
            family.add(f'service="{escape(svc.name)}",digest="{digest}"', 1)
    return [family] if family.lines else []


def bgp_families(snap: Snapshot) -> list[Family]:
    """Route health injection: per VIP wanted and announced, the routing daemon's
    sessions and BFD, the age of the last read, the director's drain."""
    view = snap.bgp
    if view is None:
        return []
    st = view.status
    routing = st.routing
    wanted = Family("pulsed_bgp_vip_wanted", "gauge", "1 if this director can serve the VIP.")
    announced = Family(
        "pulsed_bgp_vip_announced", "gauge", "1 if the VIP is on the announce interface."
    )
    for d in view.decisions:
        wanted.add(f'vip="{d.vip}"', d.announce)
        announced.add(f'vip="{d.vip}"', d.vip in st.announced)
    session = Family(
        "pulsed_bgp_session_up", "gauge", "1 if the BGP session is Established (as last read)."
    )
    bfd = Family("pulsed_bgp_bfd_up", "gauge", "1 if the peer's BFD session is up (when one runs).")
    for p in routing.peers:
        session.add(f'peer="{escape(p.address)}"', p.state == "Established")
        if p.bfd:
            bfd.add(f'peer="{escape(p.address)}"', p.bfd == "up")
    families = [wanted, announced, session, bfd]
    families.append(
        gauge("pulsed_bgp_daemon_ok", "1 if the routing daemon answered as expected.", routing.ok)
    )
    age = snap.taken_at - routing.read_at if routing.read_at else -1
    families.append(
        gauge(
            "pulsed_bgp_daemon_read_age_seconds",
            "Age of the last read of the routing daemon (-1: never read).",
            round(age, 3),
        )
    )
    families.append(gauge("pulsed_bgp_drained", "1 while the director is drained.", view.drained))
    return families
