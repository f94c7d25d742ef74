"""Notify hooks: real commands, no shell, a cap, a bounded queue, killed with their group.

Attacks the class "a notify command holds up or outlives the daemon": a
command that hangs, ignores SIGTERM and leaves a grandchild; more commands
than the cap; a queue that overflows; a program that is missing; the router
out of descriptors; and the notify FIFO without a reader, with a full pipe,
replaced under the writer, or not a FIFO at all. Concurrency is measured with
events the commands send through a FIFO, never with sleeps.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from pulsed.checks.reaper import reaper
from pulsed.hooks import PIPE_BUF, HookRunner, HookStats, run_command


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def alive(pid: int, mark: str) -> bool:
    """Whether ``pid`` still runs the process marked ``mark`` (a zombie is gone;
    the mark keeps a stranger that reused the pid from counting)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return mark.encode() in cmdline and state not in ("Z", "X")


async def gone(pid: int, mark: str) -> bool:
    """Whether ``pid`` is gone within a few seconds: a SIGKILLed group member
    (not the process the hook runner waited for) may take a moment to die."""
    async with asyncio.timeout(5):
        while alive(pid, mark):
            await asyncio.sleep(0.01)
    return True


class Gates:
    """Commands that report "start N" through a FIFO the test reads, then block
    until the test opens their own gate, then report "end N" and exit."""

    def __init__(self, tmp: Path, count: int) -> None:
        self.dir = tmp
        os.mkfifo(tmp / "events")
        # Read and write: the commands' opens never block, nor see a missing reader.
        self._events = os.open(tmp / "events", os.O_RDWR | os.O_NONBLOCK)
        self._gates = {}
        for n in range(count):
            os.mkfifo(tmp / f"gate{n}")
            self._gates[n] = os.open(tmp / f"gate{n}", os.O_RDWR | os.O_NONBLOCK)
        self.script = _script(
            tmp / "blocker",
            'echo "start $2" > "$1/events"\nread x < "$1/gate$2"\necho "end $2" > "$1/events"\n',
        )
        self.seen: list[str] = []
        self._pending: list[str] = []
        self._buffer = b""
        self._arrived = asyncio.Event()
        asyncio.get_running_loop().add_reader(self._events, self._on_events)

    def argv(self, n: int) -> list[str]:
        return [self.script, str(self.dir), str(n)]

    def _on_events(self) -> None:
        self._buffer += os.read(self._events, 4096)
        *lines, self._buffer = self._buffer.split(b"\n")
        self._pending += [line.decode() for line in lines]
        self._arrived.set()

    async def next(self) -> str:
        async with asyncio.timeout(10):
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
        event = self._pending.pop(0)
        self.seen.append(event)
        return event

    def release(self, n: int) -> None:
        os.write(self._gates[n], b"go\n")

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self._events)
        for fd in (self._events, *self._gates.values()):
            os.close(fd)


def most_at_once(events: list[str]) -> int:
    running = most = 0
    for event in events:
        running += 1 if event.startswith("start") else -1
        most = max(most, running)
    return most


@pytest.fixture
def no_leak():
    yield
    assert reaper.live == 0  # every command was reaped


# --- running commands ---------------------------------------------------------


async def test_a_hook_gets_its_argv_and_the_extra_arguments_no_shell(tmp_path, no_leak):
    script = _script(tmp_path / "argv.sh", 'printf "%s\\n" "$@" > "$0.out"\n')
    runner = HookRunner(timeout=5, max_running=2)
    with capture_logs() as logs:
        runner.run([script, "$HOME", "a b"], ["INSTANCE", "VI_1", "MASTER", "100"])
        await runner.idle()
    out = Path(script + ".out")
    assert out.read_text().splitlines() == ["$HOME", "a b", "INSTANCE", "VI_1", "MASTER", "100"]
    assert runner.stats == HookStats(started=1)
    assert logs == []


async def test_an_empty_argv_runs_nothing():
    runner = HookRunner(timeout=5, max_running=1)
    runner.run([], ["INSTANCE", "VI_1", "MASTER", "100"])
    await runner.idle()
    assert runner.stats == HookStats()


async def test_a_failure_is_one_log_line_with_the_first_line_of_stderr(no_leak):
    runner = HookRunner(timeout=5, max_running=2)
    with capture_logs() as logs:
        runner.run(["/bin/sh", "-c", "echo 'first line' >&2; echo second >&2; exit 3"])
        runner.run(["/bin/false"])
        runner.run(["/bin/true"])
        await runner.idle()
    failed = sorted((e["command"], e["reason"], e.get("stderr")) for e in logs)
    assert failed == [("/bin/false", "exit 1", None), ("/bin/sh", "exit 3", "first line")]
    assert {e["event"] for e in logs} == {"hook.failed"}
    assert runner.stats == HookStats(started=3, failed=2)


