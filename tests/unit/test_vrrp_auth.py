"""VRRP authentication without trusting clocks (pulsed/ha/auth.py).

Two parts: the Authenticator on its own (genuine, tampered, replayed, restarted), and a
discrete-event simulation of routers that run the real state machine, receive validation and
Authenticator, with the node's answer/probe policy, over a simulated link. Each router has its
own wall clock, which the tests step by +-1 s, +-20 s and +-1 day: ``time.time`` and
``time.time_ns`` are patched to return the clock of the router whose code is running, so any
read of the wall clock in the code under test would see the step.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import random
import time
from dataclasses import dataclass, field

import pytest

from pulsed.ha import fsm
from pulsed.ha.auth import (
    MAX_CANDIDATES,
    MAX_RETIRED,
    MAX_SOURCES,
    MIN_TRAILER_LEN,
    Authenticator,
    load_key,
    parse_key,
    parse_trailer,
)
from pulsed.ha.node import ANSWER_GAP
from pulsed.ha.receive import Expect, Rejected, validate
from pulsed.ha.vrrp import MCAST_V4, Advert, Drop, encode

V4 = ipaddress.IPv4Address
KEY = b"0123456789abcdef0123456789abcdef"
VIPS = (V4("192.0.2.10"),)
A, B, C = V4("10.0.0.1"), V4("10.0.0.2"), V4("10.0.0.3")


def seeded(seed: int) -> Authenticator:
    return Authenticator(KEY, randbytes=random.Random(seed).randbytes)


def advert(src, prio=100, dst=MCAST_V4):
    return encode(Advert(51, prio, 100, VIPS), src, dst)


def rx(auth, pkt, src):
    """What ``auth`` says of a packet from ``src`` (msg, trailer split as validate does)."""
    n = 8 + 4 * pkt[3]
    return auth.verify(src, pkt[:n], pkt[n:])


def introduce(a: Authenticator, a_addr, b: Authenticator, b_addr) -> None:
    """Run the probe / answer exchange until each has verified the other."""
    rx(b, a.sign(a_addr, advert(a_addr), probe=True), a_addr)  # b learns a's challenge
    rx(a, b.sign(b_addr, advert(b_addr), probe=True), b_addr)  # echoes it: a verifies b
    rx(b, a.sign(a_addr, advert(a_addr), probe=True), a_addr)  # a echoes b's: b verifies a
    assert a.verified(b_addr) and b.verified(a_addr)


# ---- the Authenticator alone


def test_trailer_layout():
    a = seeded(1)
    pkt = a.sign(A, advert(A))
    t = parse_trailer(pkt[12:])
    assert len(pkt) == 12 + MIN_TRAILER_LEN
    assert t is not None and t.epoch == a.epoch and t.counter == 1 and t.challenge == a.challenge
    assert not t.probe and t.ok == () and t.need == ()
    assert parse_trailer(a.sign(A, advert(A), probe=True)[12:]).counter == 2


def test_new_epoch_needs_our_challenge_then_counters_rule():
    a, b = seeded(1), seeded(2)
    first = a.sign(A, advert(A))
    # b never spoke: nothing a sends can be proven fresh yet; b must answer.
    assert rx(b, first, A) is Drop.UNVERIFIED
    assert b.take_answer() and not b.take_answer()
    assert b.has_unverified()
    introduce(a, A, b, B)
    assert not b.has_unverified()
    nxt = a.sign(A, advert(A))
    assert rx(b, nxt, A) is None
    assert rx(b, nxt, A) is Drop.REPLAY  # same counter again
    assert rx(b, first, A) is Drop.REPLAY  # older counter of the accepted epoch
    assert rx(b, a.sign(A, advert(A), probe=True), A) is Drop.PROBE


def test_wrong_key_tamper_truncation_and_source_binding():
    a, b = seeded(1), seeded(2)
    introduce(a, A, b, B)
    good = a.sign(A, advert(A))
    assert rx(b, Authenticator(b"another-key-0123456789").sign(A, advert(A)), A) is Drop.AUTH
    for i in range(12, len(good)):  # any flipped bit of the trailer
        bad = bytearray(good)
        bad[i] ^= 0x40
        assert rx(b, bytes(bad), A) is Drop.AUTH, i
    assert rx(b, good[:-1], A) is Drop.AUTH
    assert rx(b, good + b"\0", A) is Drop.AUTH
    # The MAC names the source: the same bytes from another address are refused.
    assert rx(b, advert(C) + good[12:], C) is Drop.AUTH
    assert rx(b, good, A) is None


def test_restarted_sender_is_verified_and_its_old_epoch_retired():
    a1, b = seeded(1), seeded(2)
    introduce(a1, A, b, B)
    recorded = [a1.sign(A, advert(A, prio=200)) for _ in range(3)]
    a2 = seeded(3)  # a restarts: new epoch, counter from 1
    introduce(a2, A, b, B)
    assert rx(b, a2.sign(A, advert(A)), A) is None
    for pkt in recorded:  # they echo b's challenge of that time, and a1's epoch is retired
        assert rx(b, pkt, A) is Drop.REPLAY


def test_old_recordings_stay_useless_after_many_restarts():
    """Even once the retired list has forgotten an epoch, its recordings echo a challenge that
    b replaced when it verified the next epoch."""
    b = seeded(100)
    first = seeded(0)
    introduce(first, A, b, B)
    recorded = first.sign(A, advert(A, prio=254))
    for seed in range(1, MAX_RETIRED + 3):
        introduce(seeded(seed), A, b, B)
    assert rx(b, recorded, A) is Drop.UNVERIFIED


def test_restarted_receiver_refuses_everything_recorded_before():
    a, b1 = seeded(1), seeded(2)
    introduce(a, A, b1, B)
    recorded = [a.sign(A, advert(A, prio=200)) for _ in range(3)]
    b2 = seeded(3)
    assert [rx(b2, p, A) for p in recorded] == [Drop.UNVERIFIED] * 3
    introduce(a, A, b2, B)  # the live sender is verified in one exchange
    assert rx(b2, a.sign(A, advert(A)), A) is None
    assert [rx(b2, p, A) for p in recorded] == [Drop.REPLAY] * 3


def test_need_list_asks_for_an_answer_until_verified():
    a, b = seeded(1), seeded(2)
    rx(a, b.sign(B, advert(B)), B)  # a heard b, cannot verify it
    pkt = a.sign(A, advert(A), probe=True)
    t = parse_trailer(pkt[12:])
    assert t.need == (b.challenge,)
    assert rx(b, pkt, A) is Drop.PROBE  # it echoes b's challenge: b verifies a
    assert b.take_answer()  # and owes a an answer: a lists b as unverified
    rx(a, b.sign(B, advert(B), probe=True), B)
    assert a.verified(B) and not a.has_unverified()
    assert rx(b, a.sign(A, advert(A)), A) is None
    assert not b.take_answer()


def test_memory_is_bounded_under_replays():
    b = seeded(0)
    for seed in range(1, 50):
        rx(b, seeded(seed).sign(A, advert(A)), A)
    assert len(b._peers[A].candidates) == MAX_CANDIDATES
    for i in range(MAX_SOURCES + 10):
        src = V4(f"10.1.{i // 200}.{i % 200 + 1}")
        rx(b, seeded(i).sign(src, advert(src)), src)
    assert len(b._peers) == MAX_SOURCES
    t = parse_trailer(b.sign(B, advert(B))[12:])
    assert len(t.ok) + len(t.need) <= 16


def test_epoch_and_challenge_come_from_urandom():
    a, b = Authenticator(KEY), Authenticator(KEY)
    assert len({a.epoch, b.epoch, a.challenge, b.challenge}) == 4


def test_key_rules(tmp_path):
    f = tmp_path / "k"
    f.write_bytes(KEY + b"\n")
    f.chmod(0o600)
    assert load_key(str(f)) == KEY
    f.chmod(0o644)
    with pytest.raises(ValueError, match="open to others"):
        load_key(str(f))
    f.chmod(0o600)
    f.write_bytes(b"short")
    with pytest.raises(ValueError, match="at least 16"):
        load_key(str(f))
    with pytest.raises(ValueError, match="cannot read"):
        load_key(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="at most"):
        parse_key(b"x" * 5000, "k")


# ---- routers in a simulation


DELAY = 0.001  # one-way delay of the simulated link


@dataclass
class SimRouter:
    name: str
    addr: ipaddress.IPv4Address
    priority: int
    seed: int
    wall_offset: float = 0.0
    alive: bool = True
    auth: Authenticator = field(init=False)
    state: fsm.State = field(init=False)
    params: fsm.Params = field(init=False)
    timer_gen: int = 0  # fsm timer
    boot_gen: int = 0  # everything of one run (probe loop, pending answer)
    last_answer: float = float("-inf")
    answer_pending: bool = False
    accepted: int = 0
    rejected: dict[Drop, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boot(self.seed)

    def boot(self, seed: int) -> None:
        self.auth = Authenticator(KEY, randbytes=random.Random(seed).randbytes)
        self.state = fsm.State(priority=self.priority)
        self.params = fsm.Params(adver_int=1.0, address=self.addr)
        self.timer_gen += 1
        self.boot_gen += 1
        self.last_answer = float("-inf")
        self.answer_pending = False


class Sim:
    """Routers on one link; mirrors node._Router's use of fsm, validate and auth."""

    def __init__(self, routers: list[SimRouter], monkeypatch, unicast: bool = False) -> None:
        self.routers = routers
        self.unicast = unicast
        self.now = 0.0
        self.queue: list = []
        self.seq = itertools.count()
        self.running: SimRouter | None = None
        self.masters: list[tuple[float, int]] = []  # (time, number of masters) at changes
        self.recorded: list[tuple[bytes, ipaddress.IPv4Address, ipaddress.IPv4Address]] = []
        base = 1_800_000_000.0

        def wall() -> float:
            off = self.running.wall_offset if self.running else 0.0
            return base + self.now + off

        monkeypatch.setattr(time, "time", wall)
        monkeypatch.setattr(time, "time_ns", lambda: int(wall() * 1e9))

    def at(self, t: float, fn, *args) -> None:
        heapq.heappush(self.queue, (t, next(self.seq), fn, args))

    def run(self, until: float) -> None:
        while self.queue and self.queue[0][0] <= until:
            t, _, fn, args = heapq.heappop(self.queue)
            self.now = t
            fn(*args)
            n = sum(r.alive and r.state.role is fsm.Role.MASTER for r in self.routers)
            if not self.masters or self.masters[-1][1] != n:
                self.masters.append((t, n))
        self.now = until

    # ---- one router's code
    def enter(self, r: SimRouter):
        self.running = r
        return r

    def start(self, r: SimRouter) -> None:
        self.enter(r)
        r.alive = True
        self.dispatch(r, fsm.Startup())  # INIT -> BACKUP probes (see dispatch)
        self.at(self.now + r.params.adver_int, self.probe_tick, r, r.boot_gen)

    def stop(self, r: SimRouter) -> None:  # kill -9
        r.alive = False
        r.timer_gen += 1
        r.boot_gen += 1

    def dispatch(self, r: SimRouter, ev) -> None:
        r.state, acts = fsm.step(r.params, r.state, ev, self.now)
        for act in acts:
            if isinstance(act, fsm.SendAdvert):
                self.send(r, act.priority)
            elif act.new is fsm.Role.BACKUP:
                self.answer(r)
        r.timer_gen += 1
        deadline = fsm.next_deadline(r.state)
        if deadline is not None:
            self.at(deadline, self.tick, r, r.timer_gen)

    def tick(self, r: SimRouter, gen: int) -> None:
        if r.alive and gen == r.timer_gen:
            self.enter(r)
            self.dispatch(r, fsm.Tick())

    def probe_tick(self, r: SimRouter, gen: int) -> None:
        if r.alive and gen == r.boot_gen:
            self.enter(r)
            if r.state.role is fsm.Role.BACKUP and r.auth.has_unverified():
                self.answer(r)
            self.at(self.now + r.params.adver_int, self.probe_tick, r, gen)

    def answer(self, r: SimRouter) -> None:
        if r.answer_pending:
            return
        wait = r.last_answer + ANSWER_GAP - self.now
        if wait > 0:
            r.answer_pending = True
            self.at(self.now + wait, self.answer_now, r, r.boot_gen)
        else:
            self.answer_now(r, r.boot_gen)

    def answer_now(self, r: SimRouter, gen: int) -> None:
        if not r.alive or gen != r.boot_gen:
            return
        r.answer_pending = False
        if r.state.role not in (fsm.Role.BACKUP, fsm.Role.MASTER):
            return
        self.enter(r)
        r.last_answer = self.now
        probe = r.state.role is fsm.Role.BACKUP
        self.send(r, r.state.priority, probe=probe)

    def send(self, r: SimRouter, priority: int, probe: bool = False) -> None:
        peers = [p for p in self.routers if p is not r]
        dsts = [p.addr for p in peers] if self.unicast else [MCAST_V4]
        for dst in dsts:
            msg = encode(Advert(51, priority, 100, VIPS), r.addr, dst)
            pkt = r.auth.sign(r.addr, msg, probe=probe)
            self.recorded.append((pkt, r.addr, dst))
            for p in peers:
                if dst in (MCAST_V4, p.addr):
                    self.at(self.now + DELAY, self.receive, p, pkt, r.addr, dst)

    def receive(self, r: SimRouter, pkt: bytes, src, dst) -> None:
        if not r.alive:
            return
        self.enter(r)
        expect = Expect(
            vrid=51,
            family=4,
            addresses=frozenset(VIPS),
            adver_int=100,
            peers=frozenset(p.addr for p in self.routers if p is not r)
            if self.unicast
            else frozenset(),
            own=frozenset({r.addr}),
        )
        verdict = validate(pkt, src=src, dst=dst, ttl=255, expect=expect, auth=r.auth)
        if r.auth.take_answer():
            self.answer(r)
        if isinstance(verdict, Rejected):
            r.rejected[verdict.reason] = r.rejected.get(verdict.reason, 0) + 1
            return
        r.accepted += 1
        self.dispatch(r, fsm.Received(src, verdict))

    # ---- observations
    def master_counts_since(self, t: float) -> set[int]:
        before = [n for when, n in self.masters if when <= t]
        after = [n for when, n in self.masters if when > t]
        return set(before[-1:] + after)

    def longest(self, count_ok, since: float = 0.0) -> float:
        """The longest stretch after ``since`` with a number of masters not ``count_ok``."""
        worst = 0.0
        marks = [*self.masters, (self.now, -1)]
        for (t1, n), (t2, _) in itertools.pairwise(marks):
            if t2 > since and not count_ok(n):
                worst = max(worst, t2 - max(t1, since))
        return worst

    def masters_now(self) -> list[str]:
        return [r.name for r in self.routers if r.alive and r.state.role is fsm.Role.MASTER]


