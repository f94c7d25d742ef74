"""Receive validation (RFC 5798 and RFC 3768 section 7.1, keepalived's checks): a packet either
becomes an Advert for the state machine or is dropped with a reason that is counted. Pure code.

Both versions get the same checks (family, TTL, version, type, VRID, length, checksum, unicast
peers, authentication, address list, interval); VRRPv2 adds keepalived's PASS check (see
vrrp.py: no security) and, as RFC 3768 7.1 requires, drops any interval other than ours.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from pulsed.ha.auth import MIN_TRAILER_LEN, Authenticator
from pulsed.ha.vrrp import (
    AUTH_DATA_LEN,
    AUTH_NONE,
    AUTH_PASS,
    HEADER_LEN,
    MCAST_V4,
    VERSIONS,
    VRRP_TTL,
    VRRP_V2,
    VRRP_VERSION,
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
    version: int = VRRP_VERSION  # 2 or 3: the other one is dropped as Drop.VERSION
    password: bytes = b""  # version 2: keepalived's PASS (at most 8 bytes); b"": auth type 0


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: Drop
    detail: str
    # Read from the packet when it has its first two bytes, whatever the reason: with
    # Drop.VERSION they tell which VRRP version a peer speaks on which VRID.
    version: int | None = None
    vrid: int | None = None


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

    An advert of the other VRRP version on our VRID is ``Rejected(Drop.VERSION)`` with the
    version and VRID it carries (another VRID's advert is Drop.VRID, whatever its version).
    A v3 interval differing from ours is accepted (a backup learns the master's, as keepalived
    does and RFC 5798 6.4.2 asks) unless ``strict_interval``; the node counts it anyway. A v2
    interval must equal ours (RFC 3768 7.1, keepalived). With ``auth`` (version 3 only), a
    genuine probe (see auth.py) comes back as ``Rejected(Drop.PROBE)``: it updates ``auth``
    but is not an advert. Never raises: every input is an Advert or Rejected.
    """
    verdict = _check(data, src=src, dst=dst, ttl=ttl, expect=expect, auth=auth)
    if isinstance(verdict, Rejected) and len(data) >= 2:
        return Rejected(verdict.reason, verdict.detail, version=data[0] >> 4, vrid=data[1])
    return verdict


def _check(
    data: bytes,
    *,
    src: IPAddr,
    dst: IPAddr,
    ttl: int,
    expect: Expect,
    auth: Authenticator | None,
) -> Advert | Rejected:
    if auth is not None and expect.version != VRRP_VERSION:
        raise ValueError("HMAC authentication is for VRRPv3 only")
    if src.version != expect.family:
        return Rejected(Drop.FAMILY, f"IPv{src.version} packet to an IPv{expect.family} router")
    if src in expect.own:
        return Rejected(Drop.OWN, "our own advert")
    if len(data) < HEADER_LEN:
        return Rejected(Drop.SHORT, f"{len(data)} bytes")
    if ttl != VRRP_TTL:
        return Rejected(Drop.TTL, f"TTL/hop limit {ttl}, must be 255")
    version = data[0] >> 4
    if version != expect.version:
        if version in VERSIONS and data[1] != expect.vrid:
            return Rejected(Drop.VRID, f"VRRPv{version} VRID {data[1]}, ours is {expect.vrid}")
        if version in VERSIONS:
            detail = f"VRRPv{version} advert, this router speaks VRRPv{expect.version}"
        else:
            detail = f"version {version}"
        return Rejected(Drop.VERSION, detail)
    if version == VRRP_V2:
        try:
            advert = decode(data, src, dst, version=VRRP_V2)
        except DecodeError as e:
            return Rejected(e.reason, str(e))
        rejected = _check_fields(advert, src, expect) or _check_pass(advert, expect)
        return rejected or _check_list(advert, expect)
    msg_len = vrrp_length(data, src.version)
    msg, trailer = data[:msg_len], data[msg_len:]
    try:
        # keepalived's compatibility mode checksums unicast adverts as if sent to the group
        alt = MCAST_V4 if src.version == 4 and dst != MCAST_V4 else None
        advert = decode(msg if auth is not None else data, src, dst, alt_dst=alt)
    except DecodeError as e:
        return Rejected(e.reason, str(e))
    rejected = _check_fields(advert, src, expect)
    if rejected is not None:
        return rejected
    if auth is not None and len(trailer) < MIN_TRAILER_LEN:
        return Rejected(Drop.AUTH, "no authentication trailer")
    if auth is not None:
        why = auth.verify(src, msg, trailer)
        if why is not None:
            return Rejected(why, _AUTH_DETAIL[why])
    return _check_list(advert, expect)


def _check_fields(advert: Advert, src: IPAddr, expect: Expect) -> Rejected | None:
    if advert.vrid != expect.vrid:
        return Rejected(Drop.VRID, f"VRID {advert.vrid}, ours is {expect.vrid}")
    if expect.peers and src not in expect.peers:
        return Rejected(Drop.PEER, f"source {src} is not a configured unicast peer")
    return None


def _check_pass(advert: Advert, expect: Expect) -> Rejected | None:
    """keepalived's VRRPv2 check: the same auth type, and with PASS the same 8 bytes."""
    want = AUTH_PASS if expect.password else AUTH_NONE
    if advert.auth_type != want:
        return Rejected(Drop.AUTH, f"VRRPv2 auth type {advert.auth_type}, ours is {want}")
    if want == AUTH_PASS and not hmac.compare_digest(
        advert.password.ljust(AUTH_DATA_LEN, b"\0"), expect.password.ljust(AUTH_DATA_LEN, b"\0")
    ):
        return Rejected(Drop.AUTH, "VRRPv2 password differs from ours")
    return None


def _check_list(advert: Advert, expect: Expect) -> Advert | Rejected:
    """The address list and the interval; the advert itself when they are right."""
    if frozenset(advert.addresses) != expect.addresses or len(advert.addresses) != len(
        expect.addresses
    ):
        return Rejected(Drop.ADDRESSES, "address list differs from ours")
    if advert.max_adver_int == 0:
        return Rejected(Drop.INTERVAL, "advert interval 0")
    strict = expect.strict_interval or advert.version == VRRP_V2
    if strict and advert.max_adver_int != expect.adver_int:
        return Rejected(
            Drop.INTERVAL, f"interval {advert.max_adver_int}cs, ours {expect.adver_int}cs"
        )
    return advert
