"""The kernel's connection sync daemon, started and stopped over netlink."""

from __future__ import annotations

import errno

import pytest

from pulsed.ipvs.base import BackendError
from pulsed.ipvs.syncd import start_sync_daemon, stop_sync_daemon, sync_daemons
from tests.kernel.helpers import run


@pytest.fixture
async def sync_links():
    """A veth pair with addresses: the master sends from one, the backup listens on the other."""
    run("ip", "link", "add", "pnl-sync0", "type", "veth", "peer", "name", "pnl-sync1")
    try:
        for name, address in (("pnl-sync0", "10.78.0.1/24"), ("pnl-sync1", "10.78.0.2/24")):
            run("ip", "addr", "add", address, "dev", name)
            run("ip", "link", "set", name, "up")
        yield
    finally:
        for daemon in await sync_daemons():
            await stop_sync_daemon(daemon["state"])
        run("ip", "link", "del", "pnl-sync0", check=False)


async def test_start_query_stop(sync_links):
    assert await sync_daemons() == []
    await start_sync_daemon("master", "pnl-sync0", 5)
    await start_sync_daemon("backup", "pnl-sync1", 5)
    running = sorted(await sync_daemons(), key=lambda d: d["state"])
    assert running == [
        {"state": "backup", "ifname": "pnl-sync1", "syncid": 5},
        {"state": "master", "ifname": "pnl-sync0", "syncid": 5},
    ]
    with pytest.raises(BackendError) as again:
        await start_sync_daemon("master", "pnl-sync0", 5)
    assert again.value.errno == errno.EEXIST
    await stop_sync_daemon("master")
    assert [d["state"] for d in await sync_daemons()] == ["backup"]
    await stop_sync_daemon("backup")
    assert await sync_daemons() == []


async def test_stop_when_not_running(sync_links):
    with pytest.raises(BackendError) as exc:
        await stop_sync_daemon("master")
    assert exc.value.errno == errno.ESRCH


async def test_unknown_interface(sync_links):
    with pytest.raises(BackendError) as exc:
        await start_sync_daemon("backup", "pnl-nosuch", 1)
    assert exc.value.errno == errno.ENODEV


async def test_bad_arguments_are_refused_before_the_kernel():
    with pytest.raises(ValueError, match="state"):
        await start_sync_daemon("leader", "pnl-sync0", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="syncid"):
        await start_sync_daemon("master", "pnl-sync0", 256)
