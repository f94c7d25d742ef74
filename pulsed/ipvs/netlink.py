"""The kernel's IPVS table over generic netlink.

``NetlinkBackend`` implements ``pulsed.ipvs.base.Backend``. pyroute2 resolves
the IPVS generic netlink family; messages are packed and parsed by the lean
codec in ``pulsed.ipvs.wire``, because pyroute2's generic message encoding
costs about 200-250 µs per message on these machines, so the benchmark table
(10,000 services x 5 real servers, 60,000 messages) would spend about 15 s in
encoding alone. The lean path programs it faster than ``ipvsadm -R`` does (see
docs/benchmarks.md, "reconcile").

Writes go out in batches: many messages in one ``send``, only the last one
asking for an ack. The kernel processes the messages of a batch in order and
answers every refused one with an error carrying its sequence number, so each
op still gets its own outcome and one refusal never stops the others.

Reads come in two depths. ``dump`` reads everything over netlink: one dump
for the services, then one per service for its real servers (the kernel
wants the service in the request), so 10,000 services cost 10,000 round
trips. ``refresh`` reads ``/proc/net/ip_vs`` instead, which lists the whole
table in one read, and re-reads over netlink only the services whose lines
changed since netlink last read them; the rest keep the values read then.
``/proc/net/ip_vs`` omits connection thresholds, scheduler flags and traffic
counters, so a change to those alone is seen at the next ``dump``, which the
reconcile loop runs every ``full_resync_interval``.

All socket work runs in a worker thread so a big dump or batch never stalls
the event loop (VRRP adverts, probes).
"""

from __future__ import annotations

import asyncio
import errno
import os
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from pulsed.ipvs import procfs, wire
from pulsed.ipvs.base import Backend, BackendError, IPVSUnavailable
from pulsed.ipvs.channel import NO_PERMISSION, Channel, resolve_family
from pulsed.model import Dest, Op, OpKind, Service, ServiceKey, Stats, Table

# A batch stays under the default socket send buffer (212,992 bytes) even
# when growing it is not allowed.
BATCH_BYTES = 192 * 1024

DEST_DUMP_SEQ = 0x7FFFFFFF  # above the channel's sequence numbers
_TAIL = struct.Struct("=IH")  # length and type of a datagram's last message


class _Cached:
    """A service's reply bytes and the values parsed from them."""

    __slots__ = ("counters", "dest_raw", "service", "settings")

    def __init__(self, settings: Service, counters: dict) -> None:
        self.settings = settings
        self.counters = counters
        self.dest_raw: bytes = b""
        self.service: Service | None = None


def _parse_dests(raw: bytes) -> tuple[Dest, ...]:
    dests = []
    parse = wire.parse_dest
    for mtype, _flags, _seq, start, end in wire.iter_messages(raw, len(raw)):
        if mtype != wire.NLMSG_DONE and mtype != wire.NLMSG_ERROR:
            dest = parse(raw, start, end)
            if dest is not None:
                dests.append(dest)
    return tuple(dests)


def _only_match(block: bytes, table: Mapping[ServiceKey, Service]) -> Service | None:
    """The one service of ``table`` a /proc block stands for, if it is clear."""
    try:
        keys = procfs.service_keys(procfs.head(block))
    except ValueError:
        return None
    found = [table[k] for k in keys if k in table]
    if len(found) != 1 or not _shows(block, found[0]):
        return None
    return found[0]


def _shows(block: bytes, svc: Service) -> bool:
    # A cheap guard against pairing a block with a service read a moment
    # before someone else changed it: same scheduler, same real server count.
    same_scheduler = procfs.scheduler(block) == svc.scheduler.encode()
    return same_scheduler and procfs.dest_count(block) == len(svc.dests)


def _with_connections(svc: Service, block: bytes) -> Service:
    """``svc`` with the connection counts of its ``/proc/net/ip_vs`` block."""
    counts = procfs.connections(block)
    dests = []
    for d in svc.dests:
        active, inactive = counts.get((d.address, d.port), (0, 0))
        stats = d.stats or Stats()
        stats = replace(stats, active_connections=active, inactive_connections=inactive)
        dests.append(replace(d, stats=stats))
    total = replace(
        svc.stats or Stats(),
        active_connections=sum(a for a, _ in counts.values()),
        inactive_connections=sum(i for _, i in counts.values()),
    )
    return replace(svc, dests=tuple(dests), stats=total)


def _has_idle_dest(svc: Service) -> bool:
    # A weight-0 destination may be draining: its connection count decides
    # when it goes, so it must be fresh. Other counts may wait for a dump.
    return any(d.weight == 0 for d in svc.dests)


