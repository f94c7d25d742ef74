"""The last few health transitions of each real server, with their reasons.

Fed by the daemon on every health change (pulsed.daemon ``_on_health_change``)
and brought up to date by each snapshot;
only a change of state (up, down, pending) is a transition: a weight report
or a new reason for the same state is not. Each server keeps a tuple of at
most ``KEEP`` entries, newest first, replaced whole, so a snapshot may share it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pulsed.checks.state import RealHealth
from pulsed.model import RealKey

KEEP = 5


@dataclass(frozen=True, slots=True)
class Transition:
    at: float  # wall clock
    state: str  # "up", "down" or "pending"
    reason: str


def health_state(health: RealHealth) -> str:
    if health.up:
        return "up"
    return "down" if health.checked else "pending"


class HealthHistory:
    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self._by_key: dict[RealKey, tuple[Transition, ...]] = {}

    def record(self, key: RealKey, health: RealHealth, now: float) -> None:
        state = health_state(health)
        past = self._by_key.get(key, ())
        if (past and past[0].state == state) or (not past and state == "pending"):
            return
        at = health.last_transition or health.last_check or now
        self._by_key[key] = (Transition(at, state, health.reason), *past[: self.keep - 1])

    def forget_all_but(self, keys: Iterable[RealKey]) -> None:
        """After a reload: drop the servers that left the config."""
        kept = set(keys)
        self._by_key = {k: v for k, v in self._by_key.items() if k in kept}

    def view(
        self, health: Mapping[RealKey, RealHealth], now: float
    ) -> Mapping[RealKey, tuple[Transition, ...]]:
        """The history, first brought up to ``health``: the monitor reports a change
        only when a server goes up or down, not a first verdict of "down"."""
        by_key = self._by_key
        for key, h in health.items():
            past = by_key.get(key)
            state = "up" if h.up else ("down" if h.last_ok is not None else "pending")
            if (past is None and state == "pending") or (
                past is not None and past[0].state == state
            ):
                continue
            self.record(key, h, now)
        return dict(by_key)
