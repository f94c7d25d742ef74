"""Turning health into kernel weights for one service's pool (pure).

``plan_pool`` is a function of the policy, each real's base weight, health
and active connection count, and the time: no I/O, no clock reading. The
daemon calls it whenever health, config, an admin override or the kernel's
connection counts change, and again at ``PoolPlan.next_change_at`` while a
slow-start ramp or a drain deadline is pending.

Rules, in order:

- up: base weight x reported percentage x slow-start ramp (never below 1
  unless the base weight or the reported percentage is 0);
- down, on_failure="quiesce": weight 0, existing connections carry on;
- down, on_failure="remove": weight 0 while draining, then absent once the
  kernel reports no active connection or drain_timeout has passed since the
  server went down. A server that was never up is never added;
- min_healthy: when fewer servers are up than this, the least-recently-failed
  down servers are kept at their base weight (fail open: a health-check
  outage on the router's side must not empty the pool). A kept server that
  comes up is already serving at its full weight: slow start does not take
  it back down (``held``: the kept and exempt servers of the previous plan);
- sorry server: present (weight ``sorry_weight``) only while no server is
  serving, i.e. none is up with a base weight above 0 and none is kept.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

from pulsed.checks.state import RealHealth
from pulsed.model import DestKey

# Slow start begins at this fraction of the full weight and rises linearly.
SLOW_START_FLOOR = 0.1
# The RealHealth fields plan_pool reads: records equal in these give the
# same plan (pulsed.desired reuses plans on this; keep it in step).
PLAN_FIELDS = ("up", "weight_pct", "went_up_at", "went_down_at")


@dataclass(frozen=True, slots=True)
class PoolPolicy:
    """A service's health policy, built by the daemon from its ServiceConfig."""

    on_failure: Literal["quiesce", "remove"] = "quiesce"
    drain_timeout: float = 60.0
    slow_start: float = 0.0
    min_healthy: int | str = 0  # a count, or a percentage such as "50%"
    sorry_server: DestKey | None = None
    sorry_weight: int = 1


@dataclass(frozen=True, slots=True)
class RealView:
    """One real server as the planner sees it."""

    weight: int  # configured weight, or the admin override
    health: RealHealth
    active_connections: int | None = None  # last kernel dump; None: not in the kernel


@dataclass(frozen=True, slots=True)
class PoolPlan:
    weights: Mapping[DestKey, int]  # every destination that should be in the table
    sorry_in_use: bool = False
    failed_open: bool = False
    kept: tuple[DestKey, ...] = ()  # down servers kept by min_healthy
    draining: tuple[DestKey, ...] = ()  # on_failure="remove", waiting to be deleted
    ramping: tuple[DestKey, ...] = ()  # in slow start
    # Up servers spared slow start: they were serving at full weight (kept by
    # min_healthy) when they came up, and stay spared while they stay up.
    exempt: tuple[DestKey, ...] = ()
    # Monotonic time at which the plan changes by itself (next slow-start
    # step or drain deadline); None when nothing is pending.
    next_change_at: float | None = None


def required_healthy(min_healthy: int | str, total: int) -> int:
    """How many of ``total`` servers min_healthy asks for (percentages round up)."""
    if isinstance(min_healthy, str):
        pct = float(min_healthy.strip().removesuffix("%"))
        wanted = math.ceil(total * pct / 100 - 1e-9)
    else:
        wanted = min_healthy
    return max(0, min(wanted, total))


def plan_pool(
    policy: PoolPolicy,
    reals: Mapping[DestKey, RealView],
    now: float,
    held: Collection[DestKey] = (),
) -> PoolPlan:
    """Kernel weights for one pool at monotonic time ``now``.

    ``held``: servers the previous plan served at full weight though down or
    unramped (``held_servers(previous)``); one of them that is up skips slow start.
    """
    weights: dict[DestKey, int] = {}
    draining: list[DestKey] = []
    ramping: list[DestKey] = []
    exempt: list[DestKey] = []
    deadlines: list[float] = []

    kept = _kept_by_min_healthy(policy, reals)
    for key, view in reals.items():
        health = view.health
        if health.up:
            if key in held and policy.slow_start > 0:
                weights[key] = _up_weight(view, 0.0, now)[0]
                exempt.append(key)
                continue
            weight, step_at = _up_weight(view, policy.slow_start, now)
            weights[key] = weight
            if step_at is not None:
                ramping.append(key)
                deadlines.append(step_at)
        elif key in kept:
            weights[key] = max(view.weight, 0)
        elif policy.on_failure == "quiesce":
            weights[key] = 0
        elif _still_draining(view, policy.drain_timeout, now):
            weights[key] = 0
            draining.append(key)
            deadlines.append(health.went_down_at + policy.drain_timeout)  # type: ignore[operator]

    serving = kept or any(v.health.up and v.weight > 0 for v in reals.values())
    sorry = policy.sorry_server is not None and not serving
    if sorry:
        weights[policy.sorry_server] = policy.sorry_weight  # type: ignore[index]
    return PoolPlan(
        weights=weights,
        sorry_in_use=sorry,
        failed_open=bool(kept),
        kept=tuple(sorted(kept)),
        draining=tuple(sorted(draining)),
        ramping=tuple(sorted(ramping)),
        exempt=tuple(sorted(exempt)),
        next_change_at=min(deadlines) if deadlines else None,
    )


