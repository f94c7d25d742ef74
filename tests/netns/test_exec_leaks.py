"""Exec checks leak nothing: no process, no descriptor, not even past the daemon.

The class under attack: a check command that leaves something behind. A
helper in the command's process group (``sleep &``), one that left the group
and session (``setsid sleep &``), a double-forking daemon that closed its
descriptors, a command that hangs holding its stdout, and one that floods
it. Each test runs the probes in a separate interpreter (the subreaper flag
is per process: tests/support/exec_leaks.py) and tracks every process the
commands start through a file each writes its pids to. No root needed.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# A distinctive duration per helper, so a tracked pid that a stranger reused
# after the helper died is not taken for the helper.
MARK = {"setsid": "3001", "daemon": "3002", "group": "3003", "hang": "3004", "stop": "3005"}


def _sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def commands(track: Path) -> dict[str, list[str]]:
    py = sys.executable
    daemon = (
        "import os,sys,time\n"
        "if os.fork(): sys.exit(0)\n"
        "os.setsid()\n"
        "if os.fork(): os._exit(0)\n"
        f"open({str(track)!r},'a').write(f'{{os.getpid()}}\\n')\n"
        "for fd in (0,1,2): os.close(fd)\n"
        f"os.execvp('sleep', ['sleep', '{MARK['daemon']}'])\n"
    )
    return {
        # Exits at once, up, weight 50; a setsid helper keeps stdout open.
        "setsid": _sh(f"setsid sleep {MARK['setsid']} & echo $! >> {track}; echo 50"),
        # A daemon that double-forks, leaves the session and closes everything.
        "daemon": [py, "-c", daemon],
        # A helper left in the group, then the command hangs holding stdout.
        "hang": _sh(
            f"sleep {MARK['group']} & echo $! >> {track}; echo $$ >> {track}; "
            f"exec sleep {MARK['hang']}"
        ),
        # Floods stdout (more than a pipe holds), then reports weight 75.
        "chatty": _sh("echo 75; head -c 3000000 /dev/zero; exit 0"),
        # Floods stdout until its timeout.
        "flood": ["yes"],
    }


def run_runner(spec: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.support.exec_leaks", json.dumps(spec)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def tracked_alive(track: Path) -> list[int]:
    """Tracked helpers still running (a zombie counts as gone)."""
    if not track.exists():
        return []
    alive = []
    for pid in {int(x) for x in track.read_text().split()}:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if state != "Z" and any(arg.decode() in MARK.values() for arg in cmdline):
            alive.append(pid)
    return alive


@pytest.fixture
def track(tmp_path: Path):
    path = tmp_path / "pids"
    yield path
    for pid in tracked_alive(path):  # a failed test must not leave them running
        os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_many_probes_leave_no_process_and_no_descriptor(track: Path, loop: str) -> None:
    rounds = 8
    # The commands that end on their own get all the time a loaded machine
    # may need to start them; the two that never end, half a second.
    spec = {"commands": commands(track), "rounds": rounds, "timeout": 60.0, "loop": loop}
    spec["timeouts"] = {"hang": 0.5, "flood": 0.5}
    out = run_runner(spec)
    res = out["results"]
    # The command's own exit decides, not the end of its output.
    assert res["setsid"] == [[True, "exit 0", "ok", 50]] * rounds
    assert res["daemon"] == [[True, "exit 0", "ok", None]] * rounds
    assert res["chatty"] == [[True, "exit 0", "ok", 75]] * rounds
    assert res["hang"] == [[False, "timeout after 500ms", "timeout", None]] * rounds
    assert res["flood"] == [[False, "timeout after 500ms", "timeout", None]] * rounds
    # Every helper was started (3 lines per round, plus the daemon's) ...
    assert len(track.read_text().split()) == 4 * rounds
    # ... and none is left, in the runner or anywhere else.
    assert out["after_rounds"] == out["baseline"]
    assert tracked_alive(track) == []
    # The daemon's grandchild always escapes the group (it writes its pid after
    # setsid): the reaper killed it. (The setsid helper escapes too, unless
    # the group kill comes before its setsid call.)
    assert out["killed"] >= rounds


def test_nothing_outlives_the_monitor_stop(track: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "ready"
    os.mkfifo(fifo)
    hanger = _sh(
        f"setsid sleep {MARK['stop']} & echo $! >> {track}; echo $! > {fifo}; "
        f"sleep {MARK['group']} & echo $! >> {track}; echo $$ >> {track}; echo $$ > {fifo}; "
        f"exec sleep {MARK['hang']}"
    )
    hangers = [hanger] * 4
    out = run_runner(
        {"hangers": hangers, "fifo": str(fifo), "ready_lines": 2 * len(hangers), "timeout": 30}
    )
    assert out["stop"]["live_before_stop"] == len(hangers)  # all in flight at the stop
    assert len(track.read_text().split()) == 3 * len(hangers)
    assert out["after_stop"] == out["baseline"]
    assert tracked_alive(track) == []


def test_an_orphan_lives_until_the_check_that_left_it_ends(track: Path, tmp_path: Path) -> None:
    """The reaper cannot tell which check an orphan came from, so it waits for
    every check that was running when it first saw it: a helper that a check
    still relies on is not killed because another check ended."""
    ready, release = tmp_path / "ready", tmp_path / "release"
    os.mkfifo(ready)
    os.mkfifo(release)
    holder = _sh(
        f"(setsid sleep {MARK['setsid']} > /dev/null 2>&1 & "
        f"echo $! >> {track}; echo $! > {ready}); read line < {release}; echo 40"
    )
    spare = {"holder": holder, "ready": str(ready), "release": str(release)}
    out = run_runner({"spare": spare})["spare"]
    assert out["results"] == ["exit 0", "exit 0"]
    assert out["alive_after_other_check"] is True
    assert out["alive_after_own_check"] is False
    assert tracked_alive(track) == []


def test_without_the_subreaper_the_group_is_still_killed(track: Path) -> None:
    """A process that is not a subreaper (enable() not called) kills nothing it
    did not start, yet the command's group dies with the probe."""
    cmds = {"hang": commands(track)["hang"]}
    out = run_runner({"commands": cmds, "rounds": 2, "timeout": 0.3, "subreaper": False})
    assert out["killed"] == 0
    assert out["after_rounds"] == out["baseline"]
    assert tracked_alive(track) == []


