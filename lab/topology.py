"""The lab's network: namespaces joined by veth pairs and bridges, and its teardown.

NAT mode (two segments; the routers are the real servers' gateway)::

    plab-client 192.0.2.10 ──┐                         ┌── plab-rs1 10.77.0.11
                             ├─ front bridge ─ routers ─ back bridge ─┤
                 VIP 192.0.2.100   192.0.2.2 / .3   10.77.0.2 / .3   └── plab-rs2 10.77.0.12
                                                    gateway VIP 10.77.0.1

DR mode (one segment, the classic direct-routing recipe): the real servers sit
on the front segment (192.0.2.11, .12) with the VIP on their loopback and
arp_ignore=1 / arp_announce=2, so only the router answers ARP for the VIP and
the real servers answer clients directly.

The bridges live in their own namespace (plab-switch), so nothing is created
in the namespace the lab is started from, and deleting the namespaces removes
every interface. ``teardown`` kills whatever still runs inside a lab namespace
(only the lab starts processes there) and deletes the namespaces; it is safe
to call at any time, including before a build to clear a previous run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass

from lab.netns import LabError, netns_exists, run

PREFIX = "plab-"
SWITCH = "plab-switch"
ROUTERS = ("plab-router", "plab-router2")
SERVERS = ("plab-rs1", "plab-rs2")
CLIENT = "plab-client"
ALL_NAMESPACES = (SWITCH, *ROUTERS, *SERVERS, CLIENT)

FRONT_NET = "192.0.2.0/24"  # TEST-NET-1
BACK_NET = "10.77.0.0/24"
VIP = "192.0.2.100"
BACK_GATEWAY = "10.77.0.1"  # the NAT real servers' default route, held by the master router
CLIENT_ADDRESS = "192.0.2.10"
ROUTER_FRONT = {"plab-router": "192.0.2.2", "plab-router2": "192.0.2.3"}
ROUTER_BACK = {"plab-router": "10.77.0.2", "plab-router2": "10.77.0.3"}
SERVER_ADDRESS = {
    "nat": {"plab-rs1": "10.77.0.11", "plab-rs2": "10.77.0.12"},
    "dr": {"plab-rs1": "192.0.2.11", "plab-rs2": "192.0.2.12"},
}
# Interface names inside each namespace (the lab's own namespaces, so short names suffice,
# still prefixed so that they are recognisable anywhere).
BRIDGES = ("plab-brf", "plab-brb")
BRIDGE_OPTIONS = ("stp_state", "0", "forward_delay", "0", "mcast_snooping", "0")
FRONT_IF, BACK_IF, ETH_IF = "plab-front", "plab-back", "plab-eth0"


@dataclass(frozen=True)
class Topology:
    mode: str  # "nat" | "dr"

    def server_address(self, ns: str) -> str:
        return SERVER_ADDRESS[self.mode][ns]

    def build(self) -> None:
        """Create every namespace and link; raise LabError naming the first failure.

        Commands go to ``ip -batch``, one process per namespace: under the VM's
        software emulation every process start costs tens of milliseconds.
        """
        if self.mode not in SERVER_ADDRESS:
            raise LabError(f"unknown mode {self.mode!r}: use nat or dr")
        batch(None, [f"netns add {ns}" for ns in ALL_NAMESPACES])
        switch = [f"link add {b} type bridge {' '.join(BRIDGE_OPTIONS)}" for b in BRIDGES]
        switch += [f"link set {b} up" for b in BRIDGES]
        inside: dict[str, list[str]] = {ns: ["link set lo up"] for ns in ALL_NAMESPACES}
        sysctls: dict[str, list[str]] = {}

        def attach(ns: str, inner: str, outer: str, bridge: str, address: str) -> None:
            switch.append(f"link add {outer} type veth peer name {inner} netns {ns}")
            switch.append(f"link set {outer} master {bridge} up")
            inside[ns] += [f"addr add {address} dev {inner}", f"link set {inner} up"]

        attach(CLIENT, ETH_IF, "plab-cl", "plab-brf", f"{CLIENT_ADDRESS}/24")
        # One client makes every connection of the lab: give it every port, so client
        # ports come round again as late as possible.
        sysctls[CLIENT] = ["net.ipv4.ip_local_port_range=1024 65535"]
        for i, router in enumerate(ROUTERS, start=1):
            attach(router, FRONT_IF, f"plab-r{i}f", "plab-brf", f"{ROUTER_FRONT[router]}/24")
            sysctls[router] = self._ipvs_sysctls()
            if self.mode == "nat":
                attach(router, BACK_IF, f"plab-r{i}b", "plab-brb", f"{ROUTER_BACK[router]}/24")
                sysctls[router].append("net.ipv4.ip_forward=1")
        for i, server in enumerate(SERVERS, start=1):
            bridge = "plab-brb" if self.mode == "nat" else "plab-brf"
            attach(server, ETH_IF, f"plab-rs{i}", bridge, f"{self.server_address(server)}/24")
            if self.mode == "nat":
                inside[server].append(f"route add default via {BACK_GATEWAY}")
            else:
                # The classic DR recipe: the VIP on lo so the server accepts packets for
                # it, and ARP settings so it never answers or announces the VIP.
                inside[server].append(f"addr add {VIP}/32 dev lo")
                sysctls[server] = dr_arp_sysctls(ETH_IF)
        configure(SWITCH, switch, inside, sysctls)

    @staticmethod
    def _ipvs_sysctls() -> list[str]:
        # Present only when ip_vs is loaded (a namespace gets them at creation). A
        # connection entry must not pin new requests to a server that left the pool.
        if not os.path.exists("/proc/sys/net/ipv4/vs"):
            return []
        # conn_reuse_mode bit 2: with DR the router sees only the client's half of a
        # connection, so a finished one lingers in FIN_WAIT; a new connection reusing its
        # client port must be scheduled afresh, not sent to the old server.
        return [
            "net.ipv4.vs.expire_nodest_conn=1",
            "net.ipv4.vs.expire_quiescent_template=1",
            "net.ipv4.vs.conn_reuse_mode=3",
        ]

    def static_vips(self, router: str) -> None:
        """Put the VIP (and the NAT gateway) on a router by hand, when no VRRP holds them."""
        run(["ip", "addr", "add", f"{VIP}/32", "dev", FRONT_IF], ns=router)
        if self.mode == "nat":
            run(["ip", "addr", "add", f"{BACK_GATEWAY}/32", "dev", BACK_IF], ns=router)

    def router_links_down(self, router: str) -> None:
        """Pull a router's cables, as when the machine loses power."""
        ifaces = (FRONT_IF, BACK_IF) if self.mode == "nat" else (FRONT_IF,)
        batch(router, [f"link set {iface} down" for iface in ifaces])


