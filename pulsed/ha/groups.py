"""Sync groups (keepalived's vrrp_sync_group) as pure decisions: what each member must do
when another one moves. The node feeds in its members as ``Member`` values and applies the
commands on the heartbeat loop.

The rules:

* FAULT together: while a member is in fault by its own tracking, every other member is held
  in fault too ("sync group G1: VI_2 in fault"); they all leave it when none has a fault left.
* MASTER together: a member that leaves MASTER for BACKUP (it heard a better master) makes
  every other master resign (priority 0: the peer takes over at once); a member that becomes
  MASTER brings every other backup with it.
* Back together: a backup's master-down timer may promote it only while no other member
  still follows a live master (or is in fault, or stopped); else it waits another interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pulsed.ha.fsm import Role


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    role: Role
    own_fault: bool = False  # in fault by its own tracking (not held there by the group)
    following: bool = False  # a backup that hears a live master it will not preempt


@dataclass(frozen=True, slots=True)
class Resign:
    member: str
    reason: str


@dataclass(frozen=True, slots=True)
class Takeover:
    member: str
    reason: str


Command = Resign | Takeover


def held_faults(group: str, members: Sequence[Member]) -> dict[str, str | None]:
    """For each member, the fault the group holds it in (None: none)."""
    faulty = [m.name for m in members if m.own_fault]
    out: dict[str, str | None] = {}
    for m in members:
        others = [n for n in faulty if n != m.name]
        out[m.name] = f"sync group {group}: {others[0]} in fault" if others else None
    return out


def on_transition(
    group: str, members: Sequence[Member], name: str, old: Role, new: Role
) -> list[Command]:
    """What the other members must do now that ``name`` moved from ``old`` to ``new``
    (``members`` already shows the new role). Faults are not here: see ``held_faults``."""
    cmds: list[Command] = []
    if old is Role.MASTER and new is Role.BACKUP:
        why = f"sync group {group}: {name} left master"
        cmds += [Resign(m.name, why) for m in members if m.name != name and m.role is Role.MASTER]
    elif new is Role.MASTER:
        why = f"sync group {group}: {name} became master"
        cmds += [
            Takeover(m.name, why)
            for m in members
            if m.name != name and m.role is Role.BACKUP and not m.following
        ]
    return cmds


def may_take_over(members: Sequence[Member], name: str) -> bool:
    """Whether ``name``'s master-down timer may promote it: every other member can follow."""
    for m in members:
        if m.name == name:
            continue
        if m.role in (Role.FAULT, Role.INIT) or (m.role is Role.BACKUP and m.following):
            return False
    return True


def group_state(members: Sequence[Member]) -> str:
    """The group's role: fault if any member is, master or backup when all agree, "init"
    while any is stopped, else "transition" (members moving)."""
    roles = {m.role for m in members}
    if Role.FAULT in roles:
        return "fault"
    if Role.INIT in roles or not roles:
        return "init"
    if roles == {Role.MASTER}:
        return "master"
    if roles == {Role.BACKUP}:
        return "backup"
    return "transition"
