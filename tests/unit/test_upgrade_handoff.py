"""The upgrade hand-off file and the old process's side of an upgrade (pulsed.handoff,
pulsed.upgrade): what is trusted, what is refused, and that a failing new process is
killed and leaves no hand-off behind."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest

from pulsed import handoff, upgrade
from pulsed.handoff import InstanceRole, take_handoff, write_handoff

ROLES = {
    "VI_1": InstanceRole(role="master", vips_held=True),
    "VI_2": InstanceRole(role="backup", vips_held=False),
    "VI_3": InstanceRole(role="fault", vips_held=False),
    "VI_4": InstanceRole(role="master", vips_held=False),
}


def test_round_trip_and_adopt(tmp_path):
    path = write_handoff(tmp_path, ROLES, now=1000.0, pid=42)
    doc, why = take_handoff(path, writer=42, now=1001.0)
    assert why == "" and doc is not None
    # Master only where the VIPs are held; fault instances start as usual.
    assert doc.adopt() == {"VI_1": "master", "VI_2": "backup"}
    assert not path.exists()  # read once
    assert take_handoff(path, writer=42, now=1001.0)[0] is None


@pytest.mark.parametrize(
    ("now", "writer", "reason"),
    [
        (1010.0, 42, "old"),
        (990.0, 42, "future"),
        (1001.0, 43, "written by pid 42"),
    ],
)
def test_stale_or_foreign_is_refused_and_removed(tmp_path, now, writer, reason):
    path = write_handoff(tmp_path, ROLES, now=1000.0, pid=42)
    doc, why = take_handoff(path, writer=writer, now=now)
    assert doc is None and reason in why
    assert not path.exists()


def test_corrupt_is_moved_aside(tmp_path):
    path = handoff.handoff_path(tmp_path)
    path.write_text(json.dumps({"version": 1, "written_at": "soon", "pid": 1, "instances": {}}))
    doc, why = take_handoff(path, writer=1)
    assert doc is None and "no usable" in why
    assert [p.name.startswith("handoff.json.corrupt-") for p in tmp_path.iterdir()] == [True]


def test_unknown_role_or_version_is_corrupt(tmp_path):
    path = handoff.handoff_path(tmp_path)
    bad = {"version": 1, "written_at": 1.0, "pid": 1, "instances": {"a": {"role": "boss",
           "vips_held": True}}}  # fmt: skip
    path.write_text(json.dumps(bad))
    assert take_handoff(path, writer=1, now=1.0)[0] is None
    path.write_text(json.dumps({**bad, "version": 2, "instances": {}}))
    assert take_handoff(path, writer=1, now=1.0)[0] is None


def test_ordinary_start_discards_a_leftover(tmp_path):
    write_handoff(tmp_path, ROLES)
    assert handoff.discard_stale_handoff(tmp_path) is True
    assert not handoff.handoff_path(tmp_path).exists()
    assert handoff.discard_stale_handoff(tmp_path) is False


def _child(tmp_path, body: str) -> list[str]:
    script = tmp_path / "child.py"
    script.write_text(
        "import json, os, sys, time\n"
        f"sys.path.insert(0, {os.getcwd()!r})\n"
        "env = json.loads(os.environ['PULSED_UPGRADE'])\n" + body
    )
    return [sys.executable, str(script)]


def _plan(tmp_path, argv):
    return upgrade.Plan(state_dir=str(tmp_path / "state"), roles=ROLES, argv=argv)


async def test_ready_child_is_started_and_released(tmp_path):
    argv = _child(
        tmp_path,
        "from pulsed.handoff import take_handoff\n"
        "doc, why = take_handoff(env['handoff'], writer=os.getppid())\n"
        "os.write(env['ready'], b'ready\\n' if doc and doc.adopt()['VI_1'] == 'master'"
        " else b'failed ' + why.encode() + b'\\n')\n"
        "assert os.read(env['hold'], 1) == b''\n",  # waits for the release
    )
    started = await upgrade.start_successor(_plan(tmp_path, argv), timeout=20)
    assert started.popen.poll() is None  # still held
    started.release()
    assert await asyncio.to_thread(started.popen.wait, 10) == 0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("os.write(env['ready'], b'failed: no luck\\n'); time.sleep(30)\n", "failed: no luck"),
        ("sys.exit(3)\n", "exited before it was ready (status 3)"),
        ("time.sleep(30)\n", "was not ready in 1s"),
    ],
)
async def test_failing_child_is_killed_and_leaves_no_handoff(tmp_path, body, reason):
    plan = _plan(tmp_path, _child(tmp_path, body))
    with pytest.raises(upgrade.UpgradeFailed, match="new process") as info:
        await upgrade.start_successor(plan, timeout=1)
    assert reason in str(info.value)
    assert not handoff.handoff_path(plan.state_dir).exists()


async def test_a_child_that_cannot_start_is_a_failure(tmp_path):
    plan = _plan(tmp_path, [str(tmp_path / "no-such-binary")])
    with pytest.raises(upgrade.UpgradeFailed):
        await upgrade.start_successor(plan, timeout=1)
    assert not handoff.handoff_path(plan.state_dir).exists()


def test_successor_from_environment(tmp_path):
    env = {upgrade.ENV: json.dumps({"ready": 5, "hold": 6, "api": -1, "listen": "",
                                    "handoff": "/x"})}  # fmt: skip
    got = upgrade.Successor.from_environment(env)
    assert got is not None and got.ready_fd == 5 and got.hold_fd == 6
    assert upgrade.ENV not in env  # the processes pulsed starts do not see it
    assert upgrade.Successor.from_environment({}) is None
    with pytest.raises(upgrade.UpgradeFailed):
        upgrade.Successor.from_environment({upgrade.ENV: "{"})


def test_successor_takes_the_tun_descriptor_once():
    doc = {"ready": 5, "hold": 6, "api": -1, "listen": "", "handoff": "/x"}
    older = upgrade.Successor.from_environment({upgrade.ENV: json.dumps(doc)})
    assert older is not None and older.tun_descriptor() is None  # an older parent sent none
    got = upgrade.Successor.from_environment({upgrade.ENV: json.dumps({**doc, "tun": 9})})
    assert got is not None
    assert got.tun_descriptor() == 9
    assert got.tun_descriptor() is None  # taken: nobody else closes or reuses it


def test_notify_is_held_until_release():
    r, w = os.pipe()
    s = upgrade.Successor(ready=w, hold=-1, api=-1, listen="", handoff="")
    sent: list[str] = []
    notify = s.wrap_notify(sent.append)
    notify("STATUS=starting")
    notify("READY=1\nSTATUS=1 services")
    assert os.read(r, 100) == b"ready\n"
    assert sent == []
    s.released = True
    notify("WATCHDOG=1")
    assert sent == ["WATCHDOG=1"]
    os.close(r)
