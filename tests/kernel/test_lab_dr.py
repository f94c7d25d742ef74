"""End to end, the lab in direct-routing mode: balancing and failure detection.

The real servers carry the VIP on lo with arp_ignore=1 / arp_announce=2 and
answer the client directly; the router only rewrites MAC addresses.
"""

from __future__ import annotations

import pytest

from lab import steps
from lab.report import QuietReporter
from lab.stand import Stand
from lab.topology import VIP


@pytest.fixture(scope="module")
def lab():
    with Stand("dr", reporter=QuietReporter()) as stand:
        yield stand


def test_real_servers_follow_the_dr_recipe(lab: Stand) -> None:
    from lab.netns import run

    for ns in ("plab-rs1", "plab-rs2"):
        assert f" {VIP}/32" in run(["ip", "-o", "addr", "show", "dev", "lo"], ns=ns).stdout
        assert run(["sysctl", "-n", "net.ipv4.conf.all.arp_ignore"], ns=ns).stdout.strip() == "1"
        assert run(["sysctl", "-n", "net.ipv4.conf.all.arp_announce"], ns=ns).stdout.strip() == "2"


def test_dr_spread_follows_the_weights(lab: Stand) -> None:
    r = steps.balancing(lab, seconds=4)
    assert r.summary.failed == 0, r.summary.errors
    for server, want in {"rs1": 0.75, "rs2": 0.25}.items():
        assert abs(r.figures["share"][server] - want) <= 0.05, r.figures


def test_dr_no_request_fails_after_detection(lab: Stand) -> None:
    r = steps.failure(lab, victim="rs1", after=2)
    assert r.figures["failed_after_detection"] == 0, r.summary.errors
    assert r.figures["to_victim_after_detection"] == 0