def held_servers(previous: PoolPlan | None) -> tuple[DestKey, ...]:
    """What ``plan_pool`` needs to know of the previous plan: the servers it
    served at full weight while down (kept) or while sparing them slow start."""
    if previous is None or not (previous.kept or previous.exempt):
        return ()
    return previous.kept + previous.exempt


def _kept_by_min_healthy(policy: PoolPolicy, reals: Mapping[DestKey, RealView]) -> set[DestKey]:
    eligible = {k: v for k, v in reals.items() if v.weight > 0}
    required = required_healthy(policy.min_healthy, len(eligible))
    up = sum(1 for v in eligible.values() if v.health.up)
    if up >= required:
        return set()
    down = [k for k, v in eligible.items() if not v.health.up]
    # Least recently failed first; servers that were never up come last.
    down.sort(key=lambda k: _failure_order(k, eligible[k].health))
    return set(down[: required - up])


def _failure_order(key: DestKey, health: RealHealth) -> tuple[bool, float, DestKey]:
    went_down = health.went_down_at
    return (went_down is None, -(went_down or 0.0), key)


def _up_weight(view: RealView, slow_start: float, now: float) -> tuple[int, float | None]:
    """Weight of an up server, and when its slow-start ramp next steps up."""
    pct = view.health.weight_pct
    full = max(view.weight, 0) * (100 if pct is None else pct) / 100
    if full <= 0:
        return 0, None
    went_up = view.health.went_up_at
    if slow_start <= 0 or went_up is None or now >= went_up + slow_start:
        return max(1, int(full)), None
    elapsed = max(0.0, now - went_up)
    fraction = SLOW_START_FLOOR + (1 - SLOW_START_FLOOR) * elapsed / slow_start
    weight = max(1, int(full * fraction))
    step_at = _ramp_step_at(weight, full, went_up, slow_start)
    # At a step boundary float rounding can put the step a hair before now:
    # then the step has happened, so both answers agree with later calls.
    while step_at <= now and weight < int(full):
        weight += 1
        step_at = _ramp_step_at(weight, full, went_up, slow_start)
    return weight, max(step_at, now + 1e-6)


def _ramp_step_at(weight: int, full: float, went_up: float, slow_start: float) -> float:
    """When the ramp reaches weight + 1 (full * fraction == weight + 1)."""
    step_fraction = (weight + 1) / full
    if step_fraction >= 1:
        return went_up + slow_start
    return went_up + (step_fraction - SLOW_START_FLOOR) / (1 - SLOW_START_FLOOR) * slow_start


def _still_draining(view: RealView, drain_timeout: float, now: float) -> bool:
    went_down = view.health.went_down_at
    if went_down is None or not view.active_connections:
        return False
    return now < went_down + drain_timeout


def plan_changes(old: PoolPlan | None, new: PoolPlan) -> list[tuple[str, str, dict[str, object]]]:
    """What is worth logging between two plans of one pool: (level, event, fields).

    Failing open is logged as a warning every time the set of kept servers
    changes: it means checks say the pool is (nearly) empty, which is more
    often the router's fault than the servers'.
    """
    events: list[tuple[str, str, dict[str, object]]] = []
    was_open = old is not None and old.failed_open
    if new.failed_open and (not was_open or old is None or old.kept != new.kept):
        kept = [str(k) for k in new.kept]
        events.append(("warning", "pool.failed_open", {"kept": kept}))
    elif was_open and not new.failed_open:
        events.append(("info", "pool.fail_open_ended", {}))
    had_sorry = old is not None and old.sorry_in_use
    if new.sorry_in_use and not had_sorry:
        events.append(("warning", "pool.sorry_server_on", {}))
    elif had_sorry and not new.sorry_in_use:
        events.append(("info", "pool.sorry_server_off", {}))
    return events
