"""Prometheus metrics: a recorder of events and a renderer of snapshots.

Every scrape reads the current config, health, overrides, wanted and kernel
tables, so a server removed from the config loses its series at once and the
label sets are bounded by the config. Only what a snapshot cannot tell
(probe latency histograms, result counts, transitions) is accumulated, in
``ActivityRecorder`` (pulsed.metrics.recorder), which is pruned to the
configured servers whenever the config changes; the reconcile loop keeps its
own pass counts and durations (pulsed.reconcile.ReconcileStatus), so
``passes_total`` and the duration histogram's count are one figure. The renderer
(pulsed.metrics.render) writes the text from one Snapshot (pulsed.readmodel)
per scrape, with the format's small pieces from pulsed.metrics.text.

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
The process metrics come from /proc (pulsed.metrics.process, which says why
not from prometheus_client); the tests parse this output with
prometheus_client's parser and with ``promtool check metrics``.

Labels: ``service`` is the service's name from the config, ``server`` the
real server's ``address:port``; ``result`` is a probe's category (a small
fixed set, see pulsed.checks.base.ProbeResult); ``reason`` of
``pulsed_probe_local_errors_total`` is one of pulsed.checks.base.LOCAL_FAULTS.
A server's local errors are its ``pulsed_real_probe_results_total`` with
``result="local_error"`` (labels: render.RESULT_LABELS). The daemon's start
time is ``process_start_time_seconds``.
"""

from pulsed.histogram import Histogram
from pulsed.metrics.recorder import ActivityRecorder, attach_recorder
from pulsed.metrics.render import MetricsRenderer
from pulsed.metrics.text import CONTENT_TYPE, escape

__all__ = [
    "CONTENT_TYPE",
    "ActivityRecorder",
    "Histogram",
    "MetricsRenderer",
    "attach_recorder",
    "escape",
]
