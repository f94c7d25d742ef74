"""What the monitor knows about one real server, and how a result changes it.

Two clocks: ``last_check`` and ``last_transition`` are wall-clock
(time.time(), for people and the status API); ``went_up_at`` and
``went_down_at`` are monotonic (time.monotonic(), for slow start, draining
and min_healthy ordering, which must not jump with the wall clock).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pulsed.checks.agent import AgentState
from pulsed.checks.base import ProbeResult
from pulsed.checks.hysteresis import Hysteresis, step


@dataclass(frozen=True, slots=True)
class RealHealth:
    up: bool
    # Verdict of the most recent probe (None: not probed yet).
    last_ok: bool | None = None
    reason: str = "not checked yet"
    category: str = "pending"
    last_check: float | None = None  # wall clock
    last_transition: float | None = None  # wall clock; monitoring start counts
    latency: float | None = None  # seconds, of the most recent probe
    consecutive_ok: int = 0
    consecutive_fail: int = 0
    # Weight the server reported for itself, % of its configured weight.
    weight_pct: int | None = None
    went_up_at: float | None = None  # monotonic; None: up since monitoring began
    went_down_at: float | None = None  # monotonic; None: never was up
    # Probes that failed for the router's own reasons (a ProbeResult of
    # category "local"): they say nothing about the server, so they are kept
    # here and move nothing above. The last one's reason and wall-clock time.
    local_errors: int = 0
    local_error: str | None = None
    local_error_at: float | None = None
    # What the server's agent said last (pulsed.checks.agent); None: no agent,
    # or it has not answered yet. ``up`` above is the main check's alone.
    agent: AgentState | None = None

    @property
    def checked(self) -> bool:
        return self.last_ok is not None

    @property
    def serving(self) -> bool:
        """Up by its check, and not said down by its agent."""
        return self.up and (self.agent is None or self.agent.op != "down")


def initial_health(up: bool, wall: float, reason: str = "not checked yet") -> RealHealth:
    """Health of a server that monitoring has just started on."""
    return RealHealth(up=up, reason=reason, last_transition=wall)


def apply_result(
    health: RealHealth, result: ProbeResult, rise: int, fall: int, wall: float, mono: float
) -> RealHealth:
    """Health after one probe result (pure)."""
    before = Hysteresis(health.up, health.consecutive_ok, health.consecutive_fail)
    after = step(before, result.ok, rise, fall)
    changed = after.up != health.up
    # Built in one go rather than with dataclasses.replace: this runs for
    # every probe, thousands of times a second.
    return RealHealth(
        up=after.up,
        last_ok=result.ok,
        reason=result.reason,
        category=result.category,
        last_check=wall,
        last_transition=wall if changed else health.last_transition,
        latency=result.latency,
        consecutive_ok=after.ok_run,
        consecutive_fail=after.fail_run,
        # A failing server's stale report would mislead; keep the last
        # good one only while the server passes.
        weight_pct=result.weight_pct if result.ok else health.weight_pct,
        went_up_at=mono if changed and after.up else health.went_up_at,
        went_down_at=mono if changed and not after.up else health.went_down_at,
        local_errors=health.local_errors,
        local_error=health.local_error,
        local_error_at=health.local_error_at,
        agent=health.agent,
    )


def note_local_error(health: RealHealth, result: ProbeResult, wall: float) -> RealHealth:
    """Health after a probe that failed for a local reason (result.category
    "local"): only the local-error record changes; up/down, the rise/fall
    counters, the reported weight and the last verdict stay as they were."""
    return replace(
        health,
        local_errors=health.local_errors + 1,
        local_error=result.reason,
        local_error_at=wall,
    )


def settled(health: RealHealth, result: ProbeResult) -> bool:
    """Whether ``result`` repeats the last one (verdict, reason, category and
    reported weight) and agrees with the server's state (a pass while up, a
    failure while down): then it cannot move the server, only its counters,
    latency and check time (see repeated())."""
    ok = result.ok
    return (
        health.last_ok == ok
        and health.up == ok
        and health.reason == result.reason
        and health.category == result.category
        and (not ok or health.weight_pct == result.weight_pct)
    )


def repeated(health: RealHealth, times: int, latency: float, wall: float) -> RealHealth:
    """Health after ``times`` more results for which settled() held, the last
    with ``latency`` at ``wall``: what apply_result gives, applied that many
    times (pure; lets the monitor build the record when someone reads it
    rather than after every probe)."""
    if health.last_ok:
        ok_run, fail_run = health.consecutive_ok + times, 0
    else:
        ok_run, fail_run = 0, health.consecutive_fail + times
    return RealHealth(
        up=health.up,
        last_ok=health.last_ok,
        reason=health.reason,
        category=health.category,
        last_check=wall,
        last_transition=health.last_transition,
        latency=latency,
        consecutive_ok=ok_run,
        consecutive_fail=fail_run,
        weight_pct=health.weight_pct,
        went_up_at=health.went_up_at,
        went_down_at=health.went_down_at,
        local_errors=health.local_errors,
        local_error=health.local_error,
        local_error_at=health.local_error_at,
        agent=health.agent,
    )


def changed_for_table(old: RealHealth, new: RealHealth) -> bool:
    """Whether the wanted table may differ: up/down, the reported weight, or
    what the agent says (AgentState compares only what the table reads)."""
    return (
        old.up != new.up or (new.up and old.weight_pct != new.weight_pct) or old.agent != new.agent
    )


def with_agent(health: RealHealth, agent: AgentState) -> RealHealth:
    return replace(health, agent=agent)


def effective(health: RealHealth) -> RealHealth:
    """The record the pool policy reads: the check's, with what the agent said
    laid over it (down, and its weight percentage); drain and maint are
    weights, applied with the configured one (pulsed.desired)."""
    agent = health.agent
    if agent is None:
        return health
    up, went_down_at = health.up, health.went_down_at
    if agent.op == "down" and up:
        up, went_down_at = False, agent.down_at
    pct = agent.weight_pct if agent.weight_pct is not None else health.weight_pct
    if up == health.up and pct == health.weight_pct:
        return health
    return replace(health, up=up, weight_pct=pct, went_down_at=went_down_at)
