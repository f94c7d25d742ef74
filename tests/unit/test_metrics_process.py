"""The process_* metrics, read from /proc (pulsed.metrics.process)."""

from __future__ import annotations

import resource
import time

from prometheus_client.parser import text_string_to_metric_families

from pulsed.metrics import process
from pulsed.metrics.process import process_metrics


def values(text: str) -> dict[str, float]:
    return {
        s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
    }


def test_the_standard_names_with_this_process_figures():
    got = values(process_metrics())
    assert set(got) == {
        "process_cpu_seconds_total",
        "process_virtual_memory_bytes",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_open_fds",
        "process_max_fds",
    }
    assert 0 < got["process_start_time_seconds"] <= time.time()
    assert got["process_resident_memory_bytes"] < got["process_virtual_memory_bytes"]
    # Not compared with a count of its own: a thread left by another test may open a
    # descriptor in between.
    assert 3 <= got["process_open_fds"] <= got["process_max_fds"]
    assert got["process_max_fds"] == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert got["process_cpu_seconds_total"] > 0


def test_the_cpu_counter_grows():
    before = values(process_metrics())["process_cpu_seconds_total"]
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:  # burn CPU: the figure is in clock ticks
        pass
    assert values(process_metrics())["process_cpu_seconds_total"] > before


def test_what_proc_cannot_give_is_left_out(monkeypatch):
    monkeypatch.setattr(process, "_stat_fields", lambda: None)
    monkeypatch.setattr(process, "_open_fds", lambda: None)
    text = process_metrics()
    assert set(values(text)) == {"process_max_fds"}
    assert "# TYPE process_max_fds gauge" in text
