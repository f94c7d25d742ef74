"""Route health injection at run time: decisions after each pass, one announcer.

The daemon calls ``update`` after every reconcile pass (and on a reload or
a drain); a single task then brings the announcer to the latest decisions,
so announcements never interleave and a slow netlink call delays nothing
else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

import structlog

from pulsed.announce.base import Announcer, BgpView
from pulsed.announce.config import BgpConfig
from pulsed.announce.decide import VipDecision, decide, services_by_vip
from pulsed.config import Config
from pulsed.model import Table, normalize_address

log = structlog.get_logger(__name__)


def make_announcer(config: BgpConfig, fd: int | None = None) -> Announcer:
    from pulsed.announce.frr import FrrAnnouncer

    return FrrAnnouncer(config, fd)


class BgpRuntime:
    def __init__(
        self, config: Config, announcer: Announcer | None = None, fd: int | None = None
    ) -> None:
        """``fd``: the announce interface's descriptor inherited in a live upgrade."""
        assert config.bgp is not None
        self.config = config
        self.announcer = announcer or make_announcer(config.bgp, fd)
        self.drained = False
        self.decisions: tuple[VipDecision, ...] = ()
        self._inputs: tuple[Mapping[str, float], Table, bool] = ({}, Table(), False)
        self._dirty = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        try:
            await self.announcer.start()
        except Exception as exc:  # announcing must never stop the serving
            log.error("bgp.start_failed", error=f"{type(exc).__name__}: {exc}")
        self._task = asyncio.create_task(self._run(), name="bgp-announce")

    def reconfigure(self, config: Config) -> None:
        """A reload's new [bgp] (the interface and daemon settings need a restart)."""
        self.config = config
        self._decide()

    def update(self, healthy: Mapping[str, float], kernel: Table, ready: bool = True) -> None:
        self._inputs = (healthy, kernel, ready)
        self._decide()

    def set_drained(self, drained: bool) -> None:
        self.drained = drained
        self._decide()

    def _decide(self) -> None:
        bgp = self.config.bgp
        if bgp is None:
            return
        healthy, kernel, ready = self._inputs
        by_vip = services_by_vip(
            [
                (s.name, s.key, normalize_address(s.vip) if s.vip else None)
                for s in self.config.service
            ]
        )
        decisions = decide(
            bgp.vip_thresholds(),
            by_vip,
            healthy,
            kernel.services,
            ready=ready,
            drained=self.drained,
        )
        before = {d.vip: d for d in self.decisions}
        for d in decisions:
            old = before.get(d.vip)
            if old is None or old.announce != d.announce:
                level = log.info if d.announce else log.warning
                level("bgp.decision", vip=d.vip, announce=d.announce, reason=d.reason)
        self.decisions = decisions
        self._dirty.set()

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            wanted = [d.vip for d in self.decisions if d.announce]
            try:
                await self.announcer.announce(wanted)
            except Exception as exc:  # never let announcing take the daemon down
                log.error("bgp.announce_failed", error=f"{type(exc).__name__}: {exc}")

    def descriptor(self) -> int:
        """The announce interface's descriptor for a live upgrade's successor, or -1."""
        return self.announcer.descriptor()

    async def stop(self, withdraw: bool = True) -> int | None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return await self.announcer.stop(withdraw)

    def view(self, kernel: Table) -> BgpView:
        vips = {d.vip for d in self.decisions}
        active = sum(
            d.stats.active_connections
            for s in kernel
            if s.key.address in vips
            for d in s.dests
            if d.stats is not None
        )
        return BgpView(self.decisions, self.announcer.status(), self.drained, active)
