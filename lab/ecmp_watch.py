"""Watching the ECMP lab from outside pulsed: the upstream router's routes and the directors.

``RouteWatcher`` reads the upstream router's route to the VIP in a tight
loop (one shell, as lab/watch.py's TableWatcher does for the IPVS table) and
records each change of its next hops with the time it was read: a
withdrawal is timed by when the upstream router stops using a director.
``flow_paths`` asks the upstream router which director each client port's
flow takes now (``ip route get ... sport``, its L4 hash), all in one process.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable

from lab.netns import LabError, ns_argv, run
from lab.watch import _LineThread

Hops = frozenset[str]


def parse_nexthops(text: str) -> Hops:
    """The gateways of ``ip route show`` output (one route, single or multipath)."""
    words = text.split()
    return frozenset(words[i + 1] for i, w in enumerate(words[:-1]) if w == "via")


class RouteWatcher(_LineThread):
    """The next hops of one destination in a namespace's main table, as they change."""

    def __init__(self, ns: str, destination: str, period: float = 0.005) -> None:
        self.cond = threading.Condition()
        self.history: list[tuple[float, Hops]] = []
        self.current: Hops | None = None
        self._block: list[str] = []
        script = f"while :; do ip route show {destination}; echo @@; sleep {period}; done"
        super().__init__(ns_argv(ns, ["sh", "-c", script]))

    def on_line(self, line: str, at: float) -> None:
        if line != "@@":
            self._block.append(line)
            return
        hops = parse_nexthops("\n".join(self._block))
        self._block = []
        with self.cond:
            if hops != self.current:
                self.current = hops
                self.history.append((at, hops))
            self.cond.notify_all()

    def wait_for(self, predicate: Callable[[Hops], bool], timeout: float, what: str) -> float:
        """Block until ``predicate(next hops)`` holds; the time it was first seen."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                if self.current is not None and predicate(self.current):
                    return self.history[-1][0]
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    shown = ", ".join(sorted(self.current or ())) or "none"
                    raise LabError(
                        f"timed out after {timeout:.0f}s waiting for {what} (next hops: {shown})"
                    )
                self.cond.wait(min(left, 0.5))


_VIA = re.compile(r"\bvia (\S+)")


def flow_paths(
    ns: str, destination: str, source: str, iif: str, ports: Iterable[int], dport: int = 80
) -> dict[int, str | None]:
    """Client port -> the next hop the router's hash picks for that TCP flow now."""
    ports = list(ports)
    lines = [
        f"route get {destination} from {source} iif {iif} ipproto tcp sport {p} dport {dport}"
        for p in ports
    ]
    proc = run(["ip", "-batch", "-"], ns=ns, check=False, input="\n".join(lines) + "\n")
    hops = [m.group(1) for m in _VIA.finditer(proc.stdout)]
    if len(hops) != len(ports):
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise LabError(f"ip route get in {ns}: {detail[-1] if detail else 'no answer'}")
    return dict(zip(ports, hops, strict=True))


_SERVICE_STATS = re.compile(r"^\s*TCP\s+\S+\s+(\d+)\s+(\d+)", re.M)


def service_counters(ns: str, service: str) -> tuple[int, int]:
    """(connections, packets in) the director's IPVS counted for ``service`` so far."""
    out = run(["ipvsadm", "-Ln", "--stats", "--exact", "-t", service], ns=ns, check=False).stdout
    m = _SERVICE_STATS.search(out)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)
