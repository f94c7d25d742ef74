"""The config calls of the API on hostile bodies: each is a 4xx with a JSON error naming
the problem, never a 5xx, and neither the running config nor the file changes."""

from __future__ import annotations

import json

import pytest
from aiohttp.test_utils import TestClient, TestServer

from pulsed.api import make_app
from pulsed.config import parse_config
from pulsed.config_store import digest, read_source
from tests.unit.standin import stand_in

TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {**AUTH, "Content-Type": "application/json"}
CALLS = (
    "/api/v1/config/validate",
    "/api/v1/config/plan",
    "/api/v1/config/apply",
    "/api/v1/config/rollback",
)


@pytest.fixture
async def api(tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    path = tmp_path / "pulsed.toml"
    path.write_text(
        f'[daemon]\nstate_dir = "{tmp_path}"\n'
        f'[api]\ntoken_file = "{token}"\nconfig_write = true\n'
        '[[service]]\nname = "web"\nvip = "192.0.2.1"\nport = 80\n'
        '[service.check]\ntype = "none"\n[[service.real]]\naddress = "10.0.0.1:80"\n'
    )
    daemon = stand_in(tmp_path, services=1, reals=1)
    daemon.config = parse_config(path.read_text(), str(path))
    daemon.config_path = path
    daemon.source = read_source(path)
    client = TestClient(TestServer(make_app(daemon), host="127.0.0.1"))
    await client.start_server()
    try:
        yield client, daemon, path
    finally:
        await client.close()


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
async def test_a_json_body_is_read_whatever_its_content_type_says(api, content_type):
    """curl -d and Python's urllib label a body as a form unless told otherwise; the
    body is read as JSON all the same (the token in a header, not a cookie, is what
    keeps other sites out), and what is not JSON is a 400."""
    client, _, path = api
    text = json.dumps({"text": path.read_text()})
    headers = {**AUTH, "Content-Type": content_type}
    got = await client.post("/api/v1/config/validate", data=text, headers=headers)
    assert got.status == 200, await got.text()
    assert (await got.json())["valid"] is True
    got = await client.post("/api/v1/config/validate", data="text=x", headers=headers)
    assert got.status == 400


async def test_json_with_a_charset_or_an_unsaid_type_is_json(api):
    client, _, path = api
    text = json.dumps({"text": path.read_text()})
    for headers in (
        {**AUTH, "Content-Type": "application/json; charset=utf-8"},
        {**AUTH, "Content-Type": "application/vnd.pulsed+json"},
        AUTH,  # aiohttp sends none for bytes data... unless told: see below
    ):
        got = await client.post("/api/v1/config/validate", data=text.encode(), headers=headers)
        assert got.status == 200, await got.text()
        assert (await got.json())["valid"] is True


HOSTILE = [
    b"",
    b"{",
    b"null",
    b"[1]",
    b'{"text": 5, "id": "3"}',
    b'{"id": 1.0}',
    b'{"id": true}',
    b'{"id": -1}',
    b'{"id": 100000000000000000000000000000}',
    b'{"text": "\\ud800"}',
    b'{"text": "\xff"}',
    b'{"text": "a = \\u0000"}',
    b'{"text": ""}',
    b'{"text": "[[["}',
    b'{"text": "include = [\\"/dev/zero\\"]\\nservice = []"}',
    b'{"text": "include = [\\"pulsed.toml\\"]\\nservice = []"}',
    b'{"text": "a = ' + b"9" * 5000 + b'"}',
    b'{"text": "a = ' + b"[" * 3000 + b"]" * 3000 + b'"}',
    b"[" * 50_000 + b"]" * 50_000,
]


@pytest.mark.parametrize("call", CALLS)
async def test_hostile_bodies_are_a_json_4xx_and_change_nothing(api, call):
    client, daemon, path = api
    before, running = path.read_bytes(), daemon.config
    for body in HOSTILE:
        got = await client.post(call, data=body, headers=JSON)
        doc = await got.json()
        if got.status == 200:  # validate answers 200 with the problems
            assert call.endswith("/validate") and doc["valid"] is False, (body[:60], doc)
            assert doc["errors"] and all(e["text"] for e in doc["errors"])
            continue
        assert 400 <= got.status < 500, (body[:60], got.status, doc)
        assert isinstance(doc["error"], str) and "\n" not in doc["error"], doc
    assert path.read_bytes() == before and daemon.config is running
    assert digest(before) == daemon.snapshot().source.digest
