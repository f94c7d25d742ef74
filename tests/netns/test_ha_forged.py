"""Forged VRRP packets from a raw socket, one per kind of defect: each is dropped and counted
by reason, and the router's state never changes. Needs root."""

import ipaddress
import os

import pytest

from pulsed.ha.auth import Authenticator
from pulsed.ha.vrrp import MCAST_V4, Advert, encode
from tests.support.ha_lab import VIP, applied

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

KEY = "pha-test-key-0123456789abcdef"


V4 = ipaddress.IPv4Address
VIPS = (V4(VIP),)


def pkt(src, dst=MCAST_V4, *, vrid=51, prio=254, interval=10, addrs=VIPS):
    """An advert that would make the router (priority 100) step down if it were accepted."""
    return encode(Advert(vrid, prio, interval, addrs), V4(src), dst)


async def send_and_count(lab, r1, reason, payload, src, dst="224.0.0.18", ttl=255):
    before = r1.status()["drops"][reason]
    lab.forge(lab.routers[1], lab.ifname(1), payload, src, dst, ttl)
    await lab.wait_for(lambda: r1.status()["drops"][reason] == before + 1)


async def test_forged_multicast_packets_never_change_state(lab):
    r1 = await lab.start_pulsed(0, priority=100, strict_interval=True)
    await r1.wait_event(applied("master"))
    await lab.wait_for(lambda: r1.status()["vips_held"])  # the status file has caught up
    transitions = r1.status()["transitions"]
    src = lab.addr(1)
    good = pkt(src)
    flip = bytearray(good)
    flip[7] ^= 0xFF
    cases = [
        ("ttl", good, {"ttl": 64}),
        ("version", bytes([0x21]) + good[1:], {}),
        ("type", bytes([0x32]) + good[1:], {}),
        ("vrid", pkt(src, vrid=52), {}),
        ("checksum", bytes(flip), {}),
        ("short", good[:6], {}),
        ("short", good[:10], {}),
        ("length", good + b"\0\0\0\0", {}),
        ("addresses", pkt(src, addrs=(V4("192.0.2.99"),)), {}),
        ("addresses", pkt(src, addrs=()), {}),
        ("interval", pkt(src, interval=0), {}),
        ("interval", pkt(src, interval=100), {}),  # strict_interval: ours is 10 cs
    ]
    for reason, payload, kw in cases:
        await send_and_count(lab, r1, reason, payload, src, **kw)
        st = r1.status()
        assert st["state"] == "master", reason
        assert st["transitions"] == transitions, reason
        assert st["adverts_received"] == 0, reason
    assert lab.holders() == [0]
    # Control: the same advert without a defect does make it step down (the forger works).
    lab.forge(lab.routers[1], lab.ifname(1), good, src, "224.0.0.18")
    await r1.wait_event(lambda e: e.get("event") == "role" and e["new"] == "backup")


async def test_forged_unicast_and_auth_packets_never_change_state(lab, tmp_path):
    keyfile = tmp_path / "key"
    keyfile.write_text(KEY)
    peer = lab.addr(1)
    me = lab.addr(0)
    r1 = await lab.start_pulsed(
        0, priority=100, unicast_peers=[peer], auth={"key_file": str(keyfile)}
    )
    await r1.wait_event(applied("master"))
    await lab.wait_for(lambda: r1.status()["vips_held"])  # the status file has caught up
    transitions = r1.status()["transitions"]
    stranger = "10.77.0.50"
    signer = Authenticator(KEY.encode(), 30)
    import time

    cases = [
        ("peer", pkt(stranger, V4(me)), stranger),
        ("auth", pkt(peer, V4(me)), peer),  # no trailer
        (
            "auth",
            Authenticator(b"wrong-key-wrong-key", 30).sign(
                V4(peer), pkt(peer, V4(me)), time.time()
            ),
            peer,
        ),
    ]
    for reason, payload, src in cases:
        await send_and_count(lab, r1, reason, payload, src, dst=me)
    # A genuine lower-priority advert is accepted (and ignored by a master); its replay is not.
    genuine = signer.sign(V4(peer), pkt(peer, V4(me), prio=50), time.time())
    received = r1.status()["adverts_received"]
    lab.forge(lab.routers[1], lab.ifname(1), genuine, peer, me)
    await lab.wait_for(lambda: r1.status()["adverts_received"] == received + 1)
    await send_and_count(lab, r1, "replay", genuine, peer, dst=me)
    st = r1.status()
    assert st["state"] == "master" and st["transitions"] == transitions
    assert lab.holders() == [0]
    # Control: a genuine higher-priority advert makes it step down.
    lab.forge(lab.routers[1], lab.ifname(1),
              signer.sign(V4(peer), pkt(peer, V4(me)), time.time()), peer, me)  # fmt: skip
    await r1.wait_event(lambda e: e.get("event") == "role" and e["new"] == "backup")
