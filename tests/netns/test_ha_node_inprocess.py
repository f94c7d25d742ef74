"""VrrpNode embedded the way the daemon embeds it: in-process, with an injected
healthy_fraction, on_event and a sync-daemon control. The test's thread enters a
router namespace of the lab (pyroute2.netns.pushns); the peer is a real pulsed process.
Needs root."""

import asyncio
import errno
import os
import threading

import pytest
from pyroute2 import netns

from lab.ha_pair import VIP
from pulsed.ha.node import VrrpNode
from tests.support.vrrp_config import vrrp_config

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]


class KernelLikeSyncd:
    """Behaves like pulsed.ipvs.syncd against the kernel: one daemon per state,
    EEXIST when it already runs, ESRCH when stopping one that does not."""

    def __init__(self) -> None:
        self.running: dict[str, tuple[str, int]] = {}
        self.calls: list[tuple] = []

    async def start_sync_daemon(self, state, ifname, syncid):
        self.calls.append(("start", state))
        if state in self.running:
            raise OSError(errno.EEXIST, "sync daemon already running")
        self.running[state] = (ifname, syncid)

    async def stop_sync_daemon(self, state):
        self.calls.append(("stop", state))
        if state not in self.running:
            raise OSError(errno.ESRCH, "no such sync daemon")
        del self.running[state]


@pytest.fixture
def inside(lab):
    """Run this test's thread (and the sockets it opens) in router 1's namespace."""
    netns.pushns(lab.routers[0])
    try:
        yield lab
    finally:
        netns.popns()


def config(lab, **kw):
    base = dict(
        interface=lab.ifname(0),
        vrid=51,
        priority=200,
        advert_interval="100ms",
        virtual_addresses=[f"{VIP}/24"],
        track_interval="50ms",
        garp_count=1,
    )
    base.update(kw)
    return vrrp_config(**base)


class Roles:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.threads: set[int] = set()
        self.changed = asyncio.Event()

    def __call__(self, kind, name, old, new, priority, reason):
        self.seen.append((new, reason))
        self.threads.add(threading.get_ident())
        self.changed.set()

    async def wait(self, role, timeout=10.0):
        async with asyncio.timeout(timeout):
            while not self.seen or self.seen[-1][0] != role:
                self.changed.clear()
                await self.changed.wait()
        return self.seen[-1][1]


@pytest.mark.parametrize("dedicated", [True, False])
async def test_service_tracking_fault_and_sync_daemon(inside, dedicated):
    lab = inside
    health = {"web": 1.0}
    roles = Roles()
    syncd = KernelLikeSyncd()
    cfg = config(
        lab,
        dedicated_thread=dedicated,
        track_services=[{"service": "web", "min_healthy": 0.5}],
        sync_daemon={"enabled": True, "syncid": 7},
    )
    node = VrrpNode(cfg, healthy_fraction=health.get, on_event=roles, sync_daemon=syncd)
    await node.start()
    try:
        await roles.wait("master")
        await lab.wait_for(lambda: lab.holders() == [0])
        await lab.wait_for(lambda: syncd.running == {"master": (lab.ifname(0), 7)})
        health["web"] = 0.25
        assert await roles.wait("fault") == "service web 25% healthy"
        await lab.wait_for(lambda: lab.holders() == [])
        (st,) = node.status()
        assert st.state == "fault" and st.faults == ["service web 25% healthy"]
        assert st.priority_zero_sent == 1  # the peer (if any) takes over after skew time
        await lab.wait_for(lambda: syncd.running == {"backup": (lab.ifname(0), 7)})
        health["web"] = 0.75
        await roles.wait("backup")
        await roles.wait("master")
        await lab.wait_for(lambda: lab.holders() == [0])
        await lab.wait_for(lambda: syncd.running == {"master": (lab.ifname(0), 7)})
    finally:
        await node.stop()
    assert roles.seen[-1][0] == "init"
    assert syncd.running == {}
    assert lab.holders() == []
    # Callbacks always arrive on the loop (thread) that called start().
    assert roles.threads == {threading.get_ident()}


async def test_service_decrement_hands_over_to_peer(inside):
    lab = inside
    peer = await lab.start_pulsed(1, priority=150)
    health = {"web": 1.0}
    roles = Roles()
    cfg = config(lab, track_services=[{"service": "web", "min_healthy": 0.9, "decrement": 100}])
    node = VrrpNode(cfg, healthy_fraction=health.get, on_event=roles)
    await node.start()
    try:
        await roles.wait("master")
        await lab.wait_for(lambda: lab.holders() == [0])
        health["web"] = 0.5
        await roles.wait("backup")
        assert node.status()[0].effective_priority == 100
        await lab.wait_for(lambda: lab.holders() == [1])
        await peer.wait_event(lambda e: e.get("event") == "applied" and e["role"] == "master")
        health["web"] = None  # unknown (service gone): no decrement, we preempt again
        await roles.wait("master")
        assert node.status()[0].effective_priority == 200
    finally:
        await node.stop()


async def test_unknown_sync_module_failure_does_not_stop_heartbeat(inside):
    class Broken:
        async def start_sync_daemon(self, *a):
            raise OSError(errno.ENOPROTOOPT, "IPVS not available")

        async def stop_sync_daemon(self, *a):
            raise OSError(errno.ENOPROTOOPT, "IPVS not available")

    roles = Roles()
    cfg = config(inside, sync_daemon={"enabled": True})
    node = VrrpNode(cfg, on_event=roles, sync_daemon=Broken())
    await node.start()
    try:
        await roles.wait("master")
        sent = node.status()[0].adverts_sent
        await inside.wait_for(lambda: node.status()[0].adverts_sent >= sent + 5)
        assert node.status()[0].sync_daemon is None
    finally:
        await node.stop()