async def test_a_missing_program_is_logged_not_raised(no_leak):
    runner = HookRunner(timeout=5, max_running=1)
    with capture_logs() as logs:
        runner.run(["/nonexistent/notify", "x"])
        await runner.idle()
    assert [(e["event"], e["command"], e["reason"]) for e in logs] == [
        (
            "hook.failed",
            "/nonexistent/notify",
            "cannot run /nonexistent/notify: no such file or directory",
        )
    ]
    assert "fault" not in logs[0]
    assert runner.stats.failed == 1


async def test_out_of_descriptors_is_logged_as_the_routers_fault(monkeypatch, no_leak):
    def no_descriptors(*args, **kwargs):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(reaper, "spawn", no_descriptors)
    runner = HookRunner(timeout=5, max_running=1)
    with capture_logs() as logs:
        runner.run(["/bin/true"])
        await runner.idle()
    assert [(e["event"], e["fault"]) for e in logs] == [("hook.failed", "emfile")]
    assert logs[0]["reason"] == "cannot run /bin/true: too many open files"


async def test_a_timeout_kills_the_whole_group_even_a_command_ignoring_sigterm(tmp_path, no_leak):
    pids = tmp_path / "pids"
    script = _script(
        tmp_path / "stubborn",
        'trap \'\' TERM\nsleep 3017 &\necho $! > "$1"\necho $$ >> "$1"\nwait\nwait\n',
    )
    runner = HookRunner(timeout=0.3, max_running=1)
    with capture_logs() as logs:
        runner.run([script, str(pids)])
        await runner.idle()
    assert [(e["event"], e["reason"]) for e in logs] == [("hook.failed", "timeout after 300ms")]
    grandchild, child = map(int, pids.read_text().split())
    assert not alive(child, "stubborn")  # the process waited for
    assert await gone(grandchild, "3017")
    assert runner.stats == HookStats(started=1, timed_out=1)


async def test_run_command_reports_what_happened(no_leak):
    assert (await run_command(["/bin/true"], 5)).ok
    slow = await run_command(["/bin/sleep", "5"], 0.1)
    assert (slow.ok, slow.timed_out, slow.reason) == (False, True, "timeout after 100ms")
    killed = await run_command(["/bin/sh", "-c", "kill -9 $$"], 5)
    assert killed.reason == "killed by signal 9"
    nul = await run_command(["/bin/echo", "a\0b"], 5)
    assert not nul.ok and nul.reason.startswith("cannot run /bin/echo")


# --- the cap and the queue ------------------------------------------------------------


async def test_at_most_max_running_at_once_the_rest_wait_in_order(tmp_path, no_leak):
    gates = Gates(tmp_path, 5)
    try:
        runner = HookRunner(timeout=30, max_running=2)
        for n in range(5):
            runner.run(gates.argv(n))
        assert {await gates.next(), await gates.next()} == {"start 0", "start 1"}
        stats = runner.stats
        assert (stats.running, stats.queued, stats.started) == (2, 3, 2)
        for n in range(5):
            gates.release(n)
            # Each release lets exactly one more start, the next in the queue.
            expect = {f"end {n}"} | ({f"start {n + 2}"} if n + 2 < 5 else set())
            assert {await gates.next() for _ in expect} == expect
        await runner.idle()
        assert most_at_once(gates.seen) == 2
        assert runner.stats == HookStats(started=5)
    finally:
        gates.close()


async def test_beyond_the_queue_limit_a_run_is_dropped_and_counted(tmp_path, no_leak):
    gates = Gates(tmp_path, 4)
    try:
        runner = HookRunner(timeout=30, max_running=1, queue_limit=2)
        with capture_logs() as logs:
            for n in range(4):
                runner.run(gates.argv(n))
        assert [(e["event"], e["reason"]) for e in logs] == [("hook.dropped", "queue full")]
        assert await gates.next() == "start 0"
        assert (runner.stats.running, runner.stats.queued, runner.stats.dropped) == (1, 2, 1)
        for n in range(3):
            gates.release(n)
        await runner.idle()
        for _ in range(5):
            await gates.next()
        assert sorted(gates.seen) == sorted(
            ["start 0", "end 0", "start 1", "end 1", "start 2", "end 2"]
        )
        assert runner.stats == HookStats(started=3, dropped=1)
    finally:
        gates.close()


