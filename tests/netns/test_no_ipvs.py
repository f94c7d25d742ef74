"""On a kernel without IPVS, pulsed says what to do, in one line, and exits 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    Path("/proc/net/ip_vs").exists(), reason="this kernel has IPVS; the VM tier covers it"
)

CONFIG = """
[daemon]
state_dir = "{state}"
[api]
enabled = false
[[service]]
name = "web"
vip = "192.0.2.100"
port = 80
[[service.real]]
address = "10.0.0.2"
"""


@pytest.mark.parametrize("command", [["run"], ["plan"]])
def test_missing_ipvs_is_one_clear_error(tmp_path, command):
    config = tmp_path / "pulsed.toml"
    config.write_text(CONFIG.format(state=tmp_path / "state"))
    result = subprocess.run(
        [sys.executable, "-m", "pulsed.cli", *command, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("pulsed: ") and "modprobe ip_vs" in last


async def test_backend_open_without_ipvs_explains():
    from pulsed.ipvs.base import IPVSUnavailable
    from pulsed.ipvs.netlink import NetlinkBackend

    with pytest.raises(IPVSUnavailable) as exc:
        await NetlinkBackend.open()
    message = str(exc.value)
    assert "modprobe ip_vs" in message
    assert "\n" not in message


async def test_sync_daemon_query_without_ipvs_explains():
    from pulsed.ipvs.base import IPVSUnavailable
    from pulsed.ipvs.syncd import sync_daemons

    with pytest.raises(IPVSUnavailable, match="modprobe ip_vs"):
        await sync_daemons()
