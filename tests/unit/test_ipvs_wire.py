"""The hand-written IPVS netlink codec, without a kernel: what it packs it parses back.

The kernel tier checks the same codec against the real kernel; this catches
a broken encoder or parser in milliseconds.
"""

from __future__ import annotations

from ipaddress import IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pulsed.ipvs import wire
from pulsed.model import AF_INET, AF_INET6, Dest, Forwarding, Service, ServiceKey

addresses4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
addresses6 = st.integers(1, 2**128 - 1).map(lambda n: str(IPv6Address(n)))
dests = st.builds(
    Dest,
    address=st.one_of(addresses4, addresses6),
    port=st.integers(0, 65535),
    weight=st.integers(0, 65535),
    forwarding=st.sampled_from([Forwarding.NAT, Forwarding.DR, Forwarding.TUNNEL]),
    upper_threshold=st.integers(0, 2**31 - 1),
    lower_threshold=st.integers(0, 2**31 - 1),
)


def reply(cmd: int, payload: bytes) -> bytes:
    return wire.message(0x20, 0, 1, cmd, payload)


@given(dests)
def test_dest_round_trips(dest):
    buf = reply(wire.CMD_NEW_DEST, wire.dest_nest(dest))
    [(_, _, _, start, end)] = list(wire.iter_messages(buf, len(buf)))
    assert wire.parse_dest(buf, start, end) == dest


@pytest.mark.parametrize(
    "service",
    [
        Service(ServiceKey.for_address("tcp", "192.0.2.1", 80), scheduler="wrr"),
        Service(ServiceKey.for_address("udp", "2001:db8::1", 53), scheduler="sh", flags=0x18),
        Service(ServiceKey.for_address("sctp", "192.0.2.2", 9), timeout=300, netmask=24),
        Service(ServiceKey.for_address("tcp", "2001:db8::2", 443), timeout=60, netmask=64),
        Service(ServiceKey.for_fwmark(7, AF_INET), scheduler="rr"),
        Service(ServiceKey.for_fwmark(8, AF_INET6), scheduler="mh", netmask=128),
    ],
)
def test_service_round_trips(service):
    buf = reply(wire.CMD_NEW_SERVICE, wire.service_nest(service))
    [(_, _, _, start, end)] = list(wire.iter_messages(buf, len(buf)))
    parsed, _stats = wire.parse_service(buf, start, end)
    assert parsed == service
