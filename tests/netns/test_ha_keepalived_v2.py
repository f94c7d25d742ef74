"""Interop with Debian's keepalived 2.2.7 as a stock config has it: no vrrp_version (VRRPv2),
PASS authentication, 1 s adverts; pulsed runs ``version = 2``. Also: a v3 pulsed beside a v2
keepalived says so (once per peer), and active-active across the two. Needs root."""

import os
import signal

import pytest

from lab.ha_pair import KEEPALIVED
from tests.support.ha_instances import (
    VIP_A,
    VIP_B,
    applied,
    became,
    by_name,
    instance,
    keepalived_instance,
    start_keepalived,
    start_pulsed,
    write_pulsed,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not os.path.exists(KEEPALIVED), reason="keepalived not installed"),
]


def v2(lab, i, name="VI_1", vrid=51, vip=VIP_A, **kw):
    kw.setdefault("priority", 100)
    return instance(
        lab, i, name, vrid, vip, version=2, advert_interval="1s", auth={"password": "1234"}, **kw
    )


def kv2(lab, i, priority, name="VI_1", vrid=51, vip=VIP_A, **kw):
    return keepalived_instance(name, vrid, priority, vip, interface=lab.ifname(i), **kw)


def no_drops(st):
    return {k: v for k, v in st["drops"].items() if v}


async def test_keepalived_master_pulsed_v2_backup_then_crash(lab):
    await start_keepalived(lab, 1, [kv2(lab, 1, 200)])
    await lab.wait_for(lambda: VIP_A in lab.vips(1), timeout=15)
    r1 = await start_pulsed(lab, 0, write_pulsed(lab, 0, [v2(lab, 0, priority=100)]))
    await r1.wait_event(applied("VI_1", "backup"))
    await lab.wait_for(lambda: r1.status()["adverts_received"] >= 5, timeout=15)
    st = r1.status()
    assert st["state"] == "backup" and st["master"] == lab.addr(1) and st["version"] == 2
    assert st["master_advert_interval"] == 1.0
    assert no_drops(st) == {}
    assert lab.holders(VIP_A) == [1]
    # kill -9 of keepalived: pulsed takes over after the master-down interval.
    lab.crash_keepalived(1)
    await r1.wait_event(became("VI_1", "master", "master_down"), timeout=15)
    await lab.wait_for(lambda: VIP_A in lab.vips(0))


async def test_pulsed_v2_master_keepalived_backup_then_crash(lab):
    r1 = await start_pulsed(lab, 0, write_pulsed(lab, 0, [v2(lab, 0, priority=200)]))
    await r1.wait_event(applied("VI_1", "master"), timeout=15)
    await start_keepalived(lab, 1, [kv2(lab, 1, 100)])
    # keepalived hears our v2 adverts and stays backup for several master-down intervals.
    sent = r1.status()["adverts_sent"]
    await lab.wait_for(lambda: r1.status()["adverts_sent"] >= sent + 6, timeout=15)
    assert lab.holders(VIP_A) == [0]
    assert r1.status()["adverts_received"] == 0  # keepalived never spoke
    r1.kill(signal.SIGKILL)
    await lab.wait_for(lambda: VIP_A in lab.vips(1), timeout=15)


async def test_pulsed_v2_preempts_keepalived(lab):
    await start_keepalived(lab, 1, [kv2(lab, 1, 100)])
    await lab.wait_for(lambda: VIP_A in lab.vips(1), timeout=15)
    r1 = await start_pulsed(lab, 0, write_pulsed(lab, 0, [v2(lab, 0, priority=200)]))
    await r1.wait_event(became("VI_1", "master", "preempting lower-priority master"), timeout=15)
    await lab.wait_for(lambda: lab.holders(VIP_A) == [0], timeout=15)
    sent = r1.status()["adverts_sent"]
    await lab.wait_for(lambda: r1.status()["adverts_sent"] >= sent + 4, timeout=15)
    assert lab.holders(VIP_A) == [0] and r1.role() == "master"


async def test_keepalived_preempts_pulsed_v2(lab):
    r1 = await start_pulsed(lab, 0, write_pulsed(lab, 0, [v2(lab, 0, priority=100)]))
    await r1.wait_event(applied("VI_1", "master"), timeout=15)
    await start_keepalived(lab, 1, [kv2(lab, 1, 200)])
    await r1.wait_event(became("VI_1", "backup", f"higher-priority master {lab.addr(1)}"), 15)
    await lab.wait_for(lambda: lab.holders(VIP_A) == [1], timeout=15)
    assert no_drops(r1.status()) == {}


async def test_v3_pulsed_beside_v2_keepalived_says_what_to_do(lab):
    await start_keepalived(lab, 1, [kv2(lab, 1, 200)])
    # Slow v3 adverts: keepalived postpones its own advert timer on every packet it receives,
    # even one it drops, so 100 ms adverts would silence it after its first.
    v3 = instance(lab, 0, "VI_1", 51, VIP_A, priority=100, advert_interval="3s")
    r1 = await start_pulsed(lab, 0, write_pulsed(lab, 0, [v3]))
    await lab.wait_for(lambda: r1.status()["version_mismatches"] >= 3, timeout=20)
    st = r1.status()
    assert st["version_mismatch"] == (
        f"peer {lab.addr(1)} sends VRRPv2 adverts on VRID 51 (instance VI_1 is version 3):"
        " set version = 2 here, or vrrp_version 3 on the keepalived side"
    )
    assert st["drops"]["version"] == st["version_mismatches"]
    with open(r1.log) as f:
        warnings = [line for line in f if "vrrp.version_mismatch" in line]
    assert len(warnings) == 1  # once per peer, however many adverts


async def test_active_active_split_then_one_router_dies(lab):
    # pulsed is master of VI_1, keepalived of VI_2; after keepalived dies pulsed holds both.
    conf = write_pulsed(
        lab,
        0,
        [
            v2(lab, 0, "VI_1", 51, VIP_A, priority=200),
            v2(lab, 0, "VI_2", 52, VIP_B, priority=100),
        ],
    )
    await start_keepalived(
        lab, 1, [kv2(lab, 1, 100, "VI_1", 51, VIP_A), kv2(lab, 1, 200, "VI_2", 52, VIP_B)]
    )
    r1 = await start_pulsed(lab, 0, conf)
    await lab.wait_for(lambda: lab.holders(VIP_A) == [0] and lab.holders(VIP_B) == [1], timeout=15)
    await lab.wait_for(lambda: by_name(r1.status(), "VI_2")["adverts_received"] >= 4, 15)
    st = r1.status()
    assert by_name(st, "VI_1")["state"] == "master" and by_name(st, "VI_2")["state"] == "backup"
    assert lab.holders(VIP_A) == [0] and lab.holders(VIP_B) == [1]
    lab.crash_keepalived(1)
    await r1.wait_event(became("VI_2", "master"), timeout=15)
    await lab.wait_for(lambda: {VIP_A, VIP_B} <= set(lab.vips(0)))
    assert by_name(r1.status(), "VI_1")["transitions"] == 2  # init->backup->master, no more
