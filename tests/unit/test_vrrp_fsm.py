"""The VRRPv3 state machine, event by event (RFC 5798 6.4), plus random event sequences."""

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pulsed.ha.fsm import (
    FaultCleared,
    FaultSet,
    Params,
    PriorityChanged,
    Received,
    Role,
    SendAdvert,
    Shutdown,
    Startup,
    State,
    Tick,
    Transition,
    master_down_interval,
    next_deadline,
    skew_time,
    step,
)
from pulsed.ha.vrrp import Advert

V4 = ipaddress.IPv4Address
ME = V4("10.0.0.1")
PEER_HI = V4("10.0.0.9")
PEER_LO = V4("10.0.0.0")
P = Params(adver_int=1.0, preempt=True, address=ME)


def adv(priority, interval_cs=100):
    return Advert(1, priority, interval_cs, ())


def run(params, state, *timed_events):
    acts = []
    for now, ev in timed_events:
        state, a = step(params, state, ev, now)
        acts.extend(a)
    return state, acts


def started(priority=100, params=P, now=0.0):
    s, _ = step(params, State(priority=priority), Startup(), now)
    return s


def test_timers_follow_rfc():
    assert skew_time(100, 1.0) == pytest.approx(156 / 256)
    assert master_down_interval(100, 1.0) == pytest.approx(3 + 156 / 256)
    assert master_down_interval(254, 0.1) == pytest.approx(0.3 + 0.2 / 256)


def test_startup_goes_backup_with_master_down_timer():
    s = started(100)
    assert s.role is Role.BACKUP
    assert next_deadline(s) == pytest.approx(master_down_interval(100, 1.0))


def test_owner_starts_master_and_adverts():
    s, acts = step(P, State(priority=255), Startup(), 5.0)
    assert s.role is Role.MASTER
    assert acts == (
        Transition(Role.INIT, Role.MASTER, "address owner (priority 255)"),
        SendAdvert(255),
    )
    assert next_deadline(s) == 6.0


def test_backup_becomes_master_when_master_silent():
    s = started(100)
    deadline = next_deadline(s)
    s2, acts = step(P, s, Tick(), deadline - 0.001)
    assert s2.role is Role.BACKUP and acts == ()
    s3, acts = step(P, s, Tick(), deadline)
    assert s3.role is Role.MASTER
    assert SendAdvert(100) in acts


def test_master_sends_adverts_each_interval():
    s = step(P, State(priority=255), Startup(), 0.0)[0]
    s, acts = step(P, s, Tick(), 1.0)
    assert acts == (SendAdvert(255),) and s.adver_at == 2.0
    s2, acts = step(P, s, Tick(), 1.5)
    assert acts == () and s2 == s


def test_backup_learns_master_interval_and_resets_timer():
    s = started(100)
    s, _ = step(P, s, Received(PEER_HI, adv(200, interval_cs=10)), 2.0)
    assert s.master_adver_int == pytest.approx(0.1)
    assert s.master_down_at == pytest.approx(2.0 + master_down_interval(100, 0.1))
    assert s.master == PEER_HI and s.master_priority == 200


def test_backup_priority_zero_takes_over_after_skew():
    s = started(100)
    s, _ = step(P, s, Received(PEER_HI, adv(200, 10)), 1.0)
    s, acts = step(P, s, Received(PEER_HI, adv(0, 10)), 1.05)
    assert acts == () and s.role is Role.BACKUP
    assert s.master_down_at == pytest.approx(1.05 + skew_time(100, 0.1))
    s, acts = step(P, s, Tick(), s.master_down_at)
    assert s.role is Role.MASTER and s.reason == "master sent priority 0"


def test_preempt_ignores_lower_priority_master():
    s = started(200)
    down = s.master_down_at
    s, _ = step(P, s, Received(PEER_LO, adv(100)), 1.0)
    assert s.master_down_at == down  # ignored: we will take over
    s, _acts = step(P, s, Tick(), down)
    assert s.role is Role.MASTER and "preempting" in s.reason


def test_no_preempt_follows_lower_priority_master():
    p = Params(adver_int=1.0, preempt=False, address=ME)
    s = started(200, p)
    s, _ = step(p, s, Received(PEER_LO, adv(100)), 1.0)
    assert s.master_down_at == pytest.approx(1.0 + master_down_interval(200, 1.0))
    s, _ = step(p, s, Tick(), 1.0 + master_down_interval(200, 1.0) - 0.01)
    assert s.role is Role.BACKUP


def test_preempt_delay_waits_then_preempts():
    p = Params(adver_int=1.0, preempt=True, preempt_delay=10.0, address=ME)
    s = started(200, p)
    t = 0.5
    while t < 10.5:  # lower-priority master adverts every second: followed during the delay
        s, _ = step(p, s, Received(PEER_LO, adv(100)), t)
        s, _ = step(p, s, Tick(), t + 0.01)
        assert s.role is Role.BACKUP
        t += 1.0
    # Delay over: adverts are now ignored and the down timer runs out.
    last_reset = s.master_down_at
    s, _ = step(p, s, Received(PEER_LO, adv(100)), t)
    assert s.master_down_at == last_reset
    s, _ = step(p, s, Tick(), last_reset)
    assert s.role is Role.MASTER


def test_preempt_delay_restarts_after_higher_advert():
    p = Params(adver_int=1.0, preempt=True, preempt_delay=10.0, address=ME)
    s = started(200, p)
    s, _ = step(p, s, Received(PEER_LO, adv(100)), 1.0)
    assert s.preempt_at == 11.0
    s, _ = step(p, s, Received(PEER_HI, adv(250)), 2.0)
    assert s.preempt_at is None