def pair(monkeypatch, unicast=False):
    r1 = SimRouter("r1", A, 200, seed=1)
    r2 = SimRouter("r2", B, 100, seed=2)
    sim = Sim([r1, r2], monkeypatch, unicast=unicast)
    sim.at(0.0, sim.start, r1)
    sim.at(0.3, sim.start, r2)
    sim.run(10.0)
    assert sim.masters_now() == ["r1"]
    return sim, r1, r2


STEPS = [1.0, -1.0, 20.0, -20.0, 86400.0, -86400.0]


@pytest.mark.parametrize("unicast", [False, True], ids=["multicast", "unicast"])
@pytest.mark.parametrize("who", [0, 1], ids=["master", "backup"])
@pytest.mark.parametrize("step", STEPS)
def test_clock_step_keeps_one_master(monkeypatch, step, who, unicast):
    sim, r1, r2 = pair(monkeypatch, unicast)
    stepped = (r1, r2)[who]
    accepted, rejected = r2.accepted, dict(r2.rejected)
    sim.at(10.5, setattr, stepped, "wall_offset", step)  # the clock jumps
    sim.at(30.5, setattr, stepped, "wall_offset", 0.0)  # and jumps back (NTP, an operator)
    sim.run(60.0)
    assert sim.master_counts_since(10.0) == {1}  # no split brain, no moment without a master
    assert sim.masters_now() == ["r1"]
    assert r2.accepted - accepted >= 49  # every advert of the 50 s was taken
    assert r2.rejected == rejected  # nothing refused since


