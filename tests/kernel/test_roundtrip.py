"""Every field pulsed writes reads back equal, and ipvsadm sees the same table."""

from __future__ import annotations

from dataclasses import replace

from pulsed.model import (
    SVC_F_ONEPACKET,
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    SVC_F_SCHED3,
    Service,
    ServiceKey,
    Table,
)
from pulsed.reconcile import diff
from tests.kernel.helpers import ipvsadm, run, saved_rules
from tests.kernel.tables import every_field_rules, every_field_table


async def test_every_field_round_trips(backend):
    wanted = every_field_table()
    ops = diff(wanted, Table())
    assert await backend.apply(ops) == [None] * len(ops)
    actual = await backend.dump()
    for key, svc in wanted.services.items():
        assert actual.get(key) == svc, f"{key} read back differently"
    assert actual == wanted
    assert diff(wanted, actual) == []


async def test_ipvsadm_sees_what_was_written(backend):
    wanted = every_field_table()
    await backend.apply(diff(wanted, Table()))
    assert saved_rules() == every_field_rules()


async def test_thresholds_as_ipvsadm_shows_them(backend):
    wanted = every_field_table()
    await backend.apply(diff(wanted, Table()))
    shown = {}
    for line in ipvsadm("-Ln", "--thresholds").splitlines():
        parts = line.split()
        if parts[:1] == ["->"] and parts[1] != "RemoteAddress:Port":
            shown.setdefault(parts[1], set()).add((int(parts[2]), int(parts[3])))
    assert shown["10.1.0.1:80"] == {(100, 10)}
    assert shown["10.1.0.3:80"] == {(7, 0)}
    assert shown["[2001:db8::11]:443"] == {(50, 40)}


async def test_table_written_by_ipvsadm_reads_back(backend):
    """What ipvsadm -R writes, pulsed reads as the same table (the adopt path).

    ipvsadm -S does not save thresholds, so the restored table has none.
    """
    run("ipvsadm", "-R", input="\n".join(every_field_rules()) + "\n")
    wanted = Table.of(
        replace(
            svc, dests=tuple(replace(d, upper_threshold=0, lower_threshold=0) for d in svc.dests)
        )
        for svc in every_field_table()
    )
    actual = await backend.dump()
    for key, svc in wanted.services.items():
        assert actual.get(key) == svc
    assert actual == wanted
    assert backend.writes == 0


async def test_dump_attaches_stats(backend):
    wanted = every_field_table()
    await backend.apply(diff(wanted, Table()))
    actual = await backend.dump()
    for svc in actual:
        assert svc.stats is not None
        assert svc.stats.connections == 0
        for dest in svc.dests:
            assert dest.stats is not None
            assert dest.stats.active_connections == 0


async def test_every_user_flag_round_trips(backend):
    """ipvsadm names flags per scheduler; the kernel keeps all four user flags."""
    svc = Service(
        ServiceKey.for_address("tcp", "192.0.2.13", 80),
        "rr",
        flags=SVC_F_ONEPACKET | SVC_F_SCHED1 | SVC_F_SCHED2 | SVC_F_SCHED3,
        timeout=5,
        netmask=20,
    )
    await backend.apply(diff(Table.of([svc]), Table()))
    assert (await backend.dump()).get(svc.key) == svc
