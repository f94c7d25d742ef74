"""VrrpNode: the VRRP instances of one pulsed daemon, on one heartbeat loop.

With ``dedicated_thread`` (the default) the heartbeat runs on its own thread and event loop,
so a busy main loop cannot delay adverts (see docs/benchmarks.md "failover"). Every instance
runs on that loop (pulsed.ha.router); they share one raw socket per (interface, family)
(pulsed.ha.sockets); sync groups tie instances together (pulsed.ha.groups, pure rules).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence

import structlog

from pulsed.ha import fsm, groups
from pulsed.ha.config import SyncGroup, VrrpConfig
from pulsed.ha.prepare import (
    PreparedVrrp,
    VrrpSetupError,
    prepare_vrrp,
    prepare_vrrp_async,
)
from pulsed.ha.router import (
    ANSWER_GAP,
    HealthyFraction,
    Router,
    SyncDaemonControl,
    TrackValue,
)
from pulsed.ha.sockets import SharedSockets
from pulsed.ha.status import SyncGroupStatus, VrrpStatus
from pulsed.ipvs import syncd as kernel_syncd

__all__ = [
    "ANSWER_GAP",
    "PreparedVrrp",
    "SyncDaemonControl",
    "SyncGroupStatus",
    "VrrpNode",
    "VrrpSetupError",
    "VrrpStatus",
    "prepare_vrrp",
    "prepare_vrrp_async",
]

log = structlog.get_logger(__name__)

# (kind "INSTANCE" | "GROUP", name, old, new, priority, reason)
EventHook = Callable[[str, str, str, str, int, str], None]
# (instance name, role, vips_held): after the VIPs were added or removed for a role.
AppliedHook = Callable[[str, str, bool], None]

Instances = Sequence[PreparedVrrp | VrrpConfig] | PreparedVrrp | VrrpConfig


def _prepared(instances: Instances) -> list[PreparedVrrp]:
    items = [instances] if isinstance(instances, PreparedVrrp | VrrpConfig) else instances
    return [
        i if isinstance(i, PreparedVrrp) else prepare_vrrp(i, check_socket=False) for i in items
    ]


class _Groups:
    """The sync groups as the heartbeat loop applies them."""

    def __init__(self, defs: Sequence[SyncGroup]) -> None:
        self.defs = list(defs)
        self.of: dict[str, SyncGroup] = {n: g for g in self.defs for n in g.instances}
        self.states: dict[str, str] = {g.name: "init" for g in self.defs}


class VrrpNode:
    """The daemon's VRRP: ``await start()``, ``await reconfigure()``, ``await stop()``,
    ``status()``, ``group_status()`` (see /work/wt/HA14.md "Node").

    ``healthy_fraction(service)`` and ``track_value(kind, name)`` are called from the
    heartbeat thread when ``dedicated_thread`` is on: they must only read (a dict lookup).
    ``on_event`` and ``on_applied`` are always called on the loop that called start().
    """

    def __init__(
        self,
        instances: Instances,
        *,
        groups: Sequence[SyncGroup] = (),
        healthy_fraction: HealthyFraction | None = None,
        track_value: TrackValue | None = None,
        on_event: EventHook | None = None,
        sync_daemon: SyncDaemonControl | None = None,
        on_applied: AppliedHook | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``instances``: PreparedVrrp (built by ``prepare_vrrp`` before anything was
        swapped), or VrrpConfig validated by pulsed.config, prepared here (VrrpSetupError,
        one line, on failure). ``wall_clock``: only for the timestamps in the status."""
        self._instances = _prepared(instances)
        self._groups = _Groups(groups)
        self._healthy_fraction = healthy_fraction
        self._track_value = track_value
        self._on_event = on_event
        self._on_applied = on_applied
        self._wall_clock = wall_clock
        self._syncd: SyncDaemonControl = sync_daemon if sync_daemon is not None else kernel_syncd
        self._routers: tuple[Router, ...] = ()  # config order; replaced whole
        self._sockets: SharedSockets | None = None
        self._caller_loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._hb_loop: asyncio.AbstractEventLoop | None = None
        dedicated = {p.cfg.dedicated_thread for p in self._instances}
        self._dedicated = all(dedicated) if dedicated else True

    # ---- callbacks to the caller's loop
    def _call(self, fn: Callable[..., None], *args: object) -> None:
        if self._caller_loop is None:
            return
        if self._thread is None:
            fn(*args)
        else:
            self._caller_loop.call_soon_threadsafe(fn, *args)

    def _event(self, kind: str, name: str, old: str, new: str, prio: int, reason: str) -> None:
        if self._on_event is not None:
            self._call(self._on_event, kind, name, old, new, prio, reason)

    # ---- what routers ask of the node (RouterHost), on the heartbeat loop
    def transitioned(self, router: Router, t: fsm.Transition) -> None:
        self._event("INSTANCE", router.name, t.old.value, t.new.value, router.state.priority,
                    t.reason)  # fmt: skip
        group = self._groups.of.get(router.name)
        if group is None:
            return
        members = self._members(group)
        for cmd in groups.on_transition(group.name, members, router.name, t.old, t.new):
            self._schedule(cmd)
        self._group_moved(group)

    def _schedule(self, cmd: groups.Command) -> None:
        # Soon, not now: the member that moved finishes its own step first.
        asyncio.get_running_loop().call_soon(self._apply_command, cmd)

    def _apply_command(self, cmd: groups.Command) -> None:
        router = self._router(cmd.member)
        if router is None or router._stopping:
            return
        if isinstance(cmd, groups.Resign):
            router.dispatch(fsm.Resign(cmd.reason))
        else:
            router.dispatch(fsm.Takeover(cmd.reason))

    def own_fault_changed(self, router: Router) -> None:
        group = self._groups.of.get(router.name)
        if group is not None:
            self._refresh_faults(group)

    def _refresh_faults(self, group: SyncGroup) -> None:
        held = groups.held_faults(group.name, self._members(group))
        for name, reason in held.items():
            r = self._router(name)
            if r is not None:
                r.set_group_fault(reason)

    def may_take_over(self, router: Router) -> bool:
        group = self._groups.of.get(router.name)
        if group is None:
            return True
        return groups.may_take_over(self._members(group), router.name)

    def applied(self, router: Router, role: str, held: bool) -> None:
        if self._on_applied is not None:
            self._call(self._on_applied, router.name, role, held)

    def _router(self, name: str) -> Router | None:
        return next((r for r in self._routers if r.name == name), None)

    def _members(self, group: SyncGroup) -> list[groups.Member]:
        out = []
        for name in group.instances:
            r = self._router(name)
            if r is None:
                out.append(groups.Member(name, fsm.Role.INIT))
                continue
            out.append(groups.Member(name, r.state.role, bool(r.faults), r.following()))
        return out

    def _group_moved(self, group: SyncGroup) -> None:
        new = groups.group_state(self._members(group))
        old = self._groups.states.get(group.name, "init")
        if new == old or new == "transition":
            return
        self._groups.states[group.name] = new
        log.warning(f"vrrp.group_{new}", group=group.name, old=old)
        self._event("GROUP", group.name, old, new, 0, f"sync group {group.name} {new}")

    # ---- lifecycle
    def _make_router(self, prepared: PreparedVrrp) -> Router:
        assert self._sockets is not None
        return Router(
            prepared,
            self,
            self._sockets,
            healthy_fraction=self._healthy_fraction,
            track_value=self._track_value,
            syncd=self._syncd,
            wall_clock=self._wall_clock,
        )

    async def _boot(self, adopt: Mapping[str, str]) -> None:
        self._sockets = SharedSockets(asyncio.get_running_loop())
        routers = []
        try:
            for p in self._instances:
                r = self._make_router(p)
                routers.append(r)
                self._routers = tuple(routers)
                await r.start(adopt.get(p.cfg.name))
        except BaseException:
            for r in reversed(routers):
                if r.loop is not None:
                    await r.stop(graceful=True)
            self._routers = ()
            raise
        for g in self._groups.defs:
            self._refresh_faults(g)

    async def start(self, adopt: Mapping[str, str] | None = None) -> None:
        """``adopt``: instance name -> "master" | "backup" from an upgrade hand-off; a
        "master" instance starts as MASTER at once, keeps its VIPs, advertises and GARPs."""
        self._caller_loop = asyncio.get_running_loop()
        adopt = dict(adopt or {})
        if not self._dedicated:
            await self._boot(adopt)
            return
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._thread_main, args=(ready, adopt), name="vrrp", daemon=True
        )
        self._thread.start()
        try:
            await asyncio.wrap_future(ready)
        except BaseException:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
            self._thread = None
            raise

    def _thread_main(self, ready: concurrent.futures.Future[None], adopt: dict) -> None:
        loop = asyncio.new_event_loop()
        self._hb_loop = loop
        try:
            loop.run_until_complete(self._boot(adopt))
        except BaseException as e:
            ready.set_exception(e)
            loop.close()
            return
        ready.set_result(None)
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _on_heartbeat(self, coro_fn: Callable[[], Coroutine[None, None, None]]) -> None:
        """Run ``coro_fn()`` on the heartbeat loop and wait for it."""
        if self._thread is None:
            await coro_fn()
            return
        assert self._hb_loop is not None
        fut = asyncio.run_coroutine_threadsafe(coro_fn(), self._hb_loop)
        await asyncio.wrap_future(fut)

    async def reconfigure(self, instances: Instances, groups: Sequence[SyncGroup] = ()) -> None:
        """Apply a reload in place: an instance whose identity (interface, VRID, family,
        version) stays is updated without a transition; one whose identity changed is
        restarted, alone; added ones start, removed ones stop (priority 0)."""
        prepared = _prepared(instances)
        if self._caller_loop is None:  # not started: the start uses the new config
            self._instances, self._groups = prepared, _Groups(groups)
            return
        if {p.cfg.dedicated_thread for p in prepared} - {self._dedicated}:
            log.warning("vrrp.dedicated_thread_unchanged", running=self._dedicated)
        await self._on_heartbeat(lambda: self._reconfigure(prepared, groups))

    async def _reconfigure(self, prepared: list[PreparedVrrp], defs: Sequence[SyncGroup]) -> None:
        old = list(self._routers)
        keep: dict[int, Router] = {}  # index in ``prepared`` -> running router updated
        free = list(old)
        for i, p in enumerate(prepared):  # same name and identity first, then same identity
            r = next((r for r in free if r.name == p.cfg.name and _same(r, p)), None)
            if r is not None:
                keep[i] = r
                free.remove(r)
        for i, p in enumerate(prepared):
            if i in keep:
                continue
            r = next((r for r in free if _same(r, p)), None)
            if r is not None:
                keep[i] = r
                free.remove(r)
        for r in free:  # removed, or their identity changed: stop them first (sockets, VRIDs)
            await r.stop(graceful=True)
        self._groups = _Groups(defs)
        self._instances = prepared
        routers: list[Router] = []
        for i, p in enumerate(prepared):
            r = keep.get(i)
            if r is not None:
                r.update(p)
            else:
                r = self._make_router(p)
                self._routers = (*routers, r, *keep.values())
                await r.start()
            routers.append(r)
        self._routers = tuple(routers)
        for g in self._groups.defs:
            self._refresh_faults(g)
        log.info(
            "vrrp.reloaded",
            kept=len(keep),
            started=len(prepared) - len(keep),
            stopped=len(free),
        )

    async def stop(self, graceful: bool = True, *, keep_vips: bool = False) -> None:
        """``keep_vips`` (an upgrade hand-off): no priority 0, and the VIPs stay on the
        interfaces for the next process to adopt."""
        if self._caller_loop is None:
            return

        async def stop_all() -> None:
            for r in reversed(self._routers):
                await r.stop(graceful, keep_vips)

        try:
            await self._on_heartbeat(stop_all)
        finally:
            if self._thread is not None and self._hb_loop is not None:
                self._hb_loop.call_soon_threadsafe(self._hb_loop.stop)
                await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
                self._thread = None
            self._caller_loop = None

    # ---- status
    def status(self) -> tuple[VrrpStatus, ...]:
        """One per instance, in config order; empty before start."""
        return tuple(r.status() for r in self._routers)

    def group_status(self) -> tuple[SyncGroupStatus, ...]:
        g = self._groups
        return tuple(
            SyncGroupStatus(d.name, g.states.get(d.name, "init"), tuple(d.instances))
            for d in g.defs
        )


def _same(router: Router, prepared: PreparedVrrp) -> bool:
    return router.cfg.identity() == prepared.cfg.identity()
