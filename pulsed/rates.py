"""Connection and byte rates of each service and real server, from the kernel's counters.

The kernel's counters are cumulative; a rate needs two readings of them and
the time between. Each pass hands over the table it read; the tracker keeps,
per service, the last two readings whose counters differ (a table read
without fresh counters hands back the same counters, which must not count as
"no traffic"). Rates are worked out only when /status asks.

A reading keeps the counters, not the Service: a kept Service would hold a
second copy of the table's destinations after every change of weight (at
10,000 real servers, a megabyte), and a table without counters (the memory
backend, or a kernel that gives none) keeps nothing per destination.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pulsed.model import Dest, DestKey, Service, ServiceKey, Stats, Table


@dataclass(frozen=True, slots=True)
class Reading:
    """A service's counters as the kernel held them, and when (monotonic seconds)."""

    stats: Stats | None
    dests: tuple[Dest, ...]  # the service's own tuple (shared); () without counters
    at: float

    @classmethod
    def of(cls, svc: Service, at: float) -> Reading:
        return cls(svc.stats, svc.dests if svc.stats is not None else (), at)


@dataclass(frozen=True, slots=True)
class Rates:
    connections: float  # new connections per second
    bytes_in: float  # per second
    bytes_out: float


Samples = Mapping[ServiceKey, tuple[Reading, Reading]]  # (older, newer)


class RateTracker:
    """The last two readings of each service (replaced whole, so readers may keep it)."""

    def __init__(self) -> None:
        self._last: dict[ServiceKey, Reading] = {}
        self.samples: Samples = {}

    def update(self, table: Table, at: float) -> None:
        last = self._last
        samples = self.samples
        fresh: dict[ServiceKey, Reading] = {}
        pairs: dict[ServiceKey, tuple[Reading, Reading]] = {}
        changed = len(table) != len(last)
        for key, svc in table.services.items():
            before = last.get(key)
            # "is" first: a pass whose table read kept the counters hands over
            # the same Stats object, and this runs for every service in every pass.
            if before is not None and (before.stats is svc.stats or before.stats == svc.stats):
                fresh[key] = before  # same counters: no new reading
                if key in samples:
                    pairs[key] = samples[key]
                continue
            changed = True
            reading = Reading.of(svc, at)
            fresh[key] = reading
            if before is not None and svc.stats is not None and before.stats is not None:
                pairs[key] = (before, reading)
        if changed:
            self._last = fresh
            self.samples = pairs


def _rate(before: Stats | None, after: Stats | None, seconds: float) -> Rates | None:
    if before is None or after is None or seconds <= 0:
        return None
    conns = after.connections - before.connections
    bytes_in = after.bytes_in - before.bytes_in
    bytes_out = after.bytes_out - before.bytes_out
    if min(conns, bytes_in, bytes_out) < 0:  # counters reset (service re-added)
        return None
    return Rates(conns / seconds, bytes_in / seconds, bytes_out / seconds)


def service_rates(samples: Samples, key: ServiceKey) -> Rates | None:
    pair = samples.get(key)
    if pair is None:
        return None
    older, newer = pair
    return _rate(older.stats, newer.stats, newer.at - older.at)


def dest_rates(samples: Samples, key: ServiceKey) -> dict[DestKey, Rates | None]:
    """Each real server's rates in service ``key`` (empty without two readings)."""
    pair = samples.get(key)
    if pair is None:
        return {}
    older, newer = pair
    seconds = newer.at - older.at
    before = {d.key: d.stats for d in older.dests}
    return {d.key: _rate(before.get(d.key), d.stats, seconds) for d in newer.dests}