async def test_out_of_descriptors_is_a_local_error_not_the_server() -> None:
    """EMFILE when starting the command: the router's fault (category "local")."""
    import resource

    from pulsed.checks.exec import ExecProbe
    from tests.support.exec_leaks import _target

    probe = ExecProbe(_target(["true"], 1.0))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    open_fds = {int(fd) for fd in os.listdir("/proc/self/fd")}
    lowest_free = min(set(range(len(open_fds) + 1)) - open_fds)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # no free descriptor
    try:
        result = await probe.probe()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert (result.ok, result.category) == (False, "local")
    assert result.reason == "local error: cannot run true: too many open files"


@pytest.mark.parametrize(
    ("err", "category"),
    [
        (errno.EAGAIN, "local"),  # fork limit
        (errno.ENOMEM, "local"),
        (errno.ENFILE, "local"),
        (errno.EPERM, "local"),  # a sandbox
        (errno.ENOENT, "error"),  # the command's own fault
        (errno.EACCES, "error"),
    ],
)
def test_spawn_failures_are_classified(err: int, category: str) -> None:
    from pulsed.checks.exec import spawn_failure

    result = spawn_failure("check", OSError(err, os.strerror(err)), 0.0)
    assert (result.ok, result.category) == (False, category)


async def test_without_pidfds_exits_are_polled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels before 5.3 have no pidfd: the exit is polled, same verdicts."""
    from pulsed.checks.exec import ExecProbe
    from tests.support.exec_leaks import _target

    def no_pidfd(pid: int, flags: int = 0) -> int:
        raise OSError(errno.ENOSYS, "function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    up = await ExecProbe(_target(["sh", "-c", "echo 30"], 5.0)).probe()
    hung = await ExecProbe(_target(["sleep", "30"], 0.3)).probe()
    assert (up.ok, up.weight_pct) == (True, 30)
    assert (hung.ok, hung.reason) == (False, "timeout after 300ms")


def test_children_found_without_proc_children() -> None:
    """Kernels without CONFIG_PROC_CHILDREN: the /proc scan finds the same."""
    from pulsed.checks.reaper import _children, _children_by_scan

    child = subprocess.Popen(["sleep", "30"])
    try:
        assert child.pid in _children()
        assert sorted(_children_by_scan()) == sorted(_children())
    finally:
        child.kill()
        child.wait()
