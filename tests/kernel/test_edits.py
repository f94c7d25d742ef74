"""Edits are made in place: live connections and counters survive them.

Traffic: UDP datagrams from the guest itself to a VIP on a dummy link; IPVS
schedules locally sent packets too, so the service and its real server get
connection entries and counters. A delete + add would reset those counters.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from pulsed.model import Dest, Forwarding, OpKind, Service, ServiceKey, Table
from pulsed.reconcile import Reconciler
from tests.kernel.helpers import ipvsadm, run

VIP = "10.77.0.1"
REAL = "10.77.1.2"
KEY = ServiceKey.for_address("udp", VIP, 5000)


@pytest.fixture
def vip_link():
    run("ip", "link", "add", "pnl-vip0", "type", "dummy")
    try:
        run("ip", "link", "set", "pnl-vip0", "up")
        run("ip", "addr", "add", f"{VIP}/32", "dev", "pnl-vip0")
        run("ip", "route", "add", "10.77.1.0/24", "dev", "pnl-vip0")
        yield
    finally:
        run("ip", "link", "del", "pnl-vip0", check=False)


def table(weight: int = 1, scheduler: str = "wlc") -> Table:
    return Table.of([Service(KEY, scheduler, dests=(Dest(REAL, 5000, weight, Forwarding.NAT),))])


def send_datagrams(count: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for i in range(count):
            sock.sendto(b"pnl %d" % i, (VIP, 5000))


def connection_entries() -> list[tuple[str, ...]]:
    """(client, virtual, real) of each connection entry to the real server."""
    lines = ipvsadm("-Lnc").splitlines()
    return sorted(tuple(line.split()[-3:]) for line in lines if f"{REAL}:5000" in line)


async def counted(backend) -> Service:
    """The service once the kernel's counters show the test traffic.

    The kernel folds its per-CPU counters into the values netlink reports
    from a timer (every 2 s), so they are polled, within a deadline.
    """
    deadline = time.monotonic() + 15
    while True:
        svc = (await backend.dump()).get(KEY)
        assert svc is not None and svc.stats is not None and svc.dests[0].stats is not None
        if svc.stats.connections >= 1 and svc.dests[0].stats.connections >= 1:
            return svc
        assert time.monotonic() < deadline, f"IPVS counted no connection: {svc.stats}"
        await asyncio.sleep(0.5)


@pytest.mark.parametrize(
    ("edited", "kind"),
    [(table(weight=4), OpKind.SET_DEST), (table(scheduler="rr"), OpKind.SET_SERVICE)],
    ids=["weight", "scheduler"],
)
async def test_edit_keeps_service_and_connections(backend, vip_link, edited, kind):
    await Reconciler(backend, lambda a: table(), lambda: {KEY}).reconcile_once()
    send_datagrams(3)
    before = await counted(backend)
    assert before.stats.packets_in >= 3
    entries = connection_entries()
    assert entries, "no connection entry for the test traffic"

    result = await Reconciler(backend, lambda a: edited, lambda: {KEY}).reconcile_once()

    assert [op.kind for op in result.ops] == [kind]
    assert not result.errors
    after = (await backend.dump()).get(KEY)
    assert after == edited.get(KEY)
    assert after.stats.connections >= before.stats.connections, "service counters reset"
    assert after.dests[0].stats.connections >= before.dests[0].stats.connections
    assert connection_entries() == entries
