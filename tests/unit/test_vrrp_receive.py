"""Receive validation and HMAC authentication: every bad kind is dropped with its reason."""

import dataclasses
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pulsed.ha.auth import MIN_TRAILER_LEN, Authenticator, load_key
from pulsed.ha.receive import Expect, Rejected, validate
from pulsed.ha.vrrp import MCAST_V4, MCAST_V6, Advert, Drop, encode

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address
PEER = V4("10.0.0.2")
ME = V4("10.0.0.1")
VIPS = (V4("192.0.2.10"), V4("192.0.2.11"))
EXPECT = Expect(vrid=7, family=4, addresses=frozenset(VIPS), adver_int=100, own=frozenset({ME}))
GOOD = Advert(7, 200, 100, VIPS)


def check(raw, *, src=PEER, dst=MCAST_V4, ttl=255, expect=EXPECT, **kw):
    return validate(raw, src=src, dst=dst, ttl=ttl, expect=expect, **kw)


def test_good_advert_accepted():
    assert check(encode(GOOD, PEER, MCAST_V4)) == GOOD


def test_address_order_does_not_matter():
    adv = Advert(7, 200, 100, tuple(reversed(VIPS)))
    assert check(encode(adv, PEER, MCAST_V4)) == adv


@pytest.mark.parametrize(
    ("raw", "kw", "reason"),
    [
        (encode(GOOD, PEER, MCAST_V4), {"ttl": 254}, Drop.TTL),
        (encode(GOOD, PEER, MCAST_V4), {"ttl": 1}, Drop.TTL),
        (bytes([0x21]) + encode(GOOD, PEER, MCAST_V4)[1:], {}, Drop.VERSION),
        (bytes([0x32]) + encode(GOOD, PEER, MCAST_V4)[1:], {}, Drop.TYPE),
        (encode(Advert(8, 200, 100, VIPS), PEER, MCAST_V4), {}, Drop.VRID),
        (encode(GOOD, PEER, MCAST_V4)[:6] + b"\0\0" + bytes(8), {}, Drop.CHECKSUM),
        (encode(GOOD, PEER, MCAST_V4)[:5], {}, Drop.SHORT),
        (encode(GOOD, PEER, MCAST_V4)[:12], {}, Drop.SHORT),
        (encode(GOOD, PEER, MCAST_V4) + b"junk", {}, Drop.LENGTH),
        (encode(Advert(7, 200, 100, VIPS[:1]), PEER, MCAST_V4), {}, Drop.ADDRESSES),
        (
            encode(Advert(7, 200, 100, (*VIPS, V4("192.0.2.12"))), PEER, MCAST_V4),
            {},
            Drop.ADDRESSES,
        ),
        (encode(Advert(7, 200, 100, (VIPS[0], VIPS[0])), PEER, MCAST_V4), {}, Drop.ADDRESSES),
        (encode(Advert(7, 200, 0, VIPS), PEER, MCAST_V4), {}, Drop.INTERVAL),
        (encode(GOOD, ME, MCAST_V4), {"src": ME}, Drop.OWN),
        (
            encode(Advert(7, 200, 100, (V6("2001:db8::1"),)), V6("fe80::1"), MCAST_V6),
            {"src": V6("fe80::1"), "dst": MCAST_V6},
            Drop.FAMILY,
        ),
    ],
)
def test_rejections(raw, kw, reason):
    verdict = check(raw, **kw)
    assert isinstance(verdict, Rejected)
    assert verdict.reason is reason, verdict


def test_interval_mismatch_accepted_by_default_like_keepalived():
    adv = Advert(7, 200, 35, VIPS)
    assert check(encode(adv, PEER, MCAST_V4)) == adv


def test_interval_mismatch_dropped_when_strict():
    strict = dataclasses.replace(EXPECT, strict_interval=True)
    verdict = check(encode(Advert(7, 200, 35, VIPS), PEER, MCAST_V4), expect=strict)
    assert verdict.reason is Drop.INTERVAL


def test_unicast_peer_filter():
    exp = Expect(
        vrid=7, family=4, addresses=frozenset(VIPS), adver_int=100, peers=frozenset({PEER})
    )
    stranger = V4("10.0.0.9")
    assert check(encode(GOOD, PEER, ME), dst=ME, expect=exp) == GOOD
    assert check(encode(GOOD, stranger, ME), src=stranger, dst=ME, expect=exp).reason is Drop.PEER


def test_ipv6():
    src = V6("fe80::2")
    vips = (V6("2001:db8::10"),)
    exp = Expect(vrid=7, family=6, addresses=frozenset(vips), adver_int=100)
    adv = Advert(7, 100, 100, vips)
    assert check(encode(adv, src, MCAST_V6), src=src, dst=MCAST_V6, expect=exp) == adv
    bad = check(encode(adv, src, MCAST_V6), src=src, dst=MCAST_V6, expect=exp, ttl=64)
    assert bad.reason is Drop.TTL


