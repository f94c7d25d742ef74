"""The last few health transitions of each real server, with their reasons.

Fed by the daemon on every health change (pulsed.daemon ``_on_health_change``)
and brought up to date by each snapshot;
only a change of state (up, down, pending) is a transition: a weight report
or a new reason for the same state is not. Each server keeps a tuple of at
most ``KEEP`` entries, newest first, replaced whole, so a snapshot may share it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

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
    """Each server's transitions, kept compact: one flat tuple per server,
    ``(at, state, reason, at, state, reason, ...)`` newest first (at 10,000
    servers this is a third of a tuple of Transition objects). ``view`` hands
    out the map itself, copy-on-write: the next change after a view works on a
    copy, so a snapshot never changes under its readers and a quiet router
    copies nothing."""

    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self._by_key: dict[RealKey, tuple] = {}
        self._viewed = False  # the map was handed out: copy before changing it

    def _writable(self) -> dict[RealKey, tuple]:
        if self._viewed:
            self._by_key = dict(self._by_key)
            self._viewed = False
        return self._by_key

    def record(self, key: RealKey, health: RealHealth, now: float) -> None:
        state = health_state(health)
        past = self._by_key.get(key, ())
        if (past and past[1] == state) or (not past and state == "pending"):
            return
        at = health.last_transition or health.last_check or now
        kept = past[: 3 * (self.keep - 1)]
        self._writable()[key] = (at, _STATES[state], health.reason, *kept)

    def forget_all_but(self, keys: Iterable[RealKey]) -> None:
        """After a reload: drop the servers that left the config."""
        kept = set(keys)
        self._by_key = {k: v for k, v in self._by_key.items() if k in kept}
        self._viewed = False

    def view(self, health: Mapping[RealKey, RealHealth], now: float) -> HistoryView:
        """The history, first brought up to ``health``: the monitor reports a change
        only when a server goes up or down, not a first verdict of "down"."""
        for key, h in health.items():
            past = self._by_key.get(key)
            state = "up" if h.up else ("down" if h.last_ok is not None else "pending")
            if (past is None and state == "pending") or (past is not None and past[1] == state):
                continue
            self.record(key, h, now)
        self._viewed = True
        return HistoryView(self._by_key)


# One string object per state, shared by every entry.
_STATES = {"up": "up", "down": "down", "pending": "pending"}


class HistoryView(Mapping[RealKey, tuple[Transition, ...]]):
    """A snapshot's read-only history: Transition tuples built when asked for."""

    __slots__ = ("_by_key",)

    def __init__(self, by_key: Mapping[RealKey, tuple]) -> None:
        self._by_key = by_key

    def __getitem__(self, key: RealKey) -> tuple[Transition, ...]:
        return _transitions(self._by_key[key])

    def get(self, key: RealKey, default: Any = None) -> Any:
        # Mapping's own get goes through __getitem__ and a KeyError: /status asks
        # this once per real server.
        flat = self._by_key.get(key)
        return default if flat is None else _transitions(flat)

    def __iter__(self) -> Iterator[RealKey]:
        return iter(self._by_key)

    def __len__(self) -> int:
        return len(self._by_key)


def _transitions(flat: tuple) -> tuple[Transition, ...]:
    return tuple(Transition(*flat[i : i + 3]) for i in range(0, len(flat), 3))
