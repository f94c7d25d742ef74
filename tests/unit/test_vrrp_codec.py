"""VRRPv3 codec: wire vectors captured from keepalived 2.2.7, round trips, malformed input."""

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pulsed.ha.vrrp import (
    MCAST_V4,
    MCAST_V6,
    Advert,
    DecodeError,
    Drop,
    decode,
    encode,
    inet_checksum,
    pseudo_header,
)

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address

# keepalived 2.2.7, `advert_int 0.1`, priority 150, VRID 51, two VIPs, from 10.99.0.1 (tcpdump).
KEEPALIVED_ADVERT = bytes.fromhex("31339602000ac8fec0000264c0000265")
KA_SRC = V4("10.99.0.1")


def test_decodes_keepalived_advert():
    adv = decode(KEEPALIVED_ADVERT, KA_SRC, MCAST_V4)
    assert adv == Advert(
        vrid=51, priority=150, max_adver_int=10, addresses=(V4("192.0.2.100"), V4("192.0.2.101"))
    )


def test_encodes_what_keepalived_sends():
    adv = Advert(51, 150, 10, (V4("192.0.2.100"), V4("192.0.2.101")))
    assert encode(adv, KA_SRC, MCAST_V4) == KEEPALIVED_ADVERT


def test_checksum_covers_pseudo_header():
    with pytest.raises(DecodeError) as e:
        decode(KEEPALIVED_ADVERT, V4("10.99.0.2"), MCAST_V4)
    assert e.value.reason is Drop.CHECKSUM


def test_unicast_compat_checksum_accepted_only_when_asked():
    peer = V4("10.99.0.2")
    with pytest.raises(DecodeError):
        decode(KEEPALIVED_ADVERT, KA_SRC, peer)
    assert decode(KEEPALIVED_ADVERT, KA_SRC, peer, alt_dst=MCAST_V4).vrid == 51


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b[:7], Drop.SHORT),
        (lambda b: b[:12], Drop.SHORT),
        (lambda b: b + b"\0\0\0\0", Drop.LENGTH),
        (lambda b: bytes([0x21]) + b[1:], Drop.VERSION),
        (lambda b: bytes([0x32]) + b[1:], Drop.TYPE),
        (lambda b: b[:2] + bytes([b[2] ^ 1]) + b[3:], Drop.CHECKSUM),
        (lambda b: b[:-1] + bytes([b[-1] ^ 0x80]), Drop.CHECKSUM),
    ],
)
def test_malformed(mutate, reason):
    with pytest.raises(DecodeError) as e:
        decode(mutate(KEEPALIVED_ADVERT), KA_SRC, MCAST_V4)
    assert e.value.reason is reason


def test_reserved_bits_ignored_on_receive():
    # RFC 5798 5.2.7: reserved bits MUST be ignored by the receiver.
    adv = Advert(1, 100, 100, ())
    raw = bytearray(encode(adv, KA_SRC, MCAST_V4))
    raw[4] |= 0xF0
    csum_fix = inet_checksum(pseudo_header(KA_SRC, MCAST_V4, len(raw)) + bytes(raw[:6]) + b"\0\0")
    raw[6:8] = csum_fix.to_bytes(2, "big")
    assert decode(bytes(raw), KA_SRC, MCAST_V4).max_adver_int == 100


@pytest.mark.parametrize(
    "bad",
    [
        Advert(0, 100, 100, ()),
        Advert(1, 256, 100, ()),
        Advert(1, 100, 4096, ()),
        Advert(1, 100, 100, (V6("::1"),)),
    ],
)
def test_encode_refuses_invalid(bad):
    with pytest.raises(ValueError):
        encode(bad, KA_SRC, MCAST_V4)


v4s = st.builds(V4, st.integers(0, 2**32 - 1))
v6s = st.builds(V6, st.integers(0, 2**128 - 1))


@st.composite
def adverts(draw, family):
    addrs = st.lists(v4s if family == 4 else v6s, max_size=20)
    return Advert(
        draw(st.integers(1, 255)),
        draw(st.integers(0, 255)),
        draw(st.integers(0, 0xFFF)),
        tuple(draw(addrs)),
    )


@given(adverts(4), v4s, v4s)
def test_roundtrip_v4(adv, src, dst):
    raw = encode(adv, src, dst)
    assert decode(raw, src, dst) == adv
    assert inet_checksum(pseudo_header(src, dst, len(raw)) + raw) == 0