def _with_dests(cached: _Cached, dests: tuple[Dest, ...]) -> Service:
    svc = cached.settings
    active = sum(d.stats.active_connections for d in dests if d.stats)
    inactive = sum(d.stats.inactive_connections for d in dests if d.stats)
    stats = Stats(**cached.counters, active_connections=active, inactive_connections=inactive)
    return Service(svc.key, svc.scheduler, svc.flags, svc.timeout, svc.netmask, dests, stats)


class NetlinkBackend:
    """IPVS through netlink. Create with ``await NetlinkBackend.open()``."""

    def __init__(self, channel: Channel, proc_path: str = procfs.PATH) -> None:
        self._channel = channel
        self._lock = asyncio.Lock()
        self.writes = 0  # netlink write messages sent, for "zero writes" checks
        self.rereads = 0  # services re-read by refresh, for tests and benchmarks
        self._cache: dict[bytes, _Cached] = {}
        self._proc_path = proc_path
        # A service's /proc/net/ip_vs block -> the Service netlink read for
        # it: the whole block (connection counts included), and the block
        # without the counts. None until a dump has paired them.
        self._by_block: dict[bytes, Service] | None = None
        self._by_settings: dict[bytes, Service] = {}
        # The last text read and the table it gave: a byte-identical read
        # (an idle table) gives the same table back without splitting it.
        self._last_text = b""
        self._last_table: Table | None = None

    @classmethod
    async def open(cls, proc_path: str = procfs.PATH) -> NetlinkBackend:
        """Connect to the kernel's IPVS; IPVSUnavailable says what is missing.

        ``proc_path`` stands in for /proc/net/ip_vs (benchmarks replay text).
        """
        family_id = await resolve_family()
        channel = Channel(family_id)
        try:  # a cheap privileged read, so a missing capability shows up here
            await asyncio.to_thread(channel.request, wire.CMD_GET_INFO, b"")
        except BackendError as exc:
            channel.close()
            if exc.errno == errno.EPERM:
                raise IPVSUnavailable(NO_PERMISSION) from None
            raise IPVSUnavailable(f"IPVS does not answer over netlink: {exc}") from None
        return cls(channel, proc_path)

    async def close(self) -> None:
        self._channel.close()

    async def dump(self) -> Table:
        """The whole table over netlink, counters included."""
        async with self._lock:
            return await asyncio.to_thread(self._locked, self._read_all)

    async def refresh(self) -> Table:
        """The table, re-reading over netlink only what /proc/net/ip_vs shows changed."""
        async with self._lock:
            return await asyncio.to_thread(self._locked, self._read_changed)

    def _locked(self, read: Callable[[], Table]) -> Table:
        with self._channel.lock:
            return read()

    async def apply(self, ops: list[Op]) -> list[BackendError | None]:
        if not ops:
            return []
        async with self._lock:
            return await asyncio.to_thread(self._apply_sync, ops)

    # Reading ----------------------------------------------------------------

    def _read_all(self) -> Table:
        # Parsing is the costly part of a dump in Python, and between two
        # resyncs most services come back byte for byte the same (same
        # settings, same counters). So each service's reply bytes are kept
        # with the value parsed from them, and identical bytes reuse it:
        # the result is exactly what parsing would give, only cheaper.
        previous = self._cache
        fresh: dict[bytes, _Cached] = {}
        table: dict = {}
        try:
            for raw in self._channel.dump(wire.CMD_GET_SERVICE, b""):
                body = raw[wire.HEADER_SIZE :]
                cached = previous.get(body)
                if cached is None:
                    parsed = wire.parse_service(raw, 0, len(raw))
                    if parsed is None:
                        continue
                    cached = _Cached(*parsed)
                dest_raw = self._dump_dests_raw(cached.settings)
                if cached.service is None or dest_raw != cached.dest_raw:
                    cached = _Cached(cached.settings, cached.counters)
                    cached.dest_raw = dest_raw
                    cached.service = _with_dests(cached, _parse_dests(dest_raw))
                fresh[body] = cached
                table[cached.settings.key] = cached.service
        except BaseException:
            self._cache = {}
            self._by_block = self._last_table = None
            raise
        self._cache = fresh
        result = Table(table)
        self._pair_blocks(result)
        return result

    def _pair_blocks(self, table: Table) -> None:
        """Remember which /proc/net/ip_vs block each service just read shows."""
        try:
            text = procfs.read(self._proc_path)
        except OSError:
            self._by_block = self._last_table = None  # refresh falls back to full reads
            return
        by_block: dict[bytes, Service] = {}
        by_settings: dict[bytes, Service] = {}
        complete = True
        for block in procfs.blocks(text):
            svc = _only_match(block, table.services)
            if svc is None:
                complete = False
                continue
            by_block[block] = svc
            by_settings[procfs.settings_of(block)] = svc
        self._by_block, self._by_settings = by_block, by_settings
        # Only a text whose every block was placed stands for this table.
        self._last_text = text
        self._last_table = table if complete and len(by_block) == len(table) else None

    def _read_changed(self) -> Table:
        known = self._by_block
        if known is None:
            return self._read_all()
        try:
            text = procfs.read(self._proc_path)
        except OSError:
            return self._read_all()
        if self._last_table is not None and text == self._last_text:
            return self._last_table
        by_settings = self._by_settings
        fresh: dict[bytes, Service] = {}
        table: dict = {}
        changed: list[tuple[bytes, tuple]] = []
        try:
            for block in procfs.blocks(text):
                svc = known.get(block)
                if svc is None:
                    svc = by_settings.get(procfs.settings_of(block))
                    if svc is None:
                        changed.append((block, procfs.service_keys(procfs.head(block))))
                        continue
                    if _has_idle_dest(svc):
                        svc = _with_connections(svc, block)
                fresh[block] = svc
                table[svc.key] = svc
        except ValueError:  # a line this parser cannot place: read it all instead
            return self._read_all()
        for block, keys in changed:
            found = [svc for svc in map(self._read_one, keys) if svc is not None]
            for svc in found:
                table[svc.key] = svc
            if len(found) == 1 and _shows(block, found[0]):
                fresh[block] = found[0]
                by_settings[procfs.settings_of(block)] = found[0]
        self._by_block = fresh
        result = Table(table)
        self._last_text = text
        self._last_table = result if not changed else None  # re-read: after the read
        return result

    def _read_one(self, key: ServiceKey) -> Service | None:
        """One service and its real servers over netlink; None when it is gone."""
        self.rereads += 1
        try:
            replies = self._channel.get(wire.CMD_GET_SERVICE, wire.service_key_nest(key))
        except BackendError as exc:
            if exc.errno in (errno.ESRCH, errno.ENOENT):
                return None
            raise
        parsed = wire.parse_service(replies[0], 0, len(replies[0])) if replies else None
        if parsed is None:
            return None
        cached = _Cached(*parsed)
        return _with_dests(cached, _parse_dests(self._dump_dests_raw(cached.settings)))

    def _dump_dests_raw(self, svc: Service) -> bytes:
        """The reply datagrams of one service's destination dump, concatenated.

        The kernel wants the service in the request, so this is one dump per
        service. A fixed sequence number keeps equal replies byte-equal.
        """
        ch = self._channel
        ch.send(
            wire.message(
                ch.family_id,
                wire.NLM_F_REQUEST | wire.NLM_F_DUMP,
                DEST_DUMP_SEQ,
                wire.CMD_GET_DEST,
                wire.service_key_nest(svc.key),
            )
        )
        chunks: list[bytes] = []
        while True:
            buf, size = ch.recv()
            mtype, _flags, seq, start, _end = next(wire.iter_messages(buf, size))
            if seq != DEST_DUMP_SEQ:
                continue  # a late reply to something else
            if mtype == wire.NLMSG_DONE:
                return b"".join(chunks)
            if mtype == wire.NLMSG_ERROR:
                code = wire.error_code(buf, start)
                if code:
                    raise BackendError(code, f"reading destinations of {svc.key}")
                return b"".join(chunks)
            if size > 20 and _TAIL.unpack_from(buf, size - 20) == (20, wire.NLMSG_DONE):
                # the end marker rode along in the same datagram
                chunks.append(bytes(buf[: size - 20]))
                return b"".join(chunks)
            chunks.append(bytes(buf[:size]))

    # Writing ----------------------------------------------------------------

    def _apply_sync(self, ops: Sequence[Op]) -> list[BackendError | None]:
        results: list[BackendError | None] = [None] * len(ops)
        with self._channel.lock:
            start = 0
            while start < len(ops):
                start = self._send_batch(ops, start, results)
        return results

    def _send_batch(self, ops: Sequence[Op], first: int, results: list[BackendError | None]) -> int:
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

    def _collect(
        self, base: int, count: int, first: int, results: list[BackendError | None]
    ) -> None:
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


if TYPE_CHECKING:
    # The type checker holds NetlinkBackend to the Backend protocol here, where
    # it is defined, rather than where a caller first passes one as a Backend.
    _conforms: type[Backend] = NetlinkBackend
