"""Many instances per router, pulsed beside pulsed (100 ms adverts): a sync group moves
together, reloads move nothing they need not (counted from the peer's events and from
status), initial_state master. Needs root."""

import os
import subprocess

import pytest

from tests.support.ha_instances import (
    VIP_A,
    VIP_B,
    VIP_C,
    applied,
    became,
    by_name,
    instance,
    reload,
    role_events,
    start_pulsed,
    write_pulsed,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]


def pair_of(lab, i, priority, **kw):
    return [
        instance(lab, i, "VI_1", 51, VIP_A, priority=priority, **kw),
        instance(lab, i, "VI_2", 52, VIP_B, priority=priority),
    ]


async def test_sync_group_moves_together_when_one_interface_goes_down(lab):
    ns = lab.routers[0]
    # A second link of router 1 (a veth pair inside its namespace) that VI_1 tracks.
    ip = ["ip", "-n", ns, "link"]
    subprocess.run([*ip, "add", "trk0", "type", "veth", "peer", "name", "trk0p"], check=True)
    subprocess.run([*ip, "set", "trk0p", "up"], check=True)
    subprocess.run([*ip, "set", "trk0", "up"], check=True)
    group = [{"name": "G1", "instances": ["VI_1", "VI_2"]}]
    track = {"track_interfaces": [{"interface": "trk0"}]}
    r1 = await start_pulsed(lab, 0, write_pulsed(lab, 0, pair_of(lab, 0, 200, **track), group))
    await r1.wait_event(applied("VI_1", "master"))
    await r1.wait_event(applied("VI_2", "master"))
    r2 = await start_pulsed(lab, 1, write_pulsed(lab, 1, pair_of(lab, 1, 100), group))
    await r2.wait_event(applied("VI_2", "backup"))
    await r1.wait_event(lambda e: e.get("event") == "group" and e["new"] == "master")
    mark = len(r1.events)
    subprocess.run(["ip", "-n", ns, "link", "set", "trk0", "down"], check=True)
    await r1.wait_event(became("VI_1", "fault", "interface trk0 down"), start=mark)
    await r1.wait_event(became("VI_2", "fault", "sync group G1: VI_1 in fault"), start=mark)
    await r1.wait_event(lambda e: e.get("event") == "group" and e["new"] == "fault", start=mark)
    await lab.wait_for(lambda: lab.holders(VIP_A) == [1] and lab.holders(VIP_B) == [1])
    st = r1.status()
    assert by_name(st, "VI_2")["faults"] == ["sync group G1: VI_1 in fault"]
    assert by_name(st, "VI_2")["priority_zero_sent"] == 1  # the peer took over at once
    assert st["groups"] == [{"name": "G1", "state": "fault", "instances": ["VI_1", "VI_2"]}]
    # Back up: both come back together and preempt the peer.
    mark = len(r1.events)
    subprocess.run(["ip", "-n", ns, "link", "set", "trk0", "up"], check=True)
    await r1.wait_event(became("VI_1", "master"), start=mark)
    await r1.wait_event(became("VI_2", "master"), start=mark)
    await lab.wait_for(lambda: lab.holders(VIP_A) == [0] and lab.holders(VIP_B) == [0])


async def test_reloads_move_nothing_untouched(lab):
    conf = write_pulsed(lab, 0, pair_of(lab, 0, 200))
    r1 = await start_pulsed(lab, 0, conf)
    await r1.wait_event(applied("VI_1", "master"))
    await r1.wait_event(applied("VI_2", "master"))
    r2 = await start_pulsed(lab, 1, write_pulsed(lab, 1, pair_of(lab, 1, 100)))
    await r2.wait_event(applied("VI_1", "backup"))
    await r2.wait_event(applied("VI_2", "backup"))
    peer_mark = len(r2.events)
    before = {n: by_name(r1.status(), n)["transitions"] for n in ("VI_1", "VI_2")}

    def unmoved():
        assert lab.holders(VIP_A) == [0] and lab.holders(VIP_B) == [0]
        for n in ("VI_1", "VI_2"):
            assert role_events(r2, n, peer_mark) == []
            assert by_name(r1.status(), n)["transitions"] == before[n]

    steps = [
        # a priority change (still above the peer's), GARP settings, advert interval
        [
            instance(lab, 0, "VI_1", 51, VIP_A, priority=190, garp_count=5, garp_refresh="1s"),
            instance(lab, 0, "VI_2", 52, VIP_B, priority=200, garp_interval="20ms"),
        ],
        # an instance added
        [
            *pair_of(lab, 0, 200),
            instance(lab, 0, "VI_3", 53, VIP_C, priority=200),
        ],
        # and removed again
        pair_of(lab, 0, 200),
    ]
    for n, instances in enumerate(steps):
        await reload(r1, write_pulsed(lab, 0, instances, tag=f".{n}"), conf)
        if n == 1:
            await r1.wait_event(applied("VI_3", "master"))
            await lab.wait_for(lambda: lab.holders(VIP_C) == [0])
        if n == 2:
            await r1.wait_event(applied("VI_3", "init"))
            assert lab.holders(VIP_C) == []
        # a few master-down intervals of the peer, watching
        sent = by_name(r1.status(), "VI_1")["adverts_sent"]
        await lab.wait_for(lambda s=sent: by_name(r1.status(), "VI_1")["adverts_sent"] >= s + 8)
        unmoved()
    st = by_name(r1.status(), "VI_1")
    assert st["priority"] == 200 and st["effective_priority"] == 200


async def test_reload_adds_and_removes_vips_of_a_master(lab):
    conf = write_pulsed(lab, 0, [instance(lab, 0, "VI_1", 51, VIP_A, priority=200)])
    r1 = await start_pulsed(lab, 0, conf)
    await r1.wait_event(applied("VI_1", "master"))
    new = instance(lab, 0, "VI_1", 51, VIP_A, priority=200)
    new["virtual_addresses"] = [f"{VIP_B}/24", f"{VIP_C}/24"]
    await reload(r1, write_pulsed(lab, 0, [new], tag=".b"), conf)
    await lab.wait_for(lambda: set(lab.vips(0)) == {VIP_B, VIP_C})
    want = [f"{VIP_B}/24", f"{VIP_C}/24"]
    await lab.wait_for(lambda: r1.status()["vips"] == want)  # the status file lags a little
    st = r1.status()
    assert st["transitions"] == 2 and st["state"] == "master"


async def test_initial_state_master_starts_master_then_yields(lab):
    r2 = await start_pulsed(lab, 1, write_pulsed(lab, 1, [instance(lab, 1, "VI_1", 51, VIP_A,
                                                                   priority=200)]))  # fmt: skip
    await r2.wait_event(applied("VI_1", "master"))
    alone = instance(lab, 0, "VI_1", 51, VIP_A, priority=50, initial_state="master")
    r1 = await start_pulsed(lab, 0, write_pulsed(lab, 0, [alone]))
    first = await r1.wait_event(lambda e: e.get("event") == "role")
    assert first["new"] == "master" and first["reason"] == "initial_state master"
    await r1.wait_event(became("VI_1", "backup", "higher-priority master"))
    await lab.wait_for(lambda: lab.holders(VIP_A) == [1])
