"""Track scripts and track files: keepalived's vrrp_script and track_file.

Each ``[[vrrp_script]]`` runs periodically on the daemon's main loop, as a
notify hook does (pulsed.hooks.run_command: no shell, a process group of its
own, killed with its group at the timeout), its passes and failures
smoothed by rise/fall (pulsed.checks.hysteresis). Its value is True (ok),
False (failing) or None (unknown: no verdict yet, rise passes or fall
failures in a row decide the first one). A script that cannot be started for
a reason of the router (no descriptor, no memory, a sandbox's EPERM: see
pulsed.checks.base.local_fault) keeps its last value: a fault of the router
is not blamed on what the script checks.

Each track file holds an integer (surrounding whitespace allowed); a file
that is missing, unreadable or holds anything else has the value None. The
files are read with pulsed.files.read_file (a non-blocking open, a size cap)
in a worker thread, so a slow file system never stalls the loop.

The values are read by the VRRP heartbeat thread (``value``), so they are
published as one dict, built anew and swapped in whole after every change: a
reader sees the dict before or after a change, never one half-built, and
needs no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Mapping, Sequence
from typing import Protocol

import structlog

from pulsed.checks.hysteresis import Hysteresis, step
from pulsed.files import FileProblem, read_file
from pulsed.hooks import Outcome, run_command

log = structlog.get_logger(__name__)

# A track file is a number, not a document.
_MAX_FILE_BYTES = 4096
# An integer, optionally signed, around it only whitespace. 18 digits: any
# priority arithmetic on it stays within a 64-bit integer.
_INTEGER = re.compile(rb"\s*([+-]?[0-9]{1,18})\s*")
# How often the track files are read (keepalived watches them with inotify;
# a poll at the default track_interval is as quick and works on any file system).
FILE_INTERVAL = 0.1

Value = int | bool | None
Key = tuple[str, str]  # ("script", name) or ("file", path)


class ScriptSpec(Protocol):
    """What is read of a ``[[vrrp_script]]`` (pulsed.ha.config.VrrpScript)."""

    @property
    def name(self) -> str: ...
    @property
    def command(self) -> Sequence[str]: ...
    @property
    def interval(self) -> float: ...
    @property
    def timeout(self) -> float: ...
    @property
    def rise(self) -> int: ...
    @property
    def fall(self) -> int: ...
    @property
    def weight(self) -> int: ...


def parse_track_file(data: bytes) -> int | None:
    """The integer a track file holds, or None if it holds anything else."""
    match = _INTEGER.fullmatch(data)
    return int(match.group(1)) if match else None


def _read_track_file(path: str) -> tuple[int | None, str]:
    """A track file's value, and why it is None ("" when it has a value)."""
    try:
        data = read_file(path, what="track file", max_bytes=_MAX_FILE_BYTES)
    except FileProblem as exc:
        return None, exc.reason
    value = parse_track_file(data)
    return value, "" if value is not None else "does not hold an integer"


class _Script:
    """One script's schedule and verdict."""

    def __init__(self, spec: ScriptSpec) -> None:
        self.spec = spec
        self.state = Hysteresis(False)
        self.value: bool | None = None
        self.fault = ""  # the local fault seen last, so it is logged once
        self.task: asyncio.Task[None] | None = None

    def same_command(self, spec: ScriptSpec) -> bool:
        old = self.spec
        return (list(old.command), old.rise, old.fall) == (list(spec.command), spec.rise, spec.fall)

    def apply(self, outcome: Outcome) -> bool:
        """Take one run's outcome; True if the value changed."""
        spec = self.spec
        if outcome.fault is not None:  # the router's fault: the value stands
            if outcome.fault != self.fault:
                self.fault = outcome.fault
                log.warning(
                    "tracker.script_local_fault",
                    script=spec.name,
                    reason=outcome.reason,
                    fault=outcome.fault,
                    kept=self.value,
                )
            return False
        self.fault = ""
        self.state = step(self.state, outcome.ok, spec.rise, spec.fall)
        if self.value is None:  # no verdict yet: the first threshold reached decides
            if self.state.ok_run >= spec.rise:
                value: bool | None = True
            elif self.state.fail_run >= spec.fall:
                value = False
            else:
                value = None
            self.state = Hysteresis(bool(value), self.state.ok_run, self.state.fail_run)
        else:
            value = self.state.up
        if value == self.value:
            return False
        self.value = value
        fields = {"stderr": outcome.stderr} if outcome.stderr else {}
        (log.info if value else log.warning)(
            "tracker.script",
            script=spec.name,
            state="ok" if value else "failing",
            reason=outcome.reason,
            **fields,
        )
        return True


