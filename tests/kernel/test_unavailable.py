"""Without IPVS in the kernel, opening the backend says what to do in one line."""

from __future__ import annotations

import pytest

from pulsed.ipvs.base import IPVSUnavailable
from pulsed.ipvs.netlink import NetlinkBackend
from pulsed.ipvs.syncd import sync_daemons


@pytest.mark.without_ipvs
async def test_open_without_ipvs_explains():
    with pytest.raises(IPVSUnavailable) as exc:
        await NetlinkBackend.open()
    message = str(exc.value)
    assert "modprobe ip_vs" in message
    assert "\n" not in message


@pytest.mark.without_ipvs
async def test_sync_daemon_query_without_ipvs_explains():
    with pytest.raises(IPVSUnavailable, match="modprobe ip_vs"):
        await sync_daemons()
