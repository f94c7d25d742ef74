"""/metrics and /status made in pieces: the same documents, a bounded piece at a time."""

from __future__ import annotations

import shutil
import subprocess
import sys

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pulsed.checks.base import ProbeResult
from pulsed.metrics import ActivityRecorder, MetricsRenderer, attach_recorder
from pulsed.metrics.render import BLOCK
from pulsed.status_view import service_status, status_chunks
from tests.unit.standin import histogram, results, stand_in
from tests.unit.standin import status as build_status


def probed(tmp_path, services: int, reals: int):
    daemon = stand_in(tmp_path, services=services, reals=reals)
    recorder = ActivityRecorder()
    attach_recorder(daemon, recorder)
    for i, key in enumerate(daemon.monitor.health()):
        recorder.on_probe(key, ProbeResult(True, "ok", 0.0004 * (i % 7), "ok"))
        if i % 3 == 0:
            recorder.on_probe(key, ProbeResult(False, "connect refused", 0.3, "refused"))
    return daemon, MetricsRenderer(daemon.snapshot, recorder)


def samples(text: str) -> dict:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.startswith("process_")  # CPU time and memory move between scrapes
    }


def test_pieces_make_the_same_document_as_one_render(tmp_path):
    _, renderer = probed(tmp_path, services=30, reals=10)
    pieces = list(renderer.chunks(size=8192))
    assert len(pieces) > 10
    # A piece holds at most one block past the size (a block of 64 histograms, ~58 KB).
    assert max(len(p) for p in pieces[:-1]) < 8192 + BLOCK * 1024
    whole = b"".join(renderer.chunks())
    assert samples(b"".join(pieces).decode()) == samples(whole.decode())
    assert whole.count(b"# TYPE pulsed_real_probe_duration_seconds ") == 1


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_a_streamed_document_with_several_result_categories(tmp_path):
    daemon, renderer = probed(tmp_path, services=3, reals=400)  # blocks end mid-service
    text = b"".join(renderer.chunks(size=4096))
    out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True)
    assert out.returncode == 0 and out.stdout + out.stderr == b"", out.stdout + out.stderr
    got = samples(text.decode())
    key = next(iter(daemon.monitor.health()))
    labels = (("server", str(key[1])), ("service", "svc0"))
    assert got[("pulsed_real_probe_results_total", (("result", "ok"), *labels))] == 1
    assert (
        got[("pulsed_real_probe_results_total", (("result", "connection_refused"), *labels))] == 1
    )
    assert got[("pulsed_real_probe_duration_seconds_count", labels)] == 2
    le = (("le", "0.025"), *labels)
    assert got[("pulsed_real_probe_duration_seconds_bucket", le)] == 1
    assert got[("pulsed_real_probe_duration_seconds_sum", labels)] == pytest.approx(0.3)
    assert sum(1 for (name, _) in got if name == "pulsed_real_up") == 1200


def test_a_server_not_probed_yet_has_an_empty_histogram(tmp_path):
    daemon = stand_in(tmp_path, services=1, reals=2)
    renderer = MetricsRenderer(daemon.snapshot, ActivityRecorder())
    got = samples(b"".join(renderer.chunks()).decode())
    labels = (("server", "10.0.0.2:80"), ("service", "svc0"))
    assert got[("pulsed_real_probe_duration_seconds_count", labels)] == 0
    assert got[("pulsed_real_transitions_total", labels)] == 0
    assert not any(name == "pulsed_real_probe_results_total" for name, _ in got)


def test_recorder_keeps_cumulative_buckets_and_counts_per_category():
    recorder = ActivityRecorder()
    key, other = ("svc", "a"), ("svc", "b")
    for latency, category in ((0.0005, "ok"), (0.02, "ok"), (3.0, "timeout")):
        recorder.on_probe(key, ProbeResult(category == "ok", category, latency, category))
    recorder.on_probe(other, ProbeResult(False, "connect refused", 0.2, "refused"))
    counts, total = histogram(recorder, key)
    assert counts == [1, 1, 2, 2, 2, 2, 3]
    assert total == pytest.approx(3.0205)
    assert results(recorder, key) == {"ok": 2, "timeout": 1}
    assert results(recorder, other) == {"refused": 1}
    assert histogram(recorder, other) == ([0, 0, 0, 0, 1, 1, 1], 0.2)


def test_recorder_layout_moves_rows_and_forgets_servers_left_out():
    recorder = ActivityRecorder()
    a, b, c = ("svc", "a"), ("svc", "b"), ("svc", "c")
    recorder.on_probe(a, ProbeResult(True, "ok", 0.002, "ok"))
    recorder.on_probe(b, ProbeResult(False, "timeout", 1.0, "timeout"))
    recorder.on_probe(b, ProbeResult(False, "timeout", 1.0, "timeout"))
    before = recorder.counts
    recorder.layout([c, b])
    assert list(recorder.slots) == [c, b]
    assert results(recorder, b) == {"timeout": 2} and histogram(recorder, b)[1] == 2.0
    assert results(recorder, c) == {} and histogram(recorder, c) == ([0] * 7, 0.0)
    assert a not in recorder.slots and results(recorder, a) == {}
    # A scrape under way keeps the old columns: new ones were made.
    assert all(old is not new for old, new in zip(before, recorder.counts, strict=True))
    recorder.on_probe(c, ProbeResult(True, "ok", 0.002, "ok"))
    assert results(recorder, c) == {"ok": 1}


def test_status_pieces_make_the_same_json_as_the_whole_document(tmp_path):
    daemon = stand_in(tmp_path, services=40, reals=5)
    daemon.overrides.set_mode(next(iter(daemon.monitor.health())), "drain")
    snap = daemon.snapshot()
    pieces = list(status_chunks(snap, size=2048))
    assert len(pieces) > 5
    whole = b"".join(status_chunks(snap, size=1 << 40))  # one piece: the document made whole
    assert b"".join(pieces) == whole
    assert msgspec.json.decode(whole)["now"] == snap.taken_at


def test_one_service_status_is_its_part_of_the_document(tmp_path):
    daemon = stand_in(tmp_path, services=3, reals=2)
    doc = build_status(daemon)
    key = daemon.config.service[1].key
    assert service_status(daemon.snapshot(), key) == doc["services"][1]


def test_prometheus_client_is_not_imported_before_the_first_scrape():
    # It only supplies the process metrics; importing it at start costs memory.
    code = "import sys, pulsed.api, pulsed.daemon; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
