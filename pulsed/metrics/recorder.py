"""What only events can tell /metrics: probe results and health transitions.

The snapshot (pulsed.readmodel) says what is; counters and histograms need
every event, so ``ActivityRecorder`` subscribes to the daemon's probe,
health and pass events and accumulates them, in columns laid out in the
order the renderer writes servers (pulsed.metrics.render).
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Callable, Iterable
from typing import Protocol

from pulsed.checks.base import ProbeResult
from pulsed.checks.state import RealHealth
from pulsed.model import RealKey

# Probe latency: loopback answers in well under a millisecond, a timeout is a
# second or more. Six buckets keep 10,000 servers' histograms affordable
# (_RealSnapshot._histograms writes the six out by hand: change both together).
PROBE_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.5, 2.5)


# Columns of ActivityRecorder.counts: the probe histogram's cumulative bucket
# counts, then its total.
_TOTAL = len(PROBE_BUCKETS)
_RESULTS = _TOTAL + 1
# ActivityRecorder.last_up: what the last health report said.
_SEEN_NOTHING, _SEEN_DOWN, _SEEN_UP = 0, 1, 2


class ActivityRecorder:
    """What only events can tell: probe results and health transitions.

    Per-server figures are kept in columns, one array per figure, a server's
    row being its slot in ``slots``, rather than in one object per server:
    at 10,000 servers that is about 1.4 MB instead of 2.9 (an object, an
    array of counts and a float each), and counts never become int objects.
    ``layout`` puts the rows in the order the scrape writes them.
    """

    def __init__(self) -> None:
        self.slots: dict[RealKey, int] = {}
        self.counts: list[array] = [array("q") for _ in range(_RESULTS)]
        self.sums = array("d")
        self.transitions = array("q")
        self.last_up = bytearray()
        # Probe count per result category (a small fixed set, see
        # pulsed.checks.base.ProbeResult), in the order first seen.
        self.categories: dict[str, array] = {}
        self._tails = self._bucket_tails()

    def _bucket_tails(self) -> list[list[array]]:
        # A probe in bucket i counts in buckets i.. and in the total.
        return [self.counts[i:] for i in range(_RESULTS)]

    def _slot(self, key: RealKey) -> int:
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = len(self.slots)
            for column in (*self.counts, self.transitions, *self.categories.values()):
                column.append(0)
            self.sums.append(0.0)
            self.last_up.append(_SEEN_NOTHING)
        return slot

    def on_probe(self, key: RealKey, result: ProbeResult) -> None:
        slot = self._slot(key)
        category = str(result.category)
        # A local error (the router's fault) is counted as a result, but its
        # duration says nothing about the server: kept out of the histogram.
        if category != "local":
            latency = max(0.0, float(result.latency))
            for column in self._tails[bisect.bisect_left(PROBE_BUCKETS, latency)]:
                column[slot] += 1
            self.sums[slot] += latency
        counts = self.categories.get(category)
        if counts is None:
            counts = self.categories[category] = array("q", bytes(8 * len(self.slots)))
        counts[slot] += 1

    def on_health(self, key: RealKey, health: RealHealth) -> None:
        slot = self._slot(key)
        last = self.last_up[slot]
        # The monitor reports up/down flips and weight reports. For the first
        # report about a server the previous state is not known here; a flip
        # is the probe that made the transition (pulsed.checks.state sets
        # both times from the same clock reading).
        if last != _SEEN_NOTHING:
            flipped = (last == _SEEN_UP) != health.up
        else:
            checked = health.last_check
            flipped = checked is not None and health.last_transition == checked
        if flipped:
            self.transitions[slot] += 1
        self.last_up[slot] = _SEEN_UP if health.up else _SEEN_DOWN

    def layout(self, keys: list[RealKey]) -> None:
        """Give ``keys`` the rows 0, 1, ... in this order; forget every other server.

        Rows are moved into new arrays: a scrape under way keeps reading the
        old ones.
        """
        if list(self.slots) == keys:
            return
        where = [self.slots.get(key, -1) for key in keys]

        def moved(column: array) -> array:
            return array(column.typecode, [column[j] if j >= 0 else 0 for j in where])

        self.counts = [moved(c) for c in self.counts]
        self.sums = moved(self.sums)
        self.transitions = moved(self.transitions)
        self.last_up = bytearray(self.last_up[j] if j >= 0 else _SEEN_NOTHING for j in where)
        self.categories = {name: moved(c) for name, c in self.categories.items()}
        self.slots = {key: i for i, key in enumerate(keys)}
        self._tails = self._bucket_tails()


class EventSource(Protocol):
    """The daemon's event hooks, as the recorder subscribes to them."""

    probe_observers: list[Callable[[RealKey, ProbeResult], None]]
    health_observers: list[Callable[[RealKey, RealHealth], None]]


def attach_recorder(
    events: EventSource, recorder: ActivityRecorder, servers: Iterable[RealKey] = ()
) -> None:
    """Subscribe the recorder to the daemon's probe and health events,
    with rows for ``servers`` (the configured ones) from the start."""
    events.probe_observers.append(recorder.on_probe)
    events.health_observers.append(recorder.on_health)
    recorder.layout(list(servers))
