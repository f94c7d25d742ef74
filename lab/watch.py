"""Watching the kernel from outside pulsed: the IPVS table and the VIP.

The lab times what pulsed does by what the kernel shows, as an operator
would: a real server is "detected down" when its weight in the IPVS table
becomes 0, and a router "holds the VIP" when the address is on its interface.

``TableWatcher`` runs ``ipvsadm -Ln`` in a tight loop inside a router's
namespace (one shell, no process per poll from Python) and records every
change with the time it was read. ``AddressWatcher`` follows
``ip monitor address``, so it is told of a VIP arriving rather than polling.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import threading
import time
from collections.abc import Callable, Mapping

from lab.netns import LabError, ns_argv

Weights = Mapping[str, int]  # "10.77.0.11:80" -> weight; absent: not in the table

_DEST = re.compile(r"^\s*->\s+(\S+:\d+)\s+\S+\s+(\d+)\s+(\d+)\s+(\d+)")


def parse_ipvsadm(text: str) -> dict[str, int]:
    """Destination -> weight from ``ipvsadm -Ln -t VIP:PORT`` output."""
    weights = {}
    for line in text.splitlines():
        m = _DEST.match(line)
        if m:
            weights[m.group(1)] = int(m.group(2))
    return weights


class _LineThread:
    """A child process whose stdout lines are handed to ``on_line`` on a thread."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.on_line(line.rstrip("\n"), time.monotonic())

    def on_line(self, line: str, at: float) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._thread.join(timeout=2)


class TableWatcher(_LineThread):
    """The weights of one virtual service in a router's IPVS table, as they change."""

    def __init__(self, ns: str, service: str, period: float = 0.02) -> None:
        self.cond = threading.Condition()
        self.history: list[tuple[float, dict[str, int]]] = []  # (monotonic, weights) changes
        self.current: dict[str, int] | None = None
        self._block: list[str] = []
        script = f"while :; do ipvsadm -Ln -t {service} 2>&1; echo @@; sleep {period}; done"
        super().__init__(ns_argv(ns, ["sh", "-c", script]))

    def on_line(self, line: str, at: float) -> None:
        if line != "@@":
            self._block.append(line)
            return
        weights = parse_ipvsadm("\n".join(self._block))
        self._block = []
        with self.cond:
            if weights != self.current:
                self.current = weights
                self.history.append((at, weights))
            self.cond.notify_all()

    def wait_for(self, predicate: Callable[[Weights], bool], timeout: float, what: str) -> float:
        """Block until ``predicate(weights)`` holds; return the time it was first seen."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                if self.current is not None and predicate(self.current):
                    return self.history[-1][0] if self.history else time.monotonic()
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise LabError(
                        f"timed out after {timeout:.0f}s waiting for {what}"
                        f" (IPVS table: {self.current or 'no service'})"
                    )
                self.cond.wait(min(left, 0.5))

    def changes_since(self, since: float) -> list[tuple[float, dict[str, int]]]:
        with self.cond:
            return [(t, w) for t, w in self.history if t >= since]


class AddressWatcher(_LineThread):
    """When an address appears on (or leaves) an interface of a namespace."""

    def __init__(self, ns: str, address: str) -> None:
        self.address = address
        self.cond = threading.Condition()
        self.events: list[tuple[float, bool]] = []  # (monotonic, present)
        super().__init__(ns_argv(ns, ["ip", "-o", "monitor", "address"]))
        self.present_at_start = address in _addresses(ns)

    def on_line(self, line: str, at: float) -> None:
        if f" {self.address}/" not in line:
            return
        with self.cond:
            self.events.append((at, not line.startswith("Deleted")))
            self.cond.notify_all()

    def wait_present(self, timeout: float, after: float = 0.0) -> float:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for at, present in self.events:
                    if present and at >= after:
                        return at
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LabError(f"timed out after {timeout:.0f}s waiting for {self.address}")
                self.cond.wait(min(left, 0.5))


def _addresses(ns: str) -> str:
    with contextlib.suppress(OSError):
        return subprocess.run(
            ns_argv(ns, ["ip", "-o", "addr"]), capture_output=True, text=True, check=False
        ).stdout
    return ""


def has_address(ns: str, address: str) -> bool:
    return f" {address}/" in _addresses(ns)
