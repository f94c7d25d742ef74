"""Run the real ``pulsed`` process in tests and wait on its log events.

pulsed logs JSON lines when not on a terminal; tests wait for a named event
(``daemon.started``, ``reload.applied``...) instead of sleeping.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


class DaemonProcess:
    """``pulsed run`` in a subprocess, with its log events in a queue."""

    def __init__(self, config: Path, *args: str, netns: str | None = None, env=None) -> None:
        cmd = [sys.executable, "-m", "pulsed.cli", "run", "-c", str(config), *args]
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
            env={**os.environ, **(env or {})},
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                self.events.put(event)
        self.events.put({"event": "__exit__"})

    def wait_for(self, name: str, timeout: float = 120.0, **fields: Any) -> dict[str, Any]:
        """The next log event called ``name`` (with matching fields)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {name} event within {timeout}s; log:\n{self.log()}")
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if event.get("event") == "__exit__":
                raise AssertionError(f"pulsed exited before {name}; log:\n{self.log()}")
            if event.get("event") == name and all(event.get(k) == v for k, v in fields.items()):
                return event

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def log(self) -> str:
        return "".join(self.lines[-60:])
