"""VRRPv3 over IPv6 (ff02::12, link-local sources, hop limit 255): pulsed pair, unsolicited
neighbour advertisements seen by the observer, interop with keepalived. Needs root."""

import os
import signal

import pytest

from lab.ha_pair import KEEPALIVED, HaPair, applied

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

VIP6 = "2001:db8::100"


@pytest.fixture
async def lab():
    lab = HaPair().create()
    try:
        # Wait for the routers' link-local addresses to finish DAD: they source the adverts.
        for ns in lab.routers:
            await lab.wait_for(lambda ns=ns: _ll_ready(ns))
        yield lab
    finally:
        await lab.close()


def _ll_ready(ns):
    from lab.ha_pair import sh

    out = sh("ip", "-n", ns, "-6", "addr", "show", "scope", "link").stdout
    return "fe80::" in out and "tentative" not in out


V6 = {"virtual_addresses": [f"{VIP6}/64"]}


async def test_ipv6_pair_failover_and_unsolicited_na(lab):
    cap = await lab.capture()
    r1 = await lab.start_pulsed(0, priority=200, **V6)
    r2 = await lab.start_pulsed(1, priority=100, **V6)
    await r1.wait_event(applied("master"))
    await r2.wait_event(applied("backup"))
    await lab.wait_for(lambda: lab.holders(VIP6) == [0])
    await cap.wait_event(lambda e: e.get("event") == "na" and e["ip"] == VIP6)
    await lab.wait_for(lambda: r2.status()["adverts_received"] >= 5)
    assert {k: v for k, v in r2.status()["drops"].items() if v} == {}
    assert r2.status()["master"].startswith("fe80::")
    r1.kill(signal.SIGTERM)
    await r2.wait_event(lambda e: e.get("event") == "role" and "priority 0" in e["reason"])
    await lab.wait_for(lambda: lab.holders(VIP6) == [1])


@pytest.mark.skipif(not os.path.exists(KEEPALIVED), reason="keepalived not installed")
async def test_ipv6_interop_with_keepalived(lab):
    await lab.start_keepalived(1, priority=200, vip=f"{VIP6}/64")
    await lab.wait_for(lambda: VIP6 in lab.vips(1))
    r1 = await lab.start_pulsed(0, priority=100, **V6)
    await r1.wait_event(applied("backup"))
    await lab.wait_for(lambda: r1.status()["adverts_received"] >= 10)
    st = r1.status()
    assert st["state"] == "backup" and {k: v for k, v in st["drops"].items() if v} == {}
    lab.crash_keepalived(1)
    await r1.wait_event(applied("master"))
    # keepalived restarts with the lower priority: pulsed stays master, keepalived backs off.
    await lab.start_keepalived(1, priority=50, vip=f"{VIP6}/64")
    sent = r1.status()["adverts_sent"]
    await lab.wait_for(lambda: r1.status()["adverts_sent"] >= sent + 20)
    assert lab.holders(VIP6) == [0]
