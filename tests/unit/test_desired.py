"""The wanted table from config, health and admin overrides."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pulsed.checks.state import RealHealth
from pulsed.config import parse_config
from pulsed.desired import wanted_table
from pulsed.model import Dest, DestKey, Forwarding, ServiceKey, Stats, Table
from pulsed.overrides import Override

CONFIG = parse_config(
    """
[[service]]
name = "web"
vip = "192.0.2.100"
port = 80
scheduler = "sh"
scheduler_flags = ["sh-port"]
persistence = "300s"
persistence_netmask = 24
on_failure = "remove"
sorry_server = "10.0.0.250:8080"
[[service.real]]
address = "10.0.0.2"
weight = 100
[[service.real]]
address = "10.0.0.3:8080"
weight = 50
forwarding = "dr"
upper_threshold = 10
"""
)
SVC = ServiceKey.for_address("tcp", "192.0.2.100", 80)
A = DestKey("10.0.0.2", 80)
B = DestKey("10.0.0.3", 8080)
UP = RealHealth(up=True)
DOWN = RealHealth(up=False, went_down_at=100.0)


def dests(wanted) -> dict[DestKey, Dest]:
    return wanted.table.get(SVC).dest_map()


def test_service_settings_come_from_config():
    svc = wanted_table(CONFIG, assume_healthy=True).table.get(SVC)
    assert (svc.scheduler, svc.flags, svc.timeout, svc.netmask) == ("sh", 0x10, 300, 24)
    assert svc.dest_map()[B] == Dest(
        "10.0.0.3", 8080, weight=50, forwarding=Forwarding.DR, upper_threshold=10
    )


def test_servers_without_health_yet_are_not_sent_traffic():
    wanted = wanted_table(CONFIG, health={})
    # Never up, on_failure=remove: not added at all; the sorry server stands in.
    assert set(dests(wanted)) == {DestKey("10.0.0.250", 8080)}
    assert wanted.pools[SVC].sorry_in_use


def test_healthy_servers_get_configured_weights_and_no_sorry_server():
    wanted = wanted_table(CONFIG, health={(SVC, A): UP, (SVC, B): UP})
    assert {k: d.weight for k, d in dests(wanted).items()} == {A: 100, B: 50}


def test_drain_pins_weight_to_zero_and_disable_removes():
    health = {(SVC, A): UP, (SVC, B): UP}
    overrides = {(SVC, A): Override(mode="drain"), (SVC, B): Override(mode="disable")}
    wanted = wanted_table(CONFIG, health=health, overrides=overrides)
    assert {k: d.weight for k, d in dests(wanted).items()} == {
        A: 0,
        DestKey("10.0.0.250", 8080): 1,  # nothing serves: the sorry server is used
    }


def test_weight_override_replaces_configured_weight():
    health = {(SVC, A): UP, (SVC, B): UP}
    wanted = wanted_table(CONFIG, health=health, overrides={(SVC, B): Override(weight=7)})
    assert dests(wanted)[B].weight == 7


def test_failed_server_drains_while_connections_remain_then_goes():
    health = {(SVC, A): UP, (SVC, B): DOWN}
    busy = Table.of(
        [
            replace(
                wanted_table(CONFIG, assume_healthy=True).table.get(SVC),
            )
        ]
    )
    svc = busy.get(SVC)
    with_conns = replace(
        svc,
        dests=tuple(replace(d, stats=Stats(active_connections=3)) for d in svc.dests),
    )
    draining = wanted_table(CONFIG, health=health, actual=Table.of([with_conns]), now=110.0)
    assert dests(draining)[B].weight == 0
    assert draining.next_change_at == 160.0  # went down at 100 + drain_timeout 60s
    idle = replace(svc, dests=tuple(replace(d, stats=Stats()) for d in svc.dests))
    gone = wanted_table(CONFIG, health=health, actual=Table.of([idle]), now=110.0)
    assert B not in dests(gone)


# The same pool with slow start and min_healthy, which read when servers went up and down.
RAMPING = parse_config(
    """
[[service]]
name = "web"
vip = "192.0.2.100"
port = 80
slow_start = "60s"
min_healthy = 1
[[service.real]]
address = "10.0.0.2"
weight = 100
[[service.real]]
address = "10.0.0.3:8080"
weight = 50
"""
)


@pytest.mark.parametrize("config", [CONFIG, RAMPING], ids=["remove-sorry", "slow-start"])
def test_memo_gives_the_same_table_as_a_fresh_computation(config):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from pulsed.desired import WantedMemo

    # Records that differ only in what the plan does not read (check time,
    # latency, reason) as well as in what it does (went up or down when).
    states = st.sampled_from(
        [
            UP,
            DOWN,
            RealHealth(up=True, weight_pct=50),
            None,
            RealHealth(up=True, last_check=5.0, latency=0.001, reason="ok"),
            RealHealth(up=True, went_up_at=20.0),
            RealHealth(up=True, went_up_at=20.0, last_check=9.0),
            RealHealth(up=False, went_down_at=100.0, last_check=7.0, reason="timeout"),
            RealHealth(up=False, went_down_at=300.0),
            RealHealth(up=False, last_ok=False, reason="connect refused"),
        ]
    )
    modes = st.sampled_from([None, Override(mode="drain"), Override(weight=3)])
    steps = st.lists(st.tuples(states, states, modes, st.sampled_from([0.0, 120.0, 500.0])))

    @settings(max_examples=300, deadline=None)
    @given(steps)
    def check(sequence):
        memo = WantedMemo()
        clock = 0.0
        for health_a, health_b, override, step in sequence:
            now = clock = max(clock, step)  # monotonic time never goes back
            health = {k: h for k, h in (((SVC, A), health_a), ((SVC, B), health_b)) if h}
            overrides = {(SVC, A): override} if override else {}
            fresh = wanted_table(config, health=health, overrides=overrides, now=now)
            cached = wanted_table(config, health=health, overrides=overrides, now=now, memo=memo)
            assert cached.table == fresh.table
            assert cached.pools == fresh.pools

    check()


def test_memo_keeps_the_dest_objects_of_servers_that_did_not_change():
    from pulsed.desired import WantedMemo

    memo = WantedMemo()  # RAMPING quiesces a failed server: it stays, at weight 0
    before = wanted_table(RAMPING, health={(SVC, A): UP, (SVC, B): UP}, memo=memo)
    after = wanted_table(RAMPING, health={(SVC, A): DOWN, (SVC, B): UP}, memo=memo)
    assert dests(after)[A] != dests(before)[A]
    assert dests(after)[B] is dests(before)[B]
    # Only what the plan does not read changed: the very same service and plan.
    checked = replace(UP, last_check=50.0, latency=0.002)
    again = wanted_table(RAMPING, health={(SVC, A): DOWN, (SVC, B): checked}, memo=memo)
    assert again.table.get(SVC) is after.table.get(SVC)
    assert again.pools[SVC] is after.pools[SVC]
