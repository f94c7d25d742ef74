"""The reconcile loop against the real kernel: repair, adoption, foreign services."""

from __future__ import annotations

from pulsed.ipvs.netlink import NetlinkBackend
from pulsed.model import OpKind, Table
from pulsed.reconcile import Reconciler
from tests.kernel.helpers import ipvsadm, saved_rules
from tests.kernel.tables import tcp, web_table


def reconciler(backend, wanted: Table) -> Reconciler:
    keys = set(wanted.services)
    return Reconciler(backend, wanted=lambda actual: wanted, owned=lambda: keys)


async def test_programs_from_empty_then_in_sync(backend):
    wanted = web_table()
    loop = reconciler(backend, wanted)
    first = await loop.reconcile_once()
    assert not first.errors
    assert [op.kind for op in first.ops].count(OpKind.ADD_SERVICE) == 2
    assert await backend.dump() == wanted
    writes = backend.writes
    second = await loop.reconcile_once()
    assert second.ops == []
    assert backend.writes == writes


async def test_flushed_table_is_repaired(backend):
    wanted = web_table()
    loop = reconciler(backend, wanted)
    await loop.reconcile_once()
    ipvsadm("-C")
    assert await backend.dump() == Table()
    result = await loop.reconcile_once()
    assert not result.errors
    assert await backend.dump() == wanted


async def test_deleted_real_server_is_put_back(backend):
    wanted = web_table()
    loop = reconciler(backend, wanted)
    await loop.reconcile_once()
    ipvsadm("-d", "-t", "192.0.2.30:80", "-r", "10.3.0.2:80")
    result = await loop.reconcile_once()
    assert [(op.kind, str(op.dest.key)) for op in result.ops] == [(OpKind.ADD_DEST, "10.3.0.2:80")]
    assert await backend.dump() == wanted


async def test_weight_edited_behind_our_back_is_set_back(backend):
    wanted = web_table()
    loop = reconciler(backend, wanted)
    await loop.reconcile_once()
    ipvsadm("-e", "-t", "192.0.2.30:80", "-r", "10.3.0.1:80", "-m", "-w", "7")
    result = await loop.reconcile_once()
    assert [op.kind for op in result.ops] == [OpKind.SET_DEST]
    assert await backend.dump() == wanted


async def test_deleted_service_is_recreated(backend):
    wanted = web_table()
    loop = reconciler(backend, wanted)
    await loop.reconcile_once()
    ipvsadm("-D", "-u", "192.0.2.30:53")
    result = await loop.reconcile_once()
    assert [op.kind for op in result.ops] == [OpKind.ADD_SERVICE, OpKind.ADD_DEST]
    assert await backend.dump() == wanted


async def test_restart_over_unchanged_table_writes_nothing(backend):
    wanted = web_table()
    await reconciler(backend, wanted).reconcile_once()
    before = saved_rules()
    restarted = await NetlinkBackend.open()  # a new daemon: no memory of the last one
    try:
        result = await reconciler(restarted, wanted).reconcile_once()
        assert result.ops == []
        assert restarted.writes == 0
    finally:
        await restarted.close()
    assert saved_rules() == before


async def test_foreign_services_survive(backend):
    ipvsadm("-A", "-t", "198.51.100.1:25", "-s", "lc")
    ipvsadm("-a", "-t", "198.51.100.1:25", "-r", "10.4.0.1:25", "-g", "-w", "3")
    foreign = [line for line in saved_rules() if "198.51.100.1" in line]
    wanted = web_table()
    loop = reconciler(backend, wanted)
    for _ in range(2):  # the first pass programs pulsed's services, the second has nothing to do
        result = await loop.reconcile_once()
        assert all(op.service.key != tcp("198.51.100.1", 25) for op in result.ops)
    assert result.ops == []
    assert [line for line in saved_rules() if "198.51.100.1" in line] == foreign
    actual = await backend.dump()
    assert Table({k: actual.services[k] for k in wanted.services}) == wanted


async def test_owned_service_dropped_from_config_is_removed(backend):
    wanted = web_table()
    loop = reconciler(backend, wanted)
    await loop.reconcile_once()
    smaller = Table({tcp("192.0.2.30", 80): wanted.services[tcp("192.0.2.30", 80)]})
    keys = set(wanted.services)
    loop = Reconciler(backend, wanted=lambda actual: smaller, owned=lambda: keys)
    result = await loop.reconcile_once()
    assert [op.kind for op in result.ops] == [OpKind.DEL_DEST, OpKind.DEL_SERVICE]
    assert await backend.dump() == smaller
