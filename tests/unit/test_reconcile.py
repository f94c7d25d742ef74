"""The pure diff and the reconcile loop, against the kernel-faithful fake."""

from __future__ import annotations

import asyncio
import errno

from hypothesis import given, settings
from hypothesis import strategies as st

from pulsed.ipvs.base import BackendError
from pulsed.ipvs.memory import MemoryBackend
from pulsed.model import Dest, Forwarding, OpKind, Service, ServiceKey, Table
from pulsed.reconcile import Reconciler, diff

VIPS = ["192.0.2.1", "192.0.2.2", "2001:db8::1"]
REALS4 = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
REALS6 = ["fd00::1", "fd00::2"]


def svc(vip="192.0.2.1", port=80, dests=(), **kw) -> Service:
    return Service(ServiceKey.for_address("tcp", vip, port), dests=tuple(dests), **kw)


def dest(addr="10.0.0.1", port=80, weight=1, **kw) -> Dest:
    return Dest(addr, port, weight=weight, **kw)


@st.composite
def services(draw) -> Service:
    vip = draw(st.sampled_from(VIPS))
    key = draw(
        st.one_of(
            st.builds(
                ServiceKey.for_address,
                st.sampled_from(["tcp", "udp", "sctp"]),
                st.just(vip),
                st.sampled_from([80, 443]),
            ),
            st.builds(ServiceKey.for_fwmark, st.integers(1, 3)),
        )
    )
    pool = REALS6 if key.family == 10 else REALS4
    dests = draw(
        st.dictionaries(
            st.tuples(st.sampled_from(pool), st.sampled_from([80, 8080])),
            st.tuples(
                st.integers(0, 5),
                st.sampled_from([Forwarding.NAT, Forwarding.DR, Forwarding.TUNNEL]),
                st.integers(0, 3),
            ),
            max_size=4,
        )
    )
    return Service(
        key,
        scheduler=draw(st.sampled_from(["rr", "wlc", "sh"])),
        flags=draw(st.sampled_from([0, 0x8, 0x18])),
        timeout=draw(st.sampled_from([0, 300])),
        dests=tuple(
            Dest(a, p, weight=w, forwarding=f, upper_threshold=u)
            for (a, p), (w, f, u) in dests.items()
        ),
    )


tables = st.lists(services(), max_size=5).map(Table.of)


@settings(max_examples=300, deadline=None)
@given(wanted=tables, actual=tables)
def test_diff_applied_to_fake_yields_wanted_and_then_nothing(wanted, actual):
    backend = MemoryBackend(actual)
    owned = set(wanted.services) | set(actual.services)
    ops = diff(wanted, actual, owned)
    outcomes = asyncio.run(backend.apply(ops))
    assert outcomes == [None] * len(ops)
    assert backend.table() == wanted
    assert diff(wanted, backend.table(), owned) == []


@settings(max_examples=200, deadline=None)
@given(wanted=tables, actual=tables)
def test_diff_never_touches_foreign_services(wanted, actual):
    foreign = {k: s for k, s in actual.services.items() if k not in wanted.services}
    ops = diff(wanted, actual, owned=set(wanted.services))
    touched = {op.service.key for op in ops}
    assert not touched & set(foreign)


def test_add_orders_service_before_its_dests_and_delete_dests_before_service():
    old = svc("192.0.2.9", dests=[dest("10.0.0.9")])
    new = svc(dests=[dest("10.0.0.1"), dest("10.0.0.2")])
    ops = diff(Table.of([new]), Table.of([old]), owned={old.key, new.key})
    kinds = [(op.kind, op.service.key.address) for op in ops]
    assert kinds == [
        (OpKind.DEL_DEST, "192.0.2.9"),
        (OpKind.DEL_SERVICE, "192.0.2.9"),
        (OpKind.ADD_SERVICE, "192.0.2.1"),
        (OpKind.ADD_DEST, "192.0.2.1"),
        (OpKind.ADD_DEST, "192.0.2.1"),
    ]


