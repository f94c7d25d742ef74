"""The VRRPv3 state machine (RFC 5798 section 6.4) as a pure function.

``step(params, state, event, now) -> (state, actions)``. Timers are deadlines in the state
(seconds on a monotonic clock); the caller wakes up at ``next_deadline(state)`` and feeds a
``Tick``. FAULT is keepalived's extension: no adverts, no VIPs, while tracking says this router
cannot serve. Only validated adverts may be fed in; everything else is dropped before.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from pulsed.ha.vrrp import PRIORITY_OWNER, PRIORITY_STOP, Advert, IPAddr


class Role(enum.StrEnum):
    INIT = "init"
    BACKUP = "backup"
    MASTER = "master"
    FAULT = "fault"


@dataclass(frozen=True, slots=True)
class Params:
    adver_int: float  # our Advertisement_Interval, seconds
    preempt: bool = True
    preempt_delay: float = 0.0
    address: IPAddr | None = None  # our primary address, for the equal-priority tie-break
    # keepalived's "state MASTER": start as master at once (a higher-priority advert still
    # sends us back to backup), instead of waiting for the master-down timer.
    initial_master: bool = False


@dataclass(frozen=True, slots=True)
class State:
    priority: int  # effective priority (configured minus tracking decrements)
    role: Role = Role.INIT
    master_adver_int: float = 0.0  # learned from the master while backup
    master_down_at: float | None = None
    adver_at: float | None = None
    preempt_at: float | None = None  # a lower-priority master may be preempted after this
    master: IPAddr | None = None  # the current master's address, as seen by a backup
    master_priority: int | None = None
    down_reason: str = "master_down"  # why we will take over if master_down_at passes
    since: float = 0.0
    reason: str = "startup"


# Events
@dataclass(frozen=True, slots=True)
class Startup:
    pass


@dataclass(frozen=True, slots=True)
class Shutdown:
    pass


@dataclass(frozen=True, slots=True)
class Tick:
    pass


@dataclass(frozen=True, slots=True)
class Received:
    src: IPAddr
    advert: Advert


@dataclass(frozen=True, slots=True)
class FaultSet:
    reason: str


@dataclass(frozen=True, slots=True)
class FaultCleared:
    reason: str = "fault cleared"


@dataclass(frozen=True, slots=True)
class PriorityChanged:
    priority: int


@dataclass(frozen=True, slots=True)
class Resign:
    """A sync group leaves MASTER: step down to backup, sending priority 0 so that the peer
    takes over at once (as a graceful stop does)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Takeover:
    """A sync group becomes master: a backup member follows at once."""

    reason: str


@dataclass(frozen=True, slots=True)
class Hold:
    """The master-down timer ran out but the sync group cannot become master yet (another
    member still follows a live master): stay backup and wait another master-down interval."""


Event = (
    Startup
    | Shutdown
    | Tick
    | Received
    | FaultSet
    | FaultCleared
    | PriorityChanged
    | Resign
    | Takeover
    | Hold
)


# Actions
@dataclass(frozen=True, slots=True)
class SendAdvert:
    priority: int


@dataclass(frozen=True, slots=True)
class Transition:
    old: Role
    new: Role
    reason: str


Action = SendAdvert | Transition


def skew_time(priority: int, master_adver_int: float) -> float:
    return (256 - priority) * master_adver_int / 256


def master_down_interval(priority: int, master_adver_int: float) -> float:
    return 3 * master_adver_int + skew_time(priority, master_adver_int)


def next_deadline(state: State) -> float | None:
    if state.role is Role.MASTER:
        return state.adver_at
    if state.role is Role.BACKUP:
        return state.master_down_at
    return None


def _to_backup(p: Params, s: State, now: float, reason: str, learned: float | None) -> State:
    mai = learned if learned is not None else p.adver_int
    return replace(
        s,
        role=Role.BACKUP,
        master_adver_int=mai,
        master_down_at=now + master_down_interval(s.priority, mai),
        adver_at=None,
        preempt_at=None,
        down_reason="master_down",
        since=now if s.role is not Role.BACKUP else s.since,
        reason=reason if s.role is not Role.BACKUP else s.reason,
    )


def _to_master(p: Params, s: State, now: float, reason: str) -> tuple[State, tuple[Action, ...]]:
    new = replace(
        s,
        role=Role.MASTER,
        adver_at=now + p.adver_int,
        master_down_at=None,
        preempt_at=None,
        master=p.address,
        master_priority=s.priority,
        since=now,
        reason=reason,
    )
    return new, (Transition(s.role, Role.MASTER, reason), SendAdvert(s.priority))


def _backup(p: Params, s: State, now: float, reason: str, learned: float | None) -> tuple:
    new = _to_backup(p, s, now, reason, learned)
    if s.role is Role.BACKUP:
        return new, ()
    return new, (Transition(s.role, Role.BACKUP, reason),)


def _start(p: Params, s: State, now: float, reason: str) -> tuple[State, tuple[Action, ...]]:
    if s.priority == PRIORITY_OWNER:
        return _to_master(p, s, now, "address owner (priority 255)")
    return _backup(p, s, now, reason, None)


