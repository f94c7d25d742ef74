"""Rise/fall hysteresis: examples and a property test against its definition."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pulsed.checks.hysteresis import Hysteresis, step


def run(results: list[bool], rise: int, fall: int, up: bool = False) -> list[bool]:
    state = Hysteresis(up)
    states = []
    for ok in results:
        state = step(state, ok, rise, fall)
        states.append(state.up)
    return states


def test_down_server_needs_rise_consecutive_passes() -> None:
    assert run([True, False, True, True, True], rise=3, fall=2) == [
        False,
        False,
        False,
        False,
        True,
    ]


def test_up_server_needs_fall_consecutive_failures() -> None:
    assert run([False, True, False, False, False], rise=2, fall=3, up=True) == [
        True,
        True,
        True,
        True,
        False,
    ]


def test_rise_one_and_fall_one_follow_every_result() -> None:
    results = [True, False, False, True]
    assert run(results, rise=1, fall=1) == results


def test_runs_keep_counting_past_the_threshold() -> None:
    state = Hysteresis(False)
    for _ in range(5):
        state = step(state, True, 2, 3)
    assert state == Hysteresis(True, ok_run=5, fail_run=0)


@given(
    results=st.lists(st.booleans(), max_size=60),
    rise=st.integers(1, 6),
    fall=st.integers(1, 6),
    initially_up=st.booleans(),
)
def test_rise_fall_property(results: list[bool], rise: int, fall: int, initially_up: bool) -> None:
    """The machine's state is exactly what rise/fall hysteresis defines:

    - it changes to up only right after `rise` consecutive passes, and to down
      only right after `fall` consecutive failures;
    - once the last `rise` results passed it is up, once the last `fall`
      results failed it is down;
    - otherwise it keeps the previous state.
    """
    states = run(results, rise, fall, initially_up)
    previous = initially_up
    for i, up in enumerate(states):
        history = results[: i + 1]
        last_rise_pass = len(history) >= rise and all(history[-rise:])
        last_fall_fail = len(history) >= fall and not any(history[-fall:])
        if up != previous:
            assert (up and last_rise_pass) or (not up and last_fall_fail)
        if last_rise_pass:
            assert up
        if last_fall_fail:
            assert not up
        if not last_rise_pass and not last_fall_fail:
            assert up == previous
        previous = up
