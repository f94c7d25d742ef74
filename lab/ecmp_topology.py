"""The ECMP lab's network: a client, an upstream router, three directors, three real servers.

::

    pecmp-client 198.51.100.10 ── pecmp-up (FRR, AS 65000, ECMP over the directors)
                                   │ 10.99.0.1 uplink bridge        │ 10.90.0.1 back bridge
                   ┌───────────────┼───────────────┐                │
               pecmp-d1        pecmp-d2        pecmp-d3   (pulsed + FRR, AS 65001)
               10.99.0.11      10.99.0.12      10.99.0.13   uplink
               10.90.0.11      10.90.0.12      10.90.0.13   back  ── pecmp-rs1..3 10.90.0.21..23

The upstream router learns the VIP from each director over eBGP and spreads
flows over them by their L4 hash (fib_multipath_hash_policy=1). The
directors forward by direct routing on the back segment; the real servers
carry the VIP on lo (arp_ignore=1, arp_announce=2) and answer through the
upstream router (their default route), so return traffic bypasses the
directors. Each director has one link per segment, so pulling its uplink
leaves the upstream router's own link up: it learns of the loss from BGP's
hold timer or from BFD, as it would behind a switch.

The bridges live in pecmp-switch; everything is named pecmp-*, and deleting
the namespaces removes every interface (``teardown``).
"""

from __future__ import annotations

from lab.topology import BRIDGE_OPTIONS, Topology, batch, configure, dr_arp_sysctls, teardown

PREFIX = "pecmp-"
SWITCH = "pecmp-switch"
UPSTREAM = "pecmp-up"
CLIENT = "pecmp-client"
DIRECTORS = ("pecmp-d1", "pecmp-d2", "pecmp-d3")
SERVERS = ("pecmp-rs1", "pecmp-rs2", "pecmp-rs3")
ALL_NAMESPACES = (SWITCH, UPSTREAM, CLIENT, *DIRECTORS, *SERVERS)

VIP = "203.0.113.100"  # TEST-NET-3
CLIENT_ADDRESS = "198.51.100.10"
UPSTREAM_CLIENT_SIDE = "198.51.100.1"
UPSTREAM_UPLINK = "10.99.0.1"
UPSTREAM_BACK = "10.90.0.1"
DIRECTOR_UPLINK = {d: f"10.99.0.{11 + i}" for i, d in enumerate(DIRECTORS)}
DIRECTOR_BACK = {d: f"10.90.0.{11 + i}" for i, d in enumerate(DIRECTORS)}
SERVER_ADDRESS = {s: f"10.90.0.{21 + i}" for i, s in enumerate(SERVERS)}
SERVER_NAMES = {s: s.removeprefix(PREFIX) for s in SERVERS}  # pecmp-rs1 answers "rs1"

UPLINK_IF, BACK_IF, ETH_IF = "uplink", "back", "eth0"
UP_CLIENT_IF = "up-client"
BRIDGES = ("pecmp-bru", "pecmp-brb")  # uplink, back


def director_name(ns: str) -> str:
    return ns.removeprefix(PREFIX)  # pecmp-d1 -> d1


def build() -> None:
    """Create every namespace and link; LabError naming the first failure."""
    batch(None, [f"netns add {ns}" for ns in ALL_NAMESPACES])
    batch(
        None,
        [f"link add {UP_CLIENT_IF} netns {UPSTREAM} type veth peer name {ETH_IF} netns {CLIENT}"],
    )
    switch = [f"link add {b} type bridge {' '.join(BRIDGE_OPTIONS)}" for b in BRIDGES]
    switch += [f"link set {b} up" for b in BRIDGES]
    inside: dict[str, list[str]] = {ns: ["link set lo up"] for ns in ALL_NAMESPACES}
    sysctls: dict[str, list[str]] = {}

    def attach(ns: str, inner: str, outer: str, bridge: str, address: str) -> None:
        switch.append(f"link add {outer} type veth peer name {inner} netns {ns}")
        switch.append(f"link set {outer} master {bridge} up")
        inside[ns] += [f"addr add {address} dev {inner}", f"link set {inner} up"]

    inside[CLIENT] += [
        f"addr add {CLIENT_ADDRESS}/24 dev {ETH_IF}",
        f"link set {ETH_IF} up",
        f"route add default via {UPSTREAM_CLIENT_SIDE}",
    ]
    # The load generator's held connections and short requests share one client address.
    sysctls[CLIENT] = ["net.ipv4.ip_local_port_range=1024 65535"]
    inside[UPSTREAM] += [
        f"addr add {UPSTREAM_CLIENT_SIDE}/24 dev {UP_CLIENT_IF}",
        f"link set {UP_CLIENT_IF} up",
    ]
    attach(UPSTREAM, UPLINK_IF, "pecmp-upu", BRIDGES[0], f"{UPSTREAM_UPLINK}/24")
    attach(UPSTREAM, BACK_IF, "pecmp-upb", BRIDGES[1], f"{UPSTREAM_BACK}/24")
    sysctls[UPSTREAM] = [
        "net.ipv4.ip_forward=1",
        # ECMP by the L4 hash: each TCP flow keeps one path while the set of paths holds.
        "net.ipv4.fib_multipath_hash_policy=1",
        # The real servers answer from the VIP, which the upstream routes elsewhere.
        "net.ipv4.conf.all.rp_filter=0",
        f"net.ipv4.conf.{BACK_IF}.rp_filter=0",
    ]
    for i, director in enumerate(DIRECTORS, start=1):
        attach(director, UPLINK_IF, f"pecmp-d{i}u", BRIDGES[0], f"{DIRECTOR_UPLINK[director]}/24")
        attach(director, BACK_IF, f"pecmp-d{i}b", BRIDGES[1], f"{DIRECTOR_BACK[director]}/24")
        # The directors have no route back to the client (their replies go out from the
        # real servers), so reverse-path filtering must not drop the client's packets.
        sysctls[director] = [*Topology._ipvs_sysctls(), "net.ipv4.conf.all.rp_filter=0"]
    for i, server in enumerate(SERVERS, start=1):
        attach(server, ETH_IF, f"pecmp-rs{i}", BRIDGES[1], f"{SERVER_ADDRESS[server]}/24")
        inside[server] += [f"addr add {VIP}/32 dev lo", f"route add default via {UPSTREAM_BACK}"]
        sysctls[server] = dr_arp_sysctls(ETH_IF)
    configure(SWITCH, switch, inside, sysctls)


def pull_cable(director: str) -> None:
    """The director's uplink goes down, as when its cable is pulled."""
    batch(director, [f"link set {UPLINK_IF} down"])


def plug_cable(director: str) -> None:
    batch(director, [f"link set {UPLINK_IF} up"])


def remove_all() -> list[str]:
    """Kill what runs in the ECMP lab's namespaces and delete them (safe at any time)."""
    return teardown(prefix=PREFIX)
