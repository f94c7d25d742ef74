"""Virtual addresses: add/remove through pyroute2, announce with gratuitous ARP / unsolicited NA."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import socket
import struct

import structlog
from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from pulsed.ha.config import IPIface

log = structlog.get_logger(__name__)

IFA_F_NODAD = 0x02
_SIOCGIFFLAGS = 0x8913
_SIOCGIFHWADDR = 0x8927
IFF_UP = 0x1
IFF_RUNNING = 0x40
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ALL_NODES = ipaddress.IPv6Address("ff02::1")


def _ifreq(ifname: str) -> bytes:
    return struct.pack("16s24x", ifname.encode()[:15])


def link_is_up(ifname: str) -> bool:
    """Administratively up with carrier (IFF_UP and IFF_RUNNING); False if absent."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            res = fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, _ifreq(ifname))
        except OSError:
            return False
    flags = struct.unpack_from("H", res, 16)[0]
    return bool(flags & IFF_UP and flags & IFF_RUNNING)


def hw_address(ifname: str) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        res = fcntl.ioctl(s.fileno(), _SIOCGIFHWADDR, _ifreq(ifname))
    return res[18:24]


def garp_frame(mac: bytes, ip: ipaddress.IPv4Address) -> bytes:
    """An ARP announcement (RFC 5227): request, sender = target = the VIP, broadcast."""
    eth = b"\xff" * 6 + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + ip.packed + b"\0" * 6 + ip.packed
    return eth + arp


def unsolicited_na(mac: bytes, ip: ipaddress.IPv6Address, router: bool) -> bytes:
    """ICMPv6 neighbour advertisement (RFC 4861 7.2.6), Override set; the kernel checksums it."""
    flags = 0x20000000 | (0x80000000 if router else 0)
    return struct.pack("!BBHI", 136, 0, 0, flags) + ip.packed + struct.pack("!BB", 2, 1) + mac


class Announcer:
    """Sends gratuitous ARP / unsolicited NA for VIPs on their interfaces."""

    def __init__(self) -> None:
        self._arp: dict[str, socket.socket] = {}
        self._icmp6: dict[str, socket.socket] = {}
        self._macs: dict[str, bytes] = {}

    def _arp_sock(self, ifname: str) -> socket.socket:
        s = self._arp.get(ifname)
        if s is None:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
            s.bind((ifname, ETH_P_ARP))
            s.setblocking(False)
            self._arp[ifname] = s
        return s

    def _icmp6_sock(self, ifname: str) -> socket.socket:
        s = self._icmp6.get(ifname)
        if s is None:
            s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            s.setsockopt(
                socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, socket.if_nametoindex(ifname)
            )
            s.setblocking(False)
            self._icmp6[ifname] = s
        return s

    def prepare(self, vips: list[tuple[IPIface, str]]) -> None:
        for iface, ifname in vips:
            with contextlib.suppress(OSError):
                self._macs[ifname] = hw_address(ifname)
                if iface.version == 4:
                    self._arp_sock(ifname)
                else:
                    self._icmp6_sock(ifname)

    def announce(self, vips: list[tuple[IPIface, str]]) -> int:
        """One announcement per VIP; returns how many were sent (errors are logged)."""
        sent = 0
        for iface, ifname in vips:
            try:
                mac = self._macs.get(ifname) or hw_address(ifname)
                if iface.version == 4:
                    self._arp_sock(ifname).send(garp_frame(mac, iface.ip))
                else:
                    router = _ipv6_forwarding(ifname)
                    pkt = unsolicited_na(mac, iface.ip, router)
                    idx = socket.if_nametoindex(ifname)
                    self._icmp6_sock(ifname).sendto(pkt, (str(ALL_NODES), 0, 0, idx))
                sent += 1
            except OSError as e:
                log.warning("vrrp.announce_failed", vip=str(iface), interface=ifname, error=str(e))
        return sent

    def close(self) -> None:
        for s in [*self._arp.values(), *self._icmp6.values()]:
            s.close()
        self._arp.clear()
        self._icmp6.clear()


def _ipv6_forwarding(ifname: str) -> bool:
    try:
        with open(f"/proc/sys/net/ipv6/conf/{ifname}/forwarding") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


class VipManager:
    """Adds and removes the VIPs; idempotent (EEXIST / EADDRNOTAVAIL are success)."""

    def __init__(self, vips: list[tuple[IPIface, str]]) -> None:
        self.vips = vips
        self._ipr: AsyncIPRoute | None = None

    async def _netlink(self) -> AsyncIPRoute:
        if self._ipr is None:
            self._ipr = AsyncIPRoute()
        return self._ipr

    async def _change(self, cmd: str, iface: IPIface, ifname: str) -> bool:
        ipr = await self._netlink()
        try:
            index = socket.if_nametoindex(ifname)
        except OSError:
            log.error(
                "vrrp.vip_failed", vip=str(iface), interface=ifname, error="no such interface"
            )
            return False
        kw = {"flags": IFA_F_NODAD} if iface.version == 6 and cmd == "add" else {}
        try:
            await ipr.addr(
                cmd, index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen, **kw
            )
        except NetlinkError as e:
            ok = errno.EEXIST if cmd == "add" else errno.EADDRNOTAVAIL
            if e.code in (ok, errno.ENOENT if cmd == "del" else ok):
                return True
            log.error("vrrp.vip_failed", op=cmd, vip=str(iface), interface=ifname, error=str(e))
            return False
        return True

    async def add_all(self) -> bool:
        results = [await self._change("add", iface, ifname) for iface, ifname in self.vips]
        return all(results)

    async def remove_all(self) -> bool:
        results = [await self._change("del", iface, ifname) for iface, ifname in self.vips]
        return all(results)

    async def source_address(
        self, ifname: str, family: int
    ) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The first address of ``family`` on ``ifname`` that is not a VIP (link-local for v6)."""
        ipr = await self._netlink()
        try:
            index = socket.if_nametoindex(ifname)
        except OSError:
            return None
        ours = {iface.ip for iface, _ in self.vips}
        af = socket.AF_INET if family == 4 else socket.AF_INET6
        msgs = await ipr.addr("dump", index=index, family=af)
        found = []
        if hasattr(msgs, "__aiter__"):
            async for m in msgs:
                found.append(m)
        else:
            found = list(msgs)
        for m in found:
            addr = ipaddress.ip_address(m.get("IFA_ADDRESS"))
            if addr in ours or addr.version != family:
                continue
            if family == 6 and not addr.is_link_local:
                continue
            return addr
        return None

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
