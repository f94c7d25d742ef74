"""apply_result: what one probe result does to a server's health record."""

from __future__ import annotations

from pulsed.checks.base import ProbeResult
from pulsed.checks.state import RealHealth, apply_result, changed_for_table, initial_health

OK = ProbeResult(True, "status 200", 0.002, "ok", 60)
FAIL = ProbeResult(False, "status 503", 0.003, "status")


def test_rise_sets_up_with_both_clocks() -> None:
    h = initial_health(False, wall=1000.0)
    h = apply_result(h, OK, rise=2, fall=2, wall=1001.0, mono=50.0)
    assert not h.up and h.last_ok and h.consecutive_ok == 1 and h.last_transition == 1000.0
    h = apply_result(h, OK, rise=2, fall=2, wall=1002.0, mono=51.0)
    assert h.up and h.went_up_at == 51.0 and h.last_transition == 1002.0
    assert (h.reason, h.latency, h.weight_pct, h.last_check) == ("status 200", 0.002, 60, 1002.0)


def test_fall_records_when_it_went_down_and_keeps_the_last_good_weight() -> None:
    h = RealHealth(up=True, weight_pct=60, went_up_at=10.0)
    h = apply_result(h, FAIL, rise=1, fall=1, wall=2000.0, mono=99.0)
    assert not h.up and h.went_down_at == 99.0 and h.went_up_at == 10.0
    assert (h.reason, h.category, h.weight_pct) == ("status 503", "status", 60)


def test_changed_for_table() -> None:
    up = RealHealth(up=True, weight_pct=50)
    assert changed_for_table(up, RealHealth(up=False, weight_pct=50))
    assert changed_for_table(up, RealHealth(up=True, weight_pct=70))
    assert not changed_for_table(up, RealHealth(up=True, weight_pct=50, reason="other"))
    assert not changed_for_table(RealHealth(up=False), RealHealth(up=False, weight_pct=10))
