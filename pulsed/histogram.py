"""A cumulative histogram (Prometheus's shape): counts per upper bound, the total, the sum."""

from __future__ import annotations

import bisect


class Histogram:
    """Cumulative counts per bucket (the last one is the total) and their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    @property
    def count(self) -> int:
        return self.counts[-1]

    def observe(self, value: float) -> None:
        counts = self.counts
        for i in range(bisect.bisect_left(self.bounds, value), len(counts)):
            counts[i] += 1
        self.sum += value
