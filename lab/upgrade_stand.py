"""A live upgrade of a VRRP master, watched from the wire (needs root; namespaces only).

Router 1 runs the whole daemon (``pulsed run --backend memory`` with one [[vrrp]]
instance, priority 200): the master. Router 2 runs a backup (pulsed's standalone
node, or keepalived). The observer, on the bridge between them, records every
VRRP advert and every gratuitous ARP with its receive time (lab/ha_pair.py's
capture), and a sampler reads router 1's addresses every few milliseconds to
time how long the VIP had no owner.

``UpgradeStand.upgrade()`` runs ``pulsed upgrade`` inside router 1 and returns
what the peer and the observer saw: the tests assert on it, benchmarks/upgrade.py
prints it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

from lab.ha_pair import VIP, HaPair, Proc, netns_exec, sh

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class UpgradeOutcome:
    ok: bool
    output: str
    old_pid: int
    new_pid: int
    longest_advert_gap: float  # seconds between two adverts of the master, around the upgrade
    master_down_interval: float  # the peer's: a gap longer than this would make it master
    no_owner: float  # seconds the VIP was on no router's interface (sampled)
    samples: int
    peer_transitions: int
    peer_garps: int
    master_adverts: int
    handover_seconds: float  # from the command to its answer


class UpgradeStand:
    def __init__(self, lab: HaPair, peer: str = "pulsed", advert: float = 0.1) -> None:
        self.lab = lab
        self.peer_kind = peer
        self.advert = advert
        self.daemon: Proc | None = None
        self.peer: Proc | None = None
        self.capture: Proc | None = None
        self.config = os.path.join(lab.dir, "r1-pulsed.toml")
        self.state_dir = os.path.join(lab.dir, "r1-state")
        self.pids: list[int] = []

    def daemon_config(self) -> str:
        return f"""service = []

[daemon]
state_dir = "{self.state_dir}"

[api]
listen = "127.0.0.1:9480"

[[vrrp]]
name = "VI_1"
interface = "{self.lab.ifname(0)}"
vrid = 51
priority = 200
advert_interval = "{int(self.advert * 1000)}ms"
virtual_addresses = ["{VIP}/24"]
garp_count = 3
track_interval = "50ms"
"""

    async def start(self) -> None:
        lab = self.lab
        self.capture = await lab.capture()
        if self.peer_kind == "keepalived":
            self.peer = await lab.start_keepalived(1, priority=100)
        else:
            self.peer = await lab.start_pulsed(
                1, priority=100, advert_interval=f"{int(self.advert * 1000)}ms"
            )
        with open(self.config, "w") as f:
            f.write(self.daemon_config())
        # pulsed logs JSON lines on stderr: read them as events (every generation's).
        proc = await asyncio.create_subprocess_exec(
            *netns_exec(lab.routers[0], sys.executable, "-m", "pulsed.cli", "run", "-c",
                        self.config, "--backend", "memory"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=REPO,
        )  # fmt: skip
        self.daemon = Proc("pulsed-daemon-r1", lab.routers[0], proc)
        self.daemon.start_reader()
        lab.procs.append(self.daemon)
        self.pids.append(proc.pid)
        await self.daemon.wait_event(lambda e: e.get("event") == "vrrp.master", timeout=20)
        await lab.wait_for(lambda: lab.holders() == [0], timeout=10)
        await asyncio.sleep(3 * self.advert + 0.2)  # the peer has seen the master's adverts

    def peer_transitions(self, since: float) -> int:
        assert self.peer is not None
        if self.peer_kind == "keepalived":
            assert self.peer.log is not None
            with open(self.peer.log, errors="replace") as f:
                text = f.read()
            # keepalived logs each state entry; -l -D lines carry no time: count them all
            # after the mark by the count before (taken in upgrade()).
            return len(re.findall(r"Entering MASTER STATE", text)) - self._peer_before
        return sum(
            1
            for e in self.peer.events
            if e.get("event") == "role" and e.get("seen", 0) >= since and e.get("new") != "backup"
        )

    def _peer_master_count(self) -> int:
        if self.peer_kind != "keepalived" or self.peer is None or self.peer.log is None:
            return 0
        with open(self.peer.log, errors="replace") as f:
            return f.read().count("Entering MASTER STATE")

    async def _sample_owner(self, stop: asyncio.Event, out: list[tuple[float, bool]]) -> None:
        """Whether router 1 or 2 holds the VIP, every few ms (one netlink dump each)."""
        while not stop.is_set():
            held = await asyncio.to_thread(self.lab.holders)
            out.append((time.time(), bool(held)))
            await asyncio.sleep(0.002)

    async def upgrade(self, settle: float = 1.5) -> UpgradeOutcome:
        lab, daemon, capture = self.lab, self.daemon, self.capture
        assert daemon is not None and capture is not None
        self._peer_before = self._peer_master_count()
        old_pid = self.pids[-1]
        mark_events = len(capture.events)
        samples: list[tuple[float, bool]] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(self._sample_owner(stop, samples))
        await asyncio.sleep(0.3)
        since = time.time()
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *netns_exec(lab.routers[0], sys.executable, "-m", "pulsed.cli", "upgrade", "-c",
                        self.config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=REPO,
        )  # fmt: skip
        out, _ = await proc.communicate()
        took = time.monotonic() - started
        text = out.decode(errors="replace").strip()
        m = re.search(r"handed over to pid (\d+)", text)
        new_pid = int(m.group(1)) if m else 0
        if new_pid:
            self.pids.append(new_pid)
        await asyncio.sleep(settle)
        stop.set()
        await sampler
        return self._outcome(proc.returncode == 0, text, old_pid, new_pid, since, took,
                             capture.events[mark_events:], samples)  # fmt: skip

    def _outcome(
        self,
        ok: bool,
        text: str,
        old_pid: int,
        new_pid: int,
        since: float,
        took: float,
        events: list[dict[str, Any]],
        samples: list[tuple[float, bool]],
    ) -> UpgradeOutcome:
        master = self.lab.addr(0)
        adverts = [e["t"] for e in events if e.get("event") == "advert" and e["src"] == master]
        gaps = [b - a for a, b in itertools.pairwise(adverts)]
        peer_mac = _mac(self.lab.routers[1], self.lab.ifname(1))
        peer_garps = sum(
            1
            for e in events
            if e.get("event") == "garp" and e["ip"] == VIP and e["mac"] == peer_mac
        )
        no_owner = 0.0
        for (t0, held), (t1, _) in itertools.pairwise(samples):
            if not held:
                no_owner += t1 - t0
        # RFC 5798: 3 x the master's interval + skew, skew = (256 - priority) / 256 x interval.
        down = 3 * self.advert + (256 - 100) / 256 * self.advert
        return UpgradeOutcome(
            ok=ok,
            output=text,
            old_pid=old_pid,
            new_pid=new_pid,
            longest_advert_gap=max(gaps, default=float("inf")),
            master_down_interval=down,
            no_owner=no_owner,
            samples=len(samples),
            peer_transitions=self.peer_transitions(since),
            peer_garps=peer_garps,
            master_adverts=len(adverts),
            handover_seconds=took,
        )

    def kill_all(self) -> None:
        """The daemon processes (every generation): kill -9, as the lab's close does."""
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _mac(ns: str, ifname: str) -> str:
    out = sh("ip", "-n", ns, "-j", "link", "show", "dev", ifname).stdout
    return json.loads(out)[0]["address"]
