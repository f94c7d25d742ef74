"""A generic netlink socket bound to the kernel's IPVS family.

pyroute2 resolves the family (its generic netlink discovery, the part worth
keeping); the requests themselves go through a plain blocking netlink socket
owned here, because the kernel handles each netlink write synchronously inside
``send`` and the lean encoder in ``wire`` needs to hand it one big buffer. All
calls are blocking and meant to run in a worker thread (see netlink.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import threading

from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import AsyncGenericNetlinkSocket
from pyroute2.netlink.generic.ipvs import ipvsmsg

from pulsed.ipvs import wire
from pulsed.ipvs.base import BackendError, IPVSUnavailable

NETLINK_GENERIC = 16
RECV_SIZE = 1 << 20
SOCKET_BUFFER = 32 << 20  # room for many error acks of a big batch
REPLY_TIMEOUT = 30.0

NO_IPVS = (
    "the kernel has no IPVS support: run 'modprobe ip_vs' "
    "(Debian: package linux-modules/linux-image, kernel option CONFIG_IP_VS)"
)
NO_PERMISSION = (
    "IPVS refused access: pulsed needs root or CAP_NET_ADMIN to read and program the IPVS table"
)


class _QuietDiscovery(AsyncGenericNetlinkSocket):
    # pyroute2 logs a missing family at error level; IPVSUnavailable says it better.
    module_err_level = "debug"


async def resolve_family() -> int:
    """The generic netlink id of IPVS; IPVSUnavailable when the kernel has none."""
    if not os.path.exists("/proc/net/ip_vs"):
        raise IPVSUnavailable(NO_IPVS)
    # pyroute2's sockets need asyncio's own event loop (uvloop cannot open an
    # AF_NETLINK datagram endpoint), so the lookup runs on one in a thread.
    return await asyncio.to_thread(asyncio.run, _discover_family())


async def _discover_family() -> int:
    sock = _QuietDiscovery()
    try:
        await sock.bind(wire.GENL_NAME, ipvsmsg)
        return int(sock.prid)
    except NetlinkError as exc:
        if exc.code == errno.ENOENT:
            raise IPVSUnavailable(NO_IPVS) from None
        raise IPVSUnavailable(f"cannot reach IPVS over netlink: {os.strerror(exc.code)}") from None
    finally:
        sock.close()


class Channel:
    """One netlink socket to IPVS. Not thread-safe: callers hold ``lock``."""

    def __init__(self, family_id: int) -> None:
        self.family_id = family_id
        self.lock = threading.Lock()
        self._seq = 0
        self._buf = bytearray(RECV_SIZE)
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        self.sock.bind((0, 0))
        self.sock.settimeout(REPLY_TIMEOUT)
        _grow_buffers(self.sock)
        with contextlib.suppress(OSError):  # error replies then echo only the header
            self.sock.setsockopt(wire.SOL_NETLINK, wire.NETLINK_CAP_ACK, 1)

    def close(self) -> None:
        self.sock.close()

    def next_seq(self, count: int = 1) -> int:
        """Reserve ``count`` sequence numbers; returns the first."""
        first = self._seq + 1
        self._seq = (self._seq + count) & 0x3FFFFFFF
        if self._seq < first:  # wrapped: start again from 1
            first, self._seq = 1, count
        return first

    def send(self, data: bytes) -> None:
        self.sock.send(data)

    def recv(self) -> tuple[bytearray, int]:
        """One datagram: (buffer, size). The buffer is reused by the next call."""
        try:
            size = self.sock.recv_into(self._buf)
        except TimeoutError:
            raise BackendError(errno.ETIMEDOUT, "no reply from IPVS over netlink") from None
        except OSError as exc:
            raise BackendError(exc.errno or errno.EIO, f"netlink receive failed: {exc}") from None
        return self._buf, size

    def request(self, cmd: int, payload: bytes) -> None:
        """Send one write and wait for its ack; raises BackendError on refusal."""
        seq = self.next_seq()
        self.send(
            wire.message(self.family_id, wire.NLM_F_REQUEST | wire.NLM_F_ACK, seq, cmd, payload)
        )
        while True:
            buf, size = self.recv()
            for mtype, _flags, mseq, start, _end in wire.iter_messages(buf, size):
                if mtype == wire.NLMSG_ERROR and mseq == seq:
                    code = wire.error_code(buf, start)
                    if code:
                        raise BackendError(code)
                    return

    def dump(self, cmd: int, payload: bytes) -> list[bytes]:
        """Every reply message (header included) of one dump request."""
        return self._replies(wire.NLM_F_REQUEST | wire.NLM_F_DUMP, cmd, payload)

    def get(self, cmd: int, payload: bytes) -> list[bytes]:
        """The reply messages of one non-dump request (for one object)."""
        return self._replies(wire.NLM_F_REQUEST | wire.NLM_F_ACK, cmd, payload)

    def _replies(self, flags: int, cmd: int, payload: bytes) -> list[bytes]:
        seq = self.next_seq()
        self.send(wire.message(self.family_id, flags, seq, cmd, payload))
        out: list[bytes] = []
        while True:
            buf, size = self.recv()
            for mtype, _flags, mseq, start, end in wire.iter_messages(buf, size):
                if mseq != seq:
                    continue
                if mtype == wire.NLMSG_DONE:
                    return out
                if mtype == wire.NLMSG_ERROR:
                    code = wire.error_code(buf, start)
                    if code:
                        raise BackendError(code)
                    return out
                out.append(bytes(buf[start:end]))


def _grow_buffers(sock: socket.socket) -> None:
    # SO_*BUFFORCE (root) goes past net.core.[rw]mem_max; fall back quietly.
    for force, plain in ((33, socket.SO_RCVBUF), (32, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
        except OSError:
            try:
                sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER)
            except OSError:
                logging.getLogger(__name__).debug("cannot grow netlink buffers")
