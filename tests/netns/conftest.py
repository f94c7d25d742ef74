"""Fixtures shared by the namespace tests."""

import pytest

from tests.support.ha_lab import Lab


@pytest.fixture
async def lab():
    """Two routers and an observer on a bridge, in namespaces (see tests/support/ha_lab.py)."""
    lab = Lab().create()
    try:
        yield lab
    finally:
        await lab.close()
