"""Make the kernel's table match the wanted one.

``diff`` is pure: it turns (wanted, actual) into an ordered list of
operations. ``Reconciler`` is the level-triggered loop around it: events only
mark the table dirty; the loop re-reads the kernel, diffs and applies, and a
periodic resync repairs anything changed behind pulsed's back.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

import structlog

from pulsed.histogram import Histogram
from pulsed.ipvs.base import Backend, BackendError
from pulsed.model import Dest, Op, OpKind, Service, ServiceKey, Table

log = structlog.get_logger(__name__)


Settled = Mapping[ServiceKey, tuple[Service, Service]]

# Buckets of the pass-duration histogram (seconds).
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def diff(
    wanted: Table,
    actual: Table,
    owned: Collection[ServiceKey] | None = None,
    settled: Settled | None = None,
) -> list[Op]:
    """Operations that turn ``actual`` into ``wanted``.

    Only services in ``wanted`` or in ``owned`` are touched; anything else in
    ``actual`` belongs to someone else and is left alone. Order: deletions of
    whole services first (destinations, then the service), then for each
    wanted service its own edits (service before its destinations on add).
    Edits use SET whenever the kernel can change a field in place, so no
    connection is cut by a delete + add.

    ``settled`` holds (wanted, actual) pairs of objects already found equal;
    meeting the very same two objects again skips comparing them, which
    is most of a resync's diff when little changed.
    """
    ops: list[Op] = []
    owned_keys = owned if owned is not None else ()
    settled = settled or {}
    for key, gone in actual.services.items():
        if key in wanted.services or key not in owned_keys:
            continue
        settings = gone.settings()
        ops.extend(Op(OpKind.DEL_DEST, settings, d) for d in gone.dests)
        ops.append(Op(OpKind.DEL_SERVICE, settings))
    for key, want in wanted.services.items():
        have = actual.services.get(key)
        pair = settled.get(key)
        if pair is not None and pair[0] is want and pair[1] is have:
            continue
        settings = want.settings()
        if have is None:
            ops.append(Op(OpKind.ADD_SERVICE, settings))
            dests = canonical_adds(want.dests) if want.scheduler == "mh" else want.dests
            ops.extend(Op(OpKind.ADD_DEST, settings, d) for d in dests)
            continue
        if not want.same_settings(have):
            ops.append(Op(OpKind.SET_SERVICE, settings))
        if want.dests == have.dests:
            continue
        ops.extend(_dest_ops(settings, want, have))
    return ops


def canonical_adds(dests: Sequence[Dest]) -> list[Dest]:
    """The order to add ``dests`` in so that the kernel lists them sorted by
    (address, port): the kernel puts each new destination at the head of
    the service's list (list_add in __ip_vs_update_dest), so add the last first."""
    return sorted(dests, key=dest_order, reverse=True)


def dest_order(d: Dest) -> tuple[str, int]:
    """The canonical order of an mh pool: Service's own (address text, port), so
    the kernel's list reads in the order pulsed's model keeps (pulsed.model)."""
    return (d.address, d.port)


def _mh_dest_ops(settings: Service, want: Service, have: Service) -> list[Op]:
    """The ``mh`` scheduler fills its Maglev table in the order of the kernel's
    destination list, so directors agree on a flow's server only if their
    lists are in the same order: sorted by (address, port). A destination
    added later would land at the head, so the ones that sort before it are
    deleted and added again after it, in the same pass (their connections go
    on: the kernel keeps a deleted destination that has connections and
    takes it back on the add).

    The model keeps destinations sorted (pulsed.model.Service), not in the
    kernel's order, so this assumes the kernel's list is canonical already:
    true of every list pulsed built, by induction (deletions keep the order).
    A list another tool built out of order is not seen (docs/operations.md)."""
    wanted = want.dest_map()
    target = sorted(want.dests, key=dest_order)
    kept = [d for d in have.dests if d.key in wanted]
    # The longest tail of the kernel's list that is already the target's tail stays.
    tail = 0
    while (
        tail < len(kept)
        and tail < len(target)
        and kept[len(kept) - 1 - tail].key == target[len(target) - 1 - tail].key
    ):
        tail += 1
    readd = target[: len(target) - tail]
    readd_keys = {d.key for d in readd}
    ops = [Op(OpKind.DEL_DEST, settings, d) for d in have.dests if d.key not in wanted]
    ops += [Op(OpKind.DEL_DEST, settings, d) for d in have.dests if d.key in readd_keys]
    ops += [Op(OpKind.ADD_DEST, settings, d) for d in reversed(readd)]
    current = have.dest_map()
    for d in target[len(target) - tail :]:
        if current[d.key] != d:
            ops.append(Op(OpKind.SET_DEST, settings, d))
    return ops


