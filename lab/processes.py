"""The lab's long-running processes by name: started inside a namespace, signalled, stopped.

Each runs in its own session, so Ctrl-C reaches only the driver, which then stops them
in order. A process given a log file writes there; a router's log is what explains its
death, so ``check_alive`` quotes its last line.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from pathlib import Path

from lab.netns import LabError, ns_argv


class Processes:
    """The processes the lab started, by name (``rs1``, ``plab-router``, ...)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: dict[str, subprocess.Popen] = {}

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def start(self, name: str, ns: str, argv: list[str], log: bool = False) -> subprocess.Popen:
        """Start ``argv`` in ``ns``; its output goes to the log if ``log``, else to a pipe."""
        # Not a with block: the child keeps its own copy of the log, ours is closed below.
        out = open(self.log_path(name), "ab") if log else subprocess.PIPE  # noqa: SIM115
        proc = subprocess.Popen(
            ns_argv(ns, argv),
            stdout=out,
            stderr=subprocess.STDOUT if log else None,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the driver, which stops them in order
        )
        if log:
            out.close()
        self.running[name] = proc
        return proc

    def send_signal(self, name: str, sig: int) -> None:
        self.running[name].send_signal(sig)

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 5) -> None:
        """Send ``sig`` and wait; SIGKILL if it outlives ``timeout``. Unknown names are fine."""
        proc = self.running.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)

    def check_alive(self, *names: str) -> None:
        """LabError (with the last log line) if one of ``names`` has exited."""
        for name in names:
            proc = self.running.get(name)
            if proc is not None and proc.poll() is not None:
                raise LabError(f"{name} exited with status {proc.returncode}{self._log_tail(name)}")

    def _log_tail(self, name: str) -> str:
        with contextlib.suppress(OSError):
            lines = self.log_path(name).read_text(errors="replace").strip().splitlines()
            if lines:
                return "; last log line: " + lines[-1][-300:]
        return ""