def test_weight_and_scheduler_edits_are_sets_never_delete_and_add():
    have = svc(scheduler="wlc", dests=[dest(weight=1, forwarding=Forwarding.NAT)])
    want = svc(scheduler="rr", dests=[dest(weight=7, forwarding=Forwarding.DR)])
    ops = diff(Table.of([want]), Table.of([have]), owned={have.key})
    assert [op.kind for op in ops] == [OpKind.SET_SERVICE, OpKind.SET_DEST]


def test_equal_tables_give_no_ops_even_with_different_stats():
    from pulsed.model import Stats

    a = svc(dests=[dest()])
    b = Service(a.key, dests=(Dest("10.0.0.1", 80, stats=Stats(connections=5)),), stats=Stats(1))
    assert diff(Table.of([a]), Table.of([b]), owned={a.key}) == []


def test_fake_refuses_like_the_kernel():
    backend = MemoryBackend()
    s = svc(dests=[dest()])
    from pulsed.model import Op

    add = Op(OpKind.ADD_SERVICE, s.settings())
    results = asyncio.run(
        backend.apply(
            [
                add,
                add,
                Op(OpKind.ADD_DEST, s.settings(), dest("fd00::1")),
                Op(OpKind.SET_DEST, s.settings(), dest("10.0.0.7")),
                Op(OpKind.DEL_SERVICE, svc("192.0.2.77").settings()),
                Op(OpKind.ADD_SERVICE, svc("192.0.2.5", scheduler="nope").settings()),
            ]
        )
    )
    codes = [r.errno if isinstance(r, BackendError) else None for r in results]
    assert codes == [None, errno.EEXIST, errno.EINVAL, errno.ENOENT, errno.ESRCH, errno.ENOENT]


async def test_loop_repairs_tampering_and_isolates_a_failing_service():
    good = svc("192.0.2.1", dests=[dest("10.0.0.1"), dest("10.0.0.2")])
    bad = svc("192.0.2.2", dests=[dest("10.0.0.3")])
    foreign = svc("198.51.100.1", dests=[dest("10.9.9.9")])
    wanted = Table.of([good, bad])
    backend = MemoryBackend(Table.of([foreign]))
    backend.fail_next[bad.key] = errno.ENOMEM
    loop = Reconciler(backend, wanted=lambda actual: wanted, owned=lambda: set(wanted.services))

    first = await loop.reconcile_once()
    assert set(first.errors) == {bad.key}
    assert backend.table().get(good.key) == good  # the failure did not block the other service
    assert loop.status.failing_services.keys() == {bad.key}

    second = await loop.reconcile_once()
    assert not second.errors
    assert backend.table() == Table.of([good, bad, foreign])

    # Someone deletes a destination behind our back (ipvsadm -d): repaired.
    from pulsed.model import Op

    backend.apply_one(Op(OpKind.DEL_DEST, good.settings(), dest("10.0.0.2")))
    repaired = await loop.reconcile_once()
    assert [op.kind for op in repaired.ops] == [OpKind.ADD_DEST]
    assert backend.table() == Table.of([good, bad, foreign])


async def test_restart_over_unchanged_table_writes_nothing():
    table = Table.of([svc(dests=[dest()])])
    backend = MemoryBackend(table)
    loop = Reconciler(backend, wanted=lambda actual: table, owned=lambda: set(table.services))
    result = await loop.reconcile_once()
    assert result.ops == [] and backend.writes == 0


async def test_mark_dirty_wakes_the_loop_before_the_resync_interval():
    backend = MemoryBackend()
    wanted = {"table": Table()}
    passes = asyncio.Queue()
    loop = Reconciler(
        backend,
        wanted=lambda actual: wanted["table"],
        owned=lambda: set(wanted["table"].services),
        resync_interval=3600,
        on_pass=lambda result, elapsed: passes.put_nowait(result),
    )
    task = asyncio.create_task(loop.run())
    try:
        await passes.get()
        wanted["table"] = Table.of([svc(dests=[dest()])])
        loop.mark_dirty()
        result = await passes.get()
        assert [op.kind for op in result.ops] == [OpKind.ADD_SERVICE, OpKind.ADD_DEST]
    finally:
        task.cancel()


