"""End to end, the lab in NAT mode: what `make lab` shows, asserted.

One lab (namespaces, two real servers, pulsed on the router) serves every test
in this module, in order: balancing, failure, recovery, drain, reload,
failover. Failures are counted by the lab's load generator, which records
every request it makes (lab/loadgen.py); times are reported, never asserted.
"""

from __future__ import annotations

import pytest

from lab import steps
from lab.report import QuietReporter
from lab.stand import Stand
from lab.steps import StepResult

SHARE_TOLERANCE = 0.05  # wrr hands out connections in exact proportion; this covers the edges


@pytest.fixture(scope="module")
def lab():
    with Stand("nat", reporter=QuietReporter()) as stand:
        yield stand


@pytest.fixture(scope="module")
def results() -> dict[str, StepResult]:
    return {}


def assert_spread(share: dict[str, float], expected: dict[str, float]) -> None:
    for server, want in expected.items():
        assert abs(share[server] - want) <= SHARE_TOLERANCE, (server, share, expected)


def test_spread_follows_the_weights(lab: Stand) -> None:
    r = steps.balancing(lab, seconds=4)
    assert r.summary.failed == 0, r.summary.errors
    assert r.summary.ok > 100
    assert_spread(r.figures["share"], {"rs1": 0.75, "rs2": 0.25})


def test_no_request_fails_after_detection(lab: Stand) -> None:
    r = steps.failure(lab, victim="rs1", after=2)
    assert r.figures["failed_after_detection"] == 0, r.summary.errors
    assert r.figures["to_victim_after_detection"] == 0
    assert r.summary.by_server["rs2"] > 0


def test_recovered_server_ramps_up_then_balances(lab: Stand) -> None:
    r = steps.recovery(lab, victim="rs1", after=2)
    assert r.summary.failed == 0, r.summary.errors
    assert r.figures["ramp"][0] < lab.weights[lab.servers["rs1"]], "no slow start seen"
    assert_spread(r.figures["share_after"], r.figures["expected_share"])


def test_drain_loses_no_request(lab: Stand) -> None:
    r = steps.drain(lab, victim="rs2", seconds=1.5)
    assert r.summary.failed == 0, r.summary.errors
    assert r.figures["to_drained"] == 0
    assert r.summary.ok > 0


def test_reload_under_load_loses_no_request(lab: Stand) -> None:
    r = steps.reload(lab, server="rs2", new_weight=3, seconds=2)
    assert r.summary.failed == 0, r.summary.errors
    assert_spread(r.figures["share_after"], {"rs1": 0.5, "rs2": 0.5})


def test_backup_router_takes_over_when_the_master_dies(lab: Stand, results) -> None:
    r = steps.failover(lab, after=2)
    results["failover"] = r
    # The VIP came back (failover() raises otherwise) and traffic flows through the backup.
    assert r.figures["answered_after_vip_moved"] > 0
    # Connections caught mid-handshake may be reset; once the backup serves, none fail.
    assert r.figures["failed_in_last_second"] == 0, r.figures["failures_started_at_ms"]


def test_connection_survives_failover_with_connection_sync(results) -> None:
    r = results.get("failover")
    if r is None:
        pytest.skip("the failover test did not run to its end")
    assert r.figures["held_connection_failures"] == 0
    assert r.figures["held_connection_connects"] == 1
