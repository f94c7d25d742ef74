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
