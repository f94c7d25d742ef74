"""apply_result: what one probe result does to a server's health record; repeated:
what many identical ones do."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pulsed.checks.base import ProbeResult
from pulsed.checks.state import (
    RealHealth,
    apply_result,
    changed_for_table,
    initial_health,
    repeated,
    settled,
)

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


results = st.builds(
    ProbeResult,
    st.booleans(),
    st.sampled_from(["status 200", "status 503", "connect refused"]),
    st.floats(min_value=0, max_value=2),
    st.sampled_from(["ok", "status", "refused"]),
    st.one_of(st.none(), st.sampled_from([40, 80])),
)


@given(
    st.lists(results, max_size=8),
    results,
    st.integers(min_value=1, max_value=6),
    st.integers(min_value=1, max_value=4),
    st.integers(min_value=1, max_value=4),
)
def test_repeated_equals_applying_the_same_result_again(
    history: list[ProbeResult], last: ProbeResult, times: int, rise: int, fall: int
) -> None:
    """The monitor folds results that settled() accepts in one go (repeated);
    that must give exactly what applying each of them would."""
    h = initial_health(False, wall=0.0)
    for n, result in enumerate([*history, last]):
        h = apply_result(h, result, rise, fall, wall=float(n), mono=float(n))
    again = ProbeResult(last.ok, last.reason, 0.5, last.category, last.weight_pct)
    if not settled(h, again):
        return
    stepwise = h
    for n in range(times):
        stepwise = apply_result(stepwise, again, rise, fall, wall=100.0 + n, mono=100.0 + n)
        assert settled(h, again) and stepwise.up == h.up
    assert repeated(h, times, 0.5, wall=100.0 + times - 1) == stepwise


def test_settled_only_for_a_repeat_that_agrees_with_the_state() -> None:
    up = apply_result(RealHealth(up=True), OK, rise=1, fall=1, wall=1.0, mono=1.0)
    assert settled(up, OK)
    assert not settled(up, ProbeResult(True, "status 200", 0.1, "ok", 70))  # new weight
    assert not settled(up, ProbeResult(True, "status 204", 0.1, "ok", 60))  # new reason
    assert not settled(up, FAIL)  # could start a fall
    rising = apply_result(RealHealth(up=False), OK, rise=3, fall=1, wall=1.0, mono=1.0)
    assert not settled(rising, OK)  # a pass while down could complete a rise
    assert not settled(initial_health(True, wall=0.0), OK)  # never probed
