"""VRRP advertisements, version 3 (RFC 5798 section 5) and version 2 (RFC 3768 section 5):
encode and decode. Pure code, no I/O.

VRRPv3 wire format (all big-endian)::

    0: version(4 bits)=3 | type(4 bits)=1     1: VRID     2: priority     3: address count
    4: reserved(4 bits)=0 | max advert interval in centiseconds (12 bits)
    6: checksum over an IPv4/IPv6 pseudo-header and the VRRP message
    8: count x IPv4 (4 bytes) or IPv6 (16 bytes) addresses

Optional pulsed-only authentication appends a trailer after the addresses (see ``auth.py``);
the checksum and the pseudo-header length never cover it, so the VRRP part is unchanged.

VRRPv2 wire format (IPv4 only; keepalived's default version)::

    0: version(4 bits)=2 | type(4 bits)=1     1: VRID     2: priority     3: address count
    4: auth type (0 none, 1 PASS)             5: advert interval in whole seconds
    6: checksum over the VRRP message alone (no pseudo-header), auth data included
    8: count x IPv4 addresses
    8 + 4 x count: 8 bytes of authentication data

In Python an ``Advert``'s ``max_adver_int`` is in centiseconds for both versions: encoding a
v2 advert divides it by 100 (and refuses a fraction of a second), decoding multiplies by 100.

PASS authentication (auth type 1, as keepalived's ``auth_type PASS``) carries the password,
at most 8 bytes, zero-padded, in clear in every advert. It is no security at all: anyone on
the link reads it from one packet and can then forge adverts. It only keeps two VRRP setups
that were configured apart from hearing each other. With auth type 0 the 8 bytes are zero
on the wire and ignored on receipt (RFC 3768 5.3.6; keepalived does the same). pulsed's
HMAC trailer is for version 3 only.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address

IPPROTO_VRRP = 112
VRRP_VERSION = 3  # the default; VRRP_V2 is the other one we speak
VRRP_V2 = 2
VERSIONS = (VRRP_V2, VRRP_VERSION)
VRRP_TYPE_ADVERT = 1
VRRP_TTL = 255
MCAST_V4 = ipaddress.IPv4Address("224.0.0.18")
MCAST_V6 = ipaddress.IPv6Address("ff02::12")
HEADER_LEN = 8
PRIORITY_STOP = 0
PRIORITY_OWNER = 255
AUTH_NONE = 0
AUTH_PASS = 1
AUTH_DATA_LEN = 8  # VRRPv2's authentication data after the addresses

_HEADER = struct.Struct("!BBBBHH")


class Drop(enum.StrEnum):
    """Why a received packet was dropped; the value is the metrics label."""

    SHORT = "short"  # shorter than the header or its address list
    TTL = "ttl"  # TTL / hop limit other than 255
    VERSION = "version"
    TYPE = "type"
    VRID = "vrid"  # another virtual router's advert
    LENGTH = "length"  # trailing bytes that are not a valid auth trailer
    CHECKSUM = "checksum"
    FAMILY = "family"  # an IPv4 packet to an IPv6 router or the reverse
    PEER = "peer"  # unicast peers configured and the source is none of them
    ADDRESSES = "addresses"  # address list differs from ours
    INTERVAL = "interval"  # zero interval, or different from ours with strict_interval
    AUTH = "auth"  # missing or wrong HMAC
    REPLAY = "replay"  # HMAC right, counter already seen, or an epoch the sender retired
    UNVERIFIED = "unverified"  # HMAC right, a new epoch not yet proven fresh (answered)
    PROBE = "probe"  # an authenticated challenge/answer, not an advert (not counted as a drop)
    OWN = "own"  # our own advert looped back


@dataclass(frozen=True, slots=True)
class Advert:
    vrid: int
    priority: int
    max_adver_int: int  # centiseconds (version 2: a whole number of seconds on the wire)
    addresses: tuple[IPAddr, ...]
    version: int = VRRP_VERSION
    # Version 2 only: the auth type and the auth data without its zero padding. A password
    # given with auth type 0 means PASS (auth type 1). Decoding auth type 0 ignores the data.
    auth_type: int = AUTH_NONE
    password: bytes = b""

    def __post_init__(self) -> None:
        if self.password and self.auth_type == AUTH_NONE:
            object.__setattr__(self, "auth_type", AUTH_PASS)


class DecodeError(ValueError):
    def __init__(self, reason: Drop, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason


def inet_checksum(data: bytes) -> int:
    """RFC 1071 ones' complement sum, as used by IP, ICMP and VRRP."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def pseudo_header(src: IPAddr, dst: IPAddr, length: int) -> bytes:
    if src.version == 4:
        return src.packed + dst.packed + struct.pack("!BBH", 0, IPPROTO_VRRP, length)
    return src.packed + dst.packed + struct.pack("!I3xB", length, IPPROTO_VRRP)


def encode(advert: Advert, src: IPAddr, dst: IPAddr) -> bytes:
    """The VRRP message (version ``advert.version``) with its checksum computed for (src, dst)."""
    if not 0 <= advert.priority <= 255 or not 1 <= advert.vrid <= 255:
        raise ValueError("priority must be 0-255 and vrid 1-255")
    if any(a.version != src.version for a in advert.addresses):
        raise ValueError("addresses must be of the source's family")
    if advert.version == VRRP_V2:
        return _encode_v2(advert, src, dst)
    if advert.version != VRRP_VERSION:
        raise ValueError(f"VRRP version must be 2 or 3, not {advert.version}")
    if advert.auth_type or advert.password:
        raise ValueError("auth_type and password are for VRRPv2 only")
    if not 0 <= advert.max_adver_int <= 0xFFF:
        raise ValueError("max_adver_int must fit 12 bits (centiseconds)")
    body = b"".join(a.packed for a in advert.addresses)
    head = _HEADER.pack(
        VRRP_VERSION << 4 | VRRP_TYPE_ADVERT,
        advert.vrid,
        advert.priority,
        len(advert.addresses),
        advert.max_adver_int,
        0,
    )
    msg = head + body
    csum = inet_checksum(pseudo_header(src, dst, len(msg)) + msg)
    return msg[:6] + struct.pack("!H", csum) + msg[8:]