@pytest.mark.parametrize("unicast", [False, True], ids=["multicast", "unicast"])
def test_restarted_backup_never_takes_over(monkeypatch, unicast):
    sim, _, r2 = pair(monkeypatch, unicast)
    sim.at(10.2, sim.stop, r2)
    sim.at(12.0, r2.boot, 22)
    sim.at(12.0, sim.start, r2)
    sim.run(30.0)
    assert sim.master_counts_since(10.0) == {1}
    assert sim.masters_now() == ["r1"]
    assert r2.state.role is fsm.Role.BACKUP and r2.state.master == A


@pytest.mark.parametrize("unicast", [False, True], ids=["multicast", "unicast"])
def test_restarted_master_fails_over_then_preempts_without_split_brain(monkeypatch, unicast):
    sim, r1, _ = pair(monkeypatch, unicast)
    sim.at(10.2, sim.stop, r1)
    sim.at(20.0, r1.boot, 11)
    sim.at(20.0, sim.start, r1)
    sim.run(19.9)
    assert sim.masters_now() == ["r2"]  # the backup took over
    sim.run(40.0)
    assert sim.masters_now() == ["r1"]  # the restarted higher priority preempted
    # Preemption hands over within one link delay; never two masters for longer.
    assert sim.longest(lambda n: n <= 1) <= 2 * DELAY


