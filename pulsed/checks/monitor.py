"""HealthMonitor: every probe of every real server, scheduled on one event loop.

Each server's probes follow a fixed grid (first probe at a random offset
within ``jitter``, then every ``interval`` after it), so timing does not
drift with probe duration and servers spread over the interval never fall
back into step. Due times (time.monotonic(), which is also the clock of
asyncio's and uvloop's timers) sit in one heap served by a single loop timer:
each wake-up starts every probe due by then (or within the next millisecond,
uvloop's timer step), so an idle server costs one heap entry and no loop
handle. Grids are aligned to a common tick: every first probe is placed on
a multiple of it, so servers whose interval is a multiple of the tick come
due together and the loop wakes once per tick for all of them instead of
once per probe (a wake-up costs more than a probe's own work when probes
are spread thin). The tick is fitted to the check rate, about ten probes
per tick, up to ``max_tick``. No probe starts early; one whose interval is
not a multiple of the tick starts at the first tick after its due time. Socket
probes (tcp, http) run on one ProbeEngine (pulsed.checks.sockio) and need no
task; others run as a task each. A probe that would start while
``max_in_flight`` probes are running waits for a free slot; its timeout
counts from when it starts.

A check with ``retry_interval`` probes a server that is up but failed its
last probe after that delay instead of its interval, until the server goes
down or passes again (keepalived's delay_before_retry); the grid then goes
on from the last retry.

A probe that fails for the router's own reason (a result of category
"local": out of descriptors or memory, refused by a sandbox, or a timeout
while the loop was stalled, see STALL_SHARE) is a local error: counted
(local_faults()), kept on the server's record (RealHealth.local_error*) and
logged at most once per LOCAL_LOG_EVERY, and it moves nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
import random
import time
from collections import defaultdict, deque
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol, cast

import structlog

from pulsed.checks.agent import AgentProbe
from pulsed.checks.agent import next_state as next_agent_state
from pulsed.checks.base import (
    LOCAL_FAULTS,
    Probe,
    ProbeResult,
    Target,
    local_error_result,
    local_fault,
    local_result,
    same_probe,
    seconds_text,
)
from pulsed.checks.probes import make_probe
from pulsed.checks.sockio import EngineProbe, ProbeEngine, StallMeter
from pulsed.checks.state import (
    RealHealth,
    apply_result,
    changed_for_table,
    initial_health,
    note_local_error,
    repeated,
    settled,
    with_agent,
)
from pulsed.model import RealKey

log = structlog.get_logger(__name__)


class Cancellable(Protocol):
    started: float  # monotonic

    def cancel(self) -> None: ...


OnChange = Callable[[RealKey, RealHealth], None]
OnResult = Callable[[RealKey, ProbeResult], None]

# Probes due within this much of a wake-up start with it: uvloop's timers
# have millisecond steps, so waking for each one separately gains nothing.
_BATCH_WINDOW = 0.001
# Default ``max_tick``. At 200 probes a second, one wake-up per probe cost
# about a quarter more CPU per check than one per 50 ms (docs/benchmarks.md,
# "Against keepalived").
DEFAULT_MAX_TICK = 0.05
# The tick is as long as it takes for about this many probes to share one
# (up to max_tick): enough to spread a wake-up's cost, few enough that a
# tick's burst neither delays the loop nor queues up at a server. At 2,000
# checks a second a 50 ms tick (100 probes) held the loop for 8 ms.
_PROBES_PER_TICK = 10
# Only checks whose interval is at least this many ticks are aligned, so a
# fast check never waits a large share of its interval for a tick.
_TICKS_PER_ALIGNED_INTERVAL = 10
# Float sums of intervals land a hair off a tick; within this they are on it.
_ON_TICK = 1e-6
# Most probes started in one go: a large tick's worth (hundreds at thousands
# of checks a second) is started in slices, with the loop free in between to
# time the answers of probes already started and serve the API.
_STARTS_PER_SLICE = 64
# A timeout is the server's only if the router was attentive: when the loop
# was stalled (pulsed.checks.sockio.StallMeter) for at least this share of
# the probe's timeout while it ran, the timeout is a local error
# ("saturated"), not a failure. The server was owed the whole timeout of a
# listening router; having lost a quarter of it, it may have answered in time
# and not been read, or been sent its request late. Below that share the
# verdict stands, so a router with a little jitter still sees dead servers.
STALL_SHARE = 0.25
# The stall meter's watch period: fine enough to measure a quarter of the
# shortest timeout (a stall is measured to within one period), at most this.
_WATCH_PERIOD = 0.05
# Local errors are logged at most once per this many seconds (one line each,
# with how many were held back since the last line).
LOCAL_LOG_EVERY = 10.0


@dataclass(eq=False, slots=True)
class _Entry:
    key: RealKey
    target: Target
    probe: Probe
    health: RealHealth
    # Other real servers (of other services) with the same probe: this one
    # probe feeds them all, and they share its health record.
    others: tuple[RealKey, ...] = ()
    # The check's agent (pulsed.checks.agent), scheduled as an entry of its
    # own; on that entry, ``agent_of`` is the entry whose record it feeds.
    agent: _Entry | None = None
    agent_of: _Entry | None = None
    # The probe runs on the ProbeEngine (has start()), else as a task. A flag,
    # not the bound method: at 10,000 servers those cost 0.6 MiB.
    on_engine: bool = False
    interval: float = 0.0  # seconds, float(target.check.interval); 0: never probed
    aligned: bool = False  # starts on the monitor's ticks
    deadline: float = 0.0
    scheduled: bool = False  # its next due time is in the heap
    live: bool = True  # False once removed or replaced by update()
    task: asyncio.Task[None] | None = None
    exchange: Cancellable | None = None
    waiting: bool = False
    # Results that only repeated the last one (state.settled), not yet
    # folded into ``health``: how many, and the latest one's latency and time.
    repeats: int = 0
    repeat_latency: float = 0.0
    repeat_at: float = 0.0  # monotonic
    listed: bool = False  # in HealthMonitor._unfolded


@dataclass(frozen=True, slots=True)
class LocalFaults:
    """The monitor's local errors (probes the router could not run or judge)."""

    totals: Mapping[str, int]  # by LOCAL_FAULTS label, every label present
    last_fault: str | None = None
    last_reason: str | None = None
    last_at: float | None = None  # wall clock
    last_key: RealKey | None = None

    @property
    def total(self) -> int:
        return sum(self.totals.values())


