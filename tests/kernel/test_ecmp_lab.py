"""End to end, the ECMP lab: what `make lab MODE=ecmp` shows, asserted.

One stand (lab/ecmp_stand.py: an upstream FRR router, three directors each
running pulsed and FRR, three real servers behind them by DR) serves every
test in this module, in order. Broken connections are counted by the lab's
held connections (lab/held.py), failures by its load generator; withdrawal
times are printed, never asserted (docs/benchmarks.md, "Scale-out").
"""

from __future__ import annotations

import pytest

from lab import ecmp_steps
from lab.ecmp_stand import EcmpStand
from lab.ecmp_topology import DIRECTORS
from lab.frr import have_frr
from lab.report import QuietReporter

pytestmark = pytest.mark.skipif(not have_frr(), reason="needs FRR (apt install frr)")


@pytest.fixture(scope="module")
def lab():
    with EcmpStand(reporter=QuietReporter()) as stand:
        yield stand


@pytest.fixture(scope="module")
def results() -> dict:
    return {}


def show(r) -> None:
    print(f"\n{r.name}: {r.summary.failed} failed of {r.summary.total}; {r.figures}")


def test_kill_9_withdraws_and_mh_keeps_the_connections(lab: EcmpStand, results) -> None:
    r = ecmp_steps.crash(lab, DIRECTORS[0], "kill")  # raises unless withdrawn upstream
    show(r)
    results["mh"] = r
    assert r.figures["through_victim"] > 0, "no held connection went through the victim"
    assert r.figures["held_broken_share"] <= ecmp_steps.CRASH_RESET_LIMIT, r.figures


def test_flows_that_move_back_survive_the_return(lab: EcmpStand) -> None:
    r = ecmp_steps.rejoin(lab, DIRECTORS[0], "kill")
    show(r)
    assert r.figures["moved_back"] > 0
    assert r.figures["held_broken"] == 0, r.figures


def test_a_pulled_cable_withdraws_and_mh_keeps_the_connections(lab: EcmpStand) -> None:
    r = ecmp_steps.crash(lab, DIRECTORS[1], "cable")
    show(r)
    assert r.figures["held_broken_share"] <= ecmp_steps.CRASH_RESET_LIMIT, r.figures
    r = ecmp_steps.rejoin(lab, DIRECTORS[1], "cable")
    show(r)
    assert r.figures["held_broken"] == 0, r.figures


def test_graceful_drain_loses_nothing(lab: EcmpStand) -> None:
    r = ecmp_steps.drain(lab, DIRECTORS[2])
    show(r)
    assert r.summary.failed == 0, r.summary.errors
    assert r.figures["held_broken"] == 0, r.figures
    r = ecmp_steps.undrain(lab, DIRECTORS[2])
    show(r)
    assert r.summary.failed == 0, r.summary.errors
    assert r.figures["held_broken"] == 0, r.figures


def test_wlc_baseline_breaks_more_connections(lab: EcmpStand, results) -> None:
    lab.set_scheduler("wlc")
    r = ecmp_steps.crash(lab, DIRECTORS[0], "kill")
    show(r)
    mh = results.get("mh")
    if mh is None:
        pytest.skip("the mh crash did not run")
    assert r.figures["held_broken"] > mh.figures["held_broken"], (r.figures, mh.figures)