def pass_data(password: bytes) -> bytes:
    """The 8 bytes of VRRPv2 auth data for ``password``: zero-padded, as keepalived sends."""
    if len(password) > AUTH_DATA_LEN:
        raise ValueError(f"a VRRPv2 password has at most {AUTH_DATA_LEN} bytes")
    return password.ljust(AUTH_DATA_LEN, b"\0")


def _encode_v2(advert: Advert, src: IPAddr, dst: IPAddr) -> bytes:
    if src.version != 4 or dst.version != 4:
        raise ValueError("VRRPv2 is IPv4 only")
    seconds, rest = divmod(advert.max_adver_int, 100)
    if rest or not 0 <= seconds <= 255:
        raise ValueError("VRRPv2 max_adver_int must be whole seconds, 0-255 (in centiseconds)")
    if not 0 <= advert.auth_type <= 255:
        raise ValueError("auth_type must be 0-255")
    msg = (
        struct.pack(
            "!BBBBBBH",
            VRRP_V2 << 4 | VRRP_TYPE_ADVERT,
            advert.vrid,
            advert.priority,
            len(advert.addresses),
            advert.auth_type,
            seconds,
            0,
        )
        + b"".join(a.packed for a in advert.addresses)
        + pass_data(advert.password)
    )
    return msg[:6] + struct.pack("!H", inet_checksum(msg)) + msg[8:]


def vrrp_length(data: bytes, family: int) -> int:
    """Length of the VRRPv3 message at the start of ``data`` (by its address count)."""
    return HEADER_LEN + data[3] * (4 if family == 4 else 16)


def decode(
    data: bytes,
    src: IPAddr,
    dst: IPAddr,
    *,
    alt_dst: IPAddr | None = None,
    version: int = VRRP_VERSION,
) -> Advert:
    """Parse and checksum-verify exactly one VRRP message (no trailer) of ``version``.

    ``alt_dst``: also accept a checksum computed for this destination (keepalived's old
    unicast checksum used the multicast group as destination; VRRPv2 has no pseudo-header).
    """
    if len(data) < HEADER_LEN:
        raise DecodeError(Drop.SHORT, f"{len(data)} bytes, header needs {HEADER_LEN}")
    vers_type, vrid, priority, count, rsvd_int, _ = _HEADER.unpack_from(data)
    if vers_type >> 4 != version or version not in VERSIONS:
        raise DecodeError(Drop.VERSION, f"version {vers_type >> 4}, expected {version}")
    if vers_type & 0xF != VRRP_TYPE_ADVERT:
        raise DecodeError(Drop.TYPE, f"type {vers_type & 0xF}")
    if version == VRRP_V2:
        return _decode_v2(data, src, dst)
    want = vrrp_length(data, src.version)
    if len(data) < want:
        raise DecodeError(Drop.SHORT, f"{len(data)} bytes for {count} addresses ({want})")
    if len(data) > want:
        raise DecodeError(Drop.LENGTH, f"{len(data) - want} trailing bytes")
    if inet_checksum(pseudo_header(src, dst, want) + data) != 0 and (
        alt_dst is None or inet_checksum(pseudo_header(src, alt_dst, want) + data) != 0
    ):
        raise DecodeError(Drop.CHECKSUM, "checksum does not match the pseudo-header")
    size = 4 if src.version == 4 else 16
    cls = ipaddress.IPv4Address if size == 4 else ipaddress.IPv6Address
    addrs = tuple(
        cls(data[HEADER_LEN + i * size : HEADER_LEN + (i + 1) * size]) for i in range(count)
    )
    return Advert(vrid=vrid, priority=priority, max_adver_int=rsvd_int & 0xFFF, addresses=addrs)


def _decode_v2(data: bytes, src: IPAddr, dst: IPAddr) -> Advert:
    if src.version != 4 or dst.version != 4:
        raise DecodeError(Drop.FAMILY, "VRRPv2 over IPv6")
    count = data[3]
    want = HEADER_LEN + 4 * count + AUTH_DATA_LEN
    if len(data) < want:
        raise DecodeError(Drop.SHORT, f"{len(data)} bytes for {count} addresses ({want})")
    if len(data) > want:
        raise DecodeError(Drop.LENGTH, f"{len(data) - want} trailing bytes")
    if inet_checksum(data) != 0:
        raise DecodeError(Drop.CHECKSUM, "VRRPv2 checksum does not match")
    addrs = tuple(
        ipaddress.IPv4Address(data[HEADER_LEN + 4 * i : HEADER_LEN + 4 * (i + 1)])
        for i in range(count)
    )
    return Advert(
        vrid=data[1],
        priority=data[2],
        max_adver_int=data[5] * 100,
        addresses=addrs,
        version=VRRP_V2,
        auth_type=data[4],
        password=data[want - AUTH_DATA_LEN :].rstrip(b"\0") if data[4] != AUTH_NONE else b"",
    )
