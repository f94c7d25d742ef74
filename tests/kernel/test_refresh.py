"""refresh: the cheap read through /proc/net/ip_vs, against the real kernel.

It must return what a full netlink dump returns for everything the kernel's
summary shows, re-reading only the services whose lines changed.
"""

from __future__ import annotations

from socket import AF_INET6

from pulsed.model import Dest, Forwarding, OpKind, Service, ServiceKey, Table
from pulsed.reconcile import Reconciler, diff
from tests.kernel.helpers import ipvsadm
from tests.kernel.tables import every_field_table, tcp, web_table


async def programmed(backend, wanted: Table) -> None:
    results = await backend.apply(diff(wanted, await backend.dump()))
    assert not any(results), results
    assert await backend.dump() == wanted  # also pairs /proc lines with services


async def test_unchanged_table_is_read_without_netlink_rereads(backend):
    wanted = every_field_table()
    await programmed(backend, wanted)
    refreshed = await backend.refresh()
    assert refreshed == wanted
    assert backend.rereads == 0
    assert await backend.refresh() is refreshed  # the same text: the same table
    ipvsadm("-e", "-t", "192.0.2.10:80", "-r", "10.1.0.4:80", "-i", "-w", "3")
    edited = await backend.refresh()
    assert edited is not refreshed
    assert edited == await backend.dump() != wanted


async def test_changes_behind_our_back_are_seen_and_only_they_are_reread(backend):
    wanted = every_field_table()
    await programmed(backend, wanted)
    ipvsadm("-e", "-t", "192.0.2.10:80", "-r", "10.1.0.2:8080", "-m", "-w", "9")
    ipvsadm("-a", "-u", "[2001:db8::1]:53", "-r", "[2001:db8::99]:53", "-m")
    ipvsadm("-D", "-t", "192.0.2.12:443")
    ipvsadm("-E", "-t", "192.0.2.20:1000", "-s", "wrr")
    refreshed = await backend.refresh()
    assert refreshed == await backend.dump()
    assert refreshed != wanted
    assert backend.rereads == 3  # the edited, extended and rescheduled services
    assert tcp("192.0.2.12", 443) not in refreshed


async def test_foreign_service_added_behind_our_back_appears(backend):
    await programmed(backend, web_table())
    ipvsadm("-A", "-t", "198.51.100.1:25", "-s", "rr")
    ipvsadm("-a", "-t", "198.51.100.1:25", "-r", "10.7.0.1:25", "-g")
    refreshed = await backend.refresh()
    foreign = refreshed.get(tcp("198.51.100.1", 25))
    assert foreign is not None
    assert foreign.dests == (Dest("10.7.0.1", 25, 1, Forwarding.DR),)
    assert refreshed == await backend.dump()


async def test_same_fwmark_in_both_families_is_told_apart(backend):
    wanted = Table.of(
        [
            Service(ServiceKey.for_fwmark(5), "rr", dests=(Dest("10.5.0.1", 0, 1),)),
            Service(
                ServiceKey.for_fwmark(5, AF_INET6),
                "rr",
                netmask=128,
                dests=(Dest("2001:db8::5", 0, 2),),
            ),
        ]
    )
    await programmed(backend, wanted)
    assert await backend.refresh() == wanted
    ipvsadm("-e", "-f", "5", "-6", "-r", "[2001:db8::5]:0", "-m", "-w", "4")
    assert await backend.refresh() == await backend.dump()


async def test_threshold_edit_is_repaired_by_the_full_resync(backend):
    # /proc/net/ip_vs does not show connection thresholds: the periodic
    # full read is what catches an edit of those alone.
    wanted = every_field_table()
    loop = Reconciler(backend, wanted=lambda actual: wanted, owned=lambda: set(wanted.services))
    assert not (await loop.reconcile_once()).errors
    ipvsadm("-e", "-t", "192.0.2.10:80", "-r", "10.1.0.1:80", "-m", "-w", "5", "-x", "1")
    result = await loop.reconcile_once(full=True)
    assert [op.kind for op in result.ops] == [OpKind.SET_DEST]
    assert await backend.dump() == wanted
