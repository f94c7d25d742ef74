"""The VIPs pulsed announces, as addresses on a TUN interface that lives as long as pulsed.

Each announced VIP is a host address (/32 or /128) on a non-persistent TUN
interface. The routing daemon redistributes the connected routes of that
interface only (FRR: ``redistribute connected route-map`` matching the
interface). pulsed holds the TUN's only descriptor: when the process ends,
however it ends (``kill -9``, an OOM kill), the kernel closes it, deletes the
interface and its addresses, zebra sees RTM_DELADDR and RTM_DELLINK and bgpd
withdraws. No cooperation from the dead process is needed (about 150 ms in
tests/netns/test_bgp_frr.py).

Why addresses and not routes in a table of their own (``ip import-table``):
the kernel flushes the IPv4 routes of a deleted interface without telling
anyone (no RTM_DELROUTE), and FRR 8.4's zebra keeps kernel routes it learned
("directly connected, unknown") and goes on announcing them. Checked on this
machine, also with nexthop objects. Address removal is always notified.

An address is also a local address, and a withdrawn VIP must still be
accepted (a drain keeps serving the flows that still arrive), so each VIP
also gets a ``local`` route on ``lo`` in the local table (``accept_routes``):
the kernel delivers its packets to IPVS, and zebra, which ignores the local
table, announces nothing for it. Those routes stay when pulsed ends: the
kernel's IPVS table serves on while the routers move the traffic away.

A live upgrade passes the descriptor to the new process (``fd=``), so the
interface, and the addresses on it, never go away.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import ipaddress
import os
import socket
import struct
from collections.abc import Iterable

import structlog
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

log = structlog.get_logger(__name__)

TUNSETIFF = 0x400454CA
TUNGETIFF = 0x800454D2
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
# The local routes' protocol number (rtnetlink's RTPROT_*), so that they are told
# apart from routes an operator added to the same table by hand.
RTPROT_PULSED = 252
RT_TABLE_LOCAL = 255
RT_SCOPE_HOST = 254
IFA_F_NODAD = 0x02

Host = ipaddress.IPv4Address | ipaddress.IPv6Address


class TunError(Exception):
    """The interface or a route cannot be set up; the message is one line."""


def open_tun(ifname: str) -> int:
    """A new non-persistent TUN interface named ``ifname``; returns its descriptor.

    Raises TunError when the name is taken (another pulsed, or a leftover
    persistent interface) or TUN is unavailable.
    """
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise TunError(f"cannot open /dev/net/tun: {exc.strerror} (load the tun module)") from None
    try:
        ifr = struct.pack("16sH22x", ifname.encode(), IFF_TUN | IFF_NO_PI)
        fcntl.ioctl(fd, TUNSETIFF, ifr)
    except OSError as exc:
        os.close(fd)
        if exc.errno == errno.EBUSY:
            raise TunError(
                f"interface {ifname} is held by another process (is another pulsed running?)"
            ) from None
        if exc.errno == errno.EINVAL:
            raise TunError(
                f"interface {ifname} exists and is not pulsed's (remove it: ip link del {ifname})"
            ) from None
        raise TunError(f"cannot create interface {ifname}: {exc.strerror}") from None
    return fd


def tun_name(fd: int) -> str:
    """The interface name behind an inherited TUN descriptor."""
    res = fcntl.ioctl(fd, TUNGETIFF, struct.pack("16sH22x", b"", 0))
    return res[:16].rstrip(b"\0").decode()


def host_prefix(vip: str) -> tuple[Host, int]:
    ip = ipaddress.ip_address(vip)
    return ip, 32 if ip.version == 4 else 128


def _family(ip: Host) -> int:
    return socket.AF_INET if ip.version == 4 else socket.AF_INET6


class AnnounceInterface:
    """The TUN interface and the VIP addresses on it.

    ``sync(vips)`` makes the interface hold exactly those addresses;
    ``close()`` closes the descriptor (the kernel removes the interface and
    the addresses: a withdrawal). ``detach()`` hands the descriptor on
    (upgrade) and forgets it.
    """

    def __init__(self, ifname: str, fd: int | None = None) -> None:
        self.ifname = ifname
        self._fd = fd
        # Blocking netlink, called in a worker thread: pyroute2's asyncio
        # socket does not run on uvloop, and the event loop never waits on it.
        self._ipr: IPRoute | None = None
        self._index = 0

    @property
    def fd(self) -> int | None:
        return self._fd

    async def open(self) -> None:
        if self._fd is not None:
            try:
                self.ifname = tun_name(self._fd)
            except OSError as exc:  # not a TUN descriptor after all: start afresh
                log.error("bgp.inherited_descriptor_unusable", error=exc.strerror or str(exc))
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None
        if self._fd is None:
            self._fd = open_tun(self.ifname)
        try:
            ipr: IPRoute = await asyncio.to_thread(IPRoute)
            self._ipr = ipr
            self._index = socket.if_nametoindex(self.ifname)
            await asyncio.to_thread(ipr.link, "set", index=self._index, state="up")
        except (OSError, NetlinkError) as exc:
            await self.close()
            raise TunError(f"cannot bring {self.ifname} up: {exc}") from None

    async def current(self) -> set[str]:
        """The host addresses on the interface now."""
        return await asyncio.to_thread(self._current)

    def _current(self) -> set[str]:
        assert self._ipr is not None
        found: set[str] = set()
        for msg in self._ipr.addr("dump", index=self._index):
            if msg.get("index", self._index) != self._index:
                continue
            address = msg.get("IFA_ADDRESS")
            if address is not None and msg["prefixlen"] in (32, 128):
                found.add(str(ipaddress.ip_address(address)))
        return found

    async def sync(self, vips: Iterable[str]) -> list[str]:
        """Make the interface hold exactly ``vips``; returns one line per failure."""
        if self._ipr is None:
            return [f"interface {self.ifname} is not open"]
        wanted = {str(ipaddress.ip_address(v)) for v in vips}
        try:
            have = await self.current()
        except (OSError, NetlinkError) as exc:
            return [f"cannot read the addresses of {self.ifname}: {exc}"]
        errors = []
        for vip in sorted(have - wanted):
            errors += await self._address("del", vip)
        for vip in sorted(wanted - have):
            errors += await self._address("add", vip)
        return errors

    async def _address(self, cmd: str, vip: str) -> list[str]:
        assert self._ipr is not None
        ip, length = host_prefix(vip)
        # No duplicate address detection: the address must count at once.
        kw = {"flags": IFA_F_NODAD} if ip.version == 6 and cmd == "add" else {}
        try:
            await asyncio.to_thread(
                self._ipr.addr, cmd, index=self._index, address=str(ip), prefixlen=length, **kw
            )
        except NetlinkError as exc:
            if exc.code in (errno.EEXIST, errno.EADDRNOTAVAIL, errno.ENOENT):
                return []
            return [f"{cmd} {ip}/{length} on {self.ifname}: {exc}"]
        return []

    def detach(self) -> int | None:
        """The descriptor, for a successor; this object no longer owns it."""
        fd, self._fd = self._fd, None
        return fd

    async def close(self) -> None:
        """Close the descriptor: the kernel deletes the interface and its addresses."""
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


async def accept_routes(vips: Iterable[str]) -> list[str]:
    """A ``local`` route on ``lo`` for each VIP, so the kernel hands its packets
    to IPVS whether or not the VIP is announced; one line per failure."""
    return await asyncio.to_thread(_accept_routes, list(vips))


def _accept_routes(vips: list[str]) -> list[str]:
    errors = []
    with contextlib.closing(IPRoute()) as ipr:
        lo = socket.if_nametoindex("lo")
        for vip in vips:
            ip, length = host_prefix(vip)
            try:
                ipr.route(
                    "replace",
                    dst=str(ip),
                    dst_len=length,
                    oif=lo,
                    table=RT_TABLE_LOCAL,
                    type="local",
                    scope=RT_SCOPE_HOST,
                    proto=RTPROT_PULSED,
                    family=_family(ip),
                )
            except NetlinkError as exc:
                errors.append(f"local route {ip}/{length} on lo: {exc}")
    return errors