def dr_arp_sysctls(interface: str) -> list[str]:
    """The DR real server's ARP settings: it never answers or announces the VIP on lo."""
    return [
        f"net.ipv4.conf.{scope}.{key}={value}"
        for scope in ("all", interface)
        for key, value in (("arp_ignore", 1), ("arp_announce", 2))
    ]


def configure(
    switch_ns: str,
    switch: list[str],
    inside: dict[str, list[str]],
    sysctls: dict[str, list[str]],
) -> None:
    """Run the switch's ip commands, then each namespace's, then its sysctls."""
    batch(switch_ns, switch)
    for ns, commands in inside.items():
        batch(ns, commands)
    for ns, settings in sysctls.items():
        if settings:
            run(["sysctl", "-q", "-w", *settings], ns=ns)


def batch(ns: str | None, commands: list[str]) -> None:
    """Run ``ip`` commands in one process (inside ``ns``); LabError on the first failure."""
    argv = ["ip", "-n", ns, "-batch", "-"] if ns else ["ip", "-batch", "-"]
    proc = subprocess.run(
        argv, input="\n".join(commands) + "\n", capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise LabError(f"ip{' -n ' + ns if ns else ''}: {detail[-1] if detail else 'failed'}")


def lab_namespaces(prefix: str = PREFIX) -> list[str]:
    """Lab namespaces present now (ours and any left by an earlier run)."""
    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix))


def teardown(grace: float = 2.0, prefix: str = PREFIX) -> list[str]:
    """Kill what runs inside the lab namespaces, then delete them; return what was removed."""
    namespaces = lab_namespaces(prefix)
    pids: set[int] = set()
    for ns in namespaces:
        out = run(["ip", "netns", "pids", ns], check=False).stdout
        pids.update(int(p) for p in out.split() if p.isdigit())
    pids.discard(os.getpid())
    _terminate(pids, grace)
    for ns in namespaces:
        if netns_exists(ns):
            run(["ip", "netns", "del", ns], check=False)
    return namespaces


def _terminate(pids: set[int], grace: float) -> None:
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        pids = {p for p in pids if _alive(p)}
        if pids:
            time.sleep(0.05)
    for pid in pids:
        _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
