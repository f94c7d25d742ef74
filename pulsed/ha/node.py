"""VrrpNode: the VRRP router of one pulsed daemon. Sockets, timers, VIPs, tracking, sync daemon.

The pure parts (codec, validation, state machine) decide; this module only moves bytes and
addresses. With ``dedicated_thread`` (the default) the heartbeat runs on its own thread and
event loop, so a busy main loop cannot delay adverts (see docs/benchmarks.md "failover").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from pulsed.ha import fsm
from pulsed.ha.auth import Authenticator, load_key
from pulsed.ha.config import VrrpConfig
from pulsed.ha.receive import Expect, Rejected, validate
from pulsed.ha.transport import MalformedIP, VrrpSocket
from pulsed.ha.vip import Announcer, VipManager, link_is_up
from pulsed.ha.vrrp import IPPROTO_VRRP, MCAST_V4, MCAST_V6, Advert, Drop, IPAddr, encode
from pulsed.ipvs import syncd as kernel_syncd
from pulsed.ipvs.syncd import SyncState

log = structlog.get_logger(__name__)

HealthyFraction = Callable[[str], float | None]
RoleChange = Callable[[str, str, str], None]  # (old, new, reason)


class SyncDaemonControl(Protocol):
    """Starts and stops the kernel's IPVS sync daemon: the module pulsed.ipvs.syncd by
    default, a fake in tests."""

    async def start_sync_daemon(self, state: SyncState, ifname: str, syncid: int) -> None: ...
    async def stop_sync_daemon(self, state: SyncState) -> None: ...


@dataclass(frozen=True)
class VrrpStatus:
    """A snapshot of one VRRP router, all a reader needs (it never looks at the config)."""

    interface: str
    vrid: int
    state: str
    priority: int
    effective_priority: int
    master: str | None
    advert_interval: float
    master_advert_interval: float
    vips: list[str]
    vips_held: bool
    adverts_sent: int
    adverts_received: int
    priority_zero_sent: int
    priority_zero_received: int
    interval_mismatches: int
    drops: dict[str, int]
    transitions: int
    last_transition: float  # wall clock, seconds since the epoch
    last_transition_reason: str
    faults: list[str]
    sync_daemon: str | None = None  # "master", "backup" or None when not running
    probes_sent: int = 0  # authenticated challenges/answers (see pulsed/ha/auth.py)
    probes_received: int = 0


_LIVE = (fsm.Role.MASTER, fsm.Role.BACKUP)
# Least time between two answers to challenges (authentication): bounds what replays can make
# us send, while a restarted peer is still verified within a few milliseconds.
ANSWER_GAP = 0.02


class VrrpSetupError(ValueError):
    """What a valid [vrrp] table needs at run time is missing (the key file cannot be read,
    no raw socket); the message is one line."""


@dataclass(frozen=True)
class PreparedVrrp:
    """Everything a VrrpNode needs that can fail, built before anything is swapped.

    Holds no socket and no address: building one changes nothing on the system.
    Use it for one VrrpNode (its Authenticator is that node's epoch and counter).
    """

    cfg: VrrpConfig
    auth: Authenticator | None


def _check_raw_socket(family: int) -> None:
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    try:
        socket.socket(af, socket.SOCK_RAW, IPPROTO_VRRP).close()
    except OSError as e:
        why = (e.strerror or type(e).__name__).lower()
        msg = f"vrrp: cannot open a raw VRRP socket ({why}); it needs CAP_NET_RAW"
        raise VrrpSetupError(msg) from None
    # The interface itself may appear later: the node waits for it in FAULT (tracking).


def prepare_vrrp(cfg: VrrpConfig, *, check_socket: bool = True) -> PreparedVrrp:
    """Read the auth key and build the Authenticator, check that a raw VRRP socket can be
    opened (``check_socket``). VrrpSetupError (one line) on any failure.

    ``cfg`` was validated when the config was loaded (pulsed.config, the one validation):
    this only does what can still fail at run time, as the key file may have changed since.
    Blocking (it reads the key file): from a running event loop, use ``prepare_vrrp_async``.
    """
    auth = None
    if cfg.auth.key_file:
        try:
            auth = Authenticator(load_key(cfg.auth.key_file))
        except ValueError as e:
            raise VrrpSetupError(f"vrrp.auth.key_file: {e}") from None
    if check_socket:
        _check_raw_socket(cfg.family())
    return PreparedVrrp(cfg=cfg, auth=auth)


async def prepare_vrrp_async(
    cfg: VrrpConfig, *, check_socket: bool = True, timeout: float = 2.0
) -> PreparedVrrp:
    """``prepare_vrrp`` off the event loop; a key file that cannot be read in ``timeout``
    seconds (a hung mount) fails with VrrpSetupError instead of freezing the loop."""
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.to_thread(prepare_vrrp, cfg, check_socket=check_socket)
    except TimeoutError:
        raise VrrpSetupError(f"vrrp.auth.key_file: not read within {timeout:g}s") from None


@dataclass
class _Counters:
    sent: int = 0
    received: int = 0
    prio0_sent: int = 0
    prio0_received: int = 0
    interval_mismatch: int = 0
    transitions: int = 0
    probes_sent: int = 0
    probes_received: int = 0
    # Probes are counted above: they are not drops.
    drops: dict[str, int] = field(
        default_factory=lambda: {d.value: 0 for d in Drop if d is not Drop.PROBE}
    )


class _Router:
    """One running VRRP router: everything that runs on the heartbeat's event loop."""

    def __init__(
        self,
        prepared: PreparedVrrp,
        healthy_fraction: HealthyFraction | None,
        notify: Callable[[str, str, str], None],
        syncd: SyncDaemonControl | None,
        applied: Callable[[str, bool], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.applied = applied
        self.wall_clock = wall_clock
        cfg = prepared.cfg
        self.cfg = cfg
        self.healthy_fraction = healthy_fraction
        self.notify = notify
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
        self.params = fsm.Params(
            adver_int=cfg.advert_centiseconds() / 100,
            preempt=cfg.preempt,
            preempt_delay=float(cfg.preempt_delay),
        )
        self.src: IPAddr | None = None
        self.sock: VrrpSocket | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.faults: list[str] = []
        self.effective_priority = cfg.priority
        self.last_transition_wall = wall_clock()
        self.applied_role: fsm.Role = fsm.Role.INIT
        self.vips_held = False
        self.syncd_state: SyncState | None = None
        self.graceful = True
        self._role_wakeup = asyncio.Event()
        self._role_settled = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._garp_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._mismatch_logged: int | None = None

    # ---- lifecycle
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        cfg = self.cfg
        # A previous run killed with -9 may have left VIPs behind: start clean.
        await self.vip_mgr.remove_all()
        self.src = (
            ipaddress.ip_address(cfg.unicast_source)
            if cfg.unicast_source
            else await self.vip_mgr.source_address(cfg.interface, self.family)
        )
        self.params = fsm.Params(
            adver_int=self.params.adver_int,
            preempt=self.params.preempt,
            preempt_delay=self.params.preempt_delay,
            address=self.src,
        )
        self._open_socket()
        self._tasks.append(asyncio.create_task(self._role_worker(), name="vrrp-role"))
        self._evaluate_tracking(initial=True)
        self.dispatch(fsm.Startup())
        if self.faults:
            self.dispatch(fsm.FaultSet("; ".join(self.faults)))
        self._tasks.append(asyncio.create_task(self._tracking_loop(), name="vrrp-track"))
        if self.auth is not None:
            self._tasks.append(asyncio.create_task(self._probe_loop(), name="vrrp-probe"))
        log.info(
            "vrrp.started",
            interface=cfg.interface,
            vrid=cfg.vrid,
            priority=cfg.priority,
            source=str(self.src),
            vips=[str(v) for v, _ in self.vips],
        )

    def _open_socket(self) -> bool:
        """Open the VRRP socket; False (and FAULT via tracking) while the interface is missing."""
        assert self.loop is not None
        cfg = self.cfg
        try:
            ifindex = socket.if_nametoindex(cfg.interface)
            self.sock = VrrpSocket(self.family, cfg.interface, ifindex, multicast=not self.peers)
        except OSError as e:
            log.error("vrrp.socket_failed", interface=cfg.interface, error=str(e))
            return False
        self.loop.add_reader(self.sock.fileno(), self._on_readable)
        self.announcer.prepare(self.vips)  # open the ARP/ICMPv6 sockets before they are needed
        return True

    async def stop(self, graceful: bool) -> None:
        self.graceful = graceful
        self._stopping = True
        self.dispatch(fsm.Shutdown())
        await self._settle()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self.timer:
            self.timer.cancel()
        if self._answer_handle is not None:
            self._answer_handle.cancel()
        if self.sock is not None:
            assert self.loop is not None
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
        self.announcer.close()
        self.vip_mgr.close()
        log.info("vrrp.stopped", graceful=graceful)

    async def _settle(self) -> None:
        """Wait until the role worker has applied the current role."""
        while self.applied_role is not self.state.role:
            self._role_settled.clear()
            self._role_wakeup.set()
            await self._role_settled.wait()

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
        self.timer = None
        self.dispatch(fsm.Tick())

    def _on_transition(self, t: fsm.Transition) -> None:
        self.counters.transitions += 1
        self.last_transition_wall = self.wall_clock()
        log.info(f"vrrp.{t.new.value}", old=t.old.value, reason=t.reason, vrid=self.cfg.vrid)
        self._role_wakeup.set()
        if self.auth is not None and t.new is fsm.Role.BACKUP:
            # A new epoch (start) or a return from FAULT: ask the peers for their challenge
            # now, so that the master's answer is verified long before our master-down time.
            self._answer()
        try:
            self.notify(t.old.value, t.new.value, t.reason)
        except Exception as e:  # a broken callback must not stop the heartbeat
            log.error("vrrp.callback_failed", error=str(e))

    # ---- packets
    def _send(self, priority: int, probe: bool = False) -> None:
        if self.sock is None or self.src is None:
            return
        adv = Advert(
            vrid=self.cfg.vrid,
            priority=priority,
            max_adver_int=self.cfg.advert_centiseconds(),
            addresses=tuple(v.ip for v, _ in self.vips),
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

    def _on_readable(self) -> None:
        assert self.sock is not None
        for _ in range(64):  # bounded: a flood cannot starve the timers
            try:
                pkt = self.sock.recv()
            except MalformedIP:
                self.counters.drops[Drop.SHORT.value] += 1
                continue
            except OSError as e:
                log.warning("vrrp.recv_failed", error=str(e))
                return
            if pkt is None:
                return
            self._on_packet(pkt.payload, pkt.src, pkt.dst, pkt.ttl)

    def _expect(self) -> Expect:
        return Expect(
            vrid=self.cfg.vrid,
            family=self.family,
            addresses=frozenset(v.ip for v, _ in self.vips),
            adver_int=self.cfg.advert_centiseconds(),
            strict_interval=self.cfg.strict_interval,
            peers=frozenset(self.peers),
            own=frozenset({self.src}) if self.src is not None else frozenset(),
        )

    def _on_packet(self, payload: bytes, src: IPAddr, dst: IPAddr, ttl: int) -> None:
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
                    src=str(src),
                    theirs_ms=verdict.max_adver_int * 10,
                    ours_ms=self.cfg.advert_centiseconds() * 10,
                )
                self._mismatch_logged = verdict.max_adver_int
        self.dispatch(fsm.Received(src, verdict))

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
        assert self.auth is not None
        while True:
            await asyncio.sleep(self.params.adver_int)
            if self.state.role is fsm.Role.BACKUP and self.auth.has_unverified():
                self._answer()

    # ---- tracking
    def _evaluate_tracking(self, initial: bool = False) -> None:
        cfg = self.cfg
        faults: list[str] = []
        decrement = 0
        if not link_is_up(cfg.interface):
            faults.append(f"interface {cfg.interface} down")
        for ti in cfg.track_interfaces:
            if not link_is_up(ti.interface):
                if ti.decrement:
                    decrement += ti.decrement
                else:
                    faults.append(f"interface {ti.interface} down")
        for ts in cfg.track_services:
            frac = self.healthy_fraction(ts.service) if self.healthy_fraction else None
            if frac is not None and frac < ts.min_healthy:
                if ts.decrement:
                    decrement += ts.decrement
                else:
                    faults.append(f"service {ts.service} {frac:.0%} healthy")
        if self.src is None and not cfg.unicast_source:
            faults.append(f"no IPv{self.family} source address on {cfg.interface}")
        if self.sock is None and not faults:
            faults.append(f"cannot open the VRRP socket on {cfg.interface}")
        prio = cfg.priority if not decrement else max(1, min(254, cfg.priority - decrement))
        if prio != self.effective_priority:
            log.info("vrrp.priority", priority=prio, configured=cfg.priority)
            self.effective_priority = prio
            if not initial:
                self.dispatch(fsm.PriorityChanged(prio))
            else:
                self.state = fsm.State(priority=prio)
        was = self.faults
        self.faults = faults
        if initial or self._stopping:
            return
        if faults and faults != was:
            self.dispatch(fsm.FaultSet("; ".join(faults)))
        elif not faults and was:
            self.dispatch(fsm.FaultCleared("recovered: " + "; ".join(was)))

    async def _tracking_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.track_interval)
            if self.sock is None and link_is_up(self.cfg.interface):
                self._open_socket()
            if self.src is None and not self.cfg.unicast_source:
                self.src = await self.vip_mgr.source_address(self.cfg.interface, self.family)
                if self.src is not None:
                    self.params = fsm.Params(
                        adver_int=self.params.adver_int,
                        preempt=self.params.preempt,
                        preempt_delay=self.params.preempt_delay,
                        address=self.src,
                    )
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
                if self.applied is not None:
                    self.applied(target.value, self.vips_held)
            if self.applied_role is self.state.role:
                self._role_settled.set()
            else:
                self._role_wakeup.set()

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
        if self.vips_held or role is fsm.Role.INIT:
            await self.vip_mgr.remove_all()
            self.vips_held = False
        await self._sync(None if role is fsm.Role.INIT else "backup")

    async def _announce(self) -> None:
        cfg = self.cfg
        for _ in range(cfg.garp_count - 1):
            await asyncio.sleep(cfg.garp_interval)
            self.announcer.announce(self.vips)
        while cfg.garp_refresh:
            await asyncio.sleep(cfg.garp_refresh)
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
            faults=list(self.faults),
            sync_daemon=self.syncd_state,
            probes_sent=c.probes_sent,
            probes_received=c.probes_received,
        )


class VrrpNode:
    """Public API for the daemon: ``await start()``, ``await stop()``, ``status()``.

    ``healthy_fraction(service)`` is called from the heartbeat thread when
    ``dedicated_thread`` is on: it must only read (a dict lookup is fine).
    ``on_role_change(old, new, reason)`` is always called on the loop that called start().
    """

    def __init__(
        self,
        cfg: VrrpConfig | PreparedVrrp,
        *,
        healthy_fraction: HealthyFraction | None = None,
        on_role_change: RoleChange | None = None,
        sync_daemon: SyncDaemonControl | None = None,
        on_applied: Callable[[str, bool], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``cfg``: a PreparedVrrp (built by ``prepare_vrrp`` before anything was swapped), or a
        VrrpConfig validated by pulsed.config, which is prepared here (VrrpSetupError, one
        line, on failure).

        ``on_applied(role, vips_held)``: after the VIPs were added or removed for a role.
        ``wall_clock``: only for the timestamps in the status; nothing else reads wall time.
        """
        prepared = cfg if isinstance(cfg, PreparedVrrp) else prepare_vrrp(cfg, check_socket=False)
        self._prepared = prepared
        self._wall_clock = wall_clock
        self._on_applied = on_applied
        self.cfg = prepared.cfg
        self._healthy_fraction = healthy_fraction
        self._on_role_change = on_role_change
        self._syncd: SyncDaemonControl = sync_daemon if sync_daemon is not None else kernel_syncd
        self._router: _Router | None = None
        self._caller_loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._hb_loop: asyncio.AbstractEventLoop | None = None

    def _notify(self, old: str, new: str, reason: str) -> None:
        cb = self._on_role_change
        if cb is None or self._caller_loop is None:
            return
        if self._thread is None:
            cb(old, new, reason)
        else:
            self._caller_loop.call_soon_threadsafe(cb, old, new, reason)

    async def start(self) -> None:
        self._caller_loop = asyncio.get_running_loop()
        if not self.cfg.dedicated_thread:
            self._router = self._make_router()
            await self._router.start()
            return
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._thread_main, args=(ready,), name="vrrp", daemon=True
        )
        self._thread.start()
        await asyncio.wrap_future(ready)

    def _make_router(self) -> _Router:
        return _Router(
            self._prepared,
            self._healthy_fraction,
            self._notify,
            self._syncd,
            self._applied,
            self._wall_clock,
        )

    def _applied(self, role: str, held: bool) -> None:
        cb = self._on_applied
        if cb is None or self._caller_loop is None:
            return
        if self._thread is None:
            cb(role, held)
        else:
            self._caller_loop.call_soon_threadsafe(cb, role, held)

    def _thread_main(self, ready: concurrent.futures.Future[None]) -> None:
        loop = asyncio.new_event_loop()
        self._hb_loop = loop

        async def boot() -> None:
            self._router = self._make_router()
            await self._router.start()

        try:
            loop.run_until_complete(boot())
        except BaseException as e:
            ready.set_exception(e)
            loop.close()
            return
        ready.set_result(None)
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def stop(self, graceful: bool = True) -> None:
        router = self._router
        if router is None:
            return
        if self._thread is None:
            await router.stop(graceful)
            return
        assert self._hb_loop is not None
        fut = asyncio.run_coroutine_threadsafe(router.stop(graceful), self._hb_loop)
        try:
            await asyncio.wrap_future(fut)
        finally:
            self._hb_loop.call_soon_threadsafe(self._hb_loop.stop)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
            self._thread = None

    def status(self) -> VrrpStatus | None:
        """A snapshot; None before start."""
        return self._router.status() if self._router is not None else None