class Trackers:
    """Runs the vrrp_scripts and reads the track files on the daemon's main loop;
    ``value`` may be called from any thread."""

    def __init__(
        self,
        scripts: Sequence[ScriptSpec],
        files: Sequence[str],
        *,
        file_interval: float = FILE_INTERVAL,
    ) -> None:
        self._scripts: dict[str, _Script] = {s.name: _Script(s) for s in scripts}
        self._files: dict[str, tuple[int | None, str]] = dict.fromkeys(files, (None, "unread"))
        self._file_interval = file_interval
        self._file_task: asyncio.Task[None] | None = None
        self._started = False
        self._values: dict[Key, Value] = {}
        self._publish()

    # --- the read side (any thread) -------------------------------------------------

    def value(self, kind: str, name: str) -> Value:
        """kind "script": True (ok), False (failing), None (unknown);
        kind "file": the file's integer, or None. None for names not tracked."""
        return self._values.get((kind, name))

    def values(self) -> Mapping[Key, Value]:
        """Every value at one moment (the published dict: do not change it)."""
        return self._values

    def _publish(self) -> None:
        values: dict[Key, Value] = {("script", n): s.value for n, s in self._scripts.items()}
        values.update((("file", path), v) for path, (v, _) in self._files.items())
        self._values = values  # one store: readers see the old dict or this one

    # --- running ------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the track files once (so their values are there at once), then
        run the scripts and poll the files."""
        self._started = True
        await self.poll_files()
        for script in self._scripts.values():
            self._launch(script)
        self._launch_file_poll()

    async def stop(self) -> None:
        """Stop every script (a running one is killed with its group) and the poll."""
        self._started = False
        tasks = [s.task for s in self._scripts.values() if s.task is not None]
        if self._file_task is not None:
            tasks.append(self._file_task)
        for script in self._scripts.values():
            script.task = None
        self._file_task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def reconfigure(self, scripts: Sequence[ScriptSpec], files: Sequence[str]) -> None:
        """Take a new set of scripts and files. A script whose command, rise and
        fall are unchanged keeps its value (and its run counts); a new interval
        or timeout applies from its next run. Removed ones stop; added ones
        start with no value."""
        old = self._scripts
        new: dict[str, _Script] = {}
        for spec in scripts:
            script = old.pop(spec.name, None)
            if script is not None and script.same_command(spec):
                script.spec = spec
                new[spec.name] = script
                continue
            if script is not None and script.task is not None:
                script.task.cancel()
            new[spec.name] = _Script(spec)
            if self._started:
                self._launch(new[spec.name])
        for script in old.values():
            if script.task is not None:
                script.task.cancel()
        self._scripts = new
        self._files = {path: self._files.get(path, (None, "unread")) for path in files}
        self._publish()
        if self._started:
            self._launch_file_poll()

    def _launch(self, script: _Script) -> None:
        script.task = asyncio.get_running_loop().create_task(self._script_loop(script))

    def _launch_file_poll(self) -> None:
        if self._files and (self._file_task is None or self._file_task.done()):
            self._file_task = asyncio.get_running_loop().create_task(self._file_loop())

    async def _script_loop(self, script: _Script) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            try:
                await self._run(script)
            except Exception:  # a bug: keep the schedule, say so
                log.exception("tracker.script_error", script=script.spec.name)
            # From start to start, as keepalived: a run never overlaps the next.
            await asyncio.sleep(max(0.0, began + float(script.spec.interval) - loop.time()))

    async def _run(self, script: _Script) -> None:
        outcome = await run_command(script.spec.command, float(script.spec.timeout))
        if script is self._scripts.get(script.spec.name) and script.apply(outcome):
            self._publish()

    async def probe_script(self, name: str) -> Value:
        """Run one script once now, apply its outcome, and return its value."""
        script = self._scripts[name]
        await self._run(script)
        return script.value

    async def _file_loop(self) -> None:
        while self._files:
            await asyncio.sleep(self._file_interval)
            with contextlib.suppress(Exception):  # never let the poll die
                await self.poll_files()

    async def poll_files(self) -> None:
        """Read every track file once (in a worker thread); publish if any changed."""
        paths = list(self._files)
        if not paths:
            return
        read = await asyncio.to_thread(lambda: [_read_track_file(p) for p in paths])
        changed = False
        for path, (value, why) in zip(paths, read, strict=True):
            before = self._files.get(path)
            if before is None or before == (value, why):
                continue  # no longer tracked, or unchanged
            self._files[path] = (value, why)
            changed = True
            if value is None:
                log.warning("tracker.file", file=path, value=None, reason=why)
            else:
                log.info("tracker.file", file=path, value=value)
        if changed:
            self._publish()
