"""The kernel's one-read summary of the IPVS table, ``/proc/net/ip_vs``.

Over netlink the kernel hands out real servers one service at a time, so a
full read of 10,000 services is 10,000 round trips (about 2 s in the IPVS VM,
whatever the parser). ``/proc/net/ip_vs`` prints every service and real
server in one read. It omits a few fields (connection thresholds, scheduler
flags) and all traffic counters, so it cannot replace the netlink read; it
tells which services changed since netlink last read them, and the backend
re-reads only those (see ``NetlinkBackend.refresh``).

The kernel's format (net/netfilter/ipvs/ip_vs_ctl.c, ``ip_vs_info_seq_show``)::

    IP Virtual Server version 1.2.1 (size=4096)
    Prot LocalAddress:Port Scheduler Flags
      -> RemoteAddress:Port Forward Weight ActiveConn InActConn
    TCP  0A090909:0050 sh  persistent 75000 FFFFFF00
      -> 0A010101:0050      Route   3      0          0
    UDP  [2001:0db8:0000:0000:0000:0000:0000:0001]:0035 wrr
    FWM  00000007 rr ops

A real server's line ends with its two connection counts printed
``%-10d %-10d``: always 21 characters, as the counts are 32-bit.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from socket import AF_INET, AF_INET6

from pulsed.model import ServiceKey

PATH = "/proc/net/ip_vs"
_DEST_LINE = b"\n  -> "
_DEST_MARK = b"\x00"
CONN_COLUMNS = 21  # "%-10d %-10d" at the end of a real server's line
_HEADER_LINES = 2  # after folding, the column legend's two lines are one block
_PROTOCOLS = {b"TCP": "tcp", b"UDP": "udp", b"SCTP": "sctp"}
_READ_SIZE = 1 << 22


def read(path: str = PATH) -> bytes:
    """The whole file, read in large chunks (one seq_file pass)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, _READ_SIZE):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def blocks(text: bytes) -> list[bytes]:
    """One block per service: its line with its real servers' lines folded in.

    Folding first lets one C-level split do the work of walking 60,000 lines.
    """
    parts = text.replace(_DEST_LINE, _DEST_MARK).split(b"\n")
    return [p for p in parts[_HEADER_LINES:] if p]


def settings_of(block: bytes) -> bytes:
    """The block without connection counts, which change with traffic."""
    if _DEST_MARK not in block:
        return block
    head, *dests = block.split(_DEST_MARK)
    return _DEST_MARK.join([head, *(d[:-CONN_COLUMNS] for d in dests)])


def connections(block: bytes) -> dict[tuple[str, int], tuple[int, int]]:
    """(active, inactive) connections of each real server, by (address, port).

    Raises ValueError for a real server line it cannot read.
    """
    out = {}
    for d in block.split(_DEST_MARK)[1:]:
        fields = d.split(None, 1)
        if not fields:
            raise ValueError(f"unexpected IPVS real server line: {d[:80]!r}")
        out[_endpoint(fields[0])] = (_count(d[-CONN_COLUMNS:-11]), _count(d[-10:]))
    return out


@functools.lru_cache(maxsize=65536)
def service_keys(block_head: bytes) -> tuple[ServiceKey, ...]:
    """The keys a service line may stand for.

    A fwmark line does not say its address family, so it may be either.
    Raises ValueError for a line this parser does not know (a protocol
    pulsed does not program, or a format change).
    """
    fields = block_head.split(None, 2)
    if len(fields) < 2:
        raise ValueError(f"unexpected IPVS service line: {block_head[:80]!r}")
    proto, where = fields[0], fields[1]
    if proto == b"FWM":
        mark = _hex(where, 8)
        return (ServiceKey.for_fwmark(mark, AF_INET), ServiceKey.for_fwmark(mark, AF_INET6))
    protocol = _PROTOCOLS.get(proto)
    if protocol is None:
        raise ValueError(f"unexpected IPVS protocol {proto.decode(errors='replace')!r}")
    address, port = _endpoint(where)
    return (ServiceKey.for_address(protocol, address, port),)


def head(block: bytes) -> bytes:
    """The service line of a block."""
    return block.split(_DEST_MARK, 1)[0]


def scheduler(block: bytes) -> bytes:
    """The scheduler name a block shows."""
    fields = head(block).split(None, 3)
    return fields[2] if len(fields) > 2 else b""


def dest_count(block: bytes) -> int:
    return block.count(_DEST_MARK)


# The kernel prints fixed-width hex ("%08X:%04X") and plain decimal counts;
# int() alone would also take signs, underscores, spaces and any length.
_HEX = re.compile(rb"[0-9A-Fa-f]+")


def _hex(text: bytes, digits: int) -> int:
    if len(text) > digits or not _HEX.fullmatch(text):
        raise ValueError(f"unexpected hex number in /proc/net/ip_vs: {text[:20]!r}")
    return int(text, 16)


def _count(text: bytes) -> int:
    value = text.strip()
    if not value.isdigit():  # bytes.isdigit: ASCII digits only
        raise ValueError(f"unexpected connection count in /proc/net/ip_vs: {text!r}")
    return int(value)


def _endpoint(text: bytes) -> tuple[str, int]:
    address, _, port = text.rpartition(b":")
    if address.startswith(b"[") and address.endswith(b"]"):
        return str(ipaddress.IPv6Address(address[1:-1].decode("ascii"))), _hex(port, 4)
    return str(ipaddress.IPv4Address(_hex(address, 8))), _hex(port, 4)
