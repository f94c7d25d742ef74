"""schemathesis against docs/openapi.yaml, over real HTTP to the real daemon.

Every documented operation is called with generated data (with and without
the bearer token); the responses must match the documented status codes,
content types and schemas, and no call may produce a server error.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.netns.pop_daemon import TOKEN, LoopbackServer, Pulsed, config_text, free_port

SPEC = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
schema = schemathesis.openapi.from_path(SPEC)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pop-schema")
    up, down = LoopbackServer(up=True), LoopbackServer(up=False)
    token_file = tmp / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)  # a secret: owner only, or the config is refused
    config = config_text(tmp / "state", free_port(), token_file, [up.port, down.port])
    process = Pulsed(tmp, config).start()
    try:
        yield process
    finally:
        process.close()
        up.close()
        down.close()


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_matches_openapi(case, daemon):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    # A string schema cannot say "a service key, a slash, an IP address and port";
    # keys that fit the schema but not that syntax get a documented 400, which
    # the positive-data check would count as a rejection of valid input.
    case.call_and_validate(
        base_url=daemon.url, headers=headers, excluded_checks=[positive_data_acceptance]
    )


def test_spec_is_valid_openapi():
    ops = [op.ok().label for op in schema.get_all_operations()]
    assert "POST /api/v1/reals/{real}/drain" in ops
    assert "GET /status" in ops
    for call in (
        "POST /api/v1/services/{service}/drain",
        "GET /api/v1/config",
        "POST /api/v1/config/validate",
        "POST /api/v1/config/plan",
        "POST /api/v1/config/apply",
        "POST /api/v1/config/rollback",
        "GET /api/v1/config/history",
    ):
        assert call in ops
