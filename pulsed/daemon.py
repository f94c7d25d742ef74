"""The composition root: wires config, health checks, reconcile, HA and the API.

``Daemon`` owns the runtime state that outlives any one config: health
(inside the HealthMonitor), admin overrides, the set of services pulsed has
owned, and reload bookkeeping. The config itself is immutable and replaced
whole on reload, with its KeyIndex (pulsed.keys). Readers (the API,
/status, /metrics) get it all as one frozen Snapshot (pulsed.readmodel),
built here in ``snapshot()`` and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from pulsed.checks.base import ProbeResult, Target
from pulsed.checks.monitor import HealthMonitor
from pulsed.checks.reaper import reaper
from pulsed.checks.state import RealHealth
from pulsed.config import Config, ConfigError, ParseCache
from pulsed.config_store import load_with_source, read_source
from pulsed.desired import Wanted, WantedMemo, wanted_table
from pulsed.event_hooks import Notifiable, real_event, role_event
from pulsed.health_history import HealthHistory
from pulsed.hooks import HookRunner
from pulsed.ipvs.base import Backend
from pulsed.keys import KeyIndex
from pulsed.maintenance import MaintenanceDir
from pulsed.model import OpKind, RealKey, ServiceKey, Table
from pulsed.overrides import Mode, Override, OverrideStore
from pulsed.owned import OwnedServices
from pulsed.pool_policy import PoolPlan, plan_changes
from pulsed.rates import RateTracker
from pulsed.readmodel import ConfigSource, HaView, PassView, ReloadView, Snapshot
from pulsed.reconcile import PassResult, Reconciler, diff
from pulsed.statefile import check_state_dir
from pulsed.trackers import Trackers

if TYPE_CHECKING:  # the API (aiohttp) and VRRP are imported only when configured
    from pulsed.announce.runtime import BgpRuntime
    from pulsed.api import ApiServer
    from pulsed.api_guard import BoundSocket
    from pulsed.ha.node import PreparedVrrp, VrrpNode
    from pulsed.upgrade import Successor

log = structlog.get_logger(__name__)


class StartupError(Exception):
    """Start-up cannot go on; the message is one line saying why. Raised
    before the first kernel write, so a failed start changes nothing."""


class ReloadRefused(Exception):
    """The new config cannot be brought up; the old one keeps running.

    ``fields``: extra fields for the one ``reload.failed`` log line.
    """

    def __init__(self, message: str, **fields: object) -> None:
        super().__init__(message)
        self.fields = fields


def health_targets(
    index: KeyIndex,
    previous: KeyIndex | None = None,
    known: Mapping[RealKey, Target] | None = None,
) -> dict[RealKey, Target]:
    """What to probe: every configured real server with its effective check.

    The keys are the index's own. A service the ``previous`` index holds as
    the very same entry (a reload left its config alone) keeps its Target
    objects from ``known``, and the monitor finds them equal at once.
    """
    targets: dict[RealKey, Target] = {}
    for svc in index:
        same = previous is not None and known is not None and previous.by_key(svc.key) is svc
        check = svc.config.check
        for real, key in zip(svc.config.real, svc.reals, strict=True):
            target = known.get(key) if same and known is not None else None
            if target is None:
                target = Target(key[1].address, key[1].port, real.check or check)
            targets[key] = target
    return targets


# Names listed per kind in a reload's log line; the counts are always whole.
MAX_LOGGED_NAMES = 20


def service_changes(old: KeyIndex, new: KeyIndex) -> dict[str, object]:
    """What a reload changed, for its log line: services added, removed, edited."""
    before = {svc.name: svc for svc in old}
    after = {svc.name: svc for svc in new}
    added = [n for n in after if n not in before]
    removed = [n for n in before if n not in after]
    edited = [
        n
        for n, svc in after.items()
        if n in before and svc is not before[n] and svc.config != before[n].config
    ]
    fields: dict[str, object] = {}
    for kind, names in (("added", added), ("removed", removed), ("edited", edited)):
        fields[f"services_{kind}"] = len(names)
        if names:
            fields[f"{kind}_names"] = names[:MAX_LOGGED_NAMES]
    return fields


def track_files(config: Config) -> list[str]:
    """Every file a VRRP instance tracks, each once."""
    return list(dict.fromkeys(t.file for v in config.vrrp for t in v.track_files))


class Daemon:
    """One pulsed process. Start with ``await run()``; stop with ``request_stop()``."""

    def __init__(
        self,
        config_path: str | Path,
        backend: Backend,
        config: Config,
        *,
        notify: Callable[[str], object] | None = None,
        parse_cache: ParseCache | None = None,
        source: ConfigSource | None = None,
    ) -> None:
        self.config_path = Path(config_path)
        # The file's text as the running config was loaded (for `pulsed config`).
        self.source = source if source is not None else read_source(self.config_path)
        self.history = HealthHistory()
        self.rates = RateTracker()
        self.backend = backend
        self.config = config
        self.index = KeyIndex(config)
        self.reload_status = ReloadView(generation=1, last_time=time.time())
        self.overrides = OverrideStore(config.daemon.state_dir)
        self.overrides.load()
        # Servers drained by files in [checks] maintenance_dir, re-read every pass.
        self.maintenance = MaintenanceDir(config.checks.maintenance_dir)
        self._in_maintenance: Mapping[RealKey, str] = {}
        self._owned_store = OwnedServices(config.daemon.state_dir)
        self._owned: set[ServiceKey] = self._load_owned() | {s.key for s in config.service}
        self.wanted: Wanted = Wanted(Table())
        self._wanted_memo = WantedMemo()
        # Published by the event loop after every pass, each replaced whole
        # (one reference assignment), so readers on other threads (the VRRP
        # heartbeat) and readers between passes see one consistent value.
        self._healthy: Mapping[str, float] = {}
        self._last_pass = PassView()
        self._changes: dict[str, object] = {}  # what the last reload changed (its log line)
        self.started_at = time.time()
        self._notify = notify or (lambda _msg: None)
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._parse_cache = parse_cache or ParseCache()
        self._wakeup: asyncio.TimerHandle | None = None
        # Observers of every probe result and every health change (metrics).
        self.probe_observers: list[Callable[[RealKey, ProbeResult], None]] = []
        self.health_observers: list[Callable[[RealKey, RealHealth], None]] = []
        self.monitor = self._make_monitor()
        # Notify commands and the notify FIFO; vrrp_scripts and track files.
        self.hooks = HookRunner(
            float(config.hooks.timeout), config.hooks.max_running, config.hooks.fifo
        )
        self.trackers = Trackers(config.vrrp_script, track_files(config))
        self.reconciler = Reconciler(
            backend,
            wanted=self._compute_wanted,
            owned=lambda: self._owned,
            resync_interval=config.daemon.resync_interval,
            retry_interval=config.daemon.retry_interval,
            on_pass=self._on_pass,
            full_resync_interval=config.daemon.full_resync_interval,
        )
        self.vrrp: VrrpNode | None = None  # set when [vrrp] is configured (see _start_vrrp)
        self.bgp: BgpRuntime | None = None  # set when [bgp] is configured (see _start_bgp)
        # Built by _preflight or a reload, used by the next VRRP node start.
        self._vrrp_prepared: list[PreparedVrrp] | None = None
        self._api_bound: BoundSocket | None = None  # bound by _preflight
        self._extras_started = False  # API and VRRP started: a reload may move them
        self._tasks: set[asyncio.Future] = set()
        self.api: ApiServer | None = None
        self.pass_observers: list[Callable[[PassResult, float], None]] = []
        # Live upgrade (pulsed.upgrade): set by the CLI when an upgrade started this
        # process; handed_over once this process gave its place to a new one.
        self.successor: Successor | None = None
        self.handed_over = False

    # Wiring ---------------------------------------------------------------

    def _make_monitor(self) -> HealthMonitor:
        return HealthMonitor(
            on_change=self._on_health_change,
            on_result=self._on_probe_result,
            max_tick=self.config.daemon.probe_tick_max,
        )

    def _on_health_change(self, key: RealKey, health: RealHealth) -> None:
        self.history.record(key, health, time.time())
        for observer in self.health_observers:
            observer(key, health)
        self.reconciler.mark_dirty()
        # An up/down flip (not a weight report): the probe that made it set both times.
        if health.last_check is not None and health.last_transition == health.last_check:
            svc = self.index.by_key(key[0])
            if svc is not None:
                real_event(self.hooks, svc.name, svc.real(key[1]), key[1], health.up)

    def _on_probe_result(self, key: RealKey, result: ProbeResult) -> None:
        for observer in self.probe_observers:
            observer(key, result)

    def _on_pass(self, result: PassResult, elapsed: float) -> None:
        # Forget services that left both the config and the kernel.
        current = {s.key for s in self.config.service}
        still = current | {k for k in self._owned if k in self.reconciler.last_actual}
        if still != self._owned:
            self._owned = still
            self._persist_owned()
        # What this pass wanted beside what the kernel held after its writes.
        self._last_pass = PassView(
            self.wanted.pools,
            self.reconciler.last_actual,
            self.index,
            self.wanted.table,
            self._owned,  # replaced whole when it changes, never edited: no copy
        )
        self.rates.update(self.reconciler.last_actual, time.monotonic())
        if self.bgp is not None:
            self.bgp.update(self._healthy, self.reconciler.last_actual)
        for observer in self.pass_observers:
            observer(result, elapsed)

    def _compute_wanted(self, actual: Table) -> Table:
        before = self.wanted.pools
        self._in_maintenance = self.maintenance.held(self.index)
        self.wanted = wanted_table(
            self.config,
            health=self.monitor.health(),
            overrides=self.overrides.all(),
            maintenance=self._in_maintenance,
            actual=actual,
            now=time.monotonic(),
            memo=self._wanted_memo,
            previous=before,
            index=self.index,
        )
        self._healthy = self.wanted.healthy
        self._wake_at(self.wanted.next_change_at)
        self._log_pool_changes(before, self.wanted.pools)
        return self.wanted.table

    def _log_pool_changes(
        self, before: Mapping[ServiceKey, PoolPlan], after: Mapping[ServiceKey, PoolPlan]
    ) -> None:
        for key, plan in after.items():
            old = before.get(key)
            if old is plan:
                continue  # memoised: nothing changed in this pool
            for level, event, fields in plan_changes(old, plan):
                getattr(log, level)(event, service=str(key), **fields)

    def _wake_at(self, deadline: float | None) -> None:
        """Recompute when a slow-start ramp steps or a drain deadline passes."""
        if self._wakeup is not None:
            self._wakeup.cancel()
            self._wakeup = None
        if deadline is not None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, deadline - time.monotonic())
            self._wakeup = loop.call_later(delay, self.reconciler.mark_dirty)

    # Lifecycle ------------------------------------------------------------

    async def run(self) -> None:
        """Run until a stop is requested; then shut down cleanly.

        StartupError (one line) when a start-up check fails: then nothing
        was written to the kernel.
        """
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload()))
        loop.add_signal_handler(signal.SIGUSR2, lambda: self._spawn(self.upgrade()))
        await self._preflight()
        self._persist_owned()
        await self._first_pass()
        await self.trackers.start()  # before VRRP: its tracking reads them
        background = [asyncio.create_task(self.reconciler.run(), name="reconcile")]
        async with self._reload_lock:  # a SIGHUP meanwhile waits for the listeners
            await self._start_extras()
        # Start-up objects (config, imports) live as long as the process:
        # keep the cyclic collector from re-scanning them on every pass.
        gc.freeze()
        self._notify("READY=1\nSTATUS=" + self.status_line())
        self._write_pid()
        try:
            await self._stop.wait()
        finally:
            self._notify("STOPPING=1")
            await self._shutdown(background)

    async def _preflight(self) -> None:
        """Every start-up check that can fail, before the first kernel write:
        a failed start leaves the kernel table as it found it."""
        if problem := check_state_dir(self.config.daemon.state_dir):
            raise StartupError(f"daemon.state_dir: {problem}")
        if self.successor is None:  # only an upgrade's new process may read a hand-off
            from pulsed.handoff import discard_stale_handoff

            discard_stale_handoff(self.config.daemon.state_dir)
        try:
            self._vrrp_prepared = await _prepare_vrrp(self.config)
        except ReloadRefused as exc:
            raise StartupError(str(exc)) from None
        if self.config.api.enabled:
            from pulsed.api_guard import BindError, bind_listen

            try:
                self._api_bound = self._inherited_api() or bind_listen(self.config.api.listen)
            except BindError as exc:
                raise StartupError(str(exc)) from None

    async def _first_pass(self) -> None:
        # A method of its own so that the first dump and the first pass's
        # operations (one per server at a cold start) are not kept alive by
        # run()'s frame for the life of the process.
        #
        # Servers the kernel already sends traffic to start up, so a restart
        # over an unchanged table writes nothing and drops nothing.
        actual = await self.backend.dump()
        serving = {(svc.key, dest.key) for svc in actual for dest in svc.dests if dest.weight > 0}
        self.monitor.update(health_targets(self.index), assume_up=serving)
        await self.monitor.start()
        first = await self.reconciler.reconcile_once(actual)
        log.info(
            "daemon.started",
            services=len(self.config.service),
            writes_at_start=len(first.ops),
            errors=len(first.errors),
        )

    def _spawn(self, coro) -> None:
        # The loop keeps only weak references to tasks: hold them until done.
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start_extras(self) -> None:
        """API server and VRRP node, when configured."""
        self._extras_started = True
        bound, self._api_bound = self._api_bound, None
        if bound is not None and (
            not self.config.api.enabled or bound.listen != self.config.api.listen
        ):
            # A reload during start-up moved or turned off the API: bind it anew.
            bound.close()
            bound = None
        if self.config.api.enabled:
            from pulsed.api import start_api
            from pulsed.api_guard import BindError

            try:
                self.api = await start_api(
                    self,
                    sock=bound.sock if bound is not None else None,
                    max_connections=self._api_connection_budget(),
                )
            except BindError as exc:
                log.error("api.unavailable", error=str(exc))
        await self._start_vrrp()
        await self._start_bgp()

    async def _start_bgp(self) -> None:
        if self.config.bgp is None or self.bgp is not None:
            return
        from pulsed.announce.runtime import BgpRuntime

        inherited = self.successor.tun_descriptor() if self.successor is not None else None
        from pulsed.announce.drain_state import load_drained

        self.bgp = BgpRuntime(self.config, fd=inherited)
        # A drain survives restarts, crashes and upgrades: set before the first decision.
        self.bgp.drained = load_drained(self.config.daemon.state_dir)
        if self.bgp.drained:
            log.warning("bgp.starting_drained", action="`pulsed director undrain` announces")
        await self.bgp.start()
        self.bgp.update(self._healthy, self.reconciler.last_actual)

    async def _reconfigure_bgp(self) -> None:
        if self.bgp is not None and self.config.bgp is None:
            bgp, self.bgp = self.bgp, None
            await bgp.stop(withdraw=True)
        elif self.bgp is not None:
            self.bgp.reconfigure(self.config)
        else:
            await self._start_bgp()

    async def _start_vrrp(self) -> None:
        if not self.config.vrrp:
            return
        from pulsed.ha.node import VrrpNode

        self.vrrp = VrrpNode(
            self._vrrp_prepared or list(self.config.vrrp),
            groups=self.config.vrrp_sync_group,
            healthy_fraction=self.healthy_fraction,
            track_value=self.trackers.value,  # thread-safe: one dict replaced whole
            on_event=self._on_vrrp_event,
        )
        self._vrrp_prepared = None
        await self.vrrp.start(adopt=self.successor.adopt if self.successor else None)

    def _api_connection_budget(self) -> int:
        """API connections that leave the probes their descriptors (pulsed.limits)."""
        import resource

        from pulsed.limits import api_connection_budget

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return max(1, api_connection_budget(soft, self.index.real_count()))

    def _on_vrrp_event(
        self, kind: str, name: str, old: str, new: str, priority: int, reason: str
    ) -> None:
        """An instance's or sync group's transition (on the main loop): the notify
        commands and the FIFO line (pulsed.event_hooks), and systemd's status."""
        cfg: Notifiable | None
        if kind == "GROUP":
            cfg = next((g for g in self.config.vrrp_sync_group if g.name == name), None)
        else:
            cfg = next((v for v in self.config.vrrp if v.name == name), None)
        # Back to INIT is a stop (the node's shutdown, or a member's); INIT is no event.
        role = "stop" if new == "init" and old != "init" else new
        if self.handed_over:
            return  # an upgrade: the new process holds the roles, nothing stopped
        role_event(self.hooks, kind, name, cfg, role, priority if kind == "INSTANCE" else None)
        self._notify("STATUS=" + self.status_line())

    async def _build_api(self, old: Config, new: Config) -> ApiServer | None:
        """The API server the new config wants: the running one when its
        listen address stays, else a new one already serving (bound first:
        an address that cannot be bound refuses the reload), or None."""
        same = (new.api.enabled, new.api.listen) == (old.api.enabled, old.api.listen)
        if same or not self._extras_started:
            return self.api
        if not new.api.enabled:
            return None
        from pulsed.api import start_api
        from pulsed.api_guard import BindError, bind_listen

        try:
            bound = bind_listen(new.api.listen)
        except BindError as exc:
            raise ReloadRefused(f"{exc} (the running API keeps its listener)") from None
        return await start_api(self, sock=bound.sock, max_connections=self._api_connection_budget())

    async def _reconfigure_vrrp(self) -> None:
        # In place: an instance keeps its role and VIPs unless its identity changed
        # (pulsed.ha.node); only a config with no instance left stops the node.
        prepared, self._vrrp_prepared = self._vrrp_prepared, None
        if self.vrrp is not None and not self.config.vrrp:
            await self.vrrp.stop(graceful=True)
            self.vrrp = None
        elif self.vrrp is not None and prepared is not None:
            await self.vrrp.reconfigure(prepared, self.config.vrrp_sync_group)
        elif self.vrrp is None:
            self._vrrp_prepared = prepared
            await self._start_vrrp()

    def request_stop(self) -> None:
        log.info("daemon.stopping")
        self._stop.set()

    async def _shutdown(self, background: list[asyncio.Task]) -> None:
        if self._wakeup is not None:
            self._wakeup.cancel()
        await self.monitor.stop()
        await self.trackers.stop()
        for task in list(self._tasks):  # a reload or VRRP restart in flight
            with contextlib.suppress(Exception):
                await task
        if self.vrrp is not None:
            await self.vrrp.stop(graceful=True, keep_vips=self.handed_over)
        if self.bgp is not None:
            # Withdrawn before IPVS is touched. After a hand-over the successor holds
            # the announce interface too: this copy of the descriptor is let go, and
            # the interface and its routes stay.
            fd = await self.bgp.stop(withdraw=not self.handed_over)
            if fd is not None:
                os.close(fd)
        await self.hooks.close()  # notify_stop hooks run within [hooks] timeout
        await reaper.shutdown()  # nothing an exec check or hook started outlives pulsed
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.config.daemon.remove_on_shutdown and not self.handed_over:
            await self._remove_own_services()
        if self.api is not None:
            await self.api.cleanup()
        await self.backend.close()
        log.info("daemon.stopped")

    async def _remove_own_services(self) -> None:
        actual = await self.backend.dump()
        mine = {k for k in actual.services if k in self._owned}
        ops = diff(Table(), Table({k: actual.services[k] for k in mine}), mine)
        ops = [
            op for op in ops if op.kind is OpKind.DEL_SERVICE
        ]  # deleting a service drops its dests
        await self.backend.apply(ops)
        log.info("daemon.removed_own_services", services=len(ops))

    # Live upgrade (pulsed.upgrade) -----------------------------------------

    def _inherited_api(self) -> BoundSocket | None:
        """The API socket the old process passed on, if the listen address is the same."""
        if self.successor is None:
            return None
        from pulsed.api_guard import BoundSocket

        sock = self.successor.api_socket(self.config.api.listen)
        return BoundSocket(sock, self.config.api.listen) if sock is not None else None

    def _write_pid(self) -> None:
        from pulsed.upgrade import write_pid

        write_pid(self.config.daemon.state_dir)

    async def upgrade(self) -> bool:
        """SIGUSR2 / `pulsed upgrade`: start a new pulsed that takes this one's place; on
        success stop without a trace (the VIPs and IPVS services stay), else run on."""
        from pulsed import upgrade

        async with self._reload_lock:  # no reload while the roles are handed over
            if not self._extras_started or self._stop.is_set() or self.handed_over:
                log.warning("upgrade.refused", reason="pulsed is starting or stopping")
                return False
            statuses = self.vrrp.status() if self.vrrp is not None else ()
            plan = upgrade.Plan(
                state_dir=self.config.daemon.state_dir,
                roles=upgrade.instance_roles(statuses),
                api_sock=upgrade.listening_socket(self.api),
                api_listen=self.config.api.listen if self.api is not None else "",
                tun_fd=self.bgp.descriptor() if self.bgp is not None else -1,
            )
            log.info("upgrade.starting", argv=plan.argv, roles=list(plan.roles))
            try:
                new = await upgrade.start_successor(plan)
            except upgrade.UpgradeFailed as exc:
                log.error("upgrade.failed", error=str(exc), action="this pulsed keeps running")
                self._write_pid()
                upgrade.write_result(
                    plan.state_dir,
                    upgrade.UpgradeResult(
                        old_pid=os.getpid(), ok=False, reason=str(exc), at=time.time()
                    ),
                )
                return False
            # systemd follows the new process; this one says nothing more to it.
            self._notify(f"MAINPID={new.pid}\nREADY=1")
            self._notify = lambda _msg: None
            self.handed_over = True
            new.release()
            upgrade.write_result(
                plan.state_dir,
                upgrade.UpgradeResult(
                    old_pid=os.getpid(), ok=True, new_pid=new.pid, at=time.time()
                ),
            )
            log.info("upgrade.handed_over", new_pid=new.pid)
            self.request_stop()
            return True

    # Reload ---------------------------------------------------------------

    async def reload(self) -> bool:
        """Re-read the config file and switch to it as one transaction.

        Everything the new config needs is built first; only then is anything
        swapped. Any failure, foreseen or not, leaves the old config and its
        runtime as they were, logs one line and is reported in
        ``reload_status``. RELOADING=1 is always followed by READY=1.
        """
        async with self._reload_lock:
            self._notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
            attempt = time.time()
            try:
                changed = await self._reload_transaction()
            except ReloadRefused as exc:
                reason, fields = str(exc), exc.fields
            except Exception as exc:  # a bug must not leave the reload half done
                reason = f"internal error: {type(exc).__name__}: {_one_line(exc)}"
                fields = {}
            else:
                status = self.reload_status = ReloadView(
                    generation=self.reload_status.generation + changed,
                    last_time=attempt,
                    last_changed=changed,
                )
                if changed:
                    log.info(
                        "reload.applied",
                        generation=status.generation,
                        services=len(self.config.service),
                        **self._changes,
                    )
                else:
                    log.info("reload.unchanged", generation=status.generation)
                self._notify("READY=1\nSTATUS=" + self.status_line())
                return True
            self.reload_status = ReloadView(
                generation=self.reload_status.generation,
                last_ok=False,
                last_time=attempt,
                last_error=reason,
            )
            log.error("reload.failed", error=reason, **fields)
            self._notify("READY=1\nSTATUS=reload failed, old config kept: " + reason[:200])
            return False

    async def _reload_transaction(self) -> bool:
        """Whether the config changed; ReloadRefused when it cannot be used."""
        try:
            new, source = await asyncio.to_thread(
                load_with_source, self.config_path, self._parse_cache
            )
        except ConfigError as exc:
            # One line for the log and /status; `pulsed check-config` lists them all.
            raise ReloadRefused(
                f"{len(exc.issues)} problem(s): {exc.issues[0]}",
                problems=len(exc.issues),
                first=str(exc.issues[0]),
            ) from None
        if new == self.config:
            self.source = source
            return False
        old = self.config
        if new.daemon.state_dir != old.daemon.state_dir:
            # The state files were loaded from the old one; moving them is a restart.
            raise ReloadRefused(
                f"daemon.state_dir: changing it ({old.daemon.state_dir} to"
                f" {new.daemon.state_dir}) needs a restart"
            )
        # Build: nothing of the running config is touched yet.
        vrrp_changed = (new.vrrp, new.vrrp_script, new.vrrp_sync_group) != (
            old.vrrp,
            old.vrrp_script,
            old.vrrp_sync_group,
        )
        prepared = await _prepare_vrrp(new) if vrrp_changed else None
        new_api = await self._build_api(old, new)
        old_targets = self.monitor.targets()
        index = KeyIndex(new, self.index)
        try:
            targets = health_targets(index, self.index, old_targets)
            # Swap. Only the monitor can still fail here; it is put back if it does.
            try:
                self.monitor.update(targets)
            except Exception as exc:
                self.monitor.update(old_targets)
                raise ReloadRefused(f"cannot start the new checks: {_one_line(exc)}") from None
        except BaseException:
            if new_api is not None and new_api is not self.api:
                await new_api.cleanup()
            raise
        self._changes = service_changes(self.index, index)
        self.config, self.index, self.source = new, index, source
        self.history.forget_all_but(index.real_keys())
        if new_api is not self.api:
            old_api, self.api = self.api, new_api
            if old_api is not None:
                await old_api.cleanup()
        self.monitor.max_tick = new.daemon.probe_tick_max
        if new.checks.maintenance_dir != self.maintenance.path:
            self.maintenance = MaintenanceDir(new.checks.maintenance_dir)
        self.hooks.reconfigure(float(new.hooks.timeout), new.hooks.max_running, new.hooks.fifo)
        self.trackers.reconfigure(new.vrrp_script, track_files(new))
        owned = self._owned | {s.key for s in new.service}
        if owned != self._owned:  # a reload that adds no service writes nothing
            self._owned = owned
            self._persist_owned()
        self.reconciler.resync_interval = new.daemon.resync_interval
        self.reconciler.retry_interval = new.daemon.retry_interval
        self.reconciler.full_resync_interval = new.daemon.full_resync_interval
        if new.bgp != old.bgp and self._extras_started:
            log.info("reload.bgp_reconfigured", enabled=new.bgp is not None)
            self._spawn(self._reconfigure_bgp())
        if vrrp_changed:
            self._vrrp_prepared = prepared
            if self._extras_started:  # else the start, still to come, builds it from `new`
                log.info("reload.vrrp_reconfigured", instances=len(new.vrrp))
                self._spawn(self._reconfigure_vrrp())
        self.reconciler.mark_dirty()
        # The new config lives until the next reload: like start-up's, keep
        # the cyclic collector from re-scanning it (at 10,000 services a full
        # collection during a parse took ~100 ms).
        gc.freeze()
        return True

    # Admin ------------------------------------------------------------------

    def known_real(self, key: RealKey) -> bool:
        return self.index.real(key) is not None

    def set_mode(self, key: RealKey, mode: Mode, caller: str = "") -> Override:
        """``caller``: who asked (the API client's address), for the log line."""
        override = self.overrides.set_mode(key, mode)
        log.info(f"admin.{mode}", service=str(key[0]), server=str(key[1]), caller=caller)
        self.reconciler.mark_dirty()
        return override

    def set_weight(self, key: RealKey, weight: int | None, caller: str = "") -> Override:
        override = self.overrides.set_weight(key, weight)
        log.info(
            "admin.weight", service=str(key[0]), server=str(key[1]), weight=weight, caller=caller
        )
        self.reconciler.mark_dirty()
        return override

    # Views ------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Everything readers show, as of now, in one frozen value (pulsed.readmodel)."""
        vrrp = self.vrrp
        reconcile = self.reconciler.status
        if self.reconciler.pending or self._last_pass.index is not self.index:
            # A change (reload, admin call, health flip) is not in the kernel
            # yet: the figures beside it are the last pass's, not the wanted ones.
            reconcile = replace(reconcile, in_sync=False, pending=True)
        health = self.monitor.health()
        taken_at = time.time()
        return Snapshot(
            config=self.config,
            index=self.index,
            config_path=str(self.config_path),
            started_at=self.started_at,
            taken_at=taken_at,
            health=health,
            overrides=self.overrides.all(),
            last_pass=self._last_pass,
            reconcile=reconcile,
            reload=self.reload_status,
            ha=HaView(
                configured=tuple(v.name for v in self.config.vrrp),
                instances=vrrp.status() if vrrp is not None else (),
                groups=vrrp.group_status() if vrrp is not None else (),
            ),
            probes=self.monitor.local_faults(),
            bgp=self.bgp.view(self._last_pass.kernel) if self.bgp is not None else None,
            history=self.history.view(health, taken_at),
            rates=self.rates.samples,
            source=self.source,
            shared_probes=self.monitor.shared(),
            maintenance=self._in_maintenance,
        )

    def set_director_drained(self, drained: bool, caller: str = "") -> bool:
        """``pulsed director drain|undrain``: withdraw (or announce again) every
        BGP VIP; IPVS keeps serving what still arrives. False without [bgp]."""
        if self.bgp is None:
            return False
        log.warning("admin.director_" + ("drain" if drained else "undrain"), caller=caller)
        self.bgp.set_drained(drained)
        from pulsed.announce.drain_state import save_drained

        try:
            save_drained(self.config.daemon.state_dir, drained)
        except OSError as exc:  # applied all the same: the operator's intent comes first
            log.error(
                "bgp.drain_state_not_saved",
                error=exc.strerror or str(exc),
                action="a restart will not remember this drain",
            )
        return True

    def healthy_fraction(self, service_name: str) -> float | None:
        """The share of the service's real servers that pass their check, as
        of the last reconcile pass (None: no such service, or no servers).

        Called from the VRRP heartbeat's thread: it reads the mapping the
        event loop publishes whole after each pass, and touches nothing else.
        """
        return self._healthy.get(service_name)

    def status_line(self) -> str:
        reals = self.index.real_count()
        generation = self.reload_status.generation
        line = f"{len(self.config.service)} services, {reals} real servers, generation {generation}"
        statuses = self.vrrp.status() if self.vrrp is not None else ()
        if len(statuses) == 1:
            line += f", VRRP {statuses[0].state}"
        elif statuses:
            line += ", VRRP " + " ".join(f"{s.name} {s.state}" for s in statuses)
        return line

    def _load_owned(self) -> set[ServiceKey]:
        return self._owned_store.load()

    def _persist_owned(self) -> None:
        # Remembered across restarts so a service dropped from the config
        # while pulsed was down is still cleaned up, and a foreign one never is.
        self._owned_store.save(self._owned)


async def _prepare_vrrp(config: Config) -> list[PreparedVrrp] | None:
    """What the VRRP node needs that can fail (its config, its key, a raw
    socket), built now and off the loop, so that a reload or start that cannot
    bring VRRP up fails before it swaps anything. ReloadRefused names it."""
    if not config.vrrp:
        return None
    from pulsed.ha.node import VrrpSetupError, prepare_vrrp_async

    try:
        return [await prepare_vrrp_async(v, scripts=config.vrrp_script) for v in config.vrrp]
    except VrrpSetupError as exc:
        raise ReloadRefused(str(exc)) from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
