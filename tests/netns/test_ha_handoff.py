"""The node side of an upgrade hand-off, in-process in router 1's namespace with a real
pulsed peer watching: stop(keep_vips=True) leaves the VIPs and sends no priority 0, and
start(adopt=...) takes over as master at once without removing them. Needs root."""

import asyncio
import os

import pytest
from pyroute2 import netns

from lab.ha_pair import VIP
from pulsed.ha.node import VrrpNode
from tests.support.vrrp_config import vrrp_config

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]


@pytest.fixture
def inside(lab):
    netns.pushns(lab.routers[0])
    try:
        yield lab
    finally:
        netns.popns()


async def test_keep_vips_then_adopt_moves_nothing(inside):
    lab = inside
    peer = await lab.start_pulsed(1, priority=100)
    cfg = vrrp_config(
        name="VI_1",
        interface=lab.ifname(0),
        vrid=51,
        priority=200,
        advert_interval="100ms",
        virtual_addresses=[f"{VIP}/24"],
        track_interval="50ms",
        garp_count=1,
    )
    old = VrrpNode(cfg)
    await old.start()
    await lab.wait_for(lambda: lab.holders() == [0])
    await peer.wait_event(lambda e: e.get("event") == "applied" and e["role"] == "backup")
    mark = len(peer.events)
    holders: list[list[int]] = []
    watching = True

    async def watch():
        while watching:
            holders.append(lab.holders())
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    await old.stop(keep_vips=True)
    assert old.status() and old.status()[0].priority_zero_sent == 0
    assert lab.holders() == [0]  # the VIP stays for the next process
    new = VrrpNode(cfg)
    await new.start(adopt={"VI_1": "master"})
    try:
        (st,) = new.status()
        assert st.state == "master" and st.last_transition_reason == "initial_state master"
        sent = st.adverts_sent
        await lab.wait_for(lambda: new.status()[0].adverts_sent >= sent + 10)
        watching = False
        await watcher
        assert all(h == [0] for h in holders)  # never without an owner, never two
        roles = [e for e in peer.events[mark:] if e.get("event") == "role"]
        assert roles == []  # the peer saw no gap
    finally:
        watching = False
        await new.stop()
    assert lab.holders() == []