KEY = b"0123456789abcdef0123456789abcdef"


def signed(auth, adv=GOOD, src=PEER, probe=False):
    return auth.sign(src, encode(adv, src, MCAST_V4), probe=probe)


def introduced():
    """A sender and a receiver that have exchanged challenges (see test_vrrp_auth.py)."""
    tx, rx = Authenticator(KEY), Authenticator(KEY)
    assert check(signed(tx, src=PEER, probe=True), auth=rx).reason is Drop.UNVERIFIED
    assert check(signed(rx, src=ME, probe=True), src=ME, auth=tx, expect=_from_me()).reason is (
        Drop.PROBE
    )
    return tx, rx


def _from_me():
    return dataclasses.replace(EXPECT, own=frozenset({PEER}))


def test_auth_round_trip_and_replay():
    tx, rx = introduced()
    first = signed(tx)
    assert len(first) == 8 + 8 + MIN_TRAILER_LEN + 8  # one echo: the receiver's challenge
    assert check(first, auth=rx) == GOOD
    assert check(first, auth=rx).reason is Drop.REPLAY
    assert check(signed(tx), auth=rx) == GOOD


def test_auth_probe_is_not_an_advert():
    tx, rx = introduced()
    verdict = check(signed(tx, probe=True), auth=rx)
    assert isinstance(verdict, Rejected) and verdict.reason is Drop.PROBE


def test_auth_rejects_recordings_after_receiver_restart():
    tx, _ = introduced()
    old = signed(tx)
    assert check(old, auth=Authenticator(KEY)).reason is Drop.UNVERIFIED


def test_auth_rejects_wrong_key_missing_trailer_and_tamper():
    tx, rx = introduced()
    wrong = signed(Authenticator(b"x" * 32))
    assert check(wrong, auth=rx).reason is Drop.AUTH
    assert check(encode(GOOD, PEER, MCAST_V4), auth=rx).reason is Drop.AUTH
    good = signed(tx)
    tampered = good[:-1] + bytes([good[-1] ^ 1])
    assert check(tampered, auth=rx).reason is Drop.AUTH
    assert check(good, auth=rx) == GOOD


def test_auth_binds_the_source_address():
    tx, rx = introduced()
    pkt = signed(tx, src=PEER)
    other = V4("10.0.0.3")
    # Re-checksummed for the new source, the MAC still names PEER.
    forged = encode(GOOD, other, MCAST_V4) + pkt[16:]
    assert check(forged, src=other, auth=rx).reason is Drop.AUTH


def test_load_key(tmp_path):
    f = tmp_path / "k"
    f.write_bytes(KEY + b"\n")
    f.chmod(0o600)
    assert load_key(str(f)) == KEY
    f.write_bytes(b"short")
    with pytest.raises(ValueError, match="at least 16"):
        load_key(str(f))
    with pytest.raises(ValueError, match="cannot read"):
        load_key(str(tmp_path / "missing"))


@given(st.binary(max_size=120), st.integers(0, 255))
def test_validate_total(data, ttl):
    verdict = check(data, ttl=ttl)
    assert isinstance(verdict, (Advert, Rejected))
    if isinstance(verdict, Advert):
        assert ttl == 255 and verdict.vrid == 7 and set(verdict.addresses) == set(VIPS)


# ---- VRRPv2: the same checks, plus keepalived's PASS, plus the version mismatch


def v2(adv=GOOD, **kw):
    return dataclasses.replace(adv, version=2, **kw)


EXPECT_V2 = dataclasses.replace(EXPECT, version=2)
EXPECT_PASS = dataclasses.replace(EXPECT, version=2, password=b"1234")
GOOD_V2 = v2()
GOOD_PASS = v2(password=b"1234")


def test_v2_good_adverts_accepted():
    assert check(encode(GOOD_V2, PEER, MCAST_V4), expect=EXPECT_V2) == GOOD_V2
    assert check(encode(GOOD_PASS, PEER, MCAST_V4), expect=EXPECT_PASS) == GOOD_PASS
    # Unicast: the v2 checksum has no pseudo-header, so any destination is fine.
    assert check(encode(GOOD_V2, PEER, ME), dst=ME, expect=EXPECT_V2) == GOOD_V2


def _v2_raw(adv=GOOD_V2, src=PEER):
    return encode(adv, src, MCAST_V4)


