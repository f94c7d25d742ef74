"""Two pulsed routers with HMAC authentication: clock steps and restarts never give a split
brain or lose the master (issue 12, deliverable 7). Needs root.

Each router's wall clock is stepped inside its process (lab/ha_pair.py ``stepped``:
every time.time()/time_ns() moves; CLOCK_REALTIME itself is not namespaced). A split brain
or a lost master would show as a role change (the routers report each one) and as a second
or missing holder of the VIP in the kernel (``lab.holders()``).
"""

import os
import signal

import pytest

from lab.ha_pair import applied, became

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

STEPS = [1.0, -1.0, 20.0, -20.0, 86400.0, -86400.0, 0.0]


def roles(proc, start):
    return [(e["old"], e["new"], e["reason"]) for e in proc.events[start:] if e["event"] == "role"]


def key_file(tmp_path):
    key = tmp_path / "vrrp.key"
    key.write_text("pha-shared-secret-0123456789\n")
    key.chmod(0o600)
    return {"auth": {"key_file": str(key)}}


async def auth_pair(lab, tmp_path, unicast):
    common = key_file(tmp_path)
    peers = (
        [{"unicast_peers": [lab.addr(1)]}, {"unicast_peers": [lab.addr(0)]}]
        if unicast
        else [
            {},
            {},
        ]
    )
    r1 = await lab.start_pulsed(0, priority=200, steppable_clock=True, **common, **peers[0])
    r2 = await lab.start_pulsed(1, priority=100, steppable_clock=True, **common, **peers[1])
    await r1.wait_event(applied("master"))
    await r2.wait_event(applied("backup"))
    await lab.wait_for(lambda: lab.holders() == [0])
    return r1, r2, common, peers


@pytest.mark.parametrize("unicast", [False, True], ids=["multicast", "unicast"])
@pytest.mark.parametrize("who", [0, 1], ids=["master", "backup"])
async def test_clock_steps_on_either_router(lab, tmp_path, who, unicast):
    r1, r2, _, _ = await auth_pair(lab, tmp_path, unicast)
    marks = (len(r1.events), len(r2.events))
    drops_before = r2.status()["drops"]
    stepped = (r1, r2)[who]
    for offset in STEPS:  # +1 s, then 2 s back, 21 s forward, ... , 1 day back to real time
        await stepped.step_clock(offset)
        seen = r2.status()["adverts_received"]

        def settled(seen=seen):
            # Five more adverts of the master taken by the backup after the step, or a role
            # change (which fails below with what happened).
            changed = roles(r1, marks[0]) or roles(r2, marks[1])
            return changed or r2.status()["adverts_received"] >= seen + 5

        await lab.wait_for(settled)
        assert roles(r1, marks[0]) == [], offset  # the master never stepped down
        assert roles(r2, marks[1]) == [], offset  # the backup never took over
        assert lab.holders() == [0], offset
    assert r2.status()["drops"] == drops_before  # not one advert refused
    assert r1.status()["state"] == "master" and r2.status()["state"] == "backup"


async def test_restarted_backup_never_takes_over(lab, tmp_path):
    r1, r2, common, _ = await auth_pair(lab, tmp_path, unicast=False)
    mark = len(r1.events)
    r2.kill(signal.SIGKILL)
    await r2.wait()
    r2b = await lab.start_pulsed(1, priority=100, steppable_clock=True, **common)
    await r2b.wait_event(applied("backup"))
    # Its new epoch is verified by a probe / answer exchange well inside its master-down time.
    await lab.wait_for(lambda: r2b.status()["adverts_received"] >= 10)
    assert roles(r2b, 0) == [("init", "backup", "startup")]
    assert roles(r1, mark) == []
    assert lab.holders() == [0]
    assert r2b.status()["probes_sent"] >= 1


@pytest.mark.parametrize(("ahead", "after"), [(1.0, -1.0), (20.0, 0.0), (86400.0, 0.0)])
async def test_master_restarts_after_its_clock_ran_ahead(lab, tmp_path, ahead, after):
    """The issue's case: the master's adverts went out with its clock ahead, then it restarted
    with its clock put right (``after``; for the 1 s case the step back is 2 s, because a
    restart takes most of a second). The wall-clock sequence made the backup refuse the
    restarted master until real time caught up (both held the VIP). Epochs and counters: the
    backup verifies the new epoch and steps down at the first advert, with no replay drop."""
    r1, r2, common, _ = await auth_pair(lab, tmp_path, unicast=False)
    await r1.step_clock(ahead)
    seen = r2.status()["adverts_received"]
    await lab.wait_for(lambda: r2.status()["adverts_received"] >= seen + 5)
    mark = len(r2.events)
    r1.kill(signal.SIGKILL)
    await r1.wait()
    await r2.wait_event(applied("master"), start=mark)  # the crash is a real failover
    r1b = await lab.start_pulsed(
        0, priority=200, steppable_clock=True, clock_offset=after, **common
    )
    await r1b.wait_event(applied("master"))
    await r2.wait_event(became("backup", "higher-priority master"), start=mark)
    await lab.wait_for(lambda: lab.holders() == [0])
    seen = r2.status()["adverts_received"]
    await lab.wait_for(lambda: r2.status()["adverts_received"] >= seen + 5)
    assert r2.status()["drops"]["replay"] == 0
    assert lab.holders() == [0] and r2.status()["state"] == "backup"
