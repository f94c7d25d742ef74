"""An upstream router and directors in namespaces, each running Debian's FRR.

The upstream router (AS 65000) takes one eBGP session per director (all in
AS 65001) and installs ECMP routes with L4 hashing. Each director's FRR
redistributes the connected routes of pulsed's TUN interface only
(etc/frr/frr.conf.example). The daemons run as the frr user with their
sockets and pid files in a temporary directory; they are stopped by pid
(lab/frr.py, shared with the ECMP lab).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from lab.frr import Frr, have_frr

__all__ = ["Lab", "have_frr", "sh"]

PREFIX = "pbgp"


def sh(*argv: str, check: bool = True) -> str:
    return subprocess.run(argv, check=check, capture_output=True, text=True).stdout


UPSTREAM_CONF = """frr defaults datacenter
hostname upstream
router bgp 65000
 bgp router-id 10.98.0.1
 no bgp ebgp-requires-policy
{neighbors}
 address-family ipv4 unicast
  maximum-paths 16
 exit-address-family
 address-family ipv6 unicast
{activate}
  maximum-paths 16
 exit-address-family
"""

DIRECTOR_CONF = """frr defaults datacenter
hostname {name}
route-map PULSED-VIPS permit 10
 match interface pulsed-bgp
exit
router bgp 65001
 bgp router-id {address}
 no bgp ebgp-requires-policy
 neighbor {peer} remote-as 65000
 neighbor {peer} timers 1 3
 address-family ipv4 unicast
  redistribute connected route-map PULSED-VIPS
 exit-address-family
 address-family ipv6 unicast
  neighbor {peer} activate
  redistribute connected route-map PULSED-VIPS
 exit-address-family
"""


class Lab:
    def __init__(self, workdir: Path, directors: int) -> None:
        self.workdir = workdir
        self.upstream = f"{PREFIX}-up"
        self.directors = [f"{PREFIX}-d{i}" for i in range(1, directors + 1)]
        self.frr: dict[str, Frr] = {}

    def address(self, i: int) -> str:
        return f"10.98.{i}.2"

    def build(self) -> None:
        up = self.upstream
        sh("ip", "netns", "add", up)
        # Link-local addresses at once (no duplicate address detection): a BGP session
        # that comes up before them would carry IPv6 VIPs without a usable next hop.
        self._no_dad(up)
        sh("ip", "-n", up, "link", "set", "lo", "up")
        sh("ip", "netns", "exec", up, "sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1")
        sh("ip", "netns", "exec", up, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        neighbors = []
        for i, ns in enumerate(self.directors, 1):
            sh("ip", "netns", "add", ns)
            self._no_dad(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "link", "add", f"{PREFIX}u{i}", "netns", up, "type", "veth",
               "peer", "name", "eth0", "netns", ns)  # fmt: skip
            sh("ip", "-n", up, "addr", "add", f"10.98.{i}.1/24", "dev", f"{PREFIX}u{i}")
            sh("ip", "-n", up, "link", "set", f"{PREFIX}u{i}", "up")
            sh("ip", "-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            neighbors.append(
                f" neighbor 10.98.{i}.2 remote-as 65001\n neighbor 10.98.{i}.2 timers 1 3"
            )
            conf = DIRECTOR_CONF.format(name=ns, address=self.address(i), peer=f"10.98.{i}.1")
            self.frr[ns] = Frr(ns, self.workdir / ns, conf)
        self.frr[up] = Frr(
            up,
            self.workdir / up,
            UPSTREAM_CONF.format(
                neighbors="\n".join(neighbors),
                # IPv6 VIPs over the same sessions, with the links' link-local next hops.
                activate="\n".join(
                    f"  neighbor 10.98.{i}.2 activate" for i in range(1, len(self.directors) + 1)
                ),
            ),
        )
        for frr in self.frr.values():
            frr.start()

    @staticmethod
    def _no_dad(ns: str) -> None:
        for key in ("net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0"):
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", key)

    def teardown(self) -> None:
        for frr in self.frr.values():
            frr.stop()
        for ns in [self.upstream, *self.directors]:
            sh("ip", "netns", "del", ns, check=False)

    def nexthops(self, vip: str) -> set[str]:
        """The upstream router's next hops for ``vip`` in its kernel FIB (IPv6: the
        link-local next hops' devices)."""
        if ":" in vip:
            out = sh("ip", "-n", self.upstream, "-6", "route", "show", vip)
            return {w[i + 1] for w in [line.split() for line in out.splitlines()]
                    for i, x in enumerate(w) if x == "dev"}  # fmt: skip
        out = sh("ip", "-n", self.upstream, "route", "show", vip)
        return {w[i + 1] for w in [line.split() for line in out.splitlines()]
                for i, x in enumerate(w) if x == "via"}  # fmt: skip

    def wait_nexthops(self, vip: str, want: set[str], timeout: float = 30.0) -> float:
        """Seconds until the upstream's next hops for ``vip`` are ``want``."""
        start = time.monotonic()
        while True:
            if self.nexthops(vip) == want:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise AssertionError(f"{vip}: next hops {self.nexthops(vip)}, wanted {want}")
            time.sleep(0.01)