@pytest.mark.parametrize(
    ("raw", "kw", "reason"),
    [
        (_v2_raw(), {"ttl": 254}, Drop.TTL),
        (_v2_raw(), {"ttl": 1}, Drop.TTL),
        (bytes([0x22]) + _v2_raw()[1:], {}, Drop.TYPE),
        (bytes([0x51]) + _v2_raw()[1:], {}, Drop.VERSION),
        (_v2_raw(v2(Advert(8, 200, 100, VIPS))), {}, Drop.VRID),
        (_v2_raw()[:6] + b"\0\0" + _v2_raw()[8:], {}, Drop.CHECKSUM),
        (_v2_raw()[:5], {}, Drop.SHORT),
        (_v2_raw()[:16], {}, Drop.SHORT),  # the addresses but no auth data
        (_v2_raw() + b"junk", {}, Drop.LENGTH),
        (_v2_raw(v2(Advert(7, 200, 100, VIPS[:1]))), {}, Drop.ADDRESSES),
        (_v2_raw(v2(Advert(7, 200, 100, (VIPS[0], VIPS[0])))), {}, Drop.ADDRESSES),
        (_v2_raw(v2(Advert(7, 200, 0, VIPS))), {}, Drop.INTERVAL),
        # RFC 3768 7.1 (and keepalived): a v2 interval other than ours is always dropped.
        (_v2_raw(v2(Advert(7, 200, 200, VIPS))), {}, Drop.INTERVAL),
        (_v2_raw(src=ME), {"src": ME}, Drop.OWN),
        (_v2_raw(GOOD_PASS), {}, Drop.AUTH),  # PASS to a router without authentication
        (_v2_raw(v2(auth_type=2)), {}, Drop.AUTH),  # IPsec AH: not ours
    ],
)
def test_v2_rejections(raw, kw, reason):
    verdict = check(raw, expect=EXPECT_V2, **kw)
    assert isinstance(verdict, Rejected)
    assert verdict.reason is reason, verdict


@pytest.mark.parametrize(
    "adv",
    [GOOD_V2, v2(password=b"4321"), v2(password=b"1234\0\0\0x"), v2(password=b"12345678")],
)
def test_v2_pass_refuses_a_missing_or_wrong_password(adv):
    verdict = check(encode(adv, PEER, MCAST_V4), expect=EXPECT_PASS)
    assert isinstance(verdict, Rejected) and verdict.reason is Drop.AUTH, verdict


def test_v2_peer_filter():
    exp = dataclasses.replace(EXPECT_V2, peers=frozenset({PEER}))
    stranger = V4("10.0.0.9")
    verdict = check(encode(GOOD_V2, stranger, ME), src=stranger, dst=ME, expect=exp)
    assert verdict.reason is Drop.PEER


def test_v2_to_an_ipv6_router_is_a_family_drop():
    exp = Expect(vrid=7, family=6, addresses=frozenset(), adver_int=100, version=2)
    verdict = check(_v2_raw(), src=V6("fe80::2"), dst=MCAST_V6, expect=exp)
    assert verdict.reason is Drop.FAMILY


def test_version_mismatch_names_the_version_and_vrid():
    # keepalived's default (v2) heard by a v3 router on its VRID, and the reverse.
    verdict = check(_v2_raw())
    assert verdict == Rejected(Drop.VERSION, verdict.detail, version=2, vrid=7)
    assert "VRRPv2" in verdict.detail
    verdict = check(encode(GOOD, PEER, MCAST_V4), expect=EXPECT_V2)
    assert verdict == Rejected(Drop.VERSION, verdict.detail, version=3, vrid=7)
    # The other version on another VRID is another router's business: a VRID drop.
    verdict = check(_v2_raw(v2(Advert(8, 200, 100, VIPS))))
    assert (verdict.reason, verdict.version, verdict.vrid) == (Drop.VRID, 2, 8)


def test_rejected_carries_version_and_vrid_when_readable():
    assert check(encode(GOOD, PEER, MCAST_V4), ttl=1) == Rejected(
        Drop.TTL, "TTL/hop limit 1, must be 255", version=3, vrid=7
    )
    assert check(b"\x31") == Rejected(Drop.SHORT, "1 bytes")


def test_hmac_authentication_is_v3_only():
    with pytest.raises(ValueError, match="VRRPv3 only"):
        check(_v2_raw(), expect=EXPECT_V2, auth=Authenticator(KEY))


@given(st.binary(max_size=120), st.integers(0, 255), st.sampled_from([b"", b"1234"]))
def test_validate_total_v2(data, ttl, password):
    exp = dataclasses.replace(EXPECT_V2, password=password)
    verdict = check(data, ttl=ttl, expect=exp)
    assert isinstance(verdict, (Advert, Rejected))
    if isinstance(verdict, Advert):
        assert ttl == 255 and verdict.vrid == 7 and set(verdict.addresses) == set(VIPS)
        assert verdict.version == 2 and verdict.password == password
