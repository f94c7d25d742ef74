"""Raw IP protocol 112 sockets: send adverts with TTL/hop limit 255, receive with TTL and addresses.

IPv4 builds its own IP header (IP_HDRINCL) like keepalived, so the source address in the
checksum's pseudo-header is the one on the wire. IPv6 sets the source with IPV6_PKTINFO and
computes the checksum itself (no IPV6_CHECKSUM), so bad checksums reach us and get counted.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from pulsed.ha.vrrp import IPPROTO_VRRP, MCAST_V4, MCAST_V6, VRRP_TTL, IPAddr

_RECV_BUF = 4096
_IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
_IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
_IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
_IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)


@dataclass(frozen=True, slots=True)
class Packet:
    payload: bytes  # the VRRP message (and any auth trailer), IP header stripped
    src: IPAddr
    dst: IPAddr
    ttl: int


class MalformedIP(ValueError):
    pass


def parse_ipv4(data: bytes) -> Packet:
    """Split a raw IPv4 datagram as a raw socket hands it over."""
    if len(data) < 20 or data[0] >> 4 != 4:
        raise MalformedIP("not an IPv4 header")
    ihl = (data[0] & 0xF) * 4
    total = struct.unpack_from("!H", data, 2)[0]
    if ihl < 20 or len(data) < ihl:
        raise MalformedIP("bad IPv4 header length")
    # Linux hands raw sockets the real length; trust the shorter of the two.
    end = min(total, len(data)) if total >= ihl else len(data)
    return Packet(
        payload=data[ihl:end],
        src=ipaddress.IPv4Address(data[12:16]),
        dst=ipaddress.IPv4Address(data[16:20]),
        ttl=data[8],
    )


def build_ipv4(payload: bytes, src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address) -> bytes:
    # TOS 0xc0 (network control) as keepalived; the kernel fills id and header checksum.
    head = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0xC0, 20 + len(payload), 0, 0, VRRP_TTL, IPPROTO_VRRP, 0,
        src.packed, dst.packed,
    )  # fmt: skip
    return head + payload


class VrrpSocket:
    """One raw socket on one interface, for one address family."""

    def __init__(self, family: int, ifname: str, ifindex: int, *, multicast: bool) -> None:
        self.family = family
        self.ifindex = ifindex
        af = socket.AF_INET if family == 4 else socket.AF_INET6
        sock = socket.socket(af, socket.SOCK_RAW, IPPROTO_VRRP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            if family == 4:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
                mreqn = struct.pack("4s4si", MCAST_V4.packed, b"\0" * 4, ifindex)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
                if multicast:
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
            else:
                ip6 = socket.IPPROTO_IPV6
                sock.setsockopt(ip6, socket.IPV6_MULTICAST_IF, ifindex)
                sock.setsockopt(ip6, socket.IPV6_MULTICAST_HOPS, VRRP_TTL)
                sock.setsockopt(ip6, socket.IPV6_UNICAST_HOPS, VRRP_TTL)
                sock.setsockopt(ip6, socket.IPV6_MULTICAST_LOOP, 0)
                sock.setsockopt(ip6, _IPV6_RECVHOPLIMIT, 1)
                sock.setsockopt(ip6, _IPV6_RECVPKTINFO, 1)
                if multicast:
                    mreq = MCAST_V6.packed + struct.pack("@I", ifindex)
                    sock.setsockopt(ip6, socket.IPV6_JOIN_GROUP, mreq)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.multicast = multicast

    def join(self) -> None:
        """Join the VRRP group (an instance using multicast shares a unicast one's socket)."""
        if self.multicast:
            return
        if self.family == 4:
            mreqn = struct.pack("4s4si", MCAST_V4.packed, b"\0" * 4, self.ifindex)
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        else:
            mreq = MCAST_V6.packed + struct.pack("@I", self.ifindex)
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        self.multicast = True

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, payload: bytes, src: IPAddr, dst: IPAddr) -> None:
        if self.family == 4:
            self.sock.sendto(build_ipv4(payload, src, dst), (str(dst), 0))  # type: ignore[arg-type]
        else:
            info = src.packed + struct.pack("@I", self.ifindex)
            anc = [(socket.IPPROTO_IPV6, _IPV6_PKTINFO, info)]
            self.sock.sendmsg([payload], anc, 0, (str(dst), 0, 0, self.ifindex))

    def recv(self) -> Packet | None:
        """One packet, or None when nothing is waiting. MalformedIP for garbage."""
        try:
            if self.family == 4:
                data = self.sock.recv(_RECV_BUF)
                return parse_ipv4(data)
            data, anc, _flags, addr = self.sock.recvmsg(_RECV_BUF, 256)
        except (BlockingIOError, InterruptedError):
            return None
        hop, dst = -1, MCAST_V6
        for level, kind, value in anc:
            if level != socket.IPPROTO_IPV6:
                continue
            if kind == _IPV6_HOPLIMIT and len(value) >= 4:
                hop = struct.unpack("@i", value[:4])[0]
            elif kind == _IPV6_PKTINFO and len(value) >= 16:
                dst = ipaddress.IPv6Address(value[:16])
        src = ipaddress.IPv6Address(addr[0].split("%", 1)[0])
        return Packet(payload=data, src=src, dst=dst, ttl=hop)

    def close(self) -> None:
        self.sock.close()
