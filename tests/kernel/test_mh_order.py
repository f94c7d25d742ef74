"""The kernel fills mh's Maglev table in destination-list order; pulsed's canonical order agrees.

Two namespaces ("directors") each get the same mh service (mh-port, so the
client port is hashed) with the same three real servers, added by ipvsadm.
A client inside each namespace opens connections from the same 300 source
ports; IPVS schedules them on LOCAL_OUT (the SYNs go nowhere, which does not
matter: the connection entry, with its real server, is made on the first
packet). /proc/net/ip_vs_conn then says which server each port landed on.

- Added in different orders, the directors disagree on some ports.
- The kernel lists a new destination first (list_add), and
  pulsed.reconcile.canonical_adds adds in the order that makes the list
  sorted: started from any order, both directors then agree on every port.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from pulsed.model import Dest
from pulsed.reconcile import canonical_adds

VIP = "10.0.0.100"
SERVERS = ["10.0.0.11", "10.0.0.12", "10.0.0.13"]
# Each round its own ports: an entry left by an earlier round would pin its port.
FIRST, SECOND = range(20000, 20300), range(21000, 21300)
NAMESPACES = ("pnl-mh1", "pnl-mh2")

PROBE = """
import socket, sys
socks = []
for port in range(int(sys.argv[1]), int(sys.argv[2])):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("10.0.0.1", port))
    s.setblocking(False)
    try:
        s.connect((sys.argv[3], 80))
    except BlockingIOError:
        pass
    socks.append(s)
print(len(socks))
"""


def sh(ns: str, *argv: str, input: str | None = None) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], input=input, capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture
def directors():
    for ns in NAMESPACES:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "add", ns], check=True)
        sh(ns, "ip", "link", "set", "lo", "up")
        sh(ns, "ip", "link", "add", "pnl-dummy", "type", "dummy")
        sh(ns, "ip", "addr", "add", "10.0.0.1/24", "dev", "pnl-dummy")
        sh(ns, "ip", "link", "set", "pnl-dummy", "up")
    yield NAMESPACES
    for ns in NAMESPACES:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def program(ns: str, order: list[str]) -> list[str]:
    """The mh service with ``order``'s adds; the kernel's destination list, as listed."""
    sh(ns, "ipvsadm", "-C")
    sh(ns, "ipvsadm", "-A", "-t", f"{VIP}:80", "-s", "mh", "-b", "mh-port")
    for server in order:
        sh(ns, "ipvsadm", "-a", "-t", f"{VIP}:80", "-r", f"{server}:80", "-g", "-w", "1")
    # --nosort: ipvsadm sorts the destinations it prints unless told not to.
    listed = sh(ns, "ipvsadm", "-Ln", "--nosort", "-t", f"{VIP}:80")
    return [line.split()[1].split(":")[0] for line in listed.splitlines() if "->" in line][1:]


def placement(ns: str, ports: range) -> dict[int, str]:
    """Client port -> the real server IPVS scheduled that port's connection to."""
    sh(ns, sys.executable, "-c", PROBE, str(ports.start), str(ports.stop), VIP)
    out: dict[int, str] = {}
    for line in sh(ns, "cat", "/proc/net/ip_vs_conn").splitlines()[1:]:
        fields = line.split()
        if len(fields) < 7 or fields[0] != "TCP":
            continue
        port = int(fields[2], 16)
        if port not in ports:
            continue
        dest = ".".join(str(int(fields[5][i : i + 2], 16)) for i in range(0, 8, 2))
        out[port] = dest
    return out


def canonical(order: list[str]) -> list[str]:
    return [d.address for d in canonical_adds([Dest(a, 80) for a in order])]


def test_add_order_decides_mh_placement_and_canonical_order_agrees(directors):
    ns1, ns2 = directors
    # The kernel lists the latest destination first.
    assert program(ns1, SERVERS) == list(reversed(SERVERS))
    assert program(ns2, list(reversed(SERVERS))) == SERVERS
    a, b = placement(ns1, FIRST), placement(ns2, FIRST)
    assert set(a) == set(b) == set(FIRST)
    assert set(a.values()) == set(SERVERS), "mh-port spreads one client's ports"
    differ = sum(1 for p in FIRST if a[p] != b[p])
    print(f"\nadded in opposite orders: {differ} of {len(FIRST)} ports placed differently")
    assert differ > 0

    # pulsed's order, from two different starting orders: the same list, the same placement.
    first = canonical([SERVERS[1], SERVERS[2], SERVERS[0]])
    second = canonical([SERVERS[2], SERVERS[0], SERVERS[1]])
    assert program(ns1, first) == program(ns2, second) == sorted(SERVERS)
    a, b = placement(ns1, SECOND), placement(ns2, SECOND)
    assert set(a) == set(SECOND)
    assert set(a.values()) == set(SERVERS)
    assert a == b
