"""The VRRP sockets of one node: one raw socket per (interface, address family), shared by
every instance on it; a received packet goes to the instance of its VRID."""

from __future__ import annotations

import asyncio
import socket
from typing import Protocol

import structlog

from pulsed.ha.transport import MalformedIP, VrrpSocket
from pulsed.ha.vrrp import Drop, IPAddr

log = structlog.get_logger(__name__)

_BATCH = 64  # packets per wake-up: a flood cannot starve the timers


class Receiver(Protocol):
    """One instance as the sockets see it."""

    def on_packet(self, payload: bytes, src: IPAddr, dst: IPAddr, ttl: int) -> None: ...
    def count_drop(self, reason: Drop) -> None: ...


class _Shared:
    def __init__(self, sock: VrrpSocket) -> None:
        self.sock = sock
        self.receivers: dict[int, Receiver] = {}  # by VRID

    def on_readable(self) -> None:
        for _ in range(_BATCH):
            try:
                pkt = self.sock.recv()
            except MalformedIP:
                for r in list(self.receivers.values()):
                    r.count_drop(Drop.SHORT)
                continue
            except OSError as e:
                log.warning("vrrp.recv_failed", error=str(e))
                return
            if pkt is None:
                return
            payload = pkt.payload
            target = self.receivers.get(payload[1]) if len(payload) >= 2 else None
            if target is not None:
                target.on_packet(payload, pkt.src, pkt.dst, pkt.ttl)
                continue
            # No instance of ours on this VRID (or too short to say): each instance drops
            # and counts it as it would on a socket of its own.
            for r in list(self.receivers.values()):
                r.on_packet(payload, pkt.src, pkt.dst, pkt.ttl)


class SharedSockets:
    """The node's sockets, on the heartbeat loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._open: dict[tuple[str, int], _Shared] = {}

    def attach(
        self, ifname: str, family: int, vrid: int, receiver: Receiver, *, multicast: bool
    ) -> VrrpSocket | None:
        """The socket for (ifname, family), opened if needed, with ``receiver`` taking its
        VRID's packets; None (logged) while it cannot be opened (no such interface yet)."""
        key = (ifname, family)
        shared = self._open.get(key)
        if shared is None:
            try:
                ifindex = socket.if_nametoindex(ifname)
                sock = VrrpSocket(family, ifname, ifindex, multicast=multicast)
            except OSError as e:
                log.error("vrrp.socket_failed", interface=ifname, error=str(e))
                return None
            shared = self._open[key] = _Shared(sock)
            self.loop.add_reader(sock.fileno(), shared.on_readable)
        elif multicast:
            try:
                shared.sock.join()
            except OSError as e:
                log.error("vrrp.socket_failed", interface=ifname, error=str(e))
        shared.receivers[vrid] = receiver
        return shared.sock

    def detach(self, ifname: str, family: int, vrid: int, receiver: Receiver) -> None:
        """``receiver`` takes no more packets; the socket closes with its last instance."""
        key = (ifname, family)
        shared = self._open.get(key)
        if shared is None or shared.receivers.get(vrid) is not receiver:
            return
        del shared.receivers[vrid]
        if not shared.receivers:
            self.loop.remove_reader(shared.sock.fileno())
            shared.sock.close()
            del self._open[key]

    def count(self) -> int:
        return len(self._open)