@given(adverts(6), v6s)
def test_roundtrip_v6(adv, src):
    assert decode(encode(adv, src, MCAST_V6), src, MCAST_V6) == adv


@given(st.binary(max_size=200), v4s)
def test_decode_never_crashes(data, src):
    try:
        adv = decode(data, src, MCAST_V4)
    except DecodeError as e:
        assert isinstance(e.reason, Drop)
    else:
        if not data[4] & 0xF0:  # reserved bits clear: re-encoding gives the same bytes
            assert encode(adv, src, MCAST_V4) == data


@given(adverts(4), v4s, st.integers(0, 15), st.integers(0, 7))
def test_any_single_bit_flip_is_caught(adv, src, byte_index, bit):
    raw = bytearray(encode(adv, src, MCAST_V4))
    raw[byte_index % len(raw)] ^= 1 << bit
    with pytest.raises(DecodeError):
        decode(bytes(raw), src, MCAST_V4)


# ---- VRRPv2 (RFC 3768)

# keepalived 2.2.7 with a stock v2 instance: VRID 51, priority 150, `advert_int 1`,
# `auth_type PASS` / `auth_pass 1234`, two VIPs, from 10.98.0.1 (raw capture; see
# tests/netns/test_vrrp2_wire.py, which checks the same against a live keepalived).
KEEPALIVED_V2_ADVERT = bytes.fromhex("2133960201015e98c0000264c00002653132333400000000")
KA2_SRC = V4("10.98.0.1")
KA2_FIELDS = Advert(
    51, 150, 100, (V4("192.0.2.100"), V4("192.0.2.101")), version=2, password=b"1234"
)

# Built by hand from RFC 3768 5.1: VRID 1, priority 100, one address 192.168.0.1, no auth,
# one-second interval. Checksum: 16-bit ones' complement sum of the message with the checksum
# field zero: 0x2101 + 0x6401 + 0x0001 + 0xc0a8 + 0x0001 = 0x145ac, folded 0x45ad, inverted
# 0xba52. No pseudo-header: the source and destination do not enter it.
RFC_V2_VECTOR = bytes(
    [0x21, 0x01, 0x64, 0x01]  # version 2 | type 1, VRID 1, priority 100, 1 address
    + [0x00, 0x01, 0xBA, 0x52]  # auth type 0, interval 1 s, checksum
    + [0xC0, 0xA8, 0x00, 0x01]  # 192.168.0.1
    + [0] * 8  # authentication data
)


def test_v2_known_answer_vector():
    adv = Advert(1, 100, 100, (V4("192.168.0.1"),), version=2)
    for src, dst in [(V4("10.0.0.1"), MCAST_V4), (V4("10.9.9.9"), V4("10.0.0.2"))]:
        assert encode(adv, src, dst) == RFC_V2_VECTOR
        assert decode(RFC_V2_VECTOR, src, dst, version=2) == adv
    assert inet_checksum(RFC_V2_VECTOR) == 0


def test_v2_keepalived_pass_advert_both_ways():
    assert decode(KEEPALIVED_V2_ADVERT, KA2_SRC, MCAST_V4, version=2) == KA2_FIELDS
    assert encode(KA2_FIELDS, KA2_SRC, MCAST_V4) == KEEPALIVED_V2_ADVERT
    assert KEEPALIVED_V2_ADVERT[-8:] == b"1234\0\0\0\0"  # zero-padded, in clear


def test_v2_password_means_pass_and_type_zero_ignores_the_data():
    assert Advert(1, 100, 100, (), version=2, password=b"pw").auth_type == 1
    assert Advert(1, 100, 100, (), version=2).auth_type == 0
    raw = bytearray(RFC_V2_VECTOR)
    raw[-8:] = b"garbage!"  # auth type 0: ignored on receipt (RFC 3768 5.3.6)
    raw[6:8] = b"\0\0"
    raw[6:8] = inet_checksum(bytes(raw)).to_bytes(2, "big")
    assert decode(bytes(raw), KA2_SRC, MCAST_V4, version=2).password == b""


def test_v2_interval_is_whole_seconds_on_the_wire():
    raw = encode(Advert(9, 1, 25500, (), version=2), KA2_SRC, MCAST_V4)
    assert raw[5] == 255
    assert decode(raw, KA2_SRC, MCAST_V4, version=2).max_adver_int == 25500


