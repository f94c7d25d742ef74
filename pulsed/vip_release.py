"""`pulsed release-vips`: take every configured VIP off this router, after pulsed stopped.

A router whose pulsed died (``kill -9``, an OOM kill, a crash) must not keep its
VIPs: the kernel would go on answering ARP for them after the peer took over,
and half the clients would follow the dead router. keepalived has exactly this
flaw. The systemd unit runs this command as ``ExecStopPost=``, which systemd
runs after the main process is gone however it ended; a graceful stop has
removed the VIPs already, and the command then finds none.

Only an address that is a configured VIP (same address and prefix length, on
the interface the config gives it) is removed; every other address stays.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

from pyroute2 import AsyncIPRoute

from pulsed.ha.config import IPIface, VrrpConfig
from pulsed.ha.vip import VipManager


def configured_vips(instances: Sequence[VrrpConfig]) -> list[tuple[IPIface, str]]:
    """(address/prefix, interface) of every VIP of every instance, each once, in config order."""
    seen: dict[tuple[str, str], tuple[IPIface, str]] = {}
    for cfg in instances:
        for iface, ifname in cfg.vips():
            seen.setdefault((str(iface), ifname), (iface, ifname))
    return list(seen.values())


async def present_vips(vips: Sequence[tuple[IPIface, str]]) -> list[tuple[IPIface, str]]:
    """The VIPs among ``vips`` that are on their interface now (address and prefix length)."""
    held: set[tuple[str, str]] = set()
    async with AsyncIPRoute() as ipr:
        for ifname in {name for _, name in vips}:
            try:
                index = socket.if_nametoindex(ifname)
            except OSError:
                continue  # no such interface: it holds nothing
            async for msg in await ipr.addr("dump", index=index):
                address = ipaddress.ip_address(msg.get("IFA_ADDRESS"))
                held.add((f"{address}/{msg['prefixlen']}", ifname))
    return [(iface, name) for iface, name in vips if (str(iface), name) in held]


async def release_vips(instances: Sequence[VrrpConfig]) -> tuple[list[str], bool]:
    """Remove the configured VIPs that are present: (one line per address removed, all ok).

    A failure is logged by VipManager (one line per address) and makes ``ok`` False.
    """
    present = await present_vips(configured_vips(instances))
    removed: list[str] = []
    ok = True
    for iface, ifname in present:
        # One manager per address, so each line names an address that really went.
        manager = VipManager([(iface, ifname)])
        try:
            if await manager.remove_all():
                removed.append(f"removed {iface} from {ifname}")
            else:
                ok = False
        finally:
            manager.close()
    return removed, ok
