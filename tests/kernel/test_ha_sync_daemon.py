"""The kernel's IPVS sync daemon follows the VRRP role (IPVS VM: scripts/vm-run).

A real VrrpNode on a veth pair, the real pulsed.ipvs.syncd over netlink; the role is moved by
real adverts sent from the other end of the veth.
"""

from __future__ import annotations

import asyncio
import ipaddress
import subprocess
import sys

import pytest

from pulsed.ha.node import VrrpNode
from pulsed.ha.vrrp import MCAST_V4, Advert, encode
from pulsed.ipvs.syncd import sync_daemons
from tests.support.vrrp_config import vrrp_config

VIP = "192.0.2.100"


def sh(*args: str) -> None:
    subprocess.run(args, check=True)


PEER_NS = "pha-kpeer"


@pytest.fixture
def veth():
    # The peer end lives in its own namespace: a packet from a local address would be dropped.
    sh("ip", "netns", "add", PEER_NS)
    try:
        sh(
            "ip",
            "link",
            "add",
            "pha-k0",
            "type",
            "veth",
            "peer",
            "name",
            "pha-k1",
            "netns",
            PEER_NS,
        )
        sh("ip", "addr", "add", "10.77.0.1/24", "dev", "pha-k0")
        sh("ip", "-n", PEER_NS, "addr", "add", "10.77.0.2/24", "dev", "pha-k1")
        sh("ip", "link", "set", "pha-k0", "up")
        sh("ip", "-n", PEER_NS, "link", "set", "pha-k1", "up")
        yield
    finally:
        subprocess.run(["ip", "link", "del", "pha-k0"], check=False)
        subprocess.run(["ip", "netns", "del", PEER_NS], check=False)


async def wait_until(cond, timeout=20.0):
    async with asyncio.timeout(timeout):
        while not await cond():
            await asyncio.sleep(0.05)


async def daemons() -> dict[str, int]:
    return {d["state"]: d["syncid"] for d in await sync_daemons()}


async def test_sync_daemon_follows_role(veth):
    cfg = vrrp_config(
        interface="pha-k0",
        vrid=51,
        priority=150,
        advert_interval="100ms",
        virtual_addresses=[f"{VIP}/24"],
        sync_daemon={"enabled": True, "syncid": 42},
    )
    roles: list[str] = []
    node = VrrpNode(cfg, on_event=lambda kind, name, old, new, prio, why: roles.append(new))
    await node.start()
    try:
        await wait_until(lambda: _true(node.status()[0].state == "master"))
        await wait_until(lambda: _eq(daemons(), {"master": 42}))
        # A higher-priority router appears on the other end: we become backup.
        src = ipaddress.IPv4Address("10.77.0.2")
        adv = Advert(51, 200, 10, (ipaddress.IPv4Address(VIP),))
        payload = encode(adv, src, MCAST_V4).hex()
        sh("ip", "netns", "exec", PEER_NS, sys.executable, "lab/ha_pair.py", "send",
           "pha-k1", str(src), str(MCAST_V4), "255", payload)  # fmt: skip
        await wait_until(lambda: _true(node.status()[0].state == "backup"))
        await wait_until(lambda: _eq(daemons(), {"backup": 42}))
        # Silence: master again, the master daemon replaces the backup one.
        await wait_until(lambda: _eq(daemons(), {"master": 42}))
    finally:
        await node.stop()
    assert await daemons() == {}
    assert roles[:3] == ["backup", "master", "backup"]


async def _true(v: bool) -> bool:
    return v


async def _eq(coro, want) -> bool:
    return await coro == want