def test_restarted_master_comes_back_quickly_as_master(monkeypatch):
    """Killed and back before the backup noticed: r2 must verify its new epoch at once."""
    sim, r1, r2 = pair(monkeypatch)
    sim.at(10.23, sim.stop, r1)  # just after its advert of 10.22
    sim.at(10.3, r1.boot, 11)
    sim.at(10.3, sim.start, r1)
    sim.run(30.0)
    assert sim.masters_now() == ["r1"]
    # r1 is back as master on its own master-down timer (as without authentication); r2
    # verifies r1's new epoch from its first advert, so it never takes over: no split brain.
    assert sim.longest(lambda n: n <= 1) == 0.0
    assert r2.state.role is fsm.Role.BACKUP and r2.state.master == A


def test_both_restart_at_once(monkeypatch):
    sim, r1, r2 = pair(monkeypatch)
    sim.at(10.2, sim.stop, r1)
    sim.at(10.2, sim.stop, r2)
    sim.at(11.0, r1.boot, 11)
    sim.at(11.0, r2.boot, 22)
    sim.at(11.0, sim.start, r1)
    sim.at(11.0, sim.start, r2)
    sim.run(30.0)
    assert sim.masters_now() == ["r1"]
    assert sim.master_counts_since(16.0) == {1}


