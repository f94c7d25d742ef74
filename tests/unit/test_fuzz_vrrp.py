"""Fuzzing the VRRP receive path (pulsed/ha/receive.py validate, pulsed/ha/vrrp.py decode).

Inputs: genuine VRRPv3 adverts (IPv4 and IPv6, with and without an authentication trailer,
adverts and probes) and VRRPv2 adverts (IPv4, with or without a PASS password), mutated by
flips, overwrites, cuts, insertions and appended junk; random bytes; random or matching
source, destination, TTL and expected version. The verdict must be an Advert or a Rejected,
never an exception; with authentication, a packet that differs from the genuine one in any
byte is never accepted; a v2 advert is accepted only with our password. A short seeded run
here; the long run is benchmarks/fuzz_vrrp.py (figures in docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pulsed.ha.auth import Authenticator
from pulsed.ha.receive import Expect, Rejected, validate
from pulsed.ha.vrrp import MCAST_V4, MCAST_V6, Advert, DecodeError, IPAddr, decode, encode

KEY = b"fuzz-key-0123456789abcdef"
V4, V6 = ipaddress.IPv4Address, ipaddress.IPv6Address


@dataclass(frozen=True)
class Case:
    data: bytes
    src: IPAddr
    dst: IPAddr
    ttl: int
    expect: Expect
    auth: Authenticator | None
    genuine: bytes | None  # the unmutated packet, when built from one


def _introduced(seed: int) -> tuple[Authenticator, Authenticator, IPAddr, IPAddr, int]:
    """A sender and a receiver that verified each other (deterministic per seed)."""
    rnd = random.Random(seed)
    tx = Authenticator(KEY, randbytes=rnd.randbytes)
    rx = Authenticator(KEY, randbytes=rnd.randbytes)
    return tx, rx, rnd.getrandbits(32), rnd.getrandbits(32), rnd.getrandbits(8)


def _addr(family: int, n: int) -> IPAddr:
    return V4(n & 0xFFFFFFFF) if family == 4 else V6(n & ((1 << 128) - 1))


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 400), st.integers(0, 7)),
    st.tuples(st.just("set"), st.integers(0, 400), st.integers(0, 255)),
    st.tuples(st.just("cut"), st.integers(0, 400)),
    st.tuples(st.just("insert"), st.integers(0, 400), st.binary(min_size=1, max_size=24)),
    st.tuples(st.just("delete"), st.integers(0, 400), st.integers(1, 40)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=200)),
)


def mutate(data: bytes, ops: list[tuple]) -> bytes:
    b = bytearray(data)
    for op in ops:
        kind = op[0]
        if kind == "flip" and b:
            b[op[1] % len(b)] ^= 1 << op[2]
        elif kind == "set" and b:
            b[op[1] % len(b)] = op[2]
        elif kind == "cut":
            del b[op[1] % (len(b) + 1) :]
        elif kind == "insert":
            i = op[1] % (len(b) + 1)
            b[i:i] = op[2]
        elif kind == "delete" and b:
            i = op[1] % len(b)
            del b[i : i + op[2]]
        elif kind == "append":
            b += op[1]
    return bytes(b)


PASSWORDS = (b"", b"1234", b"12345678")


@st.composite
def cases(draw) -> Case:
    if draw(st.integers(0, 3)) == 0:
        return draw(cases_v2())
    family = draw(st.sampled_from([4, 6]))
    bits = 32 if family == 4 else 128
    src = _addr(family, draw(st.integers(1, (1 << bits) - 1)))
    mcast = MCAST_V4 if family == 4 else MCAST_V6
    dst = draw(st.one_of(st.just(mcast), st.builds(lambda n: _addr(family, n), st.integers(0))))
    vips = tuple(_addr(family, n) for n in draw(st.lists(st.integers(0), min_size=0, max_size=6)))
    vrid = draw(st.integers(1, 255))
    use_auth = draw(st.booleans())
    tx = rx = None
    if use_auth:
        tx, rx, *_ = _introduced(draw(st.integers(0, 2**32)))
        # The receiver knows the sender, or not (a new epoch), or is another router's view.
        if draw(st.booleans()):
            me = _addr(family, int(src) ^ 1)
            rx.verify(src, b"", b"")  # a malformed first packet: no state, no crash
            pkt = tx.sign(me, encode(Advert(vrid, 100, 100, vips), me, mcast), probe=True)
            tx_probe = rx.sign(me, encode(Advert(vrid, 100, 100, vips), me, mcast), probe=True)
            n = 8 + (4 if family == 4 else 16) * len(vips)
            tx.verify(me, tx_probe[:n], tx_probe[n:])
            rx.verify(src, pkt[:n], pkt[n:])
    expect = Expect(
        vrid=draw(st.sampled_from([vrid, 1 + vrid % 255])),
        family=draw(st.sampled_from([family, 10 - family])),
        addresses=frozenset(vips),
        adver_int=100,
        strict_interval=draw(st.booleans()),
        peers=draw(st.sampled_from([frozenset(), frozenset({src})])),
    )
    kind = draw(st.sampled_from(["genuine", "genuine", "genuine", "random"]))
    if kind == "random":
        data = draw(st.binary(max_size=300))
        genuine = None
    else:
        adv = Advert(vrid, draw(st.integers(0, 255)), draw(st.integers(0, 0xFFF)), vips)
        genuine = encode(adv, src, dst)
        if tx is not None:
            for _ in range(draw(st.integers(0, 2))):  # a few earlier packets: counters > 1
                tx.sign(src, genuine)
            genuine = tx.sign(src, genuine, probe=draw(st.booleans()))
        data = mutate(genuine, draw(st.lists(mutation, max_size=4)))
    ttl = draw(st.sampled_from([255, 255, 254, 64, 1, 0]))
    return Case(data, src, dst, ttl, expect, rx, genuine)


@st.composite
def cases_v2(draw) -> Case:
    """A VRRPv2 advert (IPv4 only) for a v2 or v3 router of either family, or random bytes."""
    src = _addr(4, draw(st.integers(1, (1 << 32) - 1)))
    dst = draw(st.one_of(st.just(MCAST_V4), st.builds(lambda n: _addr(4, n), st.integers(0))))
    vips = tuple(_addr(4, n) for n in draw(st.lists(st.integers(0), max_size=6)))
    vrid = draw(st.integers(1, 255))
    password = draw(st.sampled_from(PASSWORDS))
    expect = Expect(
        vrid=draw(st.sampled_from([vrid, 1 + vrid % 255])),
        family=draw(st.sampled_from([4, 4, 6])),
        addresses=frozenset(vips),
        adver_int=100,
        strict_interval=draw(st.booleans()),
        peers=draw(st.sampled_from([frozenset(), frozenset({src})])),
        version=draw(st.sampled_from([2, 2, 3])),
        password=draw(st.sampled_from([password, *PASSWORDS])),
    )
    if draw(st.integers(0, 3)) == 0:
        data = draw(st.binary(max_size=300))
        genuine = None
    else:
        interval = 100 * draw(st.sampled_from([0, 1, 1, 2, 255]))
        adv = Advert(vrid, draw(st.integers(0, 255)), interval, vips, version=2, password=password)
        genuine = encode(adv, src, dst)
        data = mutate(genuine, draw(st.lists(mutation, max_size=4)))
    ttl = draw(st.sampled_from([255, 255, 254, 64, 1, 0]))
    return Case(data, src, dst, ttl, expect, None, genuine)


def check(case: Case) -> Advert | Rejected:
    """The property: a verdict, never an exception; forged auth never accepted."""
    verdict = validate(
        case.data, src=case.src, dst=case.dst, ttl=case.ttl, expect=case.expect, auth=case.auth
    )
    assert isinstance(verdict, Advert | Rejected), verdict
    if isinstance(verdict, Advert):
        assert case.ttl == 255 and verdict.vrid == case.expect.vrid
        assert case.src.version == case.expect.family
        if case.auth is not None:
            assert case.data == case.genuine, "a mutated authenticated packet was accepted"
        assert verdict.version == case.expect.version
        if verdict.version == 2:
            assert verdict.password == case.expect.password, "a wrong password was accepted"
    # The codec alone: decode raises only DecodeError, for either version.
    for version in (3, 2):
        with contextlib.suppress(DecodeError):
            decode(case.data, case.src, case.dst, version=version)
    return verdict


FUZZ_SETTINGS = settings(
    max_examples=1000,
    deadline=None,
    derandomize=True,  # seeded: the same inputs every run of the unit tier
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)


@FUZZ_SETTINGS
@given(cases())
def test_receive_path_never_crashes(case):
    check(case)


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(
    st.binary(max_size=400),
    st.sampled_from([V4("10.0.0.2"), V6("fe80::2")]),
    st.sampled_from([MCAST_V4, MCAST_V6, V4("10.0.0.1"), V6("fe80::1")]),
    st.integers(0, 255),
    st.booleans(),
    st.sampled_from([3, 2]),
)
def test_random_bytes_any_addresses(data, src, dst, ttl, with_auth, version):
    with_auth = with_auth and version == 3  # the HMAC trailer is VRRPv3 only
    expect = Expect(
        vrid=51, family=src.version, addresses=frozenset(), adver_int=100, version=version
    )
    auth = Authenticator(KEY, randbytes=random.Random(0).randbytes) if with_auth else None
    case = Case(data, src, dst, ttl, expect, auth, None)
    verdict = check(case)
    if with_auth:
        assert isinstance(verdict, Rejected)
