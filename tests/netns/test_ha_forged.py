"""Forged VRRP packets from a raw socket, one per kind of defect: each is dropped and counted
by reason, and the router's state never changes. Needs root."""

import ipaddress
import os

import pytest

from lab.ha_pair import VIP, applied
from pulsed.ha.auth import Authenticator
from pulsed.ha.vrrp import MCAST_V4, Advert, Drop, encode

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
    keyfile.chmod(0o600)
    peer = lab.addr(1)
    me = lab.addr(0)
    r1 = await lab.start_pulsed(
        0, priority=100, unicast_peers=[peer], auth={"key_file": str(keyfile)}
    )
    await r1.wait_event(applied("master"))
    await lab.wait_for(lambda: r1.status()["vips_held"])  # the status file has caught up
    transitions = r1.status()["transitions"]
    stranger = "10.77.0.50"
    signer = Authenticator(KEY.encode())  # the genuine peer: it has the key

    cases = [
        ("peer", pkt(stranger, V4(me)), stranger),
        ("auth", pkt(peer, V4(me)), peer),  # no trailer
        (
            "auth",
            Authenticator(b"wrong-key-wrong-key").sign(V4(peer), pkt(peer, V4(me))),
            peer,
        ),
    ]
    for reason, payload, src in cases:
        await send_and_count(lab, r1, reason, payload, src, dst=me)
    # The peer hears r1's advert (and so its challenge), as a restarted peer would.
    heard = lab.receive(lab.routers[1], lab.ifname(1), me)
    n = 8 + 4 * heard[3]
    assert signer.verify(V4(me), heard[:n], heard[n:]) is Drop.UNVERIFIED
    # A genuine lower-priority advert is accepted (and ignored by a master); its replay is not.
    genuine = signer.sign(V4(peer), pkt(peer, V4(me), prio=50))
    received = r1.status()["adverts_received"]
    lab.forge(lab.routers[1], lab.ifname(1), genuine, peer, me)
    await lab.wait_for(lambda: r1.status()["adverts_received"] == received + 1)
    await send_and_count(lab, r1, "replay", genuine, peer, dst=me)
    st = r1.status()
    assert st["state"] == "master" and st["transitions"] == transitions
    assert lab.holders() == [0]
    # Control: a genuine higher-priority advert makes it step down.
    lab.forge(lab.routers[1], lab.ifname(1), signer.sign(V4(peer), pkt(peer, V4(me))), peer, me)
    await r1.wait_event(lambda e: e.get("event") == "role" and e["new"] == "backup")


async def test_recorded_adverts_of_an_older_epoch_are_refused(lab, tmp_path):
    """An attacker who recorded a genuine peer's adverts replays them after the peer has
    restarted: r1 refuses them all (the peer's old epoch is retired, and they echo an old
    challenge), and its state never changes."""
    keyfile = tmp_path / "key"
    keyfile.write_text(KEY)
    keyfile.chmod(0o600)
    peer, me = lab.addr(1), lab.addr(0)
    r1 = await lab.start_pulsed(
        0, priority=100, unicast_peers=[peer], auth={"key_file": str(keyfile)}
    )
    await r1.wait_event(applied("master"))
    old_boot = Authenticator(KEY.encode())
    heard = lab.receive(lab.routers[1], lab.ifname(1), me)
    n = 8 + 4 * heard[3]
    old_boot.verify(V4(me), heard[:n], heard[n:])
    recorded = [old_boot.sign(V4(peer), pkt(peer, V4(me), prio=50)) for _ in range(3)]
    received = r1.status()["adverts_received"]
    lab.forge(lab.routers[1], lab.ifname(1), recorded[0], peer, me)  # r1 accepts the first
    await lab.wait_for(lambda: r1.status()["adverts_received"] == received + 1)
    # The peer restarts: a new epoch, verified through r1's next challenge.
    new_boot = Authenticator(KEY.encode())
    heard = lab.receive(lab.routers[1], lab.ifname(1), me)
    new_boot.verify(V4(me), heard[:n], heard[n:])
    lab.forge(lab.routers[1], lab.ifname(1), new_boot.sign(V4(peer), pkt(peer, V4(me), prio=50)),
              peer, me)  # fmt: skip
    await lab.wait_for(lambda: r1.status()["adverts_received"] == received + 2)
    transitions = r1.status()["transitions"]
    for payload in recorded[1:]:  # never seen by r1, but from the retired epoch
        await send_and_count(lab, r1, "replay", payload, peer, dst=me)
    st = r1.status()
    assert st["adverts_received"] == received + 2
    assert st["state"] == "master" and st["transitions"] == transitions
    assert lab.holders() == [0]
