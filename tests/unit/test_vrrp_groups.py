"""Sync groups, the pure rules (pulsed.ha.groups), checked over every combination of member
roles; plus the fsm events they use (Resign, Takeover, Hold, initial master)."""

import ipaddress
import itertools

import pytest

from pulsed.ha import groups
from pulsed.ha.fsm import (
    Hold,
    Params,
    Received,
    Resign,
    Role,
    SendAdvert,
    Startup,
    State,
    Takeover,
    Tick,
    Transition,
    master_down_interval,
    step,
)
from pulsed.ha.groups import Member
from pulsed.ha.vrrp import Advert

ROLES = list(Role)
ME = ipaddress.IPv4Address("10.0.0.1")
PEER = ipaddress.IPv4Address("10.0.0.9")
P = Params(adver_int=1.0, address=ME)


def members_of(roles, own=(), following=()):
    return [
        Member(f"VI_{i}", r, own_fault=i in own, following=i in following)
        for i, r in enumerate(roles)
    ]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_held_faults_every_combination(n):
    for faulty in itertools.chain.from_iterable(
        itertools.combinations(range(n), k) for k in range(n + 1)
    ):
        ms = members_of([Role.FAULT if i in faulty else Role.BACKUP for i in range(n)], faulty)
        held = groups.held_faults("G1", ms)
        for i in range(n):
            others = [j for j in faulty if j != i]
            if others:
                assert held[f"VI_{i}"] == f"sync group G1: VI_{others[0]} in fault"
            else:
                assert held[f"VI_{i}"] is None


def test_on_transition_every_combination():
    for r1, r2 in itertools.product(ROLES, repeat=2):
        for old, new in itertools.permutations(ROLES, 2):
            for following in (set(), {1}, {2}, {1, 2}):
                ms = members_of([new, r1, r2], following=following)
                cmds = groups.on_transition("G1", ms, "VI_0", old, new)
                names = [c.member for c in cmds]
                assert "VI_0" not in names
                if old is Role.MASTER and new is Role.BACKUP:
                    want = [f"VI_{i}" for i, r in ((1, r1), (2, r2)) if r is Role.MASTER]
                    assert names == want
                    assert all(isinstance(c, groups.Resign) for c in cmds)
                    assert all(c.reason == "sync group G1: VI_0 left master" for c in cmds)
                elif new is Role.MASTER:
                    want = [
                        f"VI_{i}"
                        for i, r in ((1, r1), (2, r2))
                        if r is Role.BACKUP and i not in following
                    ]
                    assert names == want
                    assert all(isinstance(c, groups.Takeover) for c in cmds)
                else:
                    assert cmds == []


def test_may_take_over_every_combination():
    for roles in itertools.product(ROLES, repeat=3):
        for following in (set(), {1}, {2}):
            ms = members_of(roles, following=following)
            blocked = any(
                roles[i] in (Role.FAULT, Role.INIT) or (roles[i] is Role.BACKUP and i in following)
                for i in (1, 2)
            )
            assert groups.may_take_over(ms, "VI_0") is not blocked


def test_group_state():
    assert groups.group_state(members_of([Role.MASTER, Role.MASTER])) == "master"
    assert groups.group_state(members_of([Role.BACKUP, Role.BACKUP])) == "backup"
    assert groups.group_state(members_of([Role.MASTER, Role.FAULT])) == "fault"
    assert groups.group_state(members_of([Role.MASTER, Role.INIT])) == "init"
    assert groups.group_state(members_of([Role.MASTER, Role.BACKUP])) == "transition"
    assert groups.group_state([]) == "init"


# ---- the fsm events behind the commands


def backup(now=0.0, priority=100, params=P):
    s, _ = step(params, State(priority=priority), Startup(), now)
    assert s.role is Role.BACKUP
    return s


def master(now=0.0):
    s = backup(now)
    s, _ = step(P, s, Tick(), s.master_down_at)
    assert s.role is Role.MASTER
    return s


def test_resign_sends_priority_zero_and_goes_backup():
    s = master()
    s2, acts = step(P, s, Resign("sync group G1: VI_2 left master"), 10.0)
    assert s2.role is Role.BACKUP
    assert acts == (
        SendAdvert(0),
        Transition(Role.MASTER, Role.BACKUP, "sync group G1: VI_2 left master"),
    )
    assert s2.master_down_at == pytest.approx(10.0 + master_down_interval(100, 1.0))
    # Only a master resigns.
    b = backup()
    assert step(P, b, Resign("x"), 1.0) == (b, ())


def test_takeover_makes_a_backup_master_at_once():
    s = backup()
    s2, acts = step(P, s, Takeover("sync group G1: VI_1 became master"), 0.5)
    assert s2.role is Role.MASTER
    assert acts == (
        Transition(Role.BACKUP, Role.MASTER, "sync group G1: VI_1 became master"),
        SendAdvert(100),
    )
    m = master()
    assert step(P, m, Takeover("x"), 9.0) == (m, ())


def test_hold_rearms_the_master_down_timer():
    s = backup()
    s, _ = step(P, s, Received(PEER, Advert(1, 150, 100, ())), 1.0)
    s2, acts = step(P, s, Hold(), 5.0)
    assert acts == () and s2.role is Role.BACKUP
    assert s2.master_down_at == pytest.approx(5.0 + master_down_interval(100, 1.0))
    m = master()
    assert step(P, m, Hold(), 9.0) == (m, ())


def test_initial_master_starts_as_master_until_a_better_advert():
    params = Params(adver_int=1.0, address=ME, initial_master=True)
    s, acts = step(params, State(priority=100), Startup(), 0.0)
    assert s.role is Role.MASTER
    assert acts == (Transition(Role.INIT, Role.MASTER, "initial_state master"), SendAdvert(100))
    s, acts = step(params, s, Received(PEER, Advert(1, 150, 100, ())), 0.1)
    assert s.role is Role.BACKUP