def test_version_is_chosen_by_the_caller():
    with pytest.raises(DecodeError) as e:
        decode(KEEPALIVED_V2_ADVERT, KA2_SRC, MCAST_V4)  # a v3 decoder
    assert e.value.reason is Drop.VERSION
    with pytest.raises(DecodeError) as e:
        decode(KEEPALIVED_ADVERT, KA_SRC, MCAST_V4, version=2)
    assert e.value.reason is Drop.VERSION


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b[:7], Drop.SHORT),
        (lambda b: b[:20], Drop.SHORT),
        (lambda b: b[:-8], Drop.SHORT),  # no authentication data
        (lambda b: b + b"\0\0\0\0", Drop.LENGTH),
        (lambda b: bytes([0x31]) + b[1:], Drop.VERSION),
        (lambda b: bytes([0x22]) + b[1:], Drop.TYPE),
        (lambda b: b[:2] + bytes([b[2] ^ 1]) + b[3:], Drop.CHECKSUM),
        (lambda b: b[:-1] + b"5", Drop.CHECKSUM),  # the checksum covers the password
    ],
)
def test_v2_malformed(mutate, reason):
    with pytest.raises(DecodeError) as e:
        decode(mutate(KEEPALIVED_V2_ADVERT), KA2_SRC, MCAST_V4, version=2)
    assert e.value.reason is reason


def test_v2_over_ipv6_is_refused():
    with pytest.raises(DecodeError) as e:
        decode(KEEPALIVED_V2_ADVERT, V6("fe80::1"), MCAST_V6, version=2)
    assert e.value.reason is Drop.FAMILY


@pytest.mark.parametrize(
    ("bad", "src", "dst"),
    [
        (Advert(1, 100, 150, (), version=2), KA2_SRC, MCAST_V4),  # 1.5 s
        (Advert(1, 100, 25600, (), version=2), KA2_SRC, MCAST_V4),  # 256 s
        (Advert(1, 100, 100, (), version=2, password=b"123456789"), KA2_SRC, MCAST_V4),
        (Advert(1, 100, 100, (), version=2, auth_type=256), KA2_SRC, MCAST_V4),
        (Advert(1, 100, 100, (V6("2001:db8::1"),), version=2), V6("fe80::1"), MCAST_V6),
        (Advert(1, 100, 100, (), version=2), V6("fe80::1"), MCAST_V6),
        (Advert(1, 100, 100, (), version=2), KA2_SRC, MCAST_V6),
        (Advert(0, 100, 100, (), version=2), KA2_SRC, MCAST_V4),
        (Advert(1, 100, 100, (), version=4), KA2_SRC, MCAST_V4),
        (Advert(1, 100, 100, (), password=b"pw"), KA2_SRC, MCAST_V4),  # v3 has no PASS
    ],
)
def test_v2_encode_refuses_invalid(bad, src, dst):
    with pytest.raises(ValueError):
        encode(bad, src, dst)


passwords = st.binary(max_size=8).filter(lambda p: not p.endswith(b"\0"))


@st.composite
def adverts_v2(draw):
    auth_type = draw(st.sampled_from([0, 1, 1, 2, 255]))
    return Advert(
        draw(st.integers(1, 255)),
        draw(st.integers(0, 255)),
        100 * draw(st.integers(0, 255)),
        tuple(draw(st.lists(v4s, max_size=20))),
        version=2,
        auth_type=auth_type,
        password=draw(passwords) if auth_type else b"",
    )


@given(adverts_v2(), v4s, v4s)
def test_roundtrip_v2(adv, src, dst):
    raw = encode(adv, src, dst)
    assert len(raw) == 8 + 4 * len(adv.addresses) + 8
    assert decode(raw, src, dst, version=2) == adv
    assert inet_checksum(raw) == 0


@given(st.binary(max_size=200), v4s)
def test_decode_v2_never_crashes(data, src):
    try:
        adv = decode(data, src, MCAST_V4, version=2)
    except DecodeError as e:
        assert isinstance(e.reason, Drop)
    else:
        if data[4] or not any(data[-8:]):  # auth type 0 drops its data: re-encoded as zeros
            assert encode(adv, src, MCAST_V4) == data


@given(adverts_v2(), v4s, st.integers(0, 63), st.integers(0, 7))
def test_any_single_bit_flip_is_caught_v2(adv, src, byte_index, bit):
    raw = bytearray(encode(adv, src, MCAST_V4))
    raw[byte_index % len(raw)] ^= 1 << bit  # the checksum covers the auth data, any type
    with pytest.raises(DecodeError):
        decode(bytes(raw), src, MCAST_V4, version=2)
