"""Notify hooks: commands run on VRRP and real-server transitions, and the notify FIFO.

keepalived's ``notify_*`` commands and ``notify_fifo``, run so that nothing
they do can hold up the daemon:

- no shell: argv lists, run as given (``run_command``);
- each command goes through pulsed.checks.reaper's ``spawn()``, like an exec
  check: a session (and process group) of its own, stdin and stdout on
  /dev/null, no inherited descriptor. The reaper is not optional here: pulsed
  is a child subreaper, and a child not started through ``spawn()`` would be
  swept as an orphan (killed, its exit status taken) by the next sweep, which
  rules out asyncio.create_subprocess_exec. In return nothing a hook starts
  outlives it: when it exits or times out its group is SIGKILLed and reaped,
  and whatever left the group is swept. A hook that must start something
  lasting asks the service manager (``systemctl start ...``);
- stderr is read (and dropped) as it comes, so a chatty command never blocks
  on a full pipe; its first line goes into the one log line of a failure;
- at most ``max_running`` at once, the rest in a bounded FIFO queue; a run
  beyond it is dropped, logged and counted. ``run()`` only queues: it never
  blocks and never raises.

The FIFO (``event_line``) is kept open once a reader is there: a reader that
loops on ``while read line`` (keepalived's sample) sees end-of-file only when
the writer closes, so opening per event would end such a reader after the
first event. Writes are non-blocking and of at most PIPE_BUF bytes, hence
atomic: a line is written whole or dropped (no reader, a full pipe), never
half, and the loop never waits.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import os
import select
import stat
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from pulsed.checks.base import seconds_text
from pulsed.checks.piped import PipedRun, spawn_problem

log = structlog.get_logger(__name__)

# The longest stderr line put in a log line.
_MAX_LOGGED = 200
# Writes to a pipe of at most this many bytes are atomic (POSIX: at least 512).
PIPE_BUF: int = select.PIPE_BUF


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one command ended.

    ``reason`` is short text: "exit 0", "exit 3", "killed by signal 9",
    "timeout after 1.0s", "cannot run /x: no such file or directory".
    ``fault`` is a pulsed.checks.base.LOCAL_FAULTS label when the command
    could not be started for a reason of the router (EMFILE, ENOMEM, EPERM,
    ...): such an outcome says nothing about what the command checks.
    ``stderr`` is the first line the command wrote there (printable, cut short).
    """

    ok: bool
    reason: str
    timed_out: bool = False
    fault: str | None = None
    stderr: str = ""


async def run_command(argv: Sequence[str], timeout: float) -> Outcome:
    """Run ``argv`` (no shell) to its end or its timeout, then kill its process
    group and reap it. Never raises, except CancelledError (after the group was
    killed and reaped)."""
    args = list(argv)
    if not args:
        return Outcome(False, "no command")
    try:
        run = PipedRun(args, dict(os.environ), "stderr")
    except Exception as exc:
        return _spawn_failure(args[0], exc)
    timed_out = False
    try:
        async with asyncio.timeout(timeout):
            await asyncio.shield(run.exited)
    except TimeoutError:
        timed_out = True
    finally:
        # Also when cancelled: the group is killed and reaped before we go.
        code = await asyncio.shield(run.end())
    first = first_line(run.output)
    if timed_out:
        return Outcome(False, f"timeout after {seconds_text(timeout)}", True, stderr=first)
    if code != 0:
        reason = f"exit {code}" if code > 0 else f"killed by signal {-code}"
        return Outcome(False, reason, stderr=first)
    return Outcome(True, "exit 0", stderr=first)


def _spawn_failure(command: str, exc: Exception) -> Outcome:
    """A command that could not be started. The router's fault when it ran out
    of something or a sandbox refused (local_fault); EACCES is the command's
    (a file that cannot be run), as for exec checks."""
    text, fault = spawn_problem(exc)
    return Outcome(False, f"cannot run {command}: {text}", fault=fault)


def first_line(output: bytes) -> str:
    """A command's first line of stderr, for a log line: short and printable."""
    line = output.split(b"\n", 1)[0].strip()
    text = line.decode("utf-8", "replace")[:_MAX_LOGGED]
    return "".join(c if c.isprintable() else "?" for c in text)


