"""schemathesis in negative mode against docs/openapi.yaml, over real HTTP to the real daemon.

Every documented operation is called with data that does NOT fit the schema
(wrong types, missing fields, out-of-range numbers, odd path parameters), with
the admin token: no call may get a 5xx, and every error must be the
documented JSON object. The positive run is tests/netns/test_api_schema.py;
the raw-bytes fuzzer is tests/unit/test_api_fuzz.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.netns.pop_daemon import TOKEN, LoopbackServer, Pulsed, config_text, free_port

SPEC = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
schema = schemathesis.openapi.from_path(SPEC)
schema.config.generation.update(modes=[GenerationMode.NEGATIVE], deterministic=True)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pop-schema-negative")
    up, down = LoopbackServer(up=True), LoopbackServer(up=False)
    token_file = tmp / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    config = config_text(tmp / "state", free_port(), token_file, [up.port, down.port])
    process = Pulsed(tmp, config).start()
    try:
        yield process
    finally:
        process.close()
        up.close()
        down.close()
        log = (tmp / "pulsed.log").read_text()
        assert "Traceback" not in log and '"api.error"' not in log, log[-3000:]


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_invalid_calls_get_a_json_4xx(case, daemon):
    response = case.call_and_validate(
        base_url=daemon.url,
        headers={"Authorization": f"Bearer {TOKEN}"},
        checks=[not_a_server_error],
    )
    if response.status_code >= 400 and case.method.upper() != "HEAD":
        error = json.loads(response.content)["error"]
        assert isinstance(error, str) and "\n" not in error
