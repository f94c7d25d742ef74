"""One VRRP instance as it runs on the heartbeat's event loop: its timers, tracking, VIPs and
sync daemon. The pure parts (codec, validation, state machine, sync groups) decide; this
module moves bytes and addresses. The node (pulsed.ha.node) owns the loop and the sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

import structlog

from pulsed.ha import fsm
from pulsed.ha.config import VrrpConfig
from pulsed.ha.prepare import PreparedVrrp
from pulsed.ha.receive import Expect, Rejected, validate
from pulsed.ha.sockets import SharedSockets
from pulsed.ha.status import VrrpStatus
from pulsed.ha.transport import VrrpSocket
from pulsed.ha.vip import Announcer, VipManager, link_is_up
from pulsed.ha.vrrp import MCAST_V4, MCAST_V6, Advert, Drop, IPAddr, encode
from pulsed.ipvs.syncd import SyncState

log = structlog.get_logger(__name__)

HealthyFraction = Callable[[str], float | None]
# (kind, name) -> value: kind "script" (True ok, False failing, None unknown) or "file" (int).
TrackValue = Callable[[str, str], int | bool | None]

_LIVE = (fsm.Role.MASTER, fsm.Role.BACKUP)
# Least time between two answers to challenges (authentication): bounds what replays can make
# us send, while a restarted peer is still verified within a few milliseconds.
ANSWER_GAP = 0.02


class SyncDaemonControl(Protocol):
    """Starts and stops the kernel's IPVS sync daemon: the module pulsed.ipvs.syncd by
    default, a fake in tests."""

    async def start_sync_daemon(self, state: SyncState, ifname: str, syncid: int) -> None: ...
    async def stop_sync_daemon(self, state: SyncState) -> None: ...


class RouterHost(Protocol):
    """What a router asks of its node (all on the heartbeat loop)."""

    def transitioned(self, router: Router, t: fsm.Transition) -> None: ...
    def own_fault_changed(self, router: Router) -> None: ...
    def may_take_over(self, router: Router) -> bool: ...
    def applied(self, router: Router, role: str, held: bool) -> None: ...


@dataclass
class _Counters:
    sent: int = 0
    received: int = 0
    prio0_sent: int = 0
    prio0_received: int = 0
    interval_mismatch: int = 0
    version_mismatch: int = 0
    transitions: int = 0
    probes_sent: int = 0
    probes_received: int = 0
    # Probes are counted above: they are not drops.
    drops: dict[str, int] = field(
        default_factory=lambda: {d.value: 0 for d in Drop if d is not Drop.PROBE}
    )


def version_warning(src: IPAddr, theirs: int, vrid: int, name: str, ours: int) -> str:
    """The one line that tells the operator what to do about a version mismatch."""
    return (
        f"peer {src} sends VRRPv{theirs} adverts on VRID {vrid} (instance {name} is version"
        f" {ours}): set version = {theirs} here, or vrrp_version {ours} on the keepalived side"
    )


def tracked_priority(
    cfg: VrrpConfig,
    weights: Mapping[str, int],
    *,
    link_up: Callable[[str], bool],
    healthy_fraction: HealthyFraction | None,
    track_value: TrackValue | None,
) -> tuple[int, list[str]]:
    """The effective priority and the faults that tracking gives now (keepalived's rules:
    see HA14 "track_scripts weight" / "track_files")."""
    faults: list[str] = []
    delta = 0
    if not link_up(cfg.interface):
        faults.append(f"interface {cfg.interface} down")
    for ti in cfg.track_interfaces:
        if not link_up(ti.interface):
            if ti.decrement:
                delta -= ti.decrement
            else:
                faults.append(f"interface {ti.interface} down")
    for ts in cfg.track_services:
        frac = healthy_fraction(ts.service) if healthy_fraction else None
        if frac is not None and frac < ts.min_healthy:
            if ts.decrement:
                delta -= ts.decrement
            else:
                faults.append(f"service {ts.service} {frac:.0%} healthy")
    for tsc in cfg.track_scripts:
        ok = track_value("script", tsc.script) if track_value else None
        if not isinstance(ok, bool):
            continue  # unknown yet (None): neither up nor down
        w = weights.get(tsc.script, 0)
        if w == 0 and not ok:
            faults.append(f"script {tsc.script} failing")
        elif (w > 0 and ok) or (w < 0 and not ok):
            delta += w
    for tf in cfg.track_files:
        value = track_value("file", tf.file) if track_value else None
        if value is None or isinstance(value, bool):
            continue
        if tf.weight == 0:
            if value != 0:
                faults.append(f"file {tf.file} holds {value}")
        else:
            delta += value * tf.weight
    prio = cfg.priority if not delta else max(1, min(254, cfg.priority + delta))
    return prio, faults


class Router:
    """One running VRRP instance."""

    def __init__(
        self,
        prepared: PreparedVrrp,
        host: RouterHost,
        sockets: SharedSockets,
        *,
        healthy_fraction: HealthyFraction | None,
        track_value: TrackValue | None,
        syncd: SyncDaemonControl | None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        cfg = prepared.cfg
        self.cfg = cfg
        self.name = cfg.name
        self.host = host
        self.sockets = sockets
        self.wall_clock = wall_clock
        self.healthy_fraction = healthy_fraction
        self.track_value = track_value
        self.weights = prepared.script_weights
        self.syncd = syncd
        self.vips = cfg.vips()
        self.family = cfg.family()
        self.vip_mgr = VipManager(self.vips)
        self.announcer = Announcer()
        self.auth = prepared.auth
        self._answer_handle: asyncio.TimerHandle | None = None
        self._last_answer = float("-inf")
        self.peers = [ipaddress.ip_address(p) for p in cfg.unicast_peers]
        self.counters = _Counters()
        self.state = fsm.State(priority=cfg.priority)
        self.params = self._params(None)
        self.src: IPAddr | None = None
        self.sock: VrrpSocket | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.faults: list[str] = []  # from this instance's own tracking
        self.group_fault: str | None = None  # held in fault by its sync group
        self._fault_applied: list[str] = []
        self.effective_priority = cfg.priority
        self.last_transition_wall = wall_clock()
        self.applied_role: fsm.Role = fsm.Role.INIT
        self.vips_held = False
        self.syncd_state: SyncState | None = None
        self.graceful = True
        self.keep_vips = False
        self._role_wakeup = asyncio.Event()
        self._role_settled = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._garp_task: asyncio.Task[None] | None = None
        self._vip_changes: tuple[list, list] | None = None
        self._stopping = False
        self._mismatch_logged: int | None = None
        self._version_peers: set[IPAddr] = set()
        self.version_mismatch: str | None = None

    def _params(self, address: IPAddr | None, *, initial_master: bool = False) -> fsm.Params:
        cfg = self.cfg
        return fsm.Params(
            adver_int=cfg.advert_centiseconds() / 100,
            preempt=cfg.preempt,
            preempt_delay=float(cfg.preempt_delay),
            address=address,
            initial_master=initial_master,
        )

    # ---- lifecycle
    async def start(self, adopt: str | None = None) -> None:
        """``adopt`` "master" (an upgrade hand-off): MASTER at once, keeping the VIPs on the
        interfaces; "backup" or None: as a fresh start."""
        self.loop = asyncio.get_running_loop()
        cfg = self.cfg
        if adopt != "master":
            # A previous run killed with -9 may have left VIPs behind: start clean.
            await self.vip_mgr.remove_all()
        self.src = (
            ipaddress.ip_address(cfg.unicast_source)
            if cfg.unicast_source
            else await self.vip_mgr.source_address(cfg.interface, self.family)
        )
        master_now = adopt == "master" or cfg.initial_state == "master"
        self.params = self._params(self.src, initial_master=master_now)
        self._open_socket()
        self._tasks.append(asyncio.create_task(self._role_worker(), name="vrrp-role"))
        self._evaluate_tracking(initial=True)
        self.dispatch(fsm.Startup())
        self.params = replace(self.params, initial_master=False)
        self._apply_faults()
        self._tasks.append(asyncio.create_task(self._tracking_loop(), name="vrrp-track"))
        if self.auth is not None:
            self._tasks.append(asyncio.create_task(self._probe_loop(), name="vrrp-probe"))
        log.info(
            "vrrp.started",
            instance=self.name,
            interface=cfg.interface,
            vrid=cfg.vrid,
            version=cfg.version,
            priority=cfg.priority,
            source=str(self.src),
            vips=[str(v) for v, _ in self.vips],
            adopted=adopt,
        )

    def _open_socket(self) -> bool:
        """Attach to the shared socket; False (and FAULT via tracking) while it cannot be."""
        cfg = self.cfg
        self.sock = self.sockets.attach(
            cfg.interface, self.family, cfg.vrid, self, multicast=not self.peers
        )
        if self.sock is None:
            return False
        self.announcer.prepare(self.vips)  # open the ARP/ICMPv6 sockets before they are needed
        return True

    async def stop(self, graceful: bool, keep_vips: bool = False) -> None:
        """``keep_vips`` (an upgrade hand-off): no priority 0, the VIPs stay where they are."""
        self.graceful = graceful and not keep_vips
        self.keep_vips = keep_vips
        self._stopping = True
        self.dispatch(fsm.Shutdown())
        await self._settle()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._garp_task is not None:
            self._garp_task.cancel()
        if self.timer:
            self.timer.cancel()
        if self._answer_handle is not None:
            self._answer_handle.cancel()
        if self.sock is not None:
            self.sockets.detach(self.cfg.interface, self.family, self.cfg.vrid, self)
            self.sock = None
        self.announcer.close()
        self.vip_mgr.close()
        log.info("vrrp.stopped", instance=self.name, graceful=graceful, keep_vips=keep_vips)

    async def _settle(self) -> None:
        """Wait until the role worker has applied the current role."""
        while self.applied_role is not self.state.role:
            self._role_settled.clear()
            self._role_wakeup.set()
            await self._role_settled.wait()

    # ---- reload in place
    def update(self, prepared: PreparedVrrp) -> None:
        """Apply a new config of the same identity without any transition: priority, VIPs,
        GARP, tracking, peers, interval, preemption take effect now."""
        old, cfg = self.cfg, prepared.cfg
        self.cfg = cfg
        self.name = cfg.name
        self.weights = prepared.script_weights
        if cfg.auth != old.auth:
            self.auth = prepared.auth
        self.peers = [ipaddress.ip_address(p) for p in cfg.unicast_peers]
        if self.sock is not None and not self.peers:
            self._open_socket()  # joins the group if the instance moved to multicast
        if cfg.unicast_source != old.unicast_source and cfg.unicast_source:
            self.src = ipaddress.ip_address(cfg.unicast_source)
        self.params = self._params(self.src)
        new_vips = cfg.vips()
        if new_vips != self.vips:
            added = [v for v in new_vips if v not in self.vips]
            removed = [v for v in self.vips if v not in new_vips]
            self.vips = new_vips
            self.vip_mgr.vips = new_vips
            self.announcer.prepare(added)
            self._vip_changes = (added, removed)
            self._role_wakeup.set()
        garp = (cfg.garp_count, cfg.garp_interval, cfg.garp_refresh)
        if garp != (old.garp_count, old.garp_interval, old.garp_refresh) and self.vips_held:
            self._restart_refresh()
        self._evaluate_tracking()
        log.info("vrrp.reconfigured", instance=self.name, priority=cfg.priority)

    def _restart_refresh(self) -> None:
        if self._garp_task is not None:
            self._garp_task.cancel()
        self._garp_task = asyncio.create_task(self._announce(burst=False), name="vrrp-garp")

    # ---- the state machine
    def dispatch(self, ev: fsm.Event) -> None:
        assert self.loop is not None
        now = self.loop.time()
        self.state, actions = fsm.step(self.params, self.state, ev, now)
        for act in actions:
            if isinstance(act, fsm.SendAdvert):
                if act.priority == 0 and not self.graceful:
                    continue
                self._send(act.priority)
            else:
                self._on_transition(act)
        self._arm_timer()

    def _arm_timer(self) -> None:
        assert self.loop is not None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        deadline = fsm.next_deadline(self.state)
        if deadline is not None:
            self.timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        assert self.loop is not None
        self.timer = None
        s = self.state
        due = s.master_down_at is not None and self.loop.time() >= s.master_down_at
        if s.role is fsm.Role.BACKUP and due and not self.host.may_take_over(self):
            self.dispatch(fsm.Hold())
            return
        self.dispatch(fsm.Tick())

    def following(self) -> bool:
        """A backup hearing a live master that it will not preempt (for sync groups)."""
        s = self.state
        assert self.loop is not None
        return (
            s.role is fsm.Role.BACKUP
            and s.master is not None
            and s.master != self.params.address
            and s.down_reason == "master_down"
            and s.master_down_at is not None
            and s.master_down_at > self.loop.time()
        )

    def _on_transition(self, t: fsm.Transition) -> None:
        self.counters.transitions += 1
        self.last_transition_wall = self.wall_clock()
        # A role change moves the VIPs: a warning (journalctl -p warning shows it).
        emit = log.info if t.new is fsm.Role.INIT else log.warning
        emit(
            f"vrrp.{t.new.value}",
            instance=self.name,
            old=t.old.value,
            reason=t.reason,
            vrid=self.cfg.vrid,
        )
        self._role_wakeup.set()
        if self.auth is not None and t.new is fsm.Role.BACKUP:
            # A new epoch (start) or a return from FAULT: ask the peers for their challenge
            # now, so that the master's answer is verified long before our master-down time.
            self._answer()
        try:
            self.host.transitioned(self, t)
        except Exception as e:  # a broken callback must not stop the heartbeat
            log.error("vrrp.callback_failed", error=str(e))

    # ---- packets
    def _send(self, priority: int, probe: bool = False) -> None:
        if self.sock is None or self.src is None:
            return
        cfg = self.cfg
        adv = Advert(
            vrid=cfg.vrid,
            priority=priority,
            max_adver_int=cfg.advert_centiseconds(),
            addresses=tuple(v.ip for v, _ in self.vips),
            version=cfg.version,
            password=cfg.auth.password.encode() if cfg.version == 2 else b"",
        )
        dsts = self.peers or [MCAST_V4 if self.family == 4 else MCAST_V6]
        for dst in dsts:
            msg = encode(adv, self.src, dst)
            if self.auth is not None:
                msg = self.auth.sign(self.src, msg, probe=probe)
            try:
                self.sock.send(msg, self.src, dst)
            except OSError as e:
                log.warning("vrrp.send_failed", error=str(e), destination=str(dst))
                continue
            if probe:
                self.counters.probes_sent += 1
                continue
            self.counters.sent += 1
            if priority == 0:
                self.counters.prio0_sent += 1

    def count_drop(self, reason: Drop) -> None:
        self.counters.drops[reason.value] += 1

    def _expect(self) -> Expect:
        cfg = self.cfg
        return Expect(
            vrid=cfg.vrid,
            family=self.family,
            addresses=frozenset(v.ip for v, _ in self.vips),
            adver_int=cfg.advert_centiseconds(),
            strict_interval=cfg.strict_interval,
            peers=frozenset(self.peers),
            own=frozenset({self.src}) if self.src is not None else frozenset(),
            version=cfg.version,
            password=cfg.auth.password.encode() if cfg.version == 2 else b"",
        )

    def on_packet(self, payload: bytes, src: IPAddr, dst: IPAddr, ttl: int) -> None:
        verdict = validate(
            payload, src=src, dst=dst, ttl=ttl, expect=self._expect(), auth=self.auth
        )
        if self.auth is not None and self.auth.take_answer():
            self._answer()
        if isinstance(verdict, Rejected):
            if verdict.reason is Drop.PROBE:
                self.counters.probes_received += 1
            elif verdict.reason is not Drop.OWN:
                self.counters.drops[verdict.reason.value] += 1
                if verdict.reason is Drop.VERSION and verdict.vrid == self.cfg.vrid:
                    self._version_mismatch(src, verdict.version)
                log.debug(
                    "vrrp.drop", reason=verdict.reason.value, detail=verdict.detail, src=str(src)
                )
            return
        self.counters.received += 1
        if verdict.priority == 0:
            self.counters.prio0_received += 1
        if verdict.max_adver_int != self.cfg.advert_centiseconds():
            self.counters.interval_mismatch += 1
            if verdict.max_adver_int != self._mismatch_logged:
                # RFC 5798 asks to log it; a backup follows the master's interval anyway.
                log.warning(
                    "vrrp.interval_mismatch",
                    instance=self.name,
                    src=str(src),
                    theirs_ms=verdict.max_adver_int * 10,
                    ours_ms=self.cfg.advert_centiseconds() * 10,
                )
                self._mismatch_logged = verdict.max_adver_int
        self.dispatch(fsm.Received(src, verdict))

    def _version_mismatch(self, src: IPAddr, theirs: int | None) -> None:
        self.counters.version_mismatch += 1
        if src in self._version_peers or theirs is None:
            return
        self._version_peers.add(src)  # once per peer: a flood of them logs one line
        line = version_warning(src, theirs, self.cfg.vrid, self.name, self.cfg.version)
        self.version_mismatch = line
        log.warning("vrrp.version_mismatch", instance=self.name, message=line)

    # ---- answering challenges (authentication only, see pulsed/ha/auth.py)
    def _answer(self) -> None:
        """Send our current kind of packet soon: an advert as master, else a probe. At most one
        per ANSWER_GAP, so replayed packets cannot turn us into an amplifier."""
        assert self.loop is not None
        if self._answer_handle is not None:
            return  # one is already on its way
        wait = self._last_answer + ANSWER_GAP - self.loop.time()
        if wait > 0:
            self._answer_handle = self.loop.call_later(wait, self._answer_now)
        else:
            self._answer_now()

    def _answer_now(self) -> None:
        assert self.loop is not None
        self._answer_handle = None
        role = self.state.role
        if self._stopping or role not in _LIVE:
            return  # INIT and FAULT send nothing, as without authentication
        self._last_answer = self.loop.time()
        if role is fsm.Role.MASTER:
            self._send(self.state.priority)
        else:
            self._send(self.state.priority, probe=True)

    async def _probe_loop(self) -> None:
        """As backup, keep probing while a peer is heard that we cannot verify yet."""
        while True:
            await asyncio.sleep(self.params.adver_int)
            auth = self.auth
            if auth is not None and self.state.role is fsm.Role.BACKUP and auth.has_unverified():
                self._answer()

    # ---- tracking
    def _evaluate_tracking(self, initial: bool = False) -> None:
        cfg = self.cfg
        prio, faults = tracked_priority(
            cfg,
            self.weights,
            link_up=link_is_up,
            healthy_fraction=self.healthy_fraction,
            track_value=self.track_value,
        )
        if self.src is None and not cfg.unicast_source:
            faults.append(f"no IPv{self.family} source address on {cfg.interface}")
        if self.sock is None and not faults:
            faults.append(f"cannot open the VRRP socket on {cfg.interface}")
        if prio != self.effective_priority:
            log.info("vrrp.priority", instance=self.name, priority=prio, configured=cfg.priority)
            self.effective_priority = prio
            if not initial:
                self.dispatch(fsm.PriorityChanged(prio))
            else:
                self.state = fsm.State(priority=prio)
        was = self.faults
        self.faults = faults
        if initial or self._stopping:
            return
        if bool(faults) != bool(was):
            self.host.own_fault_changed(self)
        self._apply_faults()

    def all_faults(self) -> list[str]:
        return self.faults + ([self.group_fault] if self.group_fault else [])

    def _apply_faults(self) -> None:
        """FAULT while tracking or the sync group says so; out of it when neither does."""
        if self._stopping:
            return
        faults, was = self.all_faults(), self._fault_applied
        self._fault_applied = faults
        if faults and faults != was:
            self.dispatch(fsm.FaultSet("; ".join(faults)))
        elif not faults and was:
            self.dispatch(fsm.FaultCleared("recovered: " + "; ".join(was)))

    def set_group_fault(self, reason: str | None) -> None:
        if reason != self.group_fault:
            self.group_fault = reason
            self._apply_faults()

    async def _tracking_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.track_interval)
            if self.sock is None and link_is_up(self.cfg.interface):
                self._open_socket()
            if self.src is None and not self.cfg.unicast_source:
                self.src = await self.vip_mgr.source_address(self.cfg.interface, self.family)
                if self.src is not None:
                    self.params = replace(self.params, address=self.src)
            try:
                self._evaluate_tracking()
            except Exception as e:
                log.error("vrrp.tracking_failed", error=str(e))

    # ---- applying the role: VIPs, announcements, sync daemon (serialised, level-triggered)
    async def _role_worker(self) -> None:
        while True:
            await self._role_wakeup.wait()
            self._role_wakeup.clear()
            target = self.state.role
            if target is not self.applied_role:
                try:
                    await self._apply(target)
                except Exception as e:
                    log.error("vrrp.apply_failed", role=target.value, error=str(e))
                self.applied_role = target
                self.host.applied(self, target.value, self.vips_held)
            if self._vip_changes is not None:
                changes, self._vip_changes = self._vip_changes, None
                try:
                    await self._change_vips(*changes)
                except Exception as e:
                    log.error("vrrp.apply_failed", role="vips", error=str(e))
            if self.applied_role is self.state.role:
                self._role_settled.set()
            else:
                self._role_wakeup.set()

    async def _change_vips(self, added: list, removed: list) -> None:
        """A reload changed the VIPs: as master, add and announce the new, drop the old."""
        if not self.vips_held:
            return
        mgr = VipManager(removed)
        try:
            await mgr.remove_all()
        finally:
            mgr.close()
        if added:
            mgr = VipManager(added)
            try:
                await mgr.add_all()
            finally:
                mgr.close()
            if self.cfg.garp_count:
                self.announcer.announce(added)
        log.info(
            "vrrp.vips_changed",
            instance=self.name,
            added=[str(v) for v, _ in added],
            removed=[str(v) for v, _ in removed],
        )

    async def _apply(self, role: fsm.Role) -> None:
        if role is fsm.Role.MASTER:
            await self.vip_mgr.add_all()
            self.vips_held = True
            if self.cfg.garp_count:  # the first burst at once, the rest spaced in a task
                self.announcer.announce(self.vips)
            self._garp_task = asyncio.create_task(self._announce(), name="vrrp-garp")
            await self._sync("master")
            return
        if self._garp_task is not None:
            self._garp_task.cancel()
            self._garp_task = None
        if role is fsm.Role.INIT and self.keep_vips:
            return  # an upgrade hand-off: the next process adopts VIPs and sync daemon
        if self.vips_held or role is fsm.Role.INIT:
            await self.vip_mgr.remove_all()
            self.vips_held = False
        await self._sync(None if role is fsm.Role.INIT else "backup")

    async def _announce(self, burst: bool = True) -> None:
        if burst:
            for _ in range(self.cfg.garp_count - 1):
                await asyncio.sleep(self.cfg.garp_interval)
                self.announcer.announce(self.vips)
        while self.cfg.garp_refresh:
            await asyncio.sleep(self.cfg.garp_refresh)
            self.announcer.announce(self.vips)

    async def _sync(self, want: SyncState | None) -> None:
        sd = self.cfg.sync_daemon
        if not sd.enabled or self.syncd is None or want == self.syncd_state:
            return
        try:
            if self.syncd_state is not None:
                await self.syncd.stop_sync_daemon(self.syncd_state)
                self.syncd_state = None
            if want is not None:
                ifname = sd.interface or self.cfg.interface
                try:
                    await self.syncd.start_sync_daemon(want, ifname, sd.syncid)
                except Exception:
                    # One left running by a previous run killed with -9: replace it.
                    with contextlib.suppress(Exception):
                        await self.syncd.stop_sync_daemon(want)
                    await self.syncd.start_sync_daemon(want, ifname, sd.syncid)
                self.syncd_state = want
            log.info("vrrp.sync_daemon", state=want or "stopped", syncid=sd.syncid)
        except Exception as e:
            log.error("vrrp.sync_daemon_failed", state=want, error=str(e))

    # ---- status
    def status(self) -> VrrpStatus:
        s, c = self.state, self.counters
        return VrrpStatus(
            interface=self.cfg.interface,
            vrid=self.cfg.vrid,
            state=s.role.value,
            priority=self.cfg.priority,
            effective_priority=s.priority,
            master=str(s.master) if s.master is not None and s.role in _LIVE else None,
            advert_interval=self.params.adver_int,
            master_advert_interval=s.master_adver_int
            if s.role is fsm.Role.BACKUP
            else self.params.adver_int,
            vips=[str(v) for v, _ in self.vips],
            vips_held=self.vips_held,
            adverts_sent=c.sent,
            adverts_received=c.received,
            priority_zero_sent=c.prio0_sent,
            priority_zero_received=c.prio0_received,
            interval_mismatches=c.interval_mismatch,
            drops=dict(c.drops),
            transitions=c.transitions,
            last_transition=self.last_transition_wall,
            last_transition_reason=s.reason,
            faults=self.all_faults(),
            sync_daemon=self.syncd_state,
            probes_sent=c.probes_sent,
            probes_received=c.probes_received,
            name=self.name,
            version=self.cfg.version,
            version_mismatches=c.version_mismatch,
            version_mismatch=self.version_mismatch,
            master_priority=s.master_priority if s.role is fsm.Role.BACKUP else None,
        )