@given(wanted=tables, actual=tables, changed=tables)
def test_settled_pairs_skip_only_what_is_unchanged(wanted, actual, changed):
    # The pairs a pass records are exactly the services it found equal; a
    # later pass skips a pair only when both objects are the very same ones,
    # so its ops are what a diff without memory gives.
    first = diff(wanted, actual)
    touched = {op.service.key for op in first}
    settled = {
        k: (w, actual.services[k])
        for k, w in wanted.services.items()
        if k not in touched and k in actual.services
    }
    mixed = Table({**actual.services, **changed.services})
    assert diff(wanted, mixed, settled=settled) == diff(wanted, mixed)
    assert diff(wanted, actual, settled=settled) == first


class CountingBackend(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    async def dump(self) -> Table:
        self.reads.append("dump")
        return await super().dump()

    async def refresh(self) -> Table:
        self.reads.append("refresh")
        return await super().refresh()


async def test_passes_refresh_between_full_reads():
    backend = CountingBackend()
    wanted = Table.of([svc(dests=(dest(),))])
    loop = Reconciler(
        backend, wanted=lambda _: wanted, owned=lambda: wanted.services, full_resync_interval=3600
    )
    for _ in range(3):
        await loop.reconcile_once()
    await loop.reconcile_once(full=True)
    # The first pass writes, then reads back what the kernel holds.
    assert backend.reads == ["dump", "refresh", "refresh", "refresh", "dump"]
    loop.full_resync_interval = 0
    await loop.reconcile_once()
    assert backend.reads[-1] == "dump"


async def test_a_dump_passed_in_counts_as_the_full_read():
    # The daemon dumps at start and hands the table to its first pass; the
    # loop's next pass must not read everything again.
    backend = CountingBackend()
    wanted = Table.of([svc(dests=(dest(),))])
    loop = Reconciler(backend, wanted=lambda _: wanted, owned=lambda: wanted.services)
    await loop.reconcile_once(await backend.dump())
    assert backend.reads == ["dump", "refresh"]  # the read-back after the first writes
    await loop.reconcile_once()
    assert backend.reads == ["dump", "refresh", "refresh"]


async def test_a_service_becoming_owned_is_removed_although_nothing_else_changed():
    leftover = svc(dests=(dest(),))
    backend = MemoryBackend(Table.of([leftover]))
    owned: set[ServiceKey] = set()
    loop = Reconciler(backend, wanted=lambda _: Table(), owned=lambda: owned)
    assert (await loop.reconcile_once()).ops == []
    assert (await loop.reconcile_once()).ops == []  # the same objects: the quiet path
    owned.add(leftover.key)  # in place, as the daemon grows its owned set
    result = await loop.reconcile_once()
    assert [op.kind for op in result.ops] == [OpKind.DEL_DEST, OpKind.DEL_SERVICE]
    assert backend.table() == Table()


class FlakyReadBackend(MemoryBackend):
    """Its next read fails as a kernel that does not answer would."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 1
        self.reads = 0

    async def dump(self) -> Table:
        self.reads += 1
        if self.failures:
            self.failures -= 1
            raise BackendError(errno.ETIMEDOUT, "no reply from IPVS over netlink")
        return await super().dump()


async def test_loop_survives_a_failed_read_and_retries_with_a_full_read():
    backend = FlakyReadBackend()
    wanted = Table.of([svc(dests=(dest(),))])
    programmed = asyncio.Event()
    loop = Reconciler(
        backend,
        wanted=lambda _: wanted,
        owned=lambda: wanted.services,
        retry_interval=0.01,
        on_pass=lambda result, _: programmed.set() if result.ops else None,
    )
    task = asyncio.create_task(loop.run())
    try:
        await asyncio.wait_for(programmed.wait(), timeout=5)
    finally:
        task.cancel()
    assert backend.table() == wanted
    assert backend.reads == 2  # the failed read, then a full one
    assert loop.status.in_sync
