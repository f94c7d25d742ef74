"""Receive validation (RFC 5798 section 7.1, keepalived's checks): a packet either becomes an
Advert for the state machine or is dropped with a reason that is counted. Pure code."""

from __future__ import annotations

from dataclasses import dataclass

from pulsed.ha.auth import MIN_TRAILER_LEN, Authenticator
from pulsed.ha.vrrp import (
    HEADER_LEN,
    MCAST_V4,
    VRRP_TTL,
    Advert,
    DecodeError,
    Drop,
    IPAddr,
    decode,
    vrrp_length,
)


@dataclass(frozen=True, slots=True)
class Expect:
    """What this router accepts."""

    vrid: int
    family: int
    addresses: frozenset[IPAddr]
    adver_int: int  # our own interval, centiseconds
    strict_interval: bool = False
    peers: frozenset[IPAddr] = frozenset()  # empty: any source (multicast)
    own: frozenset[IPAddr] = frozenset()  # our source addresses: our own looped-back adverts


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: Drop
    detail: str


_AUTH_DETAIL = {
    Drop.AUTH: "malformed trailer or HMAC does not match",
    Drop.REPLAY: "counter already seen, or an epoch the sender retired",
    Drop.UNVERIFIED: "new sender epoch, not yet proven fresh by our challenge",
    Drop.PROBE: "authenticated probe",
}


def validate(
    data: bytes,
    *,
    src: IPAddr,
    dst: IPAddr,
    ttl: int,
    expect: Expect,
    auth: Authenticator | None = None,
) -> Advert | Rejected:
    """Check one received VRRP payload (IP header already stripped).

    An interval differing from ours is accepted (a backup learns the master's, as keepalived
    does and RFC 5798 6.4.2 asks) unless ``strict_interval``; the node counts it anyway.
    With ``auth``, a genuine probe (see auth.py) comes back as ``Rejected(Drop.PROBE)``: it
    updates ``auth`` but is not an advert. Never raises: every input is an Advert or Rejected.
    """
    if src.version != expect.family:
        return Rejected(Drop.FAMILY, f"IPv{src.version} packet to an IPv{expect.family} router")
    if src in expect.own:
        return Rejected(Drop.OWN, "our own advert")
    if len(data) < HEADER_LEN:
        return Rejected(Drop.SHORT, f"{len(data)} bytes")
    if ttl != VRRP_TTL:
        return Rejected(Drop.TTL, f"TTL/hop limit {ttl}, must be 255")
    msg_len = vrrp_length(data, src.version)
    msg, trailer = data[:msg_len], data[msg_len:]
    try:
        # keepalived's compatibility mode checksums unicast adverts as if sent to the group
        alt = MCAST_V4 if src.version == 4 and dst != MCAST_V4 else None
        advert = decode(msg if auth is not None else data, src, dst, alt_dst=alt)
    except DecodeError as e:
        return Rejected(e.reason, str(e))
    if advert.vrid != expect.vrid:
        return Rejected(Drop.VRID, f"VRID {advert.vrid}, ours is {expect.vrid}")
    if expect.peers and src not in expect.peers:
        return Rejected(Drop.PEER, f"source {src} is not a configured unicast peer")
    if auth is not None and len(trailer) < MIN_TRAILER_LEN:
        return Rejected(Drop.AUTH, "no authentication trailer")
    if auth is not None:
        why = auth.verify(src, msg, trailer)
        if why is not None:
            return Rejected(why, _AUTH_DETAIL[why])
    if frozenset(advert.addresses) != expect.addresses or len(advert.addresses) != len(
        expect.addresses
    ):
        return Rejected(Drop.ADDRESSES, "address list differs from ours")
    if advert.max_adver_int == 0:
        return Rejected(Drop.INTERVAL, "advert interval 0")
    if expect.strict_interval and advert.max_adver_int != expect.adver_int:
        return Rejected(
            Drop.INTERVAL, f"interval {advert.max_adver_int}cs, ours {expect.adver_int}cs"
        )
    return advert
