"""Interop with Debian's keepalived 2.2.7 (VRRPv3, 100 ms adverts) in namespaces. Needs root."""

import os
import signal

import pytest

from lab.ha_pair import KEEPALIVED, VIP, applied, became

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not os.path.exists(KEEPALIVED), reason="keepalived not installed"),
]


def no_drops(status):
    return {k: v for k, v in status["drops"].items() if v}


async def test_pulsed_master_keepalived_backup(lab):
    r1 = await lab.start_pulsed(0, priority=200)
    await r1.wait_event(applied("master"))
    await lab.start_keepalived(1, priority=100)
    # keepalived comes up as backup and must stay so while it hears us: wait until it has been
    # up for many master-down intervals (pulsed sends 10 adverts/s), then look at the VIP.
    await lab.wait_for(lambda: os.path.exists(os.path.join(lab.dir, "k2.vrrp.pid")))
    sent = r1.status()["adverts_sent"]
    await lab.wait_for(lambda: r1.status()["adverts_sent"] >= sent + 20)
    assert lab.holders() == [0]
    assert r1.role() == "master"
    # keepalived's adverts (if any) would have been counted; it must never have spoken.
    assert r1.status()["adverts_received"] == 0
    # Crash pulsed: keepalived takes over.
    r1.kill(signal.SIGKILL)
    await lab.wait_for(lambda: VIP in lab.vips(1))


async def test_keepalived_master_pulsed_backup_and_priority_zero(lab):
    await lab.start_keepalived(1, priority=200)
    await lab.wait_for(lambda: VIP in lab.vips(1))
    r1 = await lab.start_pulsed(0, priority=100)
    await r1.wait_event(applied("backup"))
    await lab.wait_for(lambda: r1.status()["adverts_received"] >= 20)
    st = r1.status()
    assert st["state"] == "backup" and st["master"] == lab.addr(1)
    assert st["master_advert_interval"] == 0.1
    assert no_drops(st) == {}
    assert lab.holders() == [1]
    # keepalived stops gracefully: it sends priority 0 and pulsed takes over after skew time.
    for pid in lab.keepalived_pids(1)[1:]:
        os.kill(pid, signal.SIGTERM)
    await r1.wait_event(became("master", "master sent priority 0"))
    await lab.wait_for(lambda: lab.holders() == [0])
    assert r1.status()["priority_zero_received"] >= 1


async def test_keepalived_preempts_lower_priority_pulsed(lab):
    r1 = await lab.start_pulsed(0, priority=100)
    await r1.wait_event(applied("master"))
    await lab.start_keepalived(1, priority=200)
    await r1.wait_event(became("backup", f"higher-priority master {lab.addr(1)} (200)"))
    await lab.wait_for(lambda: lab.holders() == [1])
    assert no_drops(r1.status()) == {}


async def test_pulsed_preempts_lower_priority_keepalived(lab):
    await lab.start_keepalived(1, priority=100)
    await lab.wait_for(lambda: VIP in lab.vips(1))
    r1 = await lab.start_pulsed(0, priority=200)
    await r1.wait_event(became("master", "preempting lower-priority master"))
    await lab.wait_for(lambda: lab.holders() == [0])
    # keepalived heard our higher priority and released the VIP; it stays quiet as backup.
    await lab.wait_for(lambda: r1.status()["master"] == lab.addr(0))
    sent = r1.status()["adverts_sent"]
    await lab.wait_for(lambda: r1.status()["adverts_sent"] >= sent + 10)
    assert lab.holders() == [0] and r1.role() == "master"


async def test_unicast_interop_both_ways(lab):
    await lab.start_keepalived(1, priority=200, unicast_peers=(lab.addr(0),))
    await lab.wait_for(lambda: VIP in lab.vips(1))
    r1 = await lab.start_pulsed(0, priority=100, unicast_peers=[lab.addr(1)])
    await r1.wait_event(applied("backup"))
    await lab.wait_for(lambda: r1.status()["adverts_received"] >= 10)
    assert no_drops(r1.status()) == {}
    assert lab.holders() == [1]
    # keepalived stops (priority 0 over unicast): pulsed takes over, keepalived then hears
    # pulsed's unicast adverts when it comes back with a lower priority and stays backup.
    for pid in lab.keepalived_pids(1)[1:]:
        os.kill(pid, signal.SIGTERM)
    await r1.wait_event(became("master", "master sent priority 0"))
    await lab.start_keepalived(1, priority=50, unicast_peers=(lab.addr(0),))
    await lab.wait_for(lambda: len(lab.keepalived_pids(1)) == 2)
    sent = r1.status()["adverts_sent"]
    await lab.wait_for(lambda: r1.status()["adverts_sent"] >= sent + 20)
    assert lab.holders() == [0]