def test_master_yields_to_higher_priority():
    s = step(P, State(priority=255), Startup(), 0.0)[0]
    s = step(P, s, PriorityChanged(100), 0.1)[0]
    s, acts = step(P, s, Received(PEER_HI, adv(150, 20)), 0.5)
    assert s.role is Role.BACKUP
    assert acts == (
        Transition(Role.MASTER, Role.BACKUP, f"higher-priority master {PEER_HI} (150)"),
    )
    assert s.master_adver_int == pytest.approx(0.2)


def test_master_equal_priority_tie_break_on_address():
    s = step(P, State(priority=255), Startup(), 0.0)[0]
    s = step(P, s, PriorityChanged(100), 0.0)[0]
    lo, _ = step(P, s, Received(PEER_LO, adv(100)), 0.5)
    assert lo.role is Role.MASTER
    hi, _ = step(P, s, Received(PEER_HI, adv(100)), 0.5)
    assert hi.role is Role.BACKUP


def test_master_answers_lower_master_and_priority_zero_at_once():
    s = step(P, State(priority=255), Startup(), 0.0)[0]
    s2, acts = step(P, s, Received(PEER_LO, adv(100)), 0.5)
    assert s2.role is Role.MASTER and acts == (SendAdvert(255),) and s2.adver_at == 1.5
    s3, acts = step(P, s, Received(PEER_LO, adv(0)), 0.5)
    assert acts == (SendAdvert(255),) and s3.adver_at == 1.5


def test_shutdown_of_master_sends_priority_zero():
    s = step(P, State(priority=255), Startup(), 0.0)[0]
    s, acts = step(P, s, Shutdown(), 1.0)
    assert acts == (SendAdvert(0), Transition(Role.MASTER, Role.INIT, "shutdown"))
    assert s.role is Role.INIT and next_deadline(s) is None


def test_shutdown_of_backup_is_silent():
    _s, acts = step(P, started(), Shutdown(), 1.0)
    assert acts == (Transition(Role.BACKUP, Role.INIT, "shutdown"),)


def test_fault_from_master_releases_and_recovers_to_backup():
    s = step(P, State(priority=255), Startup(), 0.0)[0]
    s = step(P, s, PriorityChanged(100), 0.0)[0]
    s, acts = step(P, s, FaultSet("interface eth0 down"), 1.0)
    assert s.role is Role.FAULT
    assert acts == (SendAdvert(0), Transition(Role.MASTER, Role.FAULT, "interface eth0 down"))
    assert next_deadline(s) is None
    s2, acts = step(P, s, Received(PEER_HI, adv(0)), 1.5)
    assert s2 == s and acts == ()
    s, acts = step(P, s, FaultCleared(), 2.0)
    assert s.role is Role.BACKUP
    assert s.master_down_at == pytest.approx(2.0 + master_down_interval(100, 1.0))


def test_fault_in_init_and_idempotence():
    s, _acts = step(P, State(priority=100), FaultSet("x"), 0.0)
    assert s.role is Role.FAULT
    assert step(P, s, FaultSet("y"), 1.0) == (s, ())
    b = started()
    assert step(P, b, FaultCleared(), 1.0) == (b, ())
    assert step(P, b, Startup(), 1.0) == (b, ())


def test_received_in_init_is_ignored():
    s = State(priority=100)
    assert step(P, s, Received(PEER_HI, adv(0)), 0.0) == (s, ())


# Random sequences: invariants that must hold whatever happens.
events = st.one_of(
    st.just(Startup()),
    st.just(Shutdown()),
    st.just(Tick()),
    st.builds(FaultSet, st.sampled_from(["a", "b"])),
    st.just(FaultCleared()),
    st.builds(PriorityChanged, st.integers(1, 254)),
    st.builds(
        Received,
        st.sampled_from([PEER_HI, PEER_LO]),
        st.builds(Advert, st.just(1), st.integers(0, 255), st.integers(1, 4095), st.just(())),
    ),
)


@given(
    st.lists(st.tuples(st.floats(0, 5, allow_nan=False), events), max_size=60),
    st.booleans(),
    st.floats(0, 3),
    st.integers(1, 255),
)
def test_invariants(seq, preempt, delay, prio):
    p = Params(adver_int=0.5, preempt=preempt, preempt_delay=delay, address=ME)
    s = State(priority=prio)
    now = 0.0
    for dt, ev in seq:
        now += dt
        old = s
        s, acts = step(p, s, ev, now)
        trans = [a for a in acts if isinstance(a, Transition)]
        assert len(trans) <= 1
        if trans:
            assert trans[0].old is old.role and trans[0].new is s.role and old.role is not s.role
        else:
            assert old.role is s.role
        sends = [a for a in acts if isinstance(a, SendAdvert)]
        # Only a master (or one leaving master) ever speaks.
        if sends:
            assert s.role is Role.MASTER or old.role is Role.MASTER
        if s.role is not Role.MASTER and old.role is Role.MASTER:
            assert sends in ([], [SendAdvert(0)])
            if s.role in (Role.INIT, Role.FAULT):
                assert sends == [SendAdvert(0)]
        d = next_deadline(s)
        if s.role in (Role.MASTER, Role.BACKUP):
            assert d is not None
            if isinstance(ev, Tick):  # a tick handles everything due
                assert d > now
        else:
            assert d is None
