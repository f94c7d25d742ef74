"""Track scripts and track files: what they are worth, and read safely from another thread.

Attacks the class "a tracker misleads the VRRP priority": a file that is
missing, holds garbage or changes; a script that flaps around its rise and
fall thresholds, hangs, or cannot be run because the router is out of
descriptors (which must not count against what the script checks); a
reconfigure; and the heartbeat thread reading values while the loop
publishes new ones.
"""

from __future__ import annotations

import asyncio
import errno
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from pulsed.checks.reaper import reaper
from pulsed.trackers import Trackers, parse_track_file


@dataclass(frozen=True)
class Script:
    """Stands in for pulsed.ha.config.VrrpScript."""

    name: str
    command: list[str] = field(default_factory=lambda: ["/bin/true"])
    interval: float = 1.0
    timeout: float = 5.0
    rise: int = 1
    fall: int = 1
    weight: int = 0


@pytest.fixture
def no_leak():
    yield
    assert reaper.live == 0


def _write(path: Path, text: str) -> None:
    """Replace the file whole, as a careful writer does."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_parse_track_file():
    assert parse_track_file(b"42") == 42
    assert parse_track_file(b"  -7 \n") == -7
    assert parse_track_file(b"+3\n") == 3
    for garbage in (b"", b"\n", b"abc", b"4 2", b"1.5", b"0x10", b"\xd9\xa3", b"1" * 19):
        assert parse_track_file(garbage) is None, garbage


# --- track files ----------------------------------------------------------------


async def test_track_files_value_garbage_missing_and_changed(tmp_path):
    good, garbage, missing = tmp_path / "good", tmp_path / "garbage", tmp_path / "missing"
    _write(good, " 5\n")
    _write(garbage, "five\n")
    trackers = Trackers([], [str(good), str(garbage), str(missing)])
    assert trackers.value("file", str(good)) is None  # not read yet
    with capture_logs() as logs:
        await trackers.poll_files()
        await trackers.poll_files()  # nothing changed: nothing logged
    assert trackers.value("file", str(good)) == 5
    assert trackers.value("file", str(garbage)) is None
    assert trackers.value("file", str(missing)) is None
    assert trackers.value("file", str(tmp_path / "not tracked")) is None
    assert sorted((e["file"], e["value"], e.get("reason")) for e in logs) == sorted(
        [
            (str(good), 5, None),
            (str(garbage), None, "does not hold an integer"),
            (str(missing), None, "cannot read: No such file or directory"),
        ]
    )
    _write(good, "-3")
    _write(missing, "0\n")
    garbage.unlink()
    with capture_logs() as logs:
        await trackers.poll_files()
    assert trackers.values() == {
        ("file", str(good)): -3,
        ("file", str(garbage)): None,
        ("file", str(missing)): 0,
    }
    assert len(logs) == 3  # each change once


async def test_a_fifo_or_a_huge_file_is_refused_without_blocking(tmp_path):
    fifo, huge = tmp_path / "fifo", tmp_path / "huge"
    os.mkfifo(fifo)
    _write(huge, "1" * 10_000)
    trackers = Trackers([], [str(fifo), str(huge)])
    async with asyncio.timeout(5):
        await trackers.poll_files()
    assert trackers.value("file", str(fifo)) is None
    assert trackers.value("file", str(huge)) is None


async def test_started_trackers_poll_the_files(tmp_path):
    path = tmp_path / "prio"
    _write(path, "1")
    trackers = Trackers([], [str(path)], file_interval=0.01)
    await trackers.start()
    try:
        assert trackers.value("file", str(path)) == 1  # read at start
        _write(path, "2")
        async with asyncio.timeout(5):
            while trackers.value("file", str(path)) != 2:
                await asyncio.sleep(0.01)
    finally:
        await trackers.stop()


# --- scripts --------------------------------------------------------------------


def _exit_with(tmp_path: Path) -> tuple[list[str], Path]:
    """A script that exits with the status written in a file."""
    status = tmp_path / "status"
    status.write_text("0")
    script = tmp_path / "check"
    script.write_text('#!/bin/sh\nexit $(cat "$1")\n')
    script.chmod(0o755)
    return [str(script), str(status)], status


async def test_rise_and_fall(tmp_path, no_leak):
    command, status = _exit_with(tmp_path)
    trackers = Trackers([Script("chk", command, rise=2, fall=3)], [])
    seen = []
    for code in (0, 0, 1, 1, 1, 0, 0, 1, 0):
        status.write_text(str(code))
        seen.append(await trackers.probe_script("chk"))
    assert seen == [None, True, True, True, False, False, True, True, True]
    assert trackers.value("script", "chk") is True


async def test_failures_reaching_fall_first_decide_an_unknown_script(tmp_path, no_leak):
    trackers = Trackers([Script("chk", ["/bin/false"], rise=1, fall=2)], [])
    assert trackers.value("script", "chk") is None
    assert await trackers.probe_script("chk") is None
    assert await trackers.probe_script("chk") is False


async def test_a_timeout_or_a_missing_program_is_a_failure(no_leak):
    trackers = Trackers(
        [
            Script("slow", ["/bin/sleep", "5"], timeout=0.1),
            Script("missing", ["/nonexistent/check"]),
        ],
        [],
    )
    with capture_logs() as logs:
        assert await trackers.probe_script("slow") is False
        assert await trackers.probe_script("missing") is False
    assert [(e["script"], e["state"], e["reason"]) for e in logs] == [
        ("slow", "failing", "timeout after 100ms"),
        ("missing", "failing", "cannot run /nonexistent/check: no such file or directory"),
    ]


async def test_a_fault_of_the_router_keeps_the_last_value_and_counts_nothing(
    tmp_path, monkeypatch, no_leak
):
    command, status = _exit_with(tmp_path)
    trackers = Trackers([Script("chk", command, rise=1, fall=2)], [])
    assert await trackers.probe_script("chk") is True
    status.write_text("1")
    assert await trackers.probe_script("chk") is True  # one failure of two

    def no_descriptors(*args, **kwargs):
        raise OSError(errno.EMFILE, "Too many open files")

    with monkeypatch.context() as patch, capture_logs() as logs:
        patch.setattr(reaper, "spawn", no_descriptors)
        for _ in range(3):
            assert await trackers.probe_script("chk") is True
    assert [(e["event"], e["fault"], e["kept"]) for e in logs] == [
        ("tracker.script_local_fault", "emfile", True)  # logged once
    ]
    # The faults did not count as failures: one more failure is the second.
    assert await trackers.probe_script("chk") is False


async def test_a_fault_of_the_router_leaves_an_unknown_script_unknown(monkeypatch):
    def no_memory(*args, **kwargs):
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(reaper, "spawn", no_memory)
    trackers = Trackers([Script("chk", ["/bin/false"])], [])
    assert await trackers.probe_script("chk") is None


async def test_started_scripts_run_periodically_and_stop_killed(tmp_path, no_leak):
    pids = tmp_path / "pids"
    hang = tmp_path / "hang"
    hang.write_text(f'#!/bin/sh\necho $$ >> "{pids}"\nexec sleep 3019\n')
    hang.chmod(0o755)
    trackers = Trackers(
        [
            Script("ok", ["/bin/true"], interval=0.01),
            Script("hang", [str(hang)], interval=0.01, timeout=60),
        ],
        [],
    )
    await trackers.start()
    async with asyncio.timeout(5):
        while trackers.value("script", "ok") is not True or not pids.exists():
            await asyncio.sleep(0.01)
    await trackers.stop()  # the hanging script is killed, and reaped (no_leak)
    assert trackers.value("script", "hang") is None


async def test_reconfigure_keeps_what_did_not_change(tmp_path, no_leak):
    prio = tmp_path / "prio"
    _write(prio, "4")
    trackers = Trackers([Script("a"), Script("b"), Script("c")], [str(prio)])
    for name in "abc":
        assert await trackers.probe_script(name) is True
    await trackers.poll_files()
    other = tmp_path / "other"
    trackers.reconfigure(
        [Script("a", interval=5.0), Script("b", ["/bin/false"]), Script("d")],
        [str(prio), str(other)],
    )
    assert trackers.values() == {
        ("script", "a"): True,  # a new interval: the value stays
        ("script", "b"): None,  # a new command: known nothing yet
        ("script", "d"): None,  # added
        ("file", str(prio)): 4,
        ("file", str(other)): None,
    }
    assert await trackers.probe_script("b") is False


async def test_reconfigure_while_started_starts_and_stops_scripts(no_leak):
    trackers = Trackers([Script("a", ["/bin/sleep", "30"], interval=0.01)], [])
    await trackers.start()
    try:
        trackers.reconfigure([Script("b", ["/bin/true"], interval=0.01)], [])
        async with asyncio.timeout(5):
            while trackers.value("script", "b") is not True:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0)  # the cancelled "a" ends (killed with its group)
        assert set(trackers.values()) == {("script", "b")}
    finally:
        await trackers.stop()


# --- read from another thread ----------------------------------------------------------


async def test_another_thread_never_sees_a_half_built_state(tmp_path):
    paths = [tmp_path / f"f{n}" for n in range(16)]
    for path in paths:
        _write(path, "0")
    trackers = Trackers([], [str(p) for p in paths])
    await trackers.poll_files()
    keys = {("file", str(p)) for p in paths}
    stop = threading.Event()
    bad: list[dict] = []
    reads = [0]

    def heartbeat() -> None:
        # What the VRRP heartbeat does: one value at a time, and whole snapshots.
        while not stop.is_set():
            snapshot = trackers.values()
            if (set(snapshot) != keys or len(set(snapshot.values())) != 1) and len(bad) < 3:
                bad.append(dict(snapshot))
            trackers.value("file", str(paths[0]))
            reads[0] += 1

    thread = threading.Thread(target=heartbeat)
    # Switch threads often: more interleavings, and the loop is not starved.
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    thread.start()
    try:
        for round_ in range(1, 30):
            for path in paths:
                _write(path, str(round_))
            await trackers.poll_files()
            assert trackers.value("file", str(paths[-1])) == round_
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(switch)
    assert bad == []
    assert reads[0] > 0
