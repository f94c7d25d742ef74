"""VRRPv3 advertisements (RFC 5798 section 5): encode, decode, validate. Pure code, no I/O.

Wire format (all big-endian)::

    0: version(4 bits)=3 | type(4 bits)=1     1: VRID     2: priority     3: address count
    4: reserved(4 bits)=0 | max advert interval in centiseconds (12 bits)
    6: checksum over an IPv4/IPv6 pseudo-header and the VRRP message
    8: count x IPv4 (4 bytes) or IPv6 (16 bytes) addresses

Optional pulsed-only authentication appends a trailer after the addresses (see ``auth.py``);
the checksum and the pseudo-header length never cover it, so the VRRP part is unchanged.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address

IPPROTO_VRRP = 112
VRRP_VERSION = 3
VRRP_TYPE_ADVERT = 1
VRRP_TTL = 255
MCAST_V4 = ipaddress.IPv4Address("224.0.0.18")
MCAST_V6 = ipaddress.IPv6Address("ff02::12")
HEADER_LEN = 8
PRIORITY_STOP = 0
PRIORITY_OWNER = 255

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
    max_adver_int: int  # centiseconds
    addresses: tuple[IPAddr, ...]


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
    """The VRRP message with its checksum computed for (src, dst)."""
    if not 0 <= advert.priority <= 255 or not 1 <= advert.vrid <= 255:
        raise ValueError("priority must be 0-255 and vrid 1-255")
    if not 0 <= advert.max_adver_int <= 0xFFF:
        raise ValueError("max_adver_int must fit 12 bits (centiseconds)")
    if any(a.version != src.version for a in advert.addresses):
        raise ValueError("addresses must be of the source's family")
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


def vrrp_length(data: bytes, family: int) -> int:
    """Length of the VRRP message at the start of ``data`` (by its address count)."""
    return HEADER_LEN + data[3] * (4 if family == 4 else 16)


def decode(data: bytes, src: IPAddr, dst: IPAddr, *, alt_dst: IPAddr | None = None) -> Advert:
    """Parse and checksum-verify exactly one VRRP message (no trailer).

    ``alt_dst``: also accept a checksum computed for this destination (keepalived's old
    unicast checksum used the multicast group as destination).
    """
    if len(data) < HEADER_LEN:
        raise DecodeError(Drop.SHORT, f"{len(data)} bytes, header needs {HEADER_LEN}")
    vers_type, vrid, priority, count, rsvd_int, _ = _HEADER.unpack_from(data)
    if vers_type >> 4 != VRRP_VERSION:
        raise DecodeError(Drop.VERSION, f"version {vers_type >> 4}")
    if vers_type & 0xF != VRRP_TYPE_ADVERT:
        raise DecodeError(Drop.TYPE, f"type {vers_type & 0xF}")
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
