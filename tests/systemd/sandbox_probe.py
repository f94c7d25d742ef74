"""Run inside pulsed's unit sandbox: every path the daemon uses, one line each.

Installed as a oneshot service built from the installed pulsed.service (its
sandbox lines kept, its Exec lines replaced), it prints "ok NAME" or
"FAIL NAME: why" and exits 1 on any failure. Only the package's venv is used.
"""

import asyncio
import os
import socket
import sys

from pulsed.ipvs import procfs
from pulsed.ipvs.netlink import NetlinkBackend

failures = 0


def check(name, fn):
    global failures
    try:
        detail = fn()
        print(f"ok {name}{': ' + detail if detail else ''}", flush=True)
    except Exception as exc:  # every failure is reported, then the next path is tried
        failures += 1
        print(f"FAIL {name}: {type(exc).__name__}: {exc}", flush=True)


def fast_resync():
    # What NetlinkBackend.refresh reads first; without it every resync is a full read.
    text = procfs.read(procfs.PATH)
    assert text.startswith(b"IP Virtual Server"), text[:40]
    return f"{len(procfs.blocks(text))} services"


async def ipvs_netlink():
    backend = await NetlinkBackend.open()
    try:
        return f"{len((await backend.dump()).services)} services"
    finally:
        await backend.close()


def rtnetlink():
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return f"{len(ipr.get_links())} links"


def sysctl():
    # pulsed/ha/vip.py reads it before adding an IPv6 VIP.
    with open("/proc/sys/net/ipv6/conf/host0/forwarding") as f:
        return f.read().strip()


def raw_sockets():
    for args in ((socket.AF_INET, socket.SOCK_RAW, 112),  # VRRP
                 (socket.AF_PACKET, socket.SOCK_RAW, 0x0806),  # gratuitous ARP
                 (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)):  # fmt: skip
        socket.socket(*args).close()


def state_dir():
    path = "/var/lib/pulsed/.probe"
    with open(path + ".tmp", "w") as f:
        f.write("x")
        os.fsync(f.fileno())
    os.rename(path + ".tmp", path)
    os.unlink(path)


check("fast resync (/proc/net/ip_vs)", fast_resync)
check("IPVS over generic netlink", lambda: asyncio.run(ipvs_netlink()))
check("rtnetlink (links, addresses)", rtnetlink)
check("sysctl read", sysctl)
check("raw sockets (VRRP, ARP, ICMP)", raw_sockets)
check("state directory", state_dir)
sys.exit(1 if failures else 0)
