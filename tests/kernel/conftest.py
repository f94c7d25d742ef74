"""Kernel tier: runs inside the IPVS VM (scripts/vm-run), skipped elsewhere.

    scripts/vm-run --out .cache/vm-out -- .venv/bin/pytest -q tests/kernel \
        --junitxml=.cache/vm-out/kernel.xml

Every test starts and ends with an empty IPVS table; namespaces and links
created here carry the "pnl" prefix.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pulsed.ipvs.netlink import NetlinkBackend
from tests.kernel.helpers import ipvsadm

HAVE_IPVS = os.path.exists("/proc/net/ip_vs")
IS_ROOT = os.geteuid() == 0
HERE = Path(__file__).parent
SKIP_REASON = (
    "no IPVS in this kernel (/proc/net/ip_vs absent): run the kernel tier in the VM with "
    "scripts/vm-run --out .cache/vm-out -- .venv/bin/pytest -q tests/kernel"
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE not in Path(str(item.fspath)).parents:
            continue
        item.add_marker(pytest.mark.kernel)
        if not HAVE_IPVS:
            item.add_marker(pytest.mark.skip(reason=SKIP_REASON))
        elif not IS_ROOT:
            item.add_marker(pytest.mark.skip(reason="IPVS needs root"))


@pytest.fixture
async def backend():
    """A NetlinkBackend over an empty table (emptied again afterwards)."""
    ipvsadm("-C")
    be = await NetlinkBackend.open()
    try:
        yield be
    finally:
        await be.close()
        ipvsadm("-C")
