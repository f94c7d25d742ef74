"""The daemon's reload path end to end (``pulsed run --backend memory`` and SIGHUP, not
``python -m pulsed.ha``): a master with two instances beside a pulsed peer; a priority
change of one instance, a GARP change, an instance added and removed move nothing else,
as the peer's role events and the daemon's /status (``vrrp``, per-instance
``transitions``) show. Needs root; touches only the lab's namespaces."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from lab.ha_pair import HaPair, toml_value
from tests.support.ha_instances import (
    VIP_A,
    VIP_B,
    VIP_C,
    applied,
    instance,
    role_events,
    start_pulsed,
    write_pulsed,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

STATUS = "http://127.0.0.1:9480/status"


def daemon_text(lab: HaPair, instances: list[dict]) -> str:
    text = (
        f'service = []\n\n[daemon]\nstate_dir = "{lab.dir}/r1-state"\n\n'
        '[api]\nlisten = "127.0.0.1:9480"\nstatus_refresh = "100ms"\n'
    )
    for inst in instances:
        text += "\n[[vrrp]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in inst.items())
    return text


def vrrp_status(lab: HaPair) -> dict[str, dict]:
    return {v["name"]: v for v in lab.http_get(0, STATUS)["vrrp"]}


async def until(cond, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await asyncio.to_thread(cond):
            await asyncio.sleep(0.1)


async def test_daemon_reloads_move_no_untouched_instance(lab):
    two = [
        instance(lab, 0, "VI_1", 51, VIP_A, priority=200),
        instance(lab, 0, "VI_2", 52, VIP_B, priority=200),
    ]
    daemon = await lab.start_daemon(0, daemon_text(lab, two))
    await lab.wait_for(lambda: lab.holders(VIP_A) == [0] and lab.holders(VIP_B) == [0], 20)
    peer_conf = write_pulsed(lab, 1, [
        instance(lab, 1, "VI_1", 51, VIP_A, priority=100),
        instance(lab, 1, "VI_2", 52, VIP_B, priority=100),
    ])  # fmt: skip
    peer = await start_pulsed(lab, 1, peer_conf)
    await peer.wait_event(applied("VI_1", "backup"))
    await peer.wait_event(applied("VI_2", "backup"))
    await until(lambda: {n: s["role"] for n, s in vrrp_status(lab).items()} ==
                {"VI_1": "master", "VI_2": "master"})  # fmt: skip
    peer_mark = len(peer.events)
    before = {n: s["transitions"] for n, s in vrrp_status(lab).items()}
    print("transitions before the reloads:", before)

    steps = [
        (
            "priority of VI_1 200 -> 190, GARP of VI_2",
            [
                instance(lab, 0, "VI_1", 51, VIP_A, priority=190),
                instance(
                    lab,
                    0,
                    "VI_2",
                    52,
                    VIP_B,
                    priority=200,
                    garp_count=5,
                    garp_interval="20ms",
                    garp_refresh="1s",
                ),
            ],
        ),
        ("VI_3 added", [*two, instance(lab, 0, "VI_3", 53, VIP_C, priority=200)]),
        ("VI_3 removed", two),
    ]
    for label, instances in steps:
        mark = len(daemon.events)
        path = lab.daemon_config_path(0)
        with open(path + ".new", "w") as f:
            f.write(daemon_text(lab, instances))
        os.replace(path + ".new", path)
        daemon.kill(signal.SIGHUP)
        await daemon.wait_event(lambda e: e.get("event") == "reload.applied", start=mark)
        await daemon.wait_event(lambda e: e.get("event") == "reload.vrrp_reconfigured", start=mark)
        if label == "VI_3 added":
            await lab.wait_for(lambda: lab.holders(VIP_C) == [0], 10)
        if label == "VI_3 removed":
            await lab.wait_for(lambda: lab.holders(VIP_C) == [], 10)
            await until(lambda: "VI_3" not in vrrp_status(lab))
        if label.startswith("priority"):
            await until(lambda: vrrp_status(lab)["VI_1"]["priority"] == 190)
        # Watch for several of the peer's master-down intervals (360.9 ms each).
        await asyncio.sleep(1.5)
        now = vrrp_status(lab)
        print(label, {n: (s["role"], s["transitions"]) for n, s in now.items()})
        for name in ("VI_1", "VI_2"):
            assert role_events(peer, name, peer_mark) == [], (label, name)
            assert now[name]["role"] == "master", (label, name)
            assert now[name]["transitions"] == before[name], (label, name)
        assert lab.holders(VIP_A) == [0] and lab.holders(VIP_B) == [0], label
    assert vrrp_status(lab)["VI_2"]["priority"] == 200