async def test_reconfigure_raises_the_cap_for_the_waiting_runs(tmp_path, no_leak):
    gates = Gates(tmp_path, 3)
    try:
        runner = HookRunner(timeout=30, max_running=1)
        for n in range(3):
            runner.run(gates.argv(n))
        assert await gates.next() == "start 0"
        runner.reconfigure(timeout=30, max_running=3, fifo="")
        assert {await gates.next(), await gates.next()} == {"start 1", "start 2"}
        assert most_at_once(gates.seen) == 3
        for n in range(3):
            gates.release(n)
        await runner.idle()
    finally:
        gates.close()


async def test_close_waits_a_timeout_then_kills_what_still_runs(tmp_path, no_leak):
    gates = Gates(tmp_path, 3)
    pids = tmp_path / "pids"
    try:
        stuck = _script(tmp_path / "stuck", 'echo $$ > "$1"\nexec sleep 3018\n')
        runner = HookRunner(timeout=0.5, max_running=1)
        runner.run(gates.argv(0))  # ends once released: close() waits for it
        runner.run([stuck, str(pids)])  # queued, then killed at the deadline
        assert await gates.next() == "start 0"
        loop = asyncio.get_running_loop()
        began = loop.time()
        closing = asyncio.create_task(runner.close())
        await asyncio.sleep(0)
        runner.run(gates.argv(2))  # refused: closing
        gates.release(0)
        await closing
        assert loop.time() - began < 5
        assert not alive(int(pids.read_text()), "3018")
        stats = runner.stats
        assert (stats.started, stats.timed_out, stats.dropped, stats.running) == (2, 1, 1, 0)
    finally:
        gates.close()


# --- the notify FIFO ---------------------------------------------------------------


def _reader(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK)


def test_no_fifo_configured_writes_nothing():
    runner = HookRunner(timeout=1, max_running=1)
    runner.event_line('INSTANCE "VI_1" MASTER 100')
    assert runner.stats == HookStats()


def test_without_a_reader_the_fifo_is_created_and_the_line_dropped(tmp_path):
    path = tmp_path / "notify"
    runner = HookRunner(timeout=1, max_running=1, fifo=str(path))
    with capture_logs() as logs:
        runner.event_line('INSTANCE "VI_1" MASTER 100')
        runner.event_line('INSTANCE "VI_1" BACKUP 100')
    mode = path.stat().st_mode
    assert stat.S_ISFIFO(mode) and stat.S_IMODE(mode) == 0o600
    assert (runner.stats.lines_written, runner.stats.lines_dropped) == (0, 2)
    assert [(e["event"], e["reason"]) for e in logs] == [("hook.fifo_dropped", "no reader")]


async def test_with_a_reader_each_event_is_one_line(tmp_path):
    path = tmp_path / "notify"
    os.mkfifo(path)
    reader = _reader(path)
    runner = HookRunner(timeout=1, max_running=1, fifo=str(path))
    try:
        runner.event_line('INSTANCE "VI_1" MASTER 100')
        runner.event_line('RS "web" 10.0.0.2:80 DOWN')
        assert os.read(reader, 4096) == b'INSTANCE "VI_1" MASTER 100\nRS "web" 10.0.0.2:80 DOWN\n'
        assert runner.stats.lines_written == 2
    finally:
        os.close(reader)
        await runner.close()


async def test_a_reader_that_leaves_and_comes_back(tmp_path):
    path = tmp_path / "notify"
    os.mkfifo(path)
    runner = HookRunner(timeout=1, max_running=1, fifo=str(path))
    reader = _reader(path)
    runner.event_line("one")
    assert os.read(reader, 100) == b"one\n"
    os.close(reader)
    runner.event_line("two")  # no reader: dropped
    reader = _reader(path)
    runner.event_line("three")
    assert os.read(reader, 100) == b"three\n"
    os.close(reader)
    # The FIFO replaced under the writer (a reader's service recreated it).
    path.unlink()
    os.mkfifo(path)
    reader = _reader(path)
    runner.event_line("four")
    assert os.read(reader, 100) == b"four\n"
    os.close(reader)
    assert (runner.stats.lines_written, runner.stats.lines_dropped) == (3, 1)
    await runner.close()


