"""No process started by a check outlives its probe, or pulsed.

An exec check's command runs in a session of its own (its pid is the session
and process-group id), so killing that group ends the command and every
helper it left in the group. That is not enough: a helper that calls
``setsid`` (``setsid sleep 30 &``), or a daemon that double-forks, leaves the
group, and as an orphan would be re-parented to init, out of reach, holding
the probe's stdout pipe open. So:

- pulsed makes itself a *child subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``,
  ``enable()``): orphans of anything it started are re-parented to pulsed
  instead of init, so they stay visible as its children
  (``/proc/self/task/*/children``) and their pids cannot be reused until
  pulsed reaps them, which makes killing them by pid race-free;
- every process pulsed starts goes through ``spawn()``, which records its pid
  in the same step as the fork (no await in between), so any child that is
  not recorded is an orphan;
- when a probe ends, its group is killed while the probe's own process is
  still an unreaped zombie (its pid, hence the group id, cannot have been
  reused), then the probe is reaped, then ``sweep()`` kills and reaps the
  orphans. Orphans are reaped here only by pid (``waitid(P_PID)``), never
  with ``waitpid(-1)``, so no one else's child is ever taken;
- an orphan is only killed once every probe that was running when it was
  first seen has ended: it descends from one of those (or from one that had
  already ended), so a helper another running check still relies on (an
  ssh ControlMaster, say) lives until that check ends, and no longer: at
  most one check timeout;
- ``shutdown()`` (at daemon stop) kills every live probe group and sweeps
  until no child is left.

Why this is safe:

- It kills nothing pulsed did not start, directly or through a check. A
  group kill names a group whose id is a probe's pid while that pid is still
  held (the kernel frees a pid number only when no process uses it as pid,
  group or session id, and our unreaped probe does); the probe began a new
  session, and only processes of that session, all its descendants, can be
  in that group. An orphan kill names one of our own unreaped children that
  ``spawn()`` did not start: a process becomes a subreaper's child only by
  being orphaned inside the subreaper's own subtree. This rests on one rule:
  pulsed starts child processes only through ``spawn()`` (exec checks,
  notify hooks and vrrp_scripts: pulsed.hooks; anything added later must use
  it too: a child started any other way would be swept as an orphan).
- It takes no one else's exit status: it reaps by pid only, and only pids it
  killed or found dead among children it did not start. asyncio's child
  watchers and libuv (uvloop) wait for their own pids only, and pulsed
  starts nothing through them. Probes are reaped by their Popen alone.
- It never waits without bound: a sweep has at most 64 rounds of one
  SIGKILL and at most 5 s of waiting each; a process stuck in the kernel
  (D state) is left to a later sweep, and Popen stops polling it
  (``_hand_over``). Every pidfd is closed exactly once, whichever of exit,
  timeout or cancellation comes first.
- Without the subreaper (``enable()`` failed, or was not called, as in a
  library user or a test process), orphans go to init as before and
  ``sweep()`` does nothing: a process that did not ask to be a subreaper
  never kills children it did not start here; group kills still happen.

Under systemd, ``ProcSubset=pid`` and ``ProtectProc=invisible`` keep
``/proc/self`` visible, and ``prctl``, ``pidfd_open`` and ``waitid`` are in
``@system-service`` (its ``@process`` group), which the unit allows; the
unit's ``KillMode=mixed`` also SIGKILLs whatever is left in the cgroup when
pulsed stops, which covers the case of pulsed itself being killed. If
``/proc/<pid>/task/<tid>/children`` is missing (a kernel without
CONFIG_PROC_CHILDREN) children are found by scanning
``/proc/<pid>/stat`` for our pid as parent. Without pidfds (before Linux
5.3) exits are polled with ``waitid(WNOWAIT)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import math
import os
import signal
import subprocess
from collections.abc import Iterable

import structlog

log = structlog.get_logger(__name__)

_PR_SET_CHILD_SUBREAPER = 36
# Rounds of one sweep: each kills the orphans seen, whose own children then
# surface as orphans for the next. A fork bomb could outrun it; the next
# sweep goes on where this one stopped.
_MAX_ROUNDS = 64
# How long to wait for a SIGKILLed process to exit (only one stuck in the
# kernel, in D state, takes longer; a later sweep reaps it).
KILL_WAIT = 5.0
# Polling steps when a pidfd cannot be had (kernel older than 5.3).
_POLL_FIRST, _POLL_MAX = 0.005, 0.1


class Spawned:
    """One process started by ``spawn()``: the Popen, and when it started."""

    __slots__ = ("popen", "seq")

    def __init__(self, popen: subprocess.Popen, seq: int) -> None:
        self.popen = popen
        self.seq = seq

    @property
    def pid(self) -> int:
        return self.popen.pid


class Reaper:
    """The processes pulsed started, and the orphans they left behind."""

    def __init__(self) -> None:
        self._enabled = False
        self._seq = 0
        self._live: dict[int, Spawned] = {}  # pid -> spawned, until reaped
        # Orphan pid -> the newest probe seq that was live when it was first
        # seen: it may be killed once no probe that old is live any more.
        self._seen: dict[int, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._kept: set[int] = set()  # children started outside spawn(): never orphans
        self.killed = 0  # orphans killed, for logs and tests

    # --- set-up -----------------------------------------------------------------

    def enable(self) -> bool:
        """Make this process a child subreaper; False (and one log line) if the
        kernel or a sandbox refuses. Call once at daemon start."""
        if self._enabled:
            return True
        try:
            # The process's own symbols (libc is linked in): ctypes.util.find_library
            # would run ldconfig or even gcc, which took tens of seconds in the IPVS VM.
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
        except (OSError, AttributeError) as exc:
            log.warning("reaper.unavailable", reason=str(exc))
            return False
        self._enabled = True
        return True

    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def live(self) -> int:
        return len(self._live)

    # --- processes pulsed starts -----------------------------------------------

    def spawn(
        self, argv: list[str], env: dict[str, str], stdout: int, stderr: int = subprocess.DEVNULL
    ) -> Spawned:
        """Start ``argv`` in a new session (its pid is its session and group id),
        stdin on /dev/null, stdout on ``stdout``, stderr on ``stderr`` (/dev/null
        unless given), no other descriptor inherited. Recorded before any other
        code runs. OSError if it cannot run."""
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=env,
            close_fds=True,
            start_new_session=True,
        )
        self._seq += 1
        spawned = Spawned(popen, self._seq)
        self._live[popen.pid] = spawned
        return spawned

    async def end(self, spawned: Spawned, exited: asyncio.Future[None] | None = None) -> int:
        """Kill what is left of a spawned process's group, reap it, then sweep its
        orphans. ``exited`` (see ``watch_exit``) resolves when it has exited.
        Returns its exit status as Popen does (negative: killed by that signal)."""
        pid = spawned.pid
        popen = spawned.popen
        try:
            if popen.returncode is not None:
                return popen.returncode  # reaped already (shutdown): the pid is not ours
            # The process is alive or an unreaped zombie: its pid, and so its
            # group id, is still ours, and the group holds only its descendants.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            if exited is None or not exited.done():
                waiter = exited if exited is not None else watch_exit(pid)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(waiter), KILL_WAIT)
            code = popen.poll()
            if code is None:
                code = _hand_over(popen)
            return code
        finally:
            self._live.pop(pid, None)
            self.kick()

    def keep(self, pid: int) -> None:
        """A child pulsed started outside ``spawn()`` (the new process of a live upgrade,
        pulsed.upgrade): no sweep kills it. Call in the same step as the fork."""
        self._kept.add(pid)

    def forget(self, pid: int) -> None:
        self._kept.discard(pid)

    # --- orphans ------------------------------------------------------------------

    def kick(self) -> None:
        """Sweep soon (one sweep at a time; a kick during one runs another after)."""
        if not self._enabled:
            return
        loop = asyncio.get_running_loop()
        task = self._task
        if task is not None and not task.done() and task.get_loop() is loop:
            self._again = True
            return
        self._task = loop.create_task(self._sweep_loop())

    async def idle(self) -> None:
        """Wait until no sweep is running or pending (tests, shutdown)."""
        while (task := self._task) is not None and not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)

    async def sweep(self) -> None:
        """Kill and reap the orphans that may be killed now (see the module doc)."""
        if not self._enabled:
            return
        for _ in range(_MAX_ROUNDS):
            kill, reaped = self._killable()
            if not kill:
                if reaped:
                    continue  # one that just exited may have left children
                return
            for pid in kill:
                # Our unreaped child: this pid cannot name anyone else.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.killed += len(kill)
            waits = [watch_exit(pid) for pid in kill]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), KILL_WAIT)
            for pid in kill:
                if _reap(pid):
                    self._seen.pop(pid, None)
        log.warning("reaper.orphans_remain", rounds=_MAX_ROUNDS)

    async def shutdown(self) -> None:
        """At daemon stop: kill every live probe group, reap, and sweep every orphan
        (no probe is live any more, so none is spared)."""
        for spawned in list(self._live.values()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(spawned.pid, signal.SIGKILL)
        waits = [watch_exit(pid) for pid in self._live]
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), KILL_WAIT)
        for spawned in self._live.values():
            if spawned.popen.poll() is None:
                _hand_over(spawned.popen)
        self._live.clear()
        await self.idle()
        await self.sweep()

    def _killable(self) -> tuple[list[int], bool]:
        """Orphans that may be killed now, and whether dead ones were reaped on
        the way."""
        live = self._live
        newest = max((s.seq for s in live.values()), default=0)
        oldest = min((s.seq for s in live.values()), default=math.inf)
        children = set(_children())
        kill = []
        reaped = False
        for pid in children:
            if pid in live or pid in self._kept:
                continue
            if _reap(pid):  # exited on its own
                self._seen.pop(pid, None)
                reaped = True
                continue
            if self._seen.setdefault(pid, newest) < oldest:
                kill.append(pid)
        for pid in [p for p in self._seen if p not in children]:
            del self._seen[pid]
        return kill, reaped

    async def _sweep_loop(self) -> None:
        try:
            while True:
                self._again = False
                await self.sweep()
                if not self._again:
                    return
        except Exception:
            log.exception("reaper.sweep_failed")


def _hand_over(popen: subprocess.Popen) -> int:
    """A killed process that has not exited yet (stuck in the kernel, in D
    state): from now on the sweeps reap it like an orphan. Popen must not
    poll it any more (it would wait on a pid that may be someone else's by
    then), so it is told the process is gone. Returns the status it was given."""
    popen.returncode = -signal.SIGKILL
    return popen.returncode


def watch_exit(pid: int) -> asyncio.Future[None]:
    """A future that resolves once ``pid`` has exited (without reaping it):
    through a pidfd on the loop, else by polling waitid(WNOWAIT)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        future.set_result(None)  # already reaped: gone
        return future
    except (OSError, AttributeError):
        _poll_exit(loop, pid, future, _POLL_FIRST)
        return future

    open_ = [True]

    def close() -> None:
        if open_[0]:  # exactly once: the number may name another file after
            open_[0] = False
            loop.remove_reader(pidfd)
            os.close(pidfd)

    def on_exit() -> None:
        close()
        if not future.done():
            future.set_result(None)

    loop.add_reader(pidfd, on_exit)
    future.add_done_callback(lambda _: close())  # also when the waiter gave up
    return future


def _poll_exit(
    loop: asyncio.AbstractEventLoop, pid: int, future: asyncio.Future[None], step: float
) -> None:
    if future.done():
        return
    if _exited(pid):
        future.set_result(None)
        return
    loop.call_later(step, _poll_exit, loop, pid, future, min(step * 2, _POLL_MAX))


def _exited(pid: int) -> bool:
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True  # reaped already, or never ours: nothing to wait for
    return info is not None


def _reap(pid: int) -> bool:
    """Reap ``pid`` if it has exited; True if it is gone."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG) is not None
    except ChildProcessError:
        return True


def _children() -> Iterable[int]:
    """Pids whose parent is this process (every thread's children)."""
    pids: list[int] = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children", "rb") as f:
                pids += map(int, f.read().split())
        except FileNotFoundError:
            if not os.path.exists(f"/proc/self/task/{tid}"):
                continue  # the thread ended meanwhile
            return _children_by_scan()  # no CONFIG_PROC_CHILDREN
        except ProcessLookupError:
            continue
    return pids


def _children_by_scan() -> list[int]:
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == me:
            found.append(int(name))
    return found


# One per process: the subreaper flag and the children are per process.
reaper = Reaper()