@dataclass(frozen=True, slots=True)
class HookStats:
    """Counters for the read model. ``failed`` (a non-zero exit, a signal, a
    command that could not start) and ``timed_out`` (killed at its timeout, or
    by close()) do not overlap; ``dropped`` counts runs refused by a full queue
    or after close(). ``running`` and ``queued`` are the current numbers;
    ``lines_*`` count FIFO event lines."""

    started: int = 0
    failed: int = 0
    timed_out: int = 0
    dropped: int = 0
    running: int = 0
    queued: int = 0
    lines_written: int = 0
    lines_dropped: int = 0


class HookRunner:
    """Runs notify commands on the daemon's main loop, and writes the notify FIFO."""

    def __init__(
        self, timeout: float, max_running: int, fifo: str = "", queue_limit: int = 256
    ) -> None:
        self._timeout = float(timeout)
        self._max_running = max(1, int(max_running))
        self._queue_limit = max(0, int(queue_limit))
        self._queue: collections.deque[list[str]] = collections.deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()  # set while nothing runs or waits
        self._idle.set()
        self._accepting = True  # False once close() began: run() refuses
        self._closed = False  # True once close() gave up waiting: nothing starts
        self._started = self._failed = self._timed_out = self._dropped = 0
        self._fifo = _Fifo(fifo)

    # --- commands -----------------------------------------------------------------

    def run(self, argv: Sequence[str], extra: Sequence[str] = ()) -> None:
        """Run ``argv`` followed by ``extra`` soon (now if a slot is free, else
        after the runs queued before it). An empty argv runs nothing. Never
        blocks, never raises: a refused run is logged and counted."""
        args = [*argv, *extra] if argv else []
        if not args:
            return
        if not self._accepting:
            self._drop(args, "closed")
        elif len(self._tasks) < self._max_running:
            self._start(args)
        elif len(self._queue) < self._queue_limit:
            self._queue.append(args)
        else:
            self._drop(args, "queue full")

    def _drop(self, args: list[str], why: str) -> None:
        self._dropped += 1
        log.warning("hook.dropped", command=args[0], reason=why, dropped=self._dropped)

    def _start(self, args: list[str]) -> None:
        try:
            task = asyncio.get_running_loop().create_task(self._one(args))
        except RuntimeError:  # no running loop: a caller off the main loop
            self._drop(args, "no running event loop")
            return
        self._started += 1
        self._idle.clear()
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    async def _one(self, args: list[str]) -> None:
        try:
            outcome = await run_command(args, self._timeout)
        except asyncio.CancelledError:  # close() ran out of time: killed with its group
            self._timed_out += 1
            log.warning("hook.failed", command=args[0], reason="killed at stop")
            raise
        if outcome.ok:
            return
        if outcome.timed_out:
            self._timed_out += 1
        else:
            self._failed += 1
        fields = {"stderr": outcome.stderr} if outcome.stderr else {}
        if outcome.fault:
            fields["fault"] = outcome.fault
        log.warning("hook.failed", command=args[0], reason=outcome.reason, **fields)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("hook.error", error=repr(exc))  # a bug: run_command never raises
        self._fill()

    def _fill(self) -> None:
        while self._queue and len(self._tasks) < self._max_running and not self._closed:
            self._start(self._queue.popleft())
        if not self._tasks and (not self._queue or self._closed):
            self._idle.set()

    async def idle(self) -> None:
        """Wait until no hook runs or waits (tests, shutdown)."""
        await self._idle.wait()

    async def close(self) -> None:
        """Stop taking runs; let the running and queued ones finish within one
        timeout from now, then kill (with their groups) those still running and
        drop those still queued. Closes the FIFO."""
        self._accepting = False  # queued runs still start as slots free
        try:
            async with asyncio.timeout(self._timeout):
                await self.idle()
        except TimeoutError:
            pass
        self._closed = True
        for args in self._queue:
            self._drop(args, "closed")
        self._queue.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._fifo.close()

    def reconfigure(self, timeout: float, max_running: int, fifo: str) -> None:
        """New limits for later runs (running ones keep their timeout); a larger
        cap starts queued runs now. A new FIFO path is opened at the next line."""
        self._timeout = float(timeout)
        self._max_running = max(1, int(max_running))
        if fifo != self._fifo.path:
            self._fifo.close()
            self._fifo = _Fifo(fifo, self._fifo)
        self._fill()

    @property
    def stats(self) -> HookStats:
        return HookStats(
            started=self._started,
            failed=self._failed,
            timed_out=self._timed_out,
            dropped=self._dropped,
            running=len(self._tasks),
            queued=len(self._queue),
            lines_written=self._fifo.written,
            lines_dropped=self._fifo.dropped,
        )

    # --- the FIFO -------------------------------------------------------------------

    def event_line(self, line: str) -> None:
        """Write ``line`` and a newline to the FIFO, if one is set and a reader
        has it open; else drop it (counted). Never blocks, never raises."""
        if self._closed:
            self._fifo.dropped += 1
            return
        self._fifo.write(line)