def test_router_alone_becomes_master_and_stays(monkeypatch):
    r1 = SimRouter("r1", A, 100, seed=1)
    sim = Sim([r1], monkeypatch)
    sim.at(0.0, sim.start, r1)
    sim.at(5.0, setattr, r1, "wall_offset", -86400.0)
    sim.run(20.0)
    assert sim.masters_now() == ["r1"]
    assert sim.master_counts_since(4.0) == {1}


def test_replays_from_older_epochs_change_nothing(monkeypatch):
    """An attacker on the link records r1 (master, priority 200) and, after r1 restarts and
    after r2 restarts, replays everything: r2 never accepts one of them."""
    sim, r1, r2 = pair(monkeypatch)
    sim.run(15.0)
    old = [(p, s, d) for p, s, d in sim.recorded if s == A]
    # r1 restarts with priority 50 this time, so an accepted replay (200) would show.
    sim.at(15.2, sim.stop, r1)
    r1.priority = 50
    sim.at(15.3, r1.boot, 11)
    sim.at(15.3, sim.start, r1)
    sim.run(25.0)
    assert sim.masters_now() == ["r2"]  # r2 (100) preempted the restarted r1 (50)
    accepted = r2.accepted
    for i, (pkt, src, dst) in enumerate(old):
        sim.at(25.0 + i * 0.001, sim.receive, r2, pkt, src, dst)
    sim.run(40.0)
    assert r2.accepted == accepted
    assert sim.masters_now() == ["r2"]
    assert sim.master_counts_since(25.0) == {1}
    # r2 restarts too: the recordings (now from two boots ago) are still refused.
    sim.at(40.0, sim.stop, r2)
    sim.at(40.1, r2.boot, 23)
    sim.at(40.1, sim.start, r2)
    sim.run(50.0)
    accepted = r2.accepted
    for i, (pkt, src, dst) in enumerate(old):
        sim.at(50.0 + i * 0.001, sim.receive, r2, pkt, src, dst)
    sim.run(60.0)
    assert r2.accepted == accepted
    assert sim.masters_now() == ["r2"]
    assert sim.master_counts_since(50.0) == {1}


def test_three_routers_on_multicast(monkeypatch):
    """Echoes for several peers in one packet: restarts and clock steps among three routers."""
    routers = [
        SimRouter("r1", A, 200, seed=1),
        SimRouter("r2", B, 150, seed=2),
        SimRouter("r3", C, 100, seed=3),
    ]
    r1, r2, r3 = routers
    sim = Sim(routers, monkeypatch)
    for i, r in enumerate(routers):
        sim.at(0.1 * i, sim.start, r)
    sim.run(10.0)
    assert sim.masters_now() == ["r1"]
    sim.at(10.5, setattr, r1, "wall_offset", -86400.0)
    sim.at(11.5, setattr, r3, "wall_offset", 20.0)
    sim.at(12.2, sim.stop, r2)
    sim.at(13.0, r2.boot, 22)
    sim.at(13.0, sim.start, r2)
    sim.at(15.2, sim.stop, r3)
    sim.at(15.3, r3.boot, 33)
    sim.at(15.3, sim.start, r3)
    sim.run(40.0)
    assert sim.master_counts_since(10.0) == {1}
    assert sim.masters_now() == ["r1"]
    assert r2.state.master == A and r3.state.master == A
