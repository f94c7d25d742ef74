"""Fixtures shared by the namespace tests."""

import pytest

from lab.ha_pair import HaPair
from tests.netns.pop_daemon import LoopbackServer


@pytest.fixture
async def lab():
    """Two routers and an observer on a bridge, in namespaces (see lab/ha_pair.py)."""
    lab = HaPair().create()
    try:
        yield lab
    finally:
        await lab.close()


@pytest.fixture
def servers():
    """Two loopback real servers for the daemon tests: one up, one refusing."""
    up, down = LoopbackServer(up=True), LoopbackServer(up=False)
    yield up, down
    up.close()
    down.close()