def _labels(key: RealKey) -> dict[str, str]:
    # Built when a line is logged rather than kept per server: at 10,000
    # servers the kept dicts cost 3 MiB.
    return {"service": str(key[0]), "server": str(key[1])}


class HealthMonitor:
    """Probes real servers and reports health changes.

    ``on_change(key, health)`` runs when a server goes up or down, or when an
    up server reports a different weight: the daemon marks the table dirty.
    ``on_result(key, result)`` runs after every probe (metrics hook).
    """

    def __init__(
        self,
        on_change: OnChange,
        *,
        on_result: OnResult | None = None,
        max_in_flight: int = 2000,
        max_tick: float = DEFAULT_MAX_TICK,
        rng: random.Random | None = None,
        probe_factory: Callable[[Target], Probe] = make_probe,
    ) -> None:
        self._on_change = on_change
        self._on_result = on_result
        self._max_in_flight = max(1, max_in_flight)
        self._rng = rng or random.Random()
        self._make_probe = probe_factory
        self._entries: dict[RealKey, _Entry] = {}
        self._health: dict[RealKey, RealHealth] = {}
        # Entries with repeats not yet folded into their health record. A
        # server that keeps passing (or failing) changes nothing anyone acts
        # on, so its record is rebuilt when it is read (health()), not after
        # every probe: the result is the same (state.repeated).
        self._unfolded: list[_Entry] = []
        self._queue: deque[_Entry] = deque()
        self._in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._engine: ProbeEngine | None = None
        # Entries by start time, and a heap of those times: servers on one
        # tick share a bucket, so the heap holds ticks, not servers. Stale
        # entries (stopped ones) are skipped when their bucket comes up
        # rather than searched for and removed.
        self._due: dict[float, list[_Entry]] = {}
        self._due_times: list[float] = []
        self._wake: asyncio.Handle | None = None
        self._wake_at = math.inf
        self._max_tick = max(0.0, max_tick)
        self._tick = self._max_tick  # see _retune()
        # Wall-clock time is derived from the monotonic readings the engine
        # already takes, resynchronised at most once a second.
        self._wall_offset = 0.0
        self._wall_synced_at = -math.inf
        self._meter: StallMeter | None = None
        self._watch_period = _WATCH_PERIOD
        self._local_totals = dict.fromkeys(LOCAL_FAULTS, 0)
        self._local_last: tuple[str, str, float, RealKey] | None = None
        self._local_logged_at = -math.inf
        self._local_held = 0

    # --- API used by the daemon -------------------------------------------------

    def update(
        self, targets: Mapping[RealKey, Target], assume_up: Collection[RealKey] = ()
    ) -> None:
        """Make the monitored set equal ``targets``.

        Servers whose probe (probed address, port and check) is unchanged keep
        their health and schedule; new or changed ones start afresh (down,
        unless their check says ``initial_state = "up"`` or their key is in
        ``assume_up``, e.g. because the kernel table already holds them with a
        weight when the daemon restarts); removed ones stop. Real servers of
        several services with the same probe are probed once: the probe feeds
        each of them, and a newcomer joins the record the others already have
        (keepalived #2358; see shared()).
        """
        for key in list(self._entries):
            entry = self._entries[key]
            target = targets.get(key)
            if target is None or not same_probe(target, entry.target):
                self._detach(key, entry)
        wall = time.time()
        # Health records are frozen, so new servers share these three.
        unchecked = initial_health(True, wall, reason="no check")
        starting = {up: initial_health(up, wall) for up in (False, True)}
        added: list[_Entry] = []
        intervals: dict[float, float] = {}  # one float object per distinct interval
        # Entries by probed address, port and check (its repr, which names every
        # field: a check with headers is not hashable). With the check in the key,
        # thousands of services on one backend address and port, each with a check
        # of its own, are no quadratic search. Built when needed; one repr per check
        # object (the servers of a service share theirs).
        probing: dict[tuple[str, int, str], list[_Entry]] | None = None
        encoded: dict[int, str] = {}

        def where_of(t: Target) -> tuple[str, int, str]:
            code = encoded.get(id(t.check))
            if code is None:
                code = encoded[id(t.check)] = repr(t.check)
            return (t.probe_address, t.probe_port, code)

        for key, target in targets.items():
            if key in self._entries:
                continue
            if probing is None:
                probing = defaultdict(list)
                for entry in self._distinct():
                    probing[where_of(entry.target)].append(entry)
            where = where_of(target)
            same = next((e for e in probing[where] if same_probe(target, e.target)), None)
            if same is not None:
                same.others += (key,)
                self._entries[key] = same
                self._health[key] = self._fold(same)
                continue
            check = target.check
            if check.type == "none":
                health = unchecked
            else:
                health = starting[check.initial_state == "up" or key in assume_up]
            entry = _Entry(key, target, self._build_probe(key, target), health)
            entry.on_engine = hasattr(entry.probe, "start")
            interval = float(check.interval) if check.type != "none" else 0.0
            entry.interval = intervals.setdefault(interval, interval)
            if check.agent_port is not None:
                entry.agent = self._agent_entry(entry, starting[False])
            self._entries[key] = entry
            self._health[key] = health
            added.append(entry)
            probing[where].append(entry)
        self._retune(added)
        if self._loop is not None:
            for entry in added:
                self._schedule_first(entry)

    @property
    def tick(self) -> float:
        """The tick in use: max_tick, or shorter at high check rates."""
        return self._tick

    @property
    def max_tick(self) -> float:
        return self._max_tick

    @max_tick.setter
    def max_tick(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        if seconds != self._max_tick:  # a reload that keeps it costs no pass
            self._max_tick = seconds
            self._retune()

    def _retune(self, added: Collection[_Entry] = ()) -> None:
        """Fit the tick to the check rate, and mark which entries align to it
        (every entry when the tick changed, else only the ``added`` ones).
        Servers keep their grid when it changes: those not on the new tick
        start at the first tick after each due time."""
        entries = list(self._distinct())
        rate = sum(1.0 / e.interval for e in entries if e.interval > 0)
        timeouts = [e.target.check.timeout for e in entries if e.interval > 0]
        shortest = float(min(timeouts)) if timeouts else _WATCH_PERIOD
        self._watch_period = max(0.001, min(_WATCH_PERIOD, shortest * STALL_SHARE / 2))
        if self._meter is not None:
            self._meter.period = self._watch_period
        tick = min(self._max_tick, _PROBES_PER_TICK / rate) if rate else self._max_tick
        # Below the batch window, waking per probe already batches as well.
        tick = tick if tick > _BATCH_WINDOW else 0.0
        if tick != self._tick:
            self._tick = tick
            added = entries
        for entry in added:
            entry.aligned = tick > 0 and entry.interval >= _TICKS_PER_ALIGNED_INTERVAL * tick

    def _agent_entry(self, main: _Entry, placeholder: RealHealth) -> _Entry:
        """The entry that runs ``main``'s agent: its results go to main's record
        (_record_agent); its own record is never read."""
        agent = _Entry(main.key, main.target, AgentProbe(main.target), placeholder)
        agent.on_engine = True
        agent.interval = float(main.target.check.agent_interval)
        agent.agent_of = main
        return agent

    def _build_probe(self, key: RealKey, target: Target) -> Probe:
        """The probe for a target; one that cannot be built (an unreadable
        certificate, say) fails every check with the reason, rather than
        breaking the update for every other server."""
        try:
            return self._make_probe(target)
        except Exception as exc:
            reason = f"bad check setup: {_short(exc)}"
            log.error("probe.setup_failed", reason=reason, **_labels(key))
            return _FailingProbe(reason)

    def health(self) -> Mapping[RealKey, RealHealth]:
        """A snapshot of every monitored server's health."""
        for entry in self._unfolded:
            entry.listed = False
            if entry.live:
                self._fold(entry)
        self._unfolded.clear()
        return dict(self._health)

    def targets(self) -> Mapping[RealKey, Target]:
        """Each server's target (for servers sharing a probe, the one probed:
        same_probe() holds between it and each server's own)."""
        return {key: entry.target for key, entry in self._entries.items()}

    def shared(self) -> Mapping[RealKey, tuple[RealKey, ...]]:
        """For each server whose probe feeds others too: every server that
        probe feeds, itself included (one tuple per probe, shared by its
        servers: a backend behind 1,000 services is 1,000 keys, not a million)."""
        groups: dict[RealKey, tuple[RealKey, ...]] = {}
        for entry in self._distinct():
            if entry.others:
                keys = (entry.key, *entry.others)
                for key in keys:
                    groups[key] = keys
        return groups

    def _distinct(self) -> Iterator[_Entry]:
        """Every entry once (a shared one is in _entries under each of its keys)."""
        return (entry for key, entry in self._entries.items() if entry.key == key)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def local_faults(self) -> LocalFaults:
        """Counts of local errors since the monitor was made, and the last one."""
        last = self._local_last
        if last is None:
            return LocalFaults(dict(self._local_totals))
        return LocalFaults(dict(self._local_totals), *last)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._meter = StallMeter(self._loop, self._busy, self._watch_period)
        self._engine = ProbeEngine(self._loop, self._meter)
        for entry in self._distinct():
            self._schedule_first(entry)

    async def stop(self) -> None:
        entries = list(self._distinct())
        tasks = [e.task for e in entries if e.task is not None]
        for entry in entries:
            self._cancel(entry)
        self._queue.clear()
        self._due.clear()
        self._due_times.clear()
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        self._wake_at = math.inf
        if self._engine is not None:
            self._engine.close()
            self._engine = None
        if self._meter is not None:
            self._meter.close()
            self._meter = None
        self._loop = None
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- scheduling -----------------------------------------------------------

    def _schedule_first(self, entry: _Entry) -> None:
        check = entry.target.check
        if self._loop is None:
            return
        if entry.agent is not None:  # an agent runs beside any check, even "none"
            self._schedule_first(entry.agent)
        if entry.interval <= 0:
            return  # type "none": never probed
        jitter = check.jitter if entry.agent_of is None else None
        window = entry.interval if jitter is None else float(jitter)
        entry.deadline = time.monotonic() + self._rng.uniform(0, window)
        if entry.aligned:
            entry.deadline = self._next_tick(entry.deadline)
        self._push(entry)

    def _schedule_next(self, entry: _Entry, now: float) -> None:
        if self._loop is None or not entry.live:
            return
        health = entry.health
        if health.last_ok is False and health.up:
            # Failing but not down yet: a server that stays dead goes down in
            # fall x retry_interval, not fall x interval. (An up server's
            # failure is never a settled repeat: its record is current here.)
            retry = entry.target.check.retry_interval
            if retry is not None:
                entry.deadline = max(entry.deadline + float(retry), now)
                self._push(entry, aligned=False)  # a retry waits for no tick
                return
        interval = entry.interval
        entry.deadline += interval
        if entry.deadline < now:  # the loop was stalled: skip missed slots, keep the grid
            entry.deadline += math.ceil((now - entry.deadline) / interval) * interval
        self._push(entry)

    def _next_tick(self, at: float) -> float:
        """The first tick at or after ``at``."""
        tick = self._tick
        return math.ceil(at / tick - _ON_TICK) * tick

    def _push(self, entry: _Entry, aligned: bool | None = None) -> None:
        entry.scheduled = True
        # The grid (entry.deadline) stays exact; only the start waits for a tick.
        if aligned is None:
            aligned = entry.aligned
        due = self._next_tick(entry.deadline) if aligned else entry.deadline
        bucket = self._due.get(due)
        if bucket is not None:
            bucket.append(entry)
            return
        self._due[due] = [entry]
        heapq.heappush(self._due_times, due)
        if due < self._wake_at:
            self._arm()

    def _requeue(self, at: float, entries: list[_Entry]) -> None:
        """Put entries back at the head of the bucket for ``at``."""
        bucket = self._due.get(at)
        if bucket is None:
            self._due[at] = entries
            heapq.heappush(self._due_times, at)
        else:
            bucket[:0] = entries

    def _arm(self) -> None:
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        self._wake_at = math.inf
        if self._due_times and self._loop is not None:
            self._wake_at = self._due_times[0]
            self._wake = self._loop.call_at(self._wake_at, self._on_wake)

    def _on_wake(self) -> None:
        self._wake = None
        self._wake_at = math.inf
        assert self._engine is not None and self._loop is not None
        horizon = self._engine.begin() + _BATCH_WINDOW
        times, buckets = self._due_times, self._due
        budget = _STARTS_PER_SLICE
        try:
            while times and times[0] <= horizon:
                at = heapq.heappop(times)
                bucket = buckets.pop(at)
                for i, entry in enumerate(bucket):
                    if not entry.scheduled:
                        continue  # stopped since it was scheduled
                    if budget == 0:  # the rest in the next slice
                        self._requeue(at, bucket[i:])
                        self._wake_at = at
                        self._wake = self._loop.call_soon(self._on_wake)
                        return
                    budget -= 1
                    entry.scheduled = False
                    if self._in_flight >= self._max_in_flight:
                        entry.waiting = True
                        self._queue.append(entry)
                    else:
                        self._launch(entry)
        finally:
            self._engine.end()
            if self._in_flight and self._meter is not None:
                self._meter.kick()
        if self._wake is None:
            self._arm()

    def _busy(self) -> bool:
        return self._in_flight > 0

    def _launch(self, entry: _Entry) -> None:
        assert self._loop is not None and self._engine is not None
        self._in_flight += 1
        if not entry.on_engine:
            entry.task = self._loop.create_task(self._run(entry))
            return
        # Socket probe on the engine (pulsed.checks.sockio): no task at all.
        try:
            probe = cast(EngineProbe, entry.probe)  # on_engine: it has start()
            entry.exchange = probe.start(self._engine, self._exchange_done, entry)
        except Exception as exc:
            crash = _crash_result(exc, entry.key)
            entry.exchange = _Crashed(self._engine.clock())
            self._loop.call_soon(self._exchange_done, entry, crash)

    def _exchange_done(self, entry: _Entry, result: ProbeResult) -> None:
        exchange = entry.exchange
        if exchange is None:
            return  # cancelled
        entry.exchange = None
        self._in_flight -= 1
        now = self._engine.clock() if self._engine is not None else time.monotonic()
        if result.category == "timeout":
            result = self._judge_timeout(entry, result, exchange.started, now)
        self._record(entry, result, now)
        if self._queue:
            self._release_slot()
        self._schedule_next(entry, now)

    async def _run(self, entry: _Entry) -> None:
        try:
            started = time.monotonic()
            try:
                result = await entry.probe.probe()
            except Exception as exc:  # a probe bug must not stop monitoring
                result = _crash_result(exc, entry.key)
            now = time.monotonic()
            if result.category == "timeout":
                result = self._judge_timeout(entry, result, started, now)
            self._record(entry, result, now)
        finally:
            entry.task = None
            self._in_flight -= 1
            self._release_slot()
        self._schedule_next(entry, time.monotonic())

    def _release_slot(self) -> None:
        while self._queue and self._in_flight < self._max_in_flight:
            waiting = self._queue.popleft()
            if waiting.waiting and waiting.live:
                waiting.waiting = False
                self._launch(waiting)

    def _judge_timeout(
        self, entry: _Entry, result: ProbeResult, started: float, now: float
    ) -> ProbeResult:
        """``result`` (a timeout), or a local error when the router stalled for
        STALL_SHARE of the timeout or more while the probe ran."""
        if self._meter is None:
            return result
        self._meter.settle(now)
        lost = self._meter.lost(started, now)
        check = entry.target.check
        timeout = float(check.timeout if entry.agent_of is None else check.agent_timeout)
        if lost < timeout * STALL_SHARE:
            return result
        detail = f"router stalled {seconds_text(lost)} of a {seconds_text(timeout)} timeout"
        return local_result("saturated", detail, result.latency)

    def _record(self, entry: _Entry, result: ProbeResult, mono: float) -> None:
        if not entry.live:
            return  # removed or replaced while the probe ran
        if mono - self._wall_synced_at > 1.0:
            self._wall_offset = time.time() - mono
            self._wall_synced_at = mono
        if entry.agent_of is not None:
            self._record_agent(entry.agent_of, result, mono)
            return
        if result.category == "local":
            self._record_local(entry, result, mono)
            return
        if settled(entry.health, result):
            entry.repeats += 1
            entry.repeat_latency = result.latency
            entry.repeat_at = mono
            if not entry.listed:
                entry.listed = True
                self._unfolded.append(entry)
            if self._on_result is not None:
                self._call(self._on_result, entry, result)
            return
        check = entry.target.check
        old = self._fold(entry)
        new = apply_result(old, result, check.rise, check.fall, mono + self._wall_offset, mono)
        self._publish(entry, new)
        if self._on_result is not None:
            self._call(self._on_result, entry, result)
        if old.up != new.up:
            # A server going down moves traffic: a warning (its return: notice, see pulsed.logs).
            emit = log.info if new.up else log.warning
            emit("probe.up" if new.up else "probe.down", reason=new.reason, **_labels(entry.key))
        if changed_for_table(old, new):
            self._call(self._on_change, entry, new)

    def _record_agent(self, main: _Entry, result: ProbeResult, mono: float) -> None:
        """What the agent said (or that it could not be reached) goes on the
        main entry's record; the table hears of it when it changes what the
        table reads (down, drain or maint, the weight)."""
        old = self._fold(main)
        agent = next_agent_state(old.agent, result, mono + self._wall_offset, mono)
        new = with_agent(old, agent)
        self._publish(main, new)
        if old.agent != agent:
            log.info(
                "probe.agent",
                state=agent.op,
                admin=agent.admin,
                weight_pct=agent.weight_pct,
                reason=agent.reason,
                **_labels(main.key),
            )
            self._call(self._on_change, main, new)

    def _record_local(self, entry: _Entry, result: ProbeResult, mono: float) -> None:
        """A probe the router could not run or judge: count it, show it, log it
        (rate-limited), and move nothing: no rise/fall step, no up/down, no
        weight, no table change."""
        wall = mono + self._wall_offset
        self._publish(entry, note_local_error(self._fold(entry), result, wall))
        fault = result.fault if result.fault in self._local_totals else "socket"
        self._local_totals[fault] += 1
        self._local_last = (fault, result.reason, wall, entry.key)
        if self._on_result is not None:
            self._call(self._on_result, entry, result)
        if mono - self._local_logged_at < LOCAL_LOG_EVERY:
            self._local_held += 1
            return
        self._local_logged_at = mono
        held, self._local_held = self._local_held, 0
        log.warning(
            "probe.local_error",
            fault=fault,
            reason=result.reason,
            held_back=held,
            **_labels(entry.key),
        )

    def _fold(self, entry: _Entry) -> RealHealth:
        """The entry's health with its pending repeats folded in."""
        if entry.repeats:
            wall = entry.repeat_at + self._wall_offset
            times, entry.repeats = entry.repeats, 0
            self._publish(entry, repeated(entry.health, times, entry.repeat_latency, wall))
        return entry.health

    def _publish(self, entry: _Entry, health: RealHealth) -> None:
        """``health`` is the entry's record now, for each server it feeds."""
        entry.health = health
        self._health[entry.key] = health
        for key in entry.others:
            self._health[key] = health

    def _call(self, callback: Callable, entry: _Entry, value: object) -> None:
        """``callback(key, value)`` for each server the entry feeds."""
        for key in (entry.key, *entry.others) if entry.others else (entry.key,):
            try:
                callback(key, value)
            except Exception:
                log.exception("probe.callback_failed", **_labels(key))

    def _detach(self, key: RealKey, entry: _Entry) -> None:
        """Stop feeding ``key``; stop the entry once it feeds nobody."""
        del self._entries[key]
        self._health.pop(key, None)
        if key != entry.key:
            entry.others = tuple(k for k in entry.others if k != key)
        elif entry.others:
            entry.key, entry.others = entry.others[0], entry.others[1:]
        else:
            entry.live = False
            self._cancel(entry)

    def _cancel(self, entry: _Entry) -> None:
        if entry.agent is not None:
            entry.agent.live = entry.live  # a stopped entry's agent stops with it
            self._cancel(entry.agent)
        entry.scheduled = False
        if entry.task is not None:
            entry.task.cancel()
        if entry.exchange is not None:
            entry.exchange.cancel()
            entry.exchange = None
            self._in_flight -= 1
        entry.waiting = False


class _Crashed:
    """Stands in for an exchange whose start() raised; its failure is queued."""

    __slots__ = ("started",)

    def __init__(self, started: float) -> None:
        self.started = started

    def cancel(self) -> None:
        pass


def _crash_result(exc: Exception, key: RealKey) -> ProbeResult:
    """The result of a probe that raised: a local error when the router is
    short of something (MemoryError, EMFILE...), else a probe bug, logged."""
    if local_fault(exc) is not None:
        return local_error_result(exc, 0.0)
    log.exception("probe.crashed", **_labels(key))
    return ProbeResult(False, f"error: {type(exc).__name__}", 0.0, "error")


class _FailingProbe:
    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def probe(self) -> ProbeResult:
        return ProbeResult(False, self.reason, 0.0, "error")


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]
