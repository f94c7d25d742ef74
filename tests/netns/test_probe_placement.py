"""Probe placement in namespaces: address, bind_address and bind_interface take effect.

A router namespace reaches the server through two interfaces (see
tests/support/placement_lab.py); the server records the source address of
every connection, so each test sees where its probes really came from. A
source the router does not have (an interface not there, an address it
does not hold) is a local error with a clear reason, and a monitored server
stays up through it.
"""

from __future__ import annotations

import asyncio
import ssl

import pytest
import trustme

from pulsed.checks.base import ProbeResult, Target
from pulsed.checks.config import CheckConfig
from pulsed.checks.monitor import HealthMonitor
from pulsed.checks.probes import make_probe
from pulsed.durations import Duration
from pulsed.model import DestKey, ServiceKey
from tests.support.placement_lab import (
    HTTP_PORT,
    HTTPS_PORT,
    ROUTER_A,
    ROUTER_B,
    SERVER_ADDRESS,
    PlacementLab,
)

SVC = ServiceKey.for_address("tcp", "192.0.2.1", 80)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def lab(ca):
    cert = ca.issue_cert(SERVER_ADDRESS)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    lab = PlacementLab(context).create()
    try:
        yield lab
    finally:
        lab.destroy()


def probe_once(lab: PlacementLab, check: CheckConfig, address: str = SERVER_ADDRESS):
    port = check.port or HTTP_PORT
    target = Target(address, port, check)

    async def once() -> ProbeResult:
        return await make_probe(target).probe()

    return lab.in_router(once)


@pytest.mark.parametrize("kind", ["tcp", "http"])
def test_an_unbound_probe_leaves_by_the_preferred_route(lab, kind) -> None:
    lab.taken_sources()
    result = probe_once(lab, CheckConfig(type=kind))
    assert result.ok, result.reason
    assert lab.taken_sources() == [ROUTER_A]


@pytest.mark.parametrize("kind", ["tcp", "http", "https"])
def test_bind_address_sets_the_source(lab, ca, kind, tmp_path) -> None:
    extra = {}
    if kind == "https":
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        extra = {"ca_file": str(ca_file), "port": HTTPS_PORT}
    lab.taken_sources()
    result = probe_once(lab, CheckConfig(type=kind, bind_address=ROUTER_B, **extra))
    assert result.ok, result.reason
    assert lab.taken_sources() == [ROUTER_B]


@pytest.mark.parametrize("kind", ["tcp", "http"])
def test_bind_interface_picks_the_route_through_it(lab, kind) -> None:
    lab.taken_sources()
    result = probe_once(lab, CheckConfig(type=kind, bind_interface="rb"))
    assert result.ok, result.reason
    assert lab.taken_sources() == [ROUTER_B]


def test_address_probes_another_address_than_the_real_servers(lab) -> None:
    lab.taken_sources()
    # The real server's own address is unreachable; its health shows on another.
    check = CheckConfig(type="http", address=SERVER_ADDRESS)
    result = probe_once(lab, check, address="192.0.2.77")
    assert result.ok, result.reason
    assert lab.taken_sources() == [ROUTER_A]


@pytest.mark.parametrize("kind", ["tcp", "http", "https"])
def test_a_missing_interface_is_a_local_error_naming_it(lab, kind) -> None:
    result = probe_once(lab, CheckConfig(type=kind, bind_interface="nosuch0"))
    assert (result.ok, result.category, result.fault) == (False, "local", "socket")
    assert result.reason == "local error: cannot use interface nosuch0: no such device (ENODEV)"
    assert lab.taken_sources() == []  # nothing reached the server


@pytest.mark.parametrize("kind", ["tcp", "http"])
def test_an_address_the_router_lacks_is_a_local_error_naming_it(lab, kind) -> None:
    result = probe_once(lab, CheckConfig(type=kind, bind_address="10.77.3.1"))
    assert (result.ok, result.category, result.fault) == (False, "local", "eaddrnotavail")
    assert "cannot use source address 10.77.3.1: " in result.reason
    assert result.reason.endswith("(EADDRNOTAVAIL)")


def test_a_missing_interface_never_takes_a_monitored_server_down(lab) -> None:
    key = (SVC, DestKey(SERVER_ADDRESS, HTTP_PORT))
    check = CheckConfig(
        type="http",
        bind_interface="nosuch0",
        interval=Duration(0.02),
        timeout=Duration(0.02),
        fall=1,
        initial_state="up",
    )

    async def watch():
        changes = []
        locals_seen = asyncio.Event()
        count = [0]

        def on_result(_key, result: ProbeResult) -> None:
            count[0] += result.category == "local"
            if count[0] >= 5:
                locals_seen.set()

        monitor = HealthMonitor(lambda k, h: changes.append(h), on_result=on_result)
        monitor.update({key: Target(SERVER_ADDRESS, HTTP_PORT, check)})
        await monitor.start()
        try:
            async with asyncio.timeout(10):
                await locals_seen.wait()
        finally:
            await monitor.stop()
        return changes, monitor.health()[key], monitor.local_faults()

    changes, health, faults = lab.in_router(watch)
    assert changes == []  # no up/down, no weight change: nothing for the table
    assert health.up and health.local_errors >= 5
    assert (
        health.local_error == "local error: cannot use interface nosuch0: no such device (ENODEV)"
    )
    assert faults.totals["socket"] >= 5
