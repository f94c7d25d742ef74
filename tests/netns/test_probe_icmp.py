"""icmp probes between two network namespaces: ping sockets and raw sockets, v4 and v6.

The prober runs in namespace A (a child process: ping_group_range is per
namespace), the target in namespace B, joined by a veth pair.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.root

A_V4, B_V4, NOBODY_V4 = "10.213.0.1", "10.213.0.2", "10.213.0.3"
A_V6, B_V6 = "fd00:213::1", "fd00:213::2"
UNROUTED = "198.51.100.7"  # an "unreachable" route in A

CHILD = """
import asyncio, json, sys
from pulsed.checks.base import Target
from pulsed.checks.probes import make_probe
from tests.netns.probe_kit import check
cfg = check(**json.loads(sys.argv[1]))
async def main():
    out = []
    for address in json.loads(sys.argv[2]):
        r = await make_probe(Target(address, 0, cfg)).probe()
        out.append([r.ok, r.reason, r.category, r.fault, r.latency])
    print(json.dumps(out))
asyncio.run(main())
"""


def ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[str, str]]:
    tag = os.getpid()
    a, b = f"pki-a-{tag}", f"pki-b-{tag}"
    ip("netns", "add", a)
    ip("netns", "add", b)
    try:
        ip("link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", b, ns=a)
        for ns, dev, v4, v6 in ((a, "va", A_V4, A_V6), (b, "vb", B_V4, B_V6)):
            ip("link", "set", "lo", "up", ns=ns)
            ip("addr", "add", f"{v4}/24", "dev", dev, ns=ns)
            ip("addr", "add", f"{v6}/64", "dev", dev, "nodad", ns=ns)
            ip("link", "set", dev, "up", ns=ns)
        ip("route", "add", "unreachable", "198.51.100.0/24", ns=a)
        _wait_for_v6(a)
        yield a, b
    finally:
        ip("netns", "del", a)
        ip("netns", "del", b)


WAIT_V6 = """
import socket, struct, time
for _ in range(100):
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as s:
        s.settimeout(0.1)
        s.connect(("%s", 0))
        s.send(struct.pack("!BBHHH", 128, 0, 0, 1, 1))
        try:
            while s.recv(100)[0] != 129:
                pass
            break
        except TimeoutError:
            pass
"""


def _wait_for_v6(ns: str) -> None:
    """A fresh namespace's IPv6 takes a moment (link-local address, neighbour
    discovery): wait for the first echo reply before the tests count any."""
    subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", WAIT_V6 % B_V6], check=True)


def probe_from(ns: str, addresses: list[str], ping_group: str, **fields: object) -> list[list]:
    subprocess.run(
        ["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv4.ping_group_range={ping_group}"],
        check=True,
    )
    fields = {"type": "icmp", "timeout": "500ms", **fields}
    out = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            ns,
            sys.executable,
            "-c",
            CHILD,
            json.dumps(fields),
            json.dumps(addresses),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("ping_group", ["0 2147483647", "1 0"], ids=["ping-socket", "raw-socket"])
def test_echo_v4_and_v6(pair, ping_group) -> None:
    a, _ = pair
    results = probe_from(a, [B_V4, B_V6], ping_group)
    for ok, reason, category, _, _ in results:
        assert (ok, reason, category) == (True, "echo reply", "ok")


@pytest.mark.parametrize("ping_group", ["0 2147483647", "1 0"], ids=["ping-socket", "raw-socket"])
def test_silent_address_is_down_at_the_timeout(pair, ping_group) -> None:
    a, _ = pair
    [[ok, reason, category, _, latency]] = probe_from(a, [NOBODY_V4], ping_group)
    assert not ok and category == "timeout"
    assert reason == "timeout after 500ms waiting for the echo reply"
    assert latency >= 0.5


@pytest.mark.parametrize("ping_group", ["0 2147483647", "1 0"], ids=["ping-socket", "raw-socket"])
def test_unreachable_route_is_down_at_once(pair, ping_group) -> None:
    a, _ = pair
    [[ok, reason, category, fault, _]] = probe_from(a, [UNROUTED], ping_group)
    assert not ok and category == "unreachable" and not fault, reason


def test_echo_ignored_is_down(pair) -> None:
    a, b = pair
    subprocess.run(
        ["ip", "netns", "exec", b, "sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=1"], check=True
    )
    try:
        [[ok, _, category, _, _]] = probe_from(a, [B_V4], "1 0")
    finally:
        subprocess.run(
            ["ip", "netns", "exec", b, "sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=0"],
            check=True,
        )
    assert not ok and category == "timeout"


def test_source_address_is_honoured(pair) -> None:
    a, _ = pair
    [[ok, reason, _, _, _]] = probe_from(a, [B_V4], "1 0", bind_address=A_V4)
    assert ok, reason
    [[ok, reason, category, fault, _]] = probe_from(a, [B_V4], "1 0", bind_address="192.0.2.99")
    assert not ok and category == "local" and fault == "eaddrnotavail", reason


def test_no_socket_allowed_is_a_local_fault(pair) -> None:
    """Neither ping sockets (group not in range) nor raw sockets (no CAP_NET_RAW):
    the router's fault, not the server's."""
    a, _ = pair
    subprocess.run(
        ["ip", "netns", "exec", a, "sysctl", "-qw", "net.ipv4.ping_group_range=1 0"], check=True
    )
    out = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            a,
            "setpriv",
            "--inh-caps=-all",
            "--bounding-set=-net_raw",
            sys.executable,
            "-c",
            CHILD,
            json.dumps({"type": "icmp", "timeout": "500ms"}),
            json.dumps([B_V4]),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert out.returncode == 0, out.stderr
    [[ok, reason, category, fault, _]] = json.loads(out.stdout)
    assert not ok and category == "local" and fault == "eperm", reason
