"""/metrics rendering over a daemon snapshot built from the real config, overrides and tables."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pulsed.checks.base import ProbeResult
from pulsed.checks.state import apply_result, initial_health
from pulsed.config import parse_config
from pulsed.desired import wanted_table
from pulsed.metrics import ActivityRecorder, Histogram, MetricsRenderer, attach_recorder, escape
from tests.unit.standin import config_text, stand_in, transitions_of, vrrp_status


def samples(text: str) -> dict:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def render(daemon, recorder=None) -> str:
    recorder = recorder or ActivityRecorder()
    return b"".join(MetricsRenderer(daemon.snapshot, recorder).chunks()).decode()


def labels(service: str, server: str, **extra: str) -> tuple:
    return tuple(sorted({"service": service, "server": server, **extra}.items()))


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_the_output(tmp_path):
    daemon = stand_in(tmp_path, services=3, reals=3)
    recorder = ActivityRecorder()
    attach_recorder(daemon, recorder)
    for key in daemon.monitor.health():
        recorder.on_probe(key, ProbeResult(True, "ok", 0.004, "ok"))
    daemon.vrrp_status = vrrp_status(
        interface="eth0",
        vrid=51,
        state="MASTER",
        priority=100,
        effective_priority=100,
        adverts_sent=5,
        adverts_received=2,
        drops={"auth": 1, "ttl": 2},
    )
    text = render(daemon, recorder)
    out = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True)
    assert out.returncode == 0 and out.stdout + out.stderr == b"", out.stdout + out.stderr
    got = samples(text)

    def vrrp(**extra: str) -> tuple:
        return tuple(
            sorted({"instance": "VI_1", "interface": "eth0", "vrid": "51", **extra}.items())
        )

    assert got[("pulsed_vrrp_state", vrrp(state="master"))] == 1
    assert got[("pulsed_vrrp_state", vrrp(state="backup"))] == 0
    assert got[("pulsed_vrrp_packets_dropped_total", vrrp(reason="ttl"))] == 2
    assert got[("pulsed_vrrp_adverts_sent_total", vrrp())] == 5


def test_per_server_health_weights_and_kernel_counters(tmp_path):
    daemon = stand_in(tmp_path, services=1, reals=2)
    got = samples(render(daemon))
    first, second = labels("svc0", "10.0.0.1:80"), labels("svc0", "10.0.0.2:80")
    assert got[("pulsed_real_up", first)] == 1 and got[("pulsed_real_up", second)] == 0
    assert got[("pulsed_real_configured_weight", first)] == 1
    assert (
        got[("pulsed_ipvs_real_bytes_total", labels("svc0", "10.0.0.1:80", direction="out"))] == 500
    )
    assert got[("pulsed_ipvs_service_connections_total", (("service", "svc0"),))] == 10
    assert got[("pulsed_service_real_servers_up", (("service", "svc0"),))] == 1


def test_overrides_show_apart_from_the_configured_weight_with_their_mode(tmp_path):
    daemon = stand_in(tmp_path, services=1, reals=2)
    key = next(iter(daemon.monitor.health()))
    daemon.overrides.set_weight(key, 7)
    daemon.overrides.set_mode(key, "drain")
    daemon.wanted = wanted_table(daemon.config, daemon.monitor.health(), daemon.overrides.all())
    got = samples(render(daemon))
    server = str(key[1])
    assert got[("pulsed_real_configured_weight", labels("svc0", server))] == 1  # the config's
    assert got[("pulsed_real_weight_override", labels("svc0", server))] == 7
    assert ("pulsed_real_weight_override", labels("svc0", "10.0.0.2:80")) not in got
    assert got[("pulsed_real_effective_weight", labels("svc0", server))] == 0
    assert got[("pulsed_real_admin_override", labels("svc0", server, mode="drain"))] == 1


def test_removed_server_loses_every_series(tmp_path):
    daemon = stand_in(tmp_path, services=1, reals=3)
    recorder = ActivityRecorder()
    attach_recorder(daemon, recorder)
    for key in daemon.monitor.health():
        recorder.on_probe(key, ProbeResult(False, "timeout", 1.0, "timeout"))
    renderer = MetricsRenderer(daemon.snapshot, recorder)
    assert 'server="10.0.0.3:80"' in b"".join(renderer.chunks()).decode()
    # Reload to a config without the third server, as the daemon does: new config, new health.
    daemon.config = parse_config(config_text(1, 2, tmp_path))
    gone = [k for k in daemon.monitor._health if str(k[1]) == "10.0.0.3:80"]
    for key in gone:
        del daemon.monitor._health[key]
    daemon.wanted = wanted_table(daemon.config, daemon.monitor.health())
    text = b"".join(renderer.chunks()).decode()
    assert 'server="10.0.0.3:80"' not in text
    assert 'server="10.0.0.2:80"' in text
    assert all(str(k[1]) != "10.0.0.3:80" for k in recorder.slots)


def test_probe_histogram_and_results(tmp_path):
    daemon = stand_in(tmp_path, services=1, reals=1)
    recorder = ActivityRecorder()
    attach_recorder(daemon, recorder)
    key = next(iter(daemon.monitor.health()))
    for latency, category in ((0.0005, "ok"), (0.02, "ok"), (3.0, "timeout")):
        recorder.on_probe(key, ProbeResult(category == "ok", category, latency, category))
    got = samples(render(daemon, recorder))
    server = labels("svc0", "10.0.0.1:80")
    bucket = "pulsed_real_probe_duration_seconds_bucket"
    assert got[(bucket, tuple(sorted((*server, ("le", "0.001")))))] == 1
    assert got[(bucket, tuple(sorted((*server, ("le", "0.025")))))] == 2
    assert got[(bucket, tuple(sorted((*server, ("le", "+Inf")))))] == 3
    assert got[("pulsed_real_probe_duration_seconds_count", server)] == 3
    assert (
        got[("pulsed_real_probe_results_total", labels("svc0", "10.0.0.1:80", result="timeout"))]
        == 1
    )


def test_transitions_count_flips_only(tmp_path):
    recorder = ActivityRecorder()
    key = ("svc", "dest")
    ok = ProbeResult(True, "ok", 0.001, "ok")
    fail = ProbeResult(False, "connect refused", 0.001, "refused")
    health = initial_health(False, 100.0)  # what the monitor starts a server with
    reports = 0
    for step, result in enumerate((ok, ok, fail, fail, ok), 1):
        before = health
        health = apply_result(health, result, 1, 1, 100.0 + step, float(step))
        if health.up != before.up or step == 2:  # step 2: a weight report, not a flip
            recorder.on_health(key, health)
            reports += 1
    assert reports == 4
    assert transitions_of(recorder, key) == 3


def test_first_report_of_a_server_counts_only_if_it_flipped(tmp_path):
    recorder = ActivityRecorder()
    start = initial_health(True, 100.0)  # assumed up (already serving in the kernel)
    weight_report = apply_result(start, ProbeResult(True, "ok", 0.001, "ok"), 1, 1, 101.0, 1.0)
    recorder.on_health(("svc", "a"), weight_report)
    down = apply_result(start, ProbeResult(False, "timeout", 1.0, "timeout"), 1, 1, 101.0, 1.0)
    recorder.on_health(("svc", "b"), down)
    assert transitions_of(recorder, ("svc", "a")) == 0
    assert transitions_of(recorder, ("svc", "b")) == 1


async def test_reconcile_passes_feed_the_duration_histogram(tmp_path):
    from pulsed.ipvs.memory import MemoryBackend
    from pulsed.model import Table
    from pulsed.reconcile import Reconciler

    daemon = stand_in(tmp_path)
    loop = Reconciler(MemoryBackend(), wanted=lambda _: Table(), owned=lambda: ())
    for _ in range(3):
        await loop.reconcile_once()
    daemon.reconcile = loop.status
    got = samples(render(daemon))
    # One record behind both: the passes are the histogram's count.
    assert got[("pulsed_reconcile_passes_total", ())] == 3
    assert got[("pulsed_reconcile_duration_seconds_count", ())] == 3
    assert got[("pulsed_reconcile_duration_seconds_bucket", (("le", "+Inf"),))] == 3
    assert got[("pulsed_reconcile_duration_seconds_sum", ())] == pytest.approx(
        loop.status.duration_sum
    )
    assert got[("pulsed_reconcile_operations_total", (("op", "add-dest"),))] == 0


def test_every_service_has_an_info_series_and_no_start_time_duplicate(tmp_path):
    got = samples(render(stand_in(tmp_path, services=2, reals=1)))
    info = {labels_: v for (name, labels_), v in got.items() if name == "pulsed_service_info"}
    assert info == {
        (
            ("fwmark", "0"),
            ("port", "8000"),
            ("protocol", "tcp"),
            ("service", f"svc{i}"),
            ("vip", f"192.0.2.{i + 1}"),
        ): 1
        for i in range(2)
    }
    assert not any(name == "pulsed_start_time_seconds" for name, _ in got)


def test_label_values_are_escaped(tmp_path):
    assert escape('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    text = config_text(1, 1, tmp_path).replace('name = "svc0"', 'name = "we%b \\"x\\""')
    daemon = stand_in(tmp_path, 1, 1)
    daemon.config = parse_config(text)
    daemon.wanted = wanted_table(daemon.config, daemon.monitor.health())
    recorder = ActivityRecorder()
    attach_recorder(daemon, recorder)
    recorder.on_probe(next(iter(daemon.monitor.health())), ProbeResult(True, "ok", 0.001))
    got = samples(render(daemon, recorder))
    assert got[("pulsed_real_up", labels('we%b "x"', "10.0.0.1:80"))] == 1
    assert got[("pulsed_real_probe_duration_seconds_count", labels('we%b "x"', "10.0.0.1:80"))] == 1


def test_histogram_buckets_are_cumulative():
    h = Histogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 2.0):
        h.observe(v)
    assert h.counts == [2, 3, 4]
    assert h.sum == pytest.approx(2.65)


def test_vrrp_series_are_labelled_by_instance(tmp_path):
    from dataclasses import replace

    from pulsed.readmodel import HaView

    daemon = stand_in(tmp_path, services=1, reals=1)
    one = vrrp_status(state="MASTER")
    two = vrrp_status(name="VI_2", vrid=52, version=2, version_mismatches=4)
    snap = replace(daemon.snapshot(), ha=HaView(("VI_1", "VI_2"), (one, two)))
    text = b"".join(MetricsRenderer(lambda: snap, ActivityRecorder()).chunks()).decode()
    got = samples(text)
    second = (("instance", "VI_2"), ("interface", "eth0"), ("vrid", "52"))
    assert got[("pulsed_vrrp_version_mismatches_total", second)] == 4
    assert got[("pulsed_vrrp_version", second)] == 2
    assert got[("pulsed_vrrp_state", tuple(sorted((*second, ("state", "backup")))))] == 1
    assert (
        got[
            (
                "pulsed_vrrp_state",
                (("instance", "VI_1"), ("interface", "eth0"), ("state", "master"), ("vrid", "51")),
            )
        ]
        == 1
    )


def test_a_server_its_agent_says_down_is_not_up(tmp_path):
    from dataclasses import replace as with_fields

    from pulsed.checks.agent import AgentState

    daemon = stand_in(tmp_path, services=1, reals=2)
    health = daemon.monitor._health
    key = next(k for k, h in health.items() if h.up)
    health[key] = with_fields(health[key], agent=AgentState(op="down"))
    got = samples(render(daemon))
    assert got[("pulsed_real_up", labels("svc0", "10.0.0.1:80"))] == 0