def _dest_ops(settings: Service, want: Service, have: Service) -> list[Op]:
    if want.scheduler == "mh":
        return _mh_dest_ops(settings, want, have)
    wanted_dests = want.dest_map()
    actual_dests = have.dest_map()
    ops = [
        Op(OpKind.DEL_DEST, settings, d) for k, d in actual_dests.items() if k not in wanted_dests
    ]
    for k, d in wanted_dests.items():
        current = actual_dests.get(k)
        if current is None:
            ops.append(Op(OpKind.ADD_DEST, settings, d))
        elif current != d:
            ops.append(Op(OpKind.SET_DEST, settings, d))
    return ops


def _settled_pairs(wanted: Table, actual: Table, ops: list[Op]) -> dict:
    """(wanted, actual) of every service the diff found nothing to do for."""
    touched = {op.service.key for op in ops}
    have = actual.services
    return {
        key: (want, have[key])
        for key, want in wanted.services.items()
        if key not in touched and key in have
    }


@dataclass(frozen=True)
class ReconcileStatus:
    """What the loop did, as of its last pass (replaced whole: readers may hold one).

    ``in_sync``: the last pass left the kernel equal to the wanted table;
    ``Reconciler.last_actual`` was read after that pass's writes.
    ``pending``: a change (a reload, an admin call, a health flip) waits for
    the next pass; a reader's view then says not in sync (pulsed.readmodel).
    """

    passes: int = 0
    ops_applied: Mapping[str, int] = field(default_factory=dict)  # by OpKind value
    errors: int = 0
    last_duration: float = 0.0
    last_run: float = 0.0  # wall clock
    last_error: str = ""
    failing_services: Mapping[ServiceKey, str] = field(default_factory=dict)
    in_sync: bool = False
    pending: bool = False
    # Pass durations: cumulative counts per DURATION_BUCKETS bound, the last being
    # every pass (so it is ``passes``), and their sum in seconds.
    durations: tuple[int, ...] = (0,) * (len(DURATION_BUCKETS) + 1)
    duration_sum: float = 0.0


@dataclass(frozen=True)
class PassResult:
    ops: list[Op]
    errors: dict[ServiceKey, BackendError]