def step(p: Params, s: State, ev: Event, now: float) -> tuple[State, tuple[Action, ...]]:
    """One event in, the new state and what to do out. Never raises on valid input."""
    if isinstance(ev, PriorityChanged):
        return replace(s, priority=ev.priority), ()
    if isinstance(ev, Startup):
        if s.role is not Role.INIT:
            return s, ()
        if p.initial_master and s.priority != PRIORITY_OWNER:
            return _to_master(p, s, now, "initial_state master")
        return _start(p, s, now, "startup")
    if isinstance(ev, Resign):
        if s.role is not Role.MASTER:
            return s, ()
        new, moved = _backup(p, s, now, ev.reason, None)
        return new, (SendAdvert(PRIORITY_STOP), *moved)
    if isinstance(ev, Takeover):
        if s.role is not Role.BACKUP:
            return s, ()
        return _to_master(p, s, now, ev.reason)
    if isinstance(ev, Hold):
        if s.role is not Role.BACKUP:
            return s, ()
        down = now + master_down_interval(s.priority, s.master_adver_int)
        return replace(s, master_down_at=down), ()
    if isinstance(ev, Shutdown):
        if s.role is Role.INIT:
            return s, ()
        acts: tuple[Action, ...] = (SendAdvert(PRIORITY_STOP),) if s.role is Role.MASTER else ()
        new = replace(s, role=Role.INIT, adver_at=None, master_down_at=None, preempt_at=None)
        new = replace(new, since=now, reason="shutdown")
        return new, (*acts, Transition(s.role, Role.INIT, "shutdown"))
    if isinstance(ev, FaultSet):
        if s.role is Role.FAULT:
            return s, ()
        acts = (SendAdvert(PRIORITY_STOP),) if s.role is Role.MASTER else ()
        new = replace(
            s, role=Role.FAULT, adver_at=None, master_down_at=None, preempt_at=None, master=None
        )
        new = replace(new, since=now, reason=ev.reason)
        return new, (*acts, Transition(s.role, Role.FAULT, ev.reason))
    if isinstance(ev, FaultCleared):
        if s.role is not Role.FAULT:
            return s, ()
        return _start(p, s, now, ev.reason)
    if isinstance(ev, Tick):
        return _tick(p, s, now)
    if isinstance(ev, Received):
        if s.role is Role.BACKUP:
            return _backup_rx(p, s, ev, now)
        if s.role is Role.MASTER:
            return _master_rx(p, s, ev, now)
        return s, ()
    raise TypeError(f"unknown event {ev!r}")


def _tick(p: Params, s: State, now: float) -> tuple[State, tuple[Action, ...]]:
    if s.role is Role.BACKUP and s.master_down_at is not None and now >= s.master_down_at:
        return _to_master(p, s, now, s.down_reason)
    if s.role is Role.MASTER and s.adver_at is not None and now >= s.adver_at:
        return replace(s, adver_at=now + p.adver_int), (SendAdvert(s.priority),)
    return s, ()


def _backup_rx(p: Params, s: State, ev: Received, now: float) -> tuple[State, tuple[Action, ...]]:
    adv = ev.advert
    if adv.priority == PRIORITY_STOP:
        down = now + skew_time(s.priority, s.master_adver_int)
        if s.master_down_at is not None:
            down = min(down, s.master_down_at)
        return replace(s, master_down_at=down, down_reason="master sent priority 0"), ()
    lower = adv.priority < s.priority
    if p.preempt and lower:
        preempt_at = s.preempt_at
        if p.preempt_delay > 0 and preempt_at is None:
            preempt_at = now + p.preempt_delay
        if preempt_at is None or now >= preempt_at:
            # Ignore it: the down timer runs out and we take over.
            return replace(
                s,
                preempt_at=preempt_at,
                master=ev.src,
                master_priority=adv.priority,
                down_reason="preempting lower-priority master",
            ), ()
        s = replace(s, preempt_at=preempt_at)
    else:
        s = replace(s, preempt_at=None)
    mai = adv.max_adver_int / 100
    return replace(
        s,
        master_adver_int=mai,
        master_down_at=now + master_down_interval(s.priority, mai),
        master=ev.src,
        master_priority=adv.priority,
        down_reason="master_down",
    ), ()


def _master_rx(p: Params, s: State, ev: Received, now: float) -> tuple[State, tuple[Action, ...]]:
    adv = ev.advert
    if adv.priority == PRIORITY_STOP:
        # Another master is leaving: assert ourselves at once so backups don't take over.
        return replace(s, adver_at=now + p.adver_int), (SendAdvert(s.priority),)
    mine = int(p.address) if p.address is not None else 0
    if adv.priority > s.priority or (adv.priority == s.priority and int(ev.src) > mine):
        new, acts = _backup(
            p, s, now, f"higher-priority master {ev.src} ({adv.priority})", adv.max_adver_int / 100
        )
        return replace(new, master=ev.src, master_priority=adv.priority), acts
    # Another master with a lower priority (a healed partition): RFC 5798 says discard, but
    # answering at once (as keepalived does) makes it step down now rather than within an
    # interval. Its adverts stop as soon as it has, so this cannot turn into a storm.
    return replace(s, adver_at=now + p.adver_int), (SendAdvert(s.priority),)
