"""systemd tier: the .deb installed in a Debian system booted with systemd as PID 1.

It runs inside the IPVS VM (make systemd):

    scripts/vm-run --out .cache/vm-out-systemd -- .venv/bin/pytest -q tests/systemd

The VM's kernel has IPVS, so the unit's sandbox is tried on every path pulsed
uses, /proc/net/ip_vs included. The system boots with systemd-nspawn from the
tree scripts/systemd-tree made (.cache/systemd/tree.tar), and the package is
the ./pulsed_*.deb that make deb built.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.systemd.machine import Machine, tools_missing

REPO = Path(__file__).resolve().parents[2]
TREE = REPO / ".cache" / "systemd" / "tree.tar"
HERE = Path(__file__).parent


def _deb() -> Path | None:
    debs = sorted(REPO.glob("pulsed_*_amd64.deb"))
    return debs[-1] if debs else None


def _skip_reason() -> str | None:
    if missing := tools_missing():
        return missing
    if not TREE.exists():
        return f"no system tree {TREE}: run scripts/systemd-tree (make systemd does)"
    if _deb() is None:
        return "no ./pulsed_*_amd64.deb: run make deb (make systemd does)"
    if not os.path.exists("/proc/net/ip_vs"):
        return "no IPVS in this kernel: run the tier in the VM (make systemd)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _skip_reason()
    for item in items:
        if reason and "tests/systemd" in str(item.path):
            item.add_marker(pytest.mark.skip(reason=reason))


CONFIG = """\
[daemon]
log_format = "auto"  # journal under systemd: priorities journald reads
resync_interval = "1s"

[api]
listen = "127.0.0.1:9480"
token_file = "/etc/pulsed/api-token"

[[vrrp]]
name = "VI_1"
interface = "host0"
vrid = 51
priority = 200
initial_state = "master"
advert_interval = "1s"
virtual_addresses = ["192.0.2.100/24"]

[[service]]
name = "web"
vip = "192.0.2.100"
port = 80
scheduler = "rr"
[service.check]
type = "none"
[[service.real]]
address = "10.77.0.1:80"
"""


@pytest.fixture(scope="session")
def machine(tmp_path_factory):
    """Booted, with the package installed (dpkg -i, as an operator would) and configured."""
    work = Path(os.environ.get("PULSED_SYSTEMD_WORK", tmp_path_factory.mktemp("systemd")))
    m = Machine.unpack(TREE, work)
    if logs := os.environ.get("PULSED_SYSTEMD_LOGS"):  # the VM's --out folder outlives it
        m.log = Path(logs) / "nspawn.log"
    deb = _deb()
    (m.root / "root" / deb.name).write_bytes(deb.read_bytes())
    probe = (HERE / "sandbox_probe.py").read_text()
    (m.root / "usr" / "local" / "lib" / "pulsed-sandbox-probe.py").write_text(probe)
    try:
        m.boot()
        m.run("dpkg", "-i", f"/root/{deb.name}", timeout=300)
        m.run("sh", "-c", "cat > /etc/pulsed/pulsed.toml", input=CONFIG)
        yield m
    finally:
        m.poweroff()