class _Fifo:
    """keepalived's notify_fifo: one event per line, written whole or not at all.

    A line that cannot be written (no reader, a full pipe, not a FIFO) is
    dropped and counted; the reason is logged once, until a line gets through
    again or the reason changes."""

    def __init__(self, path: str, counts_from: _Fifo | None = None) -> None:
        self.path = path
        self.written: int = counts_from.written if counts_from else 0
        self.dropped: int = counts_from.dropped if counts_from else 0
        self._fd: int | None = None
        self._trouble = ""  # the reason logged last

    def write(self, line: str) -> None:
        if not self.path:
            return
        data = (line + "\n").encode("utf-8", "replace")
        if len(data) > PIPE_BUF:  # longer writes may interleave with others
            self.dropped += 1
            log.warning(
                "hook.fifo_dropped",
                path=self.path,
                reason="line too long",
                size=len(data),
                limit=PIPE_BUF,
            )
            return
        for attempt in range(2):
            if self._fd is None:
                trouble = self._open()
                if trouble is not None:
                    self._drop(trouble)
                    return
            assert self._fd is not None
            try:
                os.write(self._fd, data)
            except BlockingIOError:  # the reader does not keep up: the pipe is full
                self._drop("pipe full")
                return
            except BrokenPipeError:
                # The reader left, or the FIFO was replaced under us: a fresh
                # open finds a new reader if there is one already.
                self.close()
                if attempt == 0:
                    continue
                self._drop("no reader")
                return
            except OSError as exc:
                self.close()
                self._drop(f"cannot write: {_strerror(exc)}")
                return
            self.written += 1
            self._trouble = ""
            return

    def _drop(self, trouble: str) -> None:
        self.dropped += 1
        if trouble != self._trouble:
            self._trouble = trouble
            log.warning("hook.fifo_dropped", path=self.path, reason=trouble)

    def _open(self) -> str | None:
        """Open the FIFO for writing, creating it (mode 0600) if missing. None
        once open; else why not."""
        flags = os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        for _ in range(3):
            try:
                # Never open what is not a FIFO (a device, a file) to find out.
                if not stat.S_ISFIFO(os.stat(self.path).st_mode):
                    return "is not a FIFO"
                fd = os.open(self.path, flags)
            except FileNotFoundError:
                try:
                    os.mkfifo(self.path, 0o600)
                except FileExistsError:
                    pass  # made meanwhile: open what is there
                except OSError as exc:
                    return f"cannot create it: {_strerror(exc)}"
                continue
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no reader has it open: no one listens
                    return "no reader"
                return f"cannot open it: {_strerror(exc)}"
            try:  # what was opened, not the path: it may have been swapped
                is_fifo = stat.S_ISFIFO(os.fstat(fd).st_mode)
            except OSError:
                is_fifo = False
            if not is_fifo:
                os.close(fd)
                return "is not a FIFO"
            self._fd = fd
            return None
        return "cannot create it: the path keeps changing"

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _strerror(exc: OSError) -> str:
    return (exc.strerror or type(exc).__name__).lower()