class Reconciler:
    """The level-triggered loop that keeps the kernel in line.

    ``wanted`` computes the wanted table; it is given the actual table so
    that drain decisions can read the kernel's connection counts.
    ``owned`` returns the service keys pulsed may delete (its config's,
    past and present), so foreign services are never touched.

    Passes read the kernel with ``backend.refresh`` (cheap: only what visibly
    changed is re-read) and, every ``full_resync_interval``, with
    ``backend.dump`` (everything, to catch changes the cheap read cannot see
    and to update the kernel's counters).
    """

    def __init__(
        self,
        backend: Backend,
        wanted: Callable[[Table], Table],
        owned: Callable[[], Collection[ServiceKey]],
        resync_interval: float = 10.0,
        retry_interval: float = 1.0,
        on_pass: Callable[[PassResult, float], None] | None = None,
        full_resync_interval: float = 30.0,
    ) -> None:
        self.backend = backend
        self._wanted = wanted
        self._owned = owned
        self.resync_interval = resync_interval
        self.retry_interval = retry_interval
        self.full_resync_interval = full_resync_interval
        self._on_pass = on_pass
        self._last_full = float("-inf")  # monotonic time of the last full read
        self._settled: dict[ServiceKey, tuple[Service, Service]] = {}
        self._quiet: tuple | None = None
        self._dirty = asyncio.Event()
        self._foreign_seen: set[ServiceKey] = set()
        self._lock = asyncio.Lock()
        self.status = ReconcileStatus()
        self._ops_applied: Counter[str] = Counter()
        self._durations = Histogram(DURATION_BUCKETS)
        # The kernel's table as last read; after a pass that wrote, read again
        # after the writes, so no reader sees weights a pass behind.
        self.last_actual: Table = Table()

    def mark_dirty(self) -> None:
        """Ask for a pass as soon as possible (probe result, reload, admin call)."""
        self._dirty.set()

    @property
    def pending(self) -> bool:
        """Whether a change waits for the next pass."""
        return self._dirty.is_set()

    async def run(self) -> None:
        """Reconcile on demand and on every resync interval, until cancelled."""
        while True:
            try:
                result = await self.reconcile_once()
                failed = bool(result.errors)
            except BackendError as exc:  # the kernel did not answer a read
                self._read_failed(str(exc))
                failed = True
            except Exception as exc:  # a bug: keep the loop alive, say so loudly
                log.exception("reconcile.pass_crashed")
                self._read_failed(f"internal error: {exc!r}")
                failed = True
            delay = self.retry_interval if failed else self.resync_interval
            try:
                async with asyncio.timeout(delay):
                    await self._dirty.wait()
            except TimeoutError:
                pass

    async def reconcile_once(self, actual: Table | None = None, full: bool = False) -> PassResult:
        """One pass: read the kernel, diff, apply. Never raises on kernel refusals.

        ``actual`` may be passed when the caller has just read the table
        (with ``dump``). ``full`` forces a full read; otherwise one is made
        when ``full_resync_interval`` has passed since the last.
        """
        async with self._lock:
            self._dirty.clear()
            started = time.perf_counter()
            now = time.monotonic()
            if actual is not None:
                self._last_full = now  # the caller's dump counts as the full read
            elif full or now - self._last_full >= self.full_resync_interval:
                self._last_full = now
                actual = await self.backend.dump()
            else:
                actual = await self.backend.refresh()
            self.last_actual = actual
            wanted = self._wanted(actual)
            owned = frozenset(self._owned())
            # The same objects as in the last pass that found nothing to do:
            # nothing to do again. Comparing the item lists runs in C and
            # stops at the first object that is not the very same.
            quiet = (list(wanted.services.items()), list(actual.services.items()), owned)
            if quiet == self._quiet:
                ops = []
            else:
                self._note_foreign(actual, wanted, owned)
                ops = diff(wanted, actual, owned, self._settled)
                self._settled = _settled_pairs(wanted, actual, ops)
            self._quiet = quiet if not ops else None
            errors: dict[ServiceKey, BackendError] = {}
            if ops:
                outcomes = await self.backend.apply(ops)
                errors = self._record(ops, outcomes)
                # Read back what the kernel now holds (cheap: only what changed
                # is re-read), so that its weights never lag the wanted ones
                # beside them. A failed read raises: the pass is not in sync.
                self.last_actual = await self.backend.refresh()
            elapsed = time.perf_counter() - started
            self._finish(ops, errors, elapsed)
            result = PassResult(ops, errors)
            if self._on_pass is not None:
                self._on_pass(result, elapsed)
            return result

    def _read_failed(self, error: str) -> None:
        log.error("reconcile.read_failed", error=error, retry_in=self.retry_interval)
        self.status = replace(self.status, last_error=error, in_sync=False)
        self._last_full = float("-inf")  # read everything next time

    def _record(
        self, ops: list[Op], outcomes: list[BackendError | None]
    ) -> dict[ServiceKey, BackendError]:
        errors: dict[ServiceKey, BackendError] = {}
        refused = 0
        for op, outcome in zip(ops, outcomes, strict=True):
            if outcome is None:
                self._ops_applied[op.kind.value] += 1
                continue
            refused += 1
            # One line per service per pass: the first refusal explains the rest.
            if op.service.key not in errors:
                errors[op.service.key] = outcome
                log.error(
                    "reconcile.op_failed",
                    service=str(op.service.key),
                    op=str(op),
                    error=str(outcome),
                )
        if refused:
            self.status = replace(self.status, errors=self.status.errors + refused)
        return errors

    def _finish(
        self, ops: list[Op], errors: dict[ServiceKey, BackendError], elapsed: float
    ) -> None:
        status = self.status
        healed = set(status.failing_services) - set(errors)
        for key in healed:
            log.info("reconcile.recovered", service=str(key))
        failing = {k: str(e) for k, e in errors.items()}
        self._durations.observe(elapsed)
        self.status = ReconcileStatus(
            passes=status.passes + 1,
            ops_applied=dict(self._ops_applied),
            errors=status.errors,
            last_duration=elapsed,
            last_run=time.time(),
            last_error=next(iter(failing.values()), ""),
            failing_services=failing,
            in_sync=not errors,
            durations=tuple(self._durations.counts),
            duration_sum=self._durations.sum,
        )
        if ops:
            log.info(
                "reconcile.applied",
                ops=len(ops),
                errors=len(errors),
                seconds=round(elapsed, 4),
            )

    def _note_foreign(self, actual: Table, wanted: Table, owned: Collection[ServiceKey]) -> None:
        for key in actual.services:
            if key in wanted.services or key in owned or key in self._foreign_seen:
                continue
            self._foreign_seen.add(key)
            log.info("reconcile.foreign_service", service=str(key), action="left untouched")
