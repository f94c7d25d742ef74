"""Upgrades and crashes of the real daemon with VRRP, in namespaces (docs/operations.md,
"Upgrades and crashes"): an upgrade of the master moves no VIP, and a router whose
pulsed died keeps none once the unit's ExecStopPost command ran."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from lab.ha_pair import VIP, HaPair, netns_exec, sh
from lab.upgrade_stand import REPO, UpgradeStand

UNIT = Path(REPO) / "systemd" / "pulsed.service"


@pytest.fixture
async def single():
    lab = HaPair(routers=1).create()
    try:
        yield lab
    finally:
        await lab.close()


def _addresses(ns: str) -> set[tuple[str, str]]:
    out = json.loads(sh("ip", "-n", ns, "-j", "addr", "show").stdout)
    return {
        (link["ifname"], f"{a['local']}/{a['prefixlen']}")
        for link in out
        for a in link.get("addr_info", [])
    }


def _stop_post_argv(config: str) -> list[str]:
    """The unit's ExecStopPost command, with this checkout's pulsed and the test's config."""
    line = next(x for x in UNIT.read_text().splitlines() if x.startswith("ExecStopPost="))
    argv = line.split("=", 1)[1].split()
    assert argv[:2] == ["/usr/bin/pulsed", "release-vips"], line
    assert argv[2:] == ["-c", "/etc/pulsed/pulsed.toml"], line
    return [sys.executable, "-m", "pulsed.cli", "release-vips", "-c", config]


async def test_kill_9_then_the_units_stop_command_leaves_no_vip(single):
    lab = single
    ns, ifname = lab.routers[0], lab.ifname(0)
    # Addresses that are not VIPs, and a VIP's address on another interface: all stay.
    sh("ip", "-n", ns, "addr", "add", "198.51.100.7/24", "dev", ifname)
    sh("ip", "-n", ns, "addr", "add", "203.0.113.5/32", "dev", "lo")
    stand = UpgradeStand(lab)
    with open(stand.config, "w") as f:
        f.write(stand.daemon_config().replace(
            f'virtual_addresses = ["{VIP}/24"]',
            f'virtual_addresses = ["{VIP}/24", "203.0.113.5/32"]',
        ))  # fmt: skip
    before = _addresses(ns)
    proc = await asyncio.create_subprocess_exec(
        *netns_exec(ns, sys.executable, "-m", "pulsed.cli", "run", "-c", stand.config,
                    "--backend", "memory"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, cwd=REPO,
    )  # fmt: skip
    try:
        await lab.wait_for(lambda: (ifname, f"{VIP}/24") in _addresses(ns), timeout=20)
        await lab.wait_for(lambda: (ifname, "203.0.113.5/32") in _addresses(ns), timeout=5)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # ip netns exec execs: this is pulsed itself
        await proc.wait()
    # keepalived's flaw, reproduced: after kill -9 the VIPs are still on the interface.
    assert (ifname, f"{VIP}/24") in _addresses(ns)
    argv = _stop_post_argv(stand.config)
    out = sh(*netns_exec(ns, *argv))
    assert sorted(out.stdout.splitlines()) == sorted(
        [f"removed {VIP}/24 from {ifname}", f"removed 203.0.113.5/32 from {ifname}"]
    )
    after = _addresses(ns)
    assert (ifname, f"{VIP}/24") not in after
    assert (ifname, "203.0.113.5/32") not in after
    assert after == before  # every other address stays, lo's 203.0.113.5/32 too
    # Run again (as after a graceful stop): nothing to remove, still success.
    again = sh(*netns_exec(ns, *argv))
    assert again.returncode == 0 and again.stdout == ""


async def test_upgrade_of_the_master_moves_no_vip(lab):
    stand = UpgradeStand(lab)
    try:
        await stand.start()
        outcome = await stand.upgrade()
        print(outcome)
        assert outcome.ok, outcome.output + "\n" + "\n".join(stand.daemon.lines[-40:])
        assert outcome.new_pid and outcome.new_pid != outcome.old_pid
        # The peer never became master and never announced the VIP.
        assert outcome.peer_transitions == 0
        assert outcome.peer_garps == 0
        # The observer saw the master's adverts all along, never a gap the peer would act on.
        assert outcome.master_adverts > 10
        assert outcome.longest_advert_gap < outcome.master_down_interval
        # The VIP never left router 1.
        assert outcome.no_owner == 0.0 and outcome.samples > 50
        assert lab.holders() == [0]
        assert stand.peer is not None and stand.peer.role() == "backup"
        # The new process adopted the role (it did not start as backup and preempt).
        adopted = [
            e
            for e in stand.daemon.events
            if e.get("event") == "vrrp.started" and e.get("adopted") == "master"
        ]
        assert len(adopted) == 1, stand.daemon.lines[-40:]
        # A second upgrade, from the new process, holds as well.
        second = await stand.upgrade()
        assert second.ok and second.peer_transitions == 0 and second.no_owner == 0.0
        assert second.longest_advert_gap < second.master_down_interval
        assert re.search(r"handed over to pid \d+", second.output)
    finally:
        stand.kill_all()
