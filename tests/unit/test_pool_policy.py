"""plan_pool: quiesce, remove/drain, slow start, dynamic weight, min_healthy, sorry server."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pulsed.checks.state import RealHealth
from pulsed.config import ConfigError, parse_config
from pulsed.model import DestKey
from pulsed.pool_policy import (
    PoolPlan,
    PoolPolicy,
    RealView,
    held_servers,
    plan_changes,
    plan_pool,
    required_healthy,
)

A, B, C, D = (DestKey(f"10.0.0.{i}", 80) for i in (1, 2, 3, 4))
SORRY = DestKey("10.0.9.9", 80)


def up(went_up_at: float | None = None, pct: int | None = None) -> RealHealth:
    return RealHealth(up=True, last_ok=True, went_up_at=went_up_at, weight_pct=pct)


def down(went_down_at: float | None = None) -> RealHealth:
    return RealHealth(up=False, last_ok=False, went_down_at=went_down_at)


def view(health: RealHealth, weight: int = 10, conns: int | None = None) -> RealView:
    return RealView(weight=weight, health=health, active_connections=conns)


# --- quiesce / remove ---------------------------------------------------------


def test_up_servers_get_their_base_weight() -> None:
    plan = plan_pool(PoolPolicy(), {A: view(up(), 10), B: view(up(), 3)}, now=100)
    assert plan.weights == {A: 10, B: 3}
    assert not plan.sorry_in_use and not plan.failed_open and plan.next_change_at is None


def test_quiesce_keeps_a_down_server_at_weight_zero() -> None:
    plan = plan_pool(PoolPolicy(), {A: view(up()), B: view(down(50), conns=0)}, now=100)
    assert plan.weights == {A: 10, B: 0}


def test_remove_drains_while_connections_remain_then_deletes_at_the_deadline() -> None:
    policy = PoolPolicy(on_failure="remove", drain_timeout=60)
    reals = {A: view(up()), B: view(down(went_down_at=100), conns=5)}
    during = plan_pool(policy, reals, now=130)
    assert during.weights == {A: 10, B: 0}
    assert during.draining == (B,)
    assert during.next_change_at == 160
    after = plan_pool(policy, reals, now=160)
    assert after.weights == {A: 10}
    assert after.draining == ()


def test_remove_deletes_as_soon_as_the_kernel_reports_no_connection() -> None:
    policy = PoolPolicy(on_failure="remove", drain_timeout=60)
    plan = plan_pool(policy, {A: view(up()), B: view(down(100), conns=0)}, now=101)
    assert plan.weights == {A: 10}


def test_remove_never_adds_a_server_that_was_never_up() -> None:
    policy = PoolPolicy(on_failure="remove")
    plan = plan_pool(policy, {A: view(up()), B: view(down(None))}, now=0)
    assert B not in plan.weights


def test_admin_weight_zero_stays_in_the_table_at_zero() -> None:
    plan = plan_pool(PoolPolicy(), {A: view(up(), weight=0), B: view(up())}, now=0)
    assert plan.weights == {A: 0, B: 10}


# --- dynamic weight ----------------------------------------------------------


def test_reported_percentage_scales_the_base_weight() -> None:
    plan = plan_pool(PoolPolicy(), {A: view(up(pct=50), 10), B: view(up(pct=1), 10)}, now=0)
    assert plan.weights == {A: 5, B: 1}  # a positive share never rounds to 0


def test_reported_zero_percent_means_no_new_connections() -> None:
    plan = plan_pool(PoolPolicy(), {A: view(up(pct=0), 10)}, now=0)
    assert plan.weights == {A: 0}


# --- slow start --------------------------------------------------------------


def test_slow_start_ramps_from_a_small_fraction_to_full() -> None:
    policy = PoolPolicy(slow_start=100)
    reals = {A: view(up(went_up_at=1000), weight=100)}
    weights = [plan_pool(policy, reals, now=1000 + t).weights[A] for t in (0, 50, 99, 100, 500)]
    assert weights == [10, 55, 99, 100, 100]
    assert plan_pool(policy, reals, now=1050).ramping == (A,)
    assert plan_pool(policy, reals, now=1100).ramping == ()


def test_slow_start_next_change_is_the_next_weight_step() -> None:
    policy = PoolPolicy(slow_start=90)
    reals = {A: view(up(went_up_at=0), weight=10)}  # 1 at t=0, +1 every 10 s
    plan = plan_pool(policy, reals, now=0)
    assert plan.weights[A] == 1
    assert plan.next_change_at == pytest.approx(10)
    later = plan_pool(policy, reals, now=plan.next_change_at)
    assert later.weights[A] == 2


def test_slow_start_applies_to_the_reported_weight() -> None:
    policy = PoolPolicy(slow_start=100)
    plan = plan_pool(policy, {A: view(up(went_up_at=0, pct=50), weight=100)}, now=50)
    assert plan.weights[A] == 27  # 50 x (0.1 + 0.9 x 0.5)


def test_no_slow_start_for_servers_up_since_monitoring_began() -> None:
    plan = plan_pool(PoolPolicy(slow_start=100), {A: view(up(went_up_at=None))}, now=0)
    assert plan.weights == {A: 10} and plan.next_change_at is None


@given(
    weight=st.integers(1, 1000),
    slow_start=st.floats(0.5, 600),
    times=st.lists(st.floats(0, 700), min_size=2, max_size=20),
)
def test_slow_start_never_decreases_and_next_change_is_honest(
    weight: int, slow_start: float, times: list[float]
) -> None:
    policy = PoolPolicy(slow_start=slow_start)
    reals = {A: view(up(went_up_at=0.0), weight=weight)}
    last = 0
    for now in sorted(times):
        plan = plan_pool(policy, reals, now)
        assert 1 <= plan.weights[A] <= weight
        assert plan.weights[A] >= last
        last = plan.weights[A]
        if plan.next_change_at is None:
            assert plan.weights[A] == weight
        else:
            assert plan.next_change_at > now
            # Nothing changes before the announced time.
            halfway = (now + plan.next_change_at) / 2
            assert plan_pool(policy, reals, halfway).weights[A] == plan.weights[A]


# --- min_healthy -------------------------------------------------------------


def test_required_healthy_counts_and_percentages() -> None:
    assert required_healthy(2, 5) == 2
    assert required_healthy(9, 5) == 5
    assert required_healthy("50%", 5) == 3
    assert required_healthy("50%", 4) == 2
    assert required_healthy("0%", 4) == 0


def test_min_healthy_fails_open_keeping_the_least_recently_failed() -> None:
    policy = PoolPolicy(min_healthy=3)
    reals = {
        A: view(up()),
        B: view(down(went_down_at=10)),
        C: view(down(went_down_at=30)),  # failed last: kept
        D: view(down(went_down_at=20)),  # next: kept
    }
    plan = plan_pool(policy, reals, now=40)
    assert plan.failed_open
    assert plan.kept == (C, D)
    assert plan.weights == {A: 10, B: 0, C: 10, D: 10}


def test_min_healthy_percentage_with_everything_down_keeps_never_up_servers_last() -> None:
    policy = PoolPolicy(min_healthy="50%", on_failure="remove")
    reals = {A: view(down(None)), B: view(down(5)), C: view(down(None)), D: view(down(1))}
    plan = plan_pool(policy, reals, now=10)
    assert plan.kept == (B, D)
    assert plan.weights == {B: 10, D: 10}
    assert not plan.sorry_in_use  # kept servers are serving


def test_min_healthy_met_changes_nothing() -> None:
    plan = plan_pool(PoolPolicy(min_healthy=1), {A: view(up()), B: view(down(3))}, now=4)
    assert not plan.failed_open and plan.kept == () and plan.weights == {A: 10, B: 0}


def test_min_healthy_ignores_servers_taken_out_by_the_admin() -> None:
    policy = PoolPolicy(min_healthy="100%")
    plan = plan_pool(policy, {A: view(up()), B: view(down(3), weight=0)}, now=4)
    assert not plan.failed_open


@pytest.mark.parametrize("value", [-1, '"half"', '"150%"', '"50"'])
def test_min_healthy_values_the_config_refuses(value: object) -> None:
    # The one check of min_healthy is the config's (what it accepts, plan_pool can use).
    text = f'[[service]]\nname = "a"\nvip = "192.0.2.1"\nport = 80\nmin_healthy = {value}\n'
    with pytest.raises(ConfigError, match="min_healthy"):
        parse_config(text)


@pytest.mark.parametrize("value", [2, '"50%"', '"0%"', '"100%"'])
def test_min_healthy_values_the_planner_takes(value: object) -> None:
    text = f'[[service]]\nname = "a"\nvip = "192.0.2.1"\nport = 80\nmin_healthy = {value}\n'
    svc = parse_config(text).service[0]
    assert 0 <= required_healthy(svc.min_healthy, 4) <= 4


# --- min_healthy and slow start together ---------------------------------------


def test_a_kept_server_that_comes_up_keeps_its_full_weight() -> None:
    # A cold start: nothing checked yet, min_healthy keeps both at full weight.
    policy = PoolPolicy(min_healthy=2, slow_start=60)
    cold = plan_pool(policy, {A: view(down(), weight=100), B: view(down(), weight=100)}, now=0)
    assert cold.weights == {A: 100, B: 100} and cold.failed_open
    # A passes: it was serving at 100 already, so no ramp from 10.
    first = plan_pool(
        policy,
        {A: view(up(went_up_at=1), weight=100), B: view(down(), weight=100)},
        now=1,
        held=held_servers(cold),
    )
    assert first.weights == {A: 100, B: 100} and A in first.exempt
    # ... nor later, while it stays up.
    later = plan_pool(
        policy,
        {A: view(up(went_up_at=1), weight=100), B: view(up(went_up_at=2), weight=100)},
        now=2,
        held=held_servers(first),
    )
    assert later.weights == {A: 100, B: 100}
    # Down and up again, not kept in between: that return ramps as usual.
    gone = plan_pool(
        policy,
        {A: view(down(3), weight=100), B: view(up(went_up_at=2), weight=100)},
        now=3,
        held=held_servers(later),
    )
    assert gone.failed_open  # min_healthy 2 keeps A: it stays held
    back = plan_pool(
        PoolPolicy(slow_start=60),
        {A: view(up(went_up_at=4), weight=100), B: view(up(went_up_at=2), weight=100)},
        now=4,
        held=(),
    )
    assert back.weights[A] == 10


@given(
    st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=12),
)
def test_no_weight_dips_while_min_healthy_keeps_a_server(steps: list[tuple[bool, bool]]) -> None:
    """A server served at its full weight is never taken lower by its own recovery."""
    policy = PoolPolicy(min_healthy=2, slow_start=100)
    plan = None
    went: dict[DestKey, tuple[bool, float | None, float | None]] = {
        A: (False, None, None),
        B: (False, None, None),
    }
    for now, (a_up, b_up) in enumerate(steps, start=1):
        for key, is_up in ((A, a_up), (B, b_up)):
            was_up, up_at, down_at = went[key]
            if is_up and not was_up:
                up_at = float(now)
            if was_up and not is_up:
                down_at = float(now)
            went[key] = (is_up, up_at, down_at)
        reals = {
            k: view(up(went_up_at=w[1]) if w[0] else down(w[2]), weight=100)
            for k, w in went.items()
        }
        new = plan_pool(policy, reals, float(now), held=held_servers(plan))
        if plan is not None:
            for key in (A, B):
                if plan.weights.get(key) == 100 and went[key][0]:
                    assert new.weights[key] == 100, (key, plan, new)
        plan = new


# --- sorry server ------------------------------------------------------------


def test_sorry_server_only_while_no_real_server_is_up() -> None:
    policy = PoolPolicy(sorry_server=SORRY)
    all_down = plan_pool(policy, {A: view(down(1)), B: view(down(2))}, now=3)
    assert all_down.sorry_in_use
    assert all_down.weights == {A: 0, B: 0, SORRY: 1}
    one_up = plan_pool(policy, {A: view(up()), B: view(down(2))}, now=3)
    assert not one_up.sorry_in_use
    assert SORRY not in one_up.weights


def test_sorry_server_when_the_only_up_servers_are_disabled_by_the_admin() -> None:
    policy = PoolPolicy(sorry_server=SORRY)
    plan = plan_pool(policy, {A: view(up(), weight=0), B: view(down(2))}, now=3)
    assert plan.sorry_in_use


def test_no_sorry_server_configured() -> None:
    plan = plan_pool(PoolPolicy(), {A: view(down(1))}, now=3)
    assert not plan.sorry_in_use and plan.weights == {A: 0}


def test_next_change_at_is_the_earliest_pending_change() -> None:
    policy = PoolPolicy(on_failure="remove", drain_timeout=30, slow_start=1000)
    reals = {A: view(up(went_up_at=0), weight=10), B: view(down(0), conns=2)}
    assert plan_pool(policy, reals, now=1).next_change_at == pytest.approx(30)


def test_plan_changes_log_failing_open_and_the_sorry_server() -> None:
    normal = PoolPlan(weights={A: 10})
    open_c = PoolPlan(weights={C: 10}, failed_open=True, kept=(C,))
    open_cd = PoolPlan(weights={C: 10, D: 10}, failed_open=True, kept=(C, D))
    sorry = PoolPlan(weights={SORRY: 1}, sorry_in_use=True)
    assert plan_changes(None, normal) == []
    assert plan_changes(normal, open_c) == [
        ("warning", "pool.failed_open", {"kept": ["10.0.0.3:80"]})
    ]
    assert plan_changes(open_c, open_c) == []
    assert plan_changes(open_c, open_cd)[0][1] == "pool.failed_open"
    assert plan_changes(open_cd, normal) == [("info", "pool.fail_open_ended", {})]
    assert plan_changes(normal, sorry) == [("warning", "pool.sorry_server_on", {})]
    assert plan_changes(sorry, normal) == [("info", "pool.sorry_server_off", {})]
