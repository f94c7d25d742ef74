"""The kernel's IPVS table over generic netlink.

``NetlinkBackend`` implements ``pulsed.ipvs.base.Backend``. pyroute2 resolves
the IPVS generic netlink family; messages are packed and parsed by the lean
codec in ``pulsed.ipvs.wire``, because pyroute2's generic message encoding
costs about 200-250 µs per message on these machines: 10,000 services x 5 real
servers (60,000 messages) took about 15 s through it, ten times what
``ipvsadm -R`` needs for the same table (see docs/benchmarks.md, "reconcile").

Writes go out in batches: many messages in one ``send``, only the last one
asking for an ack. The kernel processes the messages of a batch in order and
answers every refused one with an error carrying its sequence number, so each
op still gets its own outcome and one refusal never stops the others.

All socket work runs in a worker thread so a big dump or batch never stalls
the event loop (VRRP adverts, probes).
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Sequence

from pulsed.ipvs import wire
from pulsed.ipvs.base import BackendError
from pulsed.ipvs.channel import Channel, resolve_family
from pulsed.model import Dest, Op, OpKind, Service, Stats, Table

# A batch stays under the default socket send buffer (212,992 bytes) even
# when growing it is not allowed.
BATCH_BYTES = 192 * 1024


class NetlinkBackend:
    """IPVS through netlink. Create with ``await NetlinkBackend.open()``."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._lock = asyncio.Lock()
        self.writes = 0  # netlink write messages sent, for "zero writes" checks

    @classmethod
    async def open(cls) -> NetlinkBackend:
        """Connect to the kernel's IPVS; IPVSUnavailable says what is missing."""
        family_id = await resolve_family()
        return cls(Channel(family_id))

    async def close(self) -> None:
        self._channel.close()

    async def dump(self) -> Table:
        async with self._lock:
            return await asyncio.to_thread(self._dump_sync)

    async def apply(self, ops: list[Op]) -> list[BackendError | None]:
        if not ops:
            return []
        async with self._lock:
            return await asyncio.to_thread(self._apply_sync, ops)

    # Reading ----------------------------------------------------------------

    def _dump_sync(self) -> Table:
        with self._channel.lock:
            services = []
            for raw in self._channel.dump(wire.CMD_GET_SERVICE, b""):
                parsed = wire.parse_service(raw, 0, len(raw))
                if parsed is not None:
                    services.append(parsed)
            table = {}
            for svc, counters in services:
                dests = self._dump_dests(svc)
                active = sum(d.stats.active_connections for d in dests if d.stats)
                inactive = sum(d.stats.inactive_connections for d in dests if d.stats)
                stats = Stats(**counters, active_connections=active, inactive_connections=inactive)
                table[svc.key] = Service(
                    svc.key, svc.scheduler, svc.flags, svc.timeout, svc.netmask, dests, stats
                )
            return Table(table)

    def _dump_dests(self, svc: Service) -> tuple[Dest, ...]:
        # One dump per service (the kernel wants the service in the request);
        # parsed straight from the receive buffer, no copies.
        ch = self._channel
        seq = ch.next_seq()
        ch.send(
            wire.message(
                ch.family_id,
                wire.NLM_F_REQUEST | wire.NLM_F_DUMP,
                seq,
                wire.CMD_GET_DEST,
                wire.service_key_nest(svc.key),
            )
        )
        dests: list[Dest] = []
        parse = wire.parse_dest
        while True:
            buf, size = ch.recv()
            for mtype, _flags, mseq, start, end in wire.iter_messages(buf, size):
                if mseq != seq:
                    continue
                if mtype == wire.NLMSG_DONE:
                    return tuple(dests)
                if mtype == wire.NLMSG_ERROR:
                    code = wire.error_code(buf, start)
                    if code:
                        raise BackendError(code, f"reading destinations of {svc.key}")
                    return tuple(dests)
                dest = parse(buf, start, end)
                if dest is not None:
                    dests.append(dest)

    # Writing ----------------------------------------------------------------

    def _apply_sync(self, ops: Sequence[Op]) -> list[BackendError | None]:
        results: list[BackendError | None] = [None] * len(ops)
        with self._channel.lock:
            start = 0
            while start < len(ops):
                start = self._send_batch(ops, start, results)
        return results

    def _send_batch(self, ops: Sequence[Op], first: int, results: list) -> int:
        """Send ops[first:k] as one batch, record outcomes, return k."""
        ch = self._channel
        family_id = ch.family_id
        parts: list[bytes] = []
        size = 0
        index = first
        encoded = []
        while index < len(ops) and size < BATCH_BYTES:
            cmd, payload = _encode(ops[index])
            encoded.append((cmd, payload))
            size += wire.HEADER_SIZE + len(payload)
            index += 1
        count = index - first
        base = ch.next_seq(count)
        last = count - 1
        for i, (cmd, payload) in enumerate(encoded):
            flags = wire.NLM_F_REQUEST | (wire.NLM_F_ACK if i == last else 0)
            parts.append(wire.message(family_id, flags, base + i, cmd, payload))
        try:
            ch.send(b"".join(parts))
        except OSError as exc:
            code = exc.errno or errno.EIO
            for i in range(first, index):
                results[i] = BackendError(code, f"netlink send failed: {os.strerror(code)}")
            return index
        self.writes += count
        self._collect(base, count, first, results)
        return index

    def _collect(self, base: int, count: int, first: int, results: list) -> None:
        """Read error replies until the ack of the batch's last message."""
        last_seq = base + count - 1
        ch = self._channel
        while True:
            try:
                buf, size = ch.recv()
            except BackendError as exc:
                if exc.errno != errno.ENOBUFS:
                    for i in range(first, first + count):
                        results[i] = results[i] or exc
                    return
                # Replies were dropped: outcomes unknown, so report every op
                # without one; the next resync reads the truth back.
                for i in range(first, first + count):
                    results[i] = results[i] or BackendError(
                        errno.ENOBUFS, "netlink replies lost; the next resync will check"
                    )
                continue
            for mtype, _flags, seq, start, _end in wire.iter_messages(buf, size):
                if mtype != wire.NLMSG_ERROR or not base <= seq <= last_seq:
                    continue
                code = wire.error_code(buf, start)
                if code:
                    results[first + seq - base] = BackendError(code)
                if seq == last_seq:
                    return


def _encode(op: Op) -> tuple[int, bytes]:
    """(command, payload) of one op."""
    kind = op.kind
    svc = op.service
    if kind is OpKind.ADD_SERVICE:
        return wire.CMD_NEW_SERVICE, wire.service_nest(svc)
    if kind is OpKind.SET_SERVICE:
        return wire.CMD_SET_SERVICE, wire.service_nest(svc)
    if kind is OpKind.DEL_SERVICE:
        return wire.CMD_DEL_SERVICE, wire.service_key_nest(svc.key)
    assert op.dest is not None, f"{kind} needs a destination"
    key = wire.service_key_nest(svc.key)
    if kind is OpKind.ADD_DEST:
        return wire.CMD_NEW_DEST, key + wire.dest_nest(op.dest)
    if kind is OpKind.SET_DEST:
        return wire.CMD_SET_DEST, key + wire.dest_nest(op.dest)
    return wire.CMD_DEL_DEST, key + wire.dest_key_nest(op.dest)