async def test_a_full_pipe_drops_lines_whole_and_never_blocks(tmp_path):
    path = tmp_path / "notify"
    os.mkfifo(path)
    reader = _reader(path)
    runner = HookRunner(timeout=1, max_running=1, fifo=str(path))
    line = "RS " + "x" * 196  # 200 bytes with the newline
    try:
        with capture_logs() as logs:
            for _ in range(1000):  # 200 kB: more than a pipe holds
                runner.event_line(line)
        written, dropped = runner.stats.lines_written, runner.stats.lines_dropped
        assert written + dropped == 1000 and dropped > 0
        assert [(e["event"], e["reason"]) for e in logs] == [("hook.fifo_dropped", "pipe full")]
        data = b""
        while chunk := _read_some(reader):
            data += chunk
        assert data == (line + "\n").encode() * written  # only whole lines
        runner.event_line("after")
        assert os.read(reader, 100) == b"after\n"
    finally:
        os.close(reader)
        await runner.close()


def _read_some(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return b""


def test_a_path_that_is_not_a_fifo_is_logged_once_and_left_alone(tmp_path):
    path = tmp_path / "notify"
    path.write_text("keep me\n")
    runner = HookRunner(timeout=1, max_running=1, fifo=str(path))
    with capture_logs() as logs:
        runner.event_line("one")
        runner.event_line("two")
    assert path.read_text() == "keep me\n"
    assert [(e["event"], e["reason"]) for e in logs] == [("hook.fifo_dropped", "is not a FIFO")]
    assert runner.stats.lines_dropped == 2


def test_a_line_longer_than_pipe_buf_is_refused(tmp_path):
    path = tmp_path / "notify"
    os.mkfifo(path)
    reader = _reader(path)
    runner = HookRunner(timeout=1, max_running=1, fifo=str(path))
    try:
        with capture_logs() as logs:
            runner.event_line("x" * PIPE_BUF)  # with its newline: one byte too many
        assert [(e["event"], e["reason"]) for e in logs] == [("hook.fifo_dropped", "line too long")]
        assert _read_some(reader) == b""
        runner.event_line("x" * (PIPE_BUF - 1))
        assert len(os.read(reader, 2 * PIPE_BUF)) == PIPE_BUF
    finally:
        os.close(reader)


async def test_reconfigure_moves_to_a_new_fifo_and_keeps_the_counts(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    os.mkfifo(first)
    os.mkfifo(second)
    r1, r2 = _reader(first), _reader(second)
    runner = HookRunner(timeout=1, max_running=1, fifo=str(first))
    try:
        runner.event_line("one")
        runner.reconfigure(timeout=1, max_running=1, fifo=str(second))
        runner.event_line("two")
        assert (os.read(r1, 100), os.read(r2, 100)) == (b"one\n", b"two\n")
        assert runner.stats.lines_written == 2
    finally:
        os.close(r1)
        os.close(r2)
        await runner.close()


async def test_after_close_no_line_is_written(tmp_path):
    path = tmp_path / "notify"
    os.mkfifo(path)
    reader = _reader(path)
    runner = HookRunner(timeout=1, max_running=1, fifo=str(path))
    try:
        await runner.close()
        runner.event_line("late")
        runner.run(["/bin/true"])
        assert _read_some(reader) == b""
        stats = runner.stats
        assert (stats.lines_dropped, stats.dropped, stats.started) == (1, 1, 0)
    finally:
        os.close(reader)


SUBREAPER_RUN = """
import asyncio, json, sys
from pulsed.checks.reaper import reaper
from pulsed.hooks import HookRunner

async def main():
    assert reaper.enable()
    runner = HookRunner(timeout=5, max_running=2)
    runner.run(["/bin/sh", "-c", sys.argv[1]])
    runner.run(["/bin/sh", "-c", "exit 4"])
    await runner.idle()
    await reaper.idle()
    stats = runner.stats
    print(json.dumps([stats.started, stats.failed, reaper.live, reaper.killed]))

asyncio.run(main())
"""


def test_under_the_subreaper_a_hook_keeps_its_status_and_leaves_nothing(tmp_path):
    # As in the daemon (pulsed is a child subreaper): hooks go through the
    # reaper, so their exit status is theirs, and a helper that left the
    # group (setsid) is swept once the hook ended.
    pids = tmp_path / "pids"
    # The hook exits once its helper has left the group (not before: the
    # group kill at its exit would end the helper first).
    helper = f"echo $$ > {pids}.tmp; mv {pids}.tmp {pids}; exec sleep 3021"
    hook = f"setsid sh -c '{helper}' & while [ ! -s {pids} ]; do sleep 0.01; done; exit 0"
    proc = subprocess.run(
        [sys.executable, "-c", SUBREAPER_RUN, hook],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    started, failed, live, killed = json.loads(proc.stdout.splitlines()[-1])
    assert (started, failed, live, killed) == (2, 1, 0, 1)
    assert not alive(int(pids.read_text()), "3021")
