"""What an operator's trial found: plan from the daemon, reload with a broken file, servers
named without their port, the last serving server, and what `pulsed status` shows."""

from __future__ import annotations

import json

import pytest
from aiohttp.test_utils import TestClient, TestServer

from pulsed.admin_cli import api_settings, format_status
from pulsed.api import make_app
from pulsed.config import parse_config
from pulsed.desired import wanted_table
from tests.unit.standin import stand_in, status

TOKEN = "s3cret-token-for-tests"


def two_ports(tmp_path):
    """web: 10.0.0.1:80 and 10.0.0.1:8080 (the same address twice), 10.0.0.2:80; a sorry server."""
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    text = (
        f'[daemon]\nstate_dir = "{tmp_path}"\n[api]\ntoken_file = "{token}"\n'
        '[[service]]\nname = "web"\nvip = "192.0.2.1"\nport = 80\nsorry_server = "10.0.9.9:80"\n'
        '[service.check]\ntype = "none"\n'
        '[[service.real]]\naddress = "10.0.0.1:80"\n'
        '[[service.real]]\naddress = "10.0.0.1:8080"\n'
        '[[service.real]]\naddress = "10.0.0.2:80"\nweight = 0\n'
    )
    daemon = stand_in(tmp_path, services=1, reals=1)
    daemon.config = parse_config(text)
    daemon.monitor._health = {}
    daemon.wanted = wanted_table(daemon.config, assume_healthy=True)
    return daemon


async def client_for(daemon) -> TestClient:
    client = TestClient(TestServer(make_app(daemon), host="127.0.0.1"))
    await client.start_server()
    return client


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_a_server_named_without_its_port(tmp_path):
    daemon = two_ports(tmp_path)
    client = await client_for(daemon)
    try:
        one = await client.get("/api/v1/reals/web/10.0.0.2")
        assert one.status == 200 and (await one.json())["port"] == 80
        both = await client.get("/api/v1/reals/web/10.0.0.1")
        body = await both.json()
        assert both.status == 400
        assert "10.0.0.1:80" in body["error"] and "10.0.0.1:8080" in body["error"]
        none = await client.get("/api/v1/reals/web/10.0.0.7")
        assert none.status == 404
        bad_port = await client.get("/api/v1/reals/web/10.0.0.1:99999")
        assert bad_port.status == 400 and "99999" in (await bad_port.json())["error"]
    finally:
        await client.close()


async def test_draining_the_last_serving_server_needs_force(tmp_path):
    daemon = two_ports(tmp_path)
    daemon.overrides.set_mode(daemon.index_key("10.0.0.1", 8080), "disable")
    daemon.wanted = wanted_table(
        daemon.config, overrides=daemon.overrides.all(), assume_healthy=True
    )
    client = await client_for(daemon)
    try:
        refused = await client.post("/api/v1/reals/web/10.0.0.1:80/drain", headers=AUTH)
        text = (await refused.json())["error"]
        assert refused.status == 409
        assert "last serving real server of web" in text and "10.0.9.9:80 takes over" in text
        assert daemon.overrides.get(daemon.index_key("10.0.0.1", 80)).mode == "enabled"
        zero = await client.put(
            "/api/v1/reals/web/10.0.0.1:80/weight", json={"weight": 0}, headers=AUTH
        )
        assert zero.status == 409
        forced = await client.post("/api/v1/reals/web/10.0.0.1:80/drain?force=1", headers=AUTH)
        assert forced.status == 200 and (await forced.json())["mode"] == "drain"
    finally:
        await client.close()


async def test_plan_comes_from_the_daemon(tmp_path):
    daemon = two_ports(tmp_path)
    client = await client_for(daemon)
    try:
        doc = await (await client.get("/api/v1/plan")).json()
    finally:
        await client.close()
    assert doc["source"] == "daemon"
    assert any(op.startswith("add-service tcp:192.0.2.1:80") for op in doc["operations"])
    assert doc["reals"] == {"up": 0, "down": 0, "unknown": 3}


def test_reload_finds_the_daemon_in_a_broken_config(tmp_path):
    path = tmp_path / "pulsed.toml"
    path.write_text('[api]\nlisten = "127.0.0.1:9999"\ntoken_file = "/run/t"\n[[service]\nname=')
    assert api_settings(str(path)) == ("127.0.0.1:9999", "/run/t")
    path.write_text('[api]\nlisten = "127.0.0.1:9998"\n[[service]]\nname = 5\n')  # invalid
    assert api_settings(str(path))[0] == "127.0.0.1:9998"


def test_status_shows_overrides_the_sorry_server_and_vips(tmp_path):
    from dataclasses import replace

    from pulsed.readmodel import HaView
    from pulsed.status_view import status_chunks
    from tests.unit.standin import vrrp_status

    daemon = two_ports(tmp_path)
    daemon.overrides.set_weight(daemon.index_key("10.0.0.1", 80), 25)
    master = vrrp_status(state="MASTER", vips=["192.0.2.1/24"], vips_held=True)
    backup = vrrp_status(name="VI_2", vrid=52, vips=["192.0.2.2/24"], master="10.1.1.2")
    snap = replace(daemon.snapshot(), ha=HaView(("VI_1", "VI_2"), (master, backup)))
    text = format_status(json.loads(b"".join(status_chunks(snap))))
    assert "25 (override)" in text
    assert "sorry server 10.0.9.9:80 (standing by)" in text
    assert "VIP 192.0.2.1/24 (VI_1, master): held by this router" in text
    assert "VIP 192.0.2.2/24 (VI_2, backup): held by the peer 10.1.1.2" in text
    assert status(daemon)["services"][0]["sorry_server"] == "10.0.9.9:80"


@pytest.fixture(autouse=True)
def _index_key(monkeypatch):
    """``daemon.index_key(address, port)``: the key of a configured real server of web."""
    from tests.unit.standin import DaemonStandIn

    def index_key(self, address: str, port: int):
        svc = self.snapshot().index.by_name("web")
        return next(k for k in svc.reals if (k[1].address, k[1].port) == (address, port))

    monkeypatch.setattr(DaemonStandIn, "index_key", index_key, raising=False)
