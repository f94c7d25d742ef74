"""The daemon's HTTP API over real HTTP: endpoints, auth matrix, errors, overrides, reload.

Each test runs the real ``pulsed run --backend memory`` process with real
servers on loopback (one listening, one refusing).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.netns.pop_daemon import TOKEN, Pulsed, config_text, free_port, real_of


@pytest.fixture
def env(tmp_path, servers):
    up, down = servers
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)  # a secret: owner only, or the config is refused
    state = tmp_path / "state"
    port = free_port()

    def make_config(**kw) -> str:
        reals = kw.pop("reals", [up.port, down.port])
        return config_text(state, port, token_file, reals, **kw)

    daemon = Pulsed(tmp_path, make_config())
    daemon.make_config = make_config
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.close()


def healthy(port):
    """Up, and the pass that follows the change has run (its weights are in the document)."""
    return lambda doc: real_of(doc, port)["health"] == "up" and not doc["reconcile"]["pending"]


# Endpoints -------------------------------------------------------------------------


def test_healthz(env):
    code, body = env.json("GET", "/healthz")
    assert (code, body) == (200, {"status": "ok"})


def test_status_shows_health_reason_and_times(env, servers):
    up, down = servers
    doc = env.wait_status(lambda d: healthy(up.port)(d) and real_of(d, down.port)["last_check"])
    good, bad = real_of(doc, up.port), real_of(doc, down.port)
    assert good["reason"] == "connected"
    assert good["effective_weight"] == 2
    assert bad["health"] == "down"
    assert bad["reason"] == "connect refused"
    assert bad["effective_weight"] == 0
    for entity in (good, bad, doc["services"][0], doc["config"], doc["reconcile"]):
        assert {"last_check", "last_transition", "reason"} <= entity.keys()
    assert doc["services"][0]["reals_up"] == 1
    assert doc["ha"] is None


def test_metrics_pass_promtool_and_show_each_server(env, servers):
    up, down = servers
    env.wait_status(lambda d: healthy(up.port)(d) and real_of(d, down.port)["last_check"])
    code, headers, raw = env.request("GET", "/metrics")
    assert code == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    lint = subprocess.run(["promtool", "check", "metrics"], input=raw, capture_output=True)
    assert lint.returncode == 0 and lint.stdout + lint.stderr == b"", lint.stdout + lint.stderr
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(raw.decode())
        for s in family.samples
    }
    good = (("server", f"127.0.0.1:{up.port}"), ("service", "web"))
    bad = (("server", f"127.0.0.1:{down.port}"), ("service", "web"))
    assert samples[("pulsed_real_up", good)] == 1
    assert samples[("pulsed_real_up", bad)] == 0
    assert samples[("pulsed_real_effective_weight", good)] == 2
    refused = (("result", "connection_refused"), *bad)
    assert samples[("pulsed_real_probe_results_total", refused)] >= 1
    assert samples[("pulsed_config_generation", ())] == 1
    assert samples[("pulsed_config_last_reload_successful", ())] == 1
    assert samples[("pulsed_real_probe_duration_seconds_count", good)] >= 1


def test_page_and_static_files(env):
    code, headers, body = env.request("GET", "/")
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert b"/static/app.js" in body
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        code, headers, _ = env.request("GET", f"/static/{name}")
        assert code == 200 and kind in headers["Content-Type"]


def test_unknown_path_and_method_are_json_errors(env):
    code, body = env.json("GET", "/nope")
    assert code == 404 and "no such endpoint" in body["error"]
    code, body = env.json("DELETE", "/status")
    assert code == 405 and "not allowed" in body["error"]


# Auth matrix -------------------------------------------------------------------------

ADMIN_CALLS = [
    # force: the server may be the last serving one (that guard has its own test)
    ("POST", "/api/v1/reals/web/127.0.0.1:{port}/drain?force=1", None),
    ("POST", "/api/v1/reals/web/127.0.0.1:{port}/disable?force=1", None),
    ("POST", "/api/v1/reals/web/127.0.0.1:{port}/enable", None),
    ("PUT", "/api/v1/reals/web/127.0.0.1:{port}/weight", {"weight": 7}),
    ("DELETE", "/api/v1/reals/web/127.0.0.1:{port}/weight", None),
    ("POST", "/api/v1/reload", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS)
def test_auth_matrix(env, servers, method, path, body):
    path = path.format(port=servers[0].port)
    code, headers, raw = env.request(method, path, body)
    assert code == 401, raw
    assert headers["WWW-Authenticate"].startswith("Bearer")
    code, _, raw = env.request(method, path, body, token="wrong-token")
    assert code == 403 and b"wrong token" in raw
    code, _, raw = env.request(method, path, body, token=TOKEN)
    assert code == 200, raw


def test_basic_auth_is_not_a_bearer_token(env, servers):
    import urllib.request

    req = urllib.request.Request(
        f"{env.url}/api/v1/reals/web/127.0.0.1:{servers[0].port}/drain", method="POST"
    )
    req.add_header("Authorization", "Basic dXNlcjpwYXNz")
    try:
        urllib.request.urlopen(req, timeout=5)
    except urllib.error.HTTPError as exc:
        assert exc.code == 401
    else:
        raise AssertionError("Basic auth was accepted")


def test_token_file_unreadable_turns_admin_off(env, servers, tmp_path):
    (tmp_path / "token").unlink()
    code, body = env.json(
        "POST", f"/api/v1/reals/web/127.0.0.1:{servers[0].port}/drain", token=TOKEN
    )
    assert code == 503 and "cannot read" in body["error"]


# Bad calls ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "code", "words"),
    [
        ("/api/v1/reals/nonsense/drain", 400, "expected SERVICE/REAL"),
        ("/api/v1/reals/web/not-an-ip:80/drain", 400, "not an IPv4 or IPv6 address"),
        ("/api/v1/reals/web/127.0.0.1:99999/drain", 400, "not between 1 and 65535"),
        ("/api/v1/reals/nosuch/127.0.0.1:80/drain", 404, "no service named"),
        ("/api/v1/reals/tcp:192.0.2.99:80/127.0.0.1:80/drain", 404, "no service tcp:192.0.2.99:80"),
        ("/api/v1/reals/web/127.0.0.9:80/drain", 404, "no real server"),
        ("/api/v1/reals/bogus:1.2.3.4:80/127.0.0.1:80/drain", 400, "protocol must be"),
    ],
)
def test_bad_admin_calls_get_clear_errors(env, path, code, words):
    got, body = env.json("POST", path, token=TOKEN)
    assert got == code and words in body["error"], body


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"weight": -1}, "out of range"),
        ({"weight": 70000}, "out of range"),
        ({"weight": "5"}, "an integer"),
        ({"weight": True}, "an integer"),
        ({}, "an integer"),
        ([1], "an integer"),
    ],
)
def test_bad_weight_bodies(env, servers, body, words):
    path = f"/api/v1/reals/web/127.0.0.1:{servers[0].port}/weight"
    code, doc = env.json("PUT", path, body, token=TOKEN)
    assert code == 400 and words in doc["error"]


def test_non_json_weight_body(env, servers):
    import urllib.request

    req = urllib.request.Request(
        f"{env.url}/api/v1/reals/web/127.0.0.1:{servers[0].port}/weight",
        data=b"{not json",
        method="PUT",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    try:
        urllib.request.urlopen(req, timeout=5)
    except urllib.error.HTTPError as exc:
        assert exc.code == 400 and b"must be JSON" in exc.read()
    else:
        raise AssertionError("accepted a non-JSON body")


# Overrides ----------------------------------------------------------------------------


def test_drain_weight_disable_enable_show_in_status_and_metrics(env, servers):
    up = servers[0]
    env.wait_status(healthy(up.port))
    base = f"/api/v1/reals/web/127.0.0.1:{up.port}"
    code, body = env.json("POST", base + "/drain?force=1", token=TOKEN)
    assert (code, body["mode"]) == (200, "drain")
    doc = env.wait_status(lambda d: real_of(d, up.port)["kernel_weight"] == 0)
    real = real_of(doc, up.port)
    assert real["mode"] == "drain" and real["effective_weight"] == 0
    assert "drained by admin" in real["reason"]
    assert (
        f'pulsed_real_admin_override{{service="web",server="127.0.0.1:{up.port}",mode="drain"}} 1'
        in env.metrics()
    )

    env.json("POST", base + "/enable", token=TOKEN)
    code, body = env.json("PUT", base + "/weight", {"weight": 9}, token=TOKEN)
    assert body["weight_override"] == 9
    doc = env.wait_status(lambda d: real_of(d, up.port)["kernel_weight"] == 9)
    assert real_of(doc, up.port)["configured_weight"] == 9

    env.json("POST", base + "/disable?force=1", token=TOKEN)
    doc = env.wait_status(lambda d: real_of(d, up.port)["kernel_weight"] is None)
    assert real_of(doc, up.port)["effective_weight"] is None

    env.json("POST", base + "/enable", token=TOKEN)
    code, body = env.json("DELETE", base + "/weight", token=TOKEN)
    assert (body["mode"], body["weight_override"]) == ("enabled", None)
    env.wait_status(lambda d: real_of(d, up.port)["kernel_weight"] == 2)


def test_real_lookup_by_service_key_and_by_name(env, servers):
    port = servers[0].port
    code, by_name = env.json("GET", f"/api/v1/reals/web/127.0.0.1:{port}")
    code2, by_key = env.json("GET", f"/api/v1/reals/tcp:192.0.2.10:80/127.0.0.1:{port}")
    assert code == code2 == 200
    assert by_name["key"] == by_key["key"] == f"tcp:192.0.2.10:80/127.0.0.1:{port}"


def test_override_survives_restart(env, servers):
    up = servers[0]
    env.json("POST", f"/api/v1/reals/web/127.0.0.1:{up.port}/drain?force=1", token=TOKEN)
    env.json("PUT", f"/api/v1/reals/web/127.0.0.1:{up.port}/weight", {"weight": 4}, token=TOKEN)
    assert env.stop() == 0
    env.start()
    real = real_of(env.status(), up.port)
    assert (real["mode"], real["weight_override"]) == ("drain", 4)


def test_override_survives_reload(env, servers):
    up = servers[0]
    env.json("POST", f"/api/v1/reals/web/127.0.0.1:{up.port}/drain?force=1", token=TOKEN)
    env.config_path.write_text(env.make_config(extra_service=True))
    assert "READY=1" in env.reload()
    doc = env.status()
    assert doc["config"]["generation"] == 2
    assert [s["name"] for s in doc["services"]] == ["web", "dns"]
    assert real_of(doc, up.port)["mode"] == "drain"


# Reload -------------------------------------------------------------------------------


def test_broken_reload_keeps_the_old_config(env):
    before = env.status()
    env.config_path.write_text(env.make_config() + "\n[[service]]\nname = 42\n")
    ready = env.reload()
    assert "old config kept" in ready
    after = env.status()
    assert [s["key"] for s in after["services"]] == [s["key"] for s in before["services"]]
    assert [r["key"] for r in after["services"][0]["reals"]] == [
        r["key"] for r in before["services"][0]["reals"]
    ]
    assert after["config"]["generation"] == before["config"]["generation"]
    assert after["config"]["last_reload_ok"] is False
    assert "service[1].name" in after["config"]["reason"]
    assert "pulsed_config_last_reload_successful 0" in env.metrics()


def test_reload_through_the_api_reports_a_broken_config(env):
    env.config_path.write_text("[api\n")
    code, body = env.json("POST", "/api/v1/reload", token=TOKEN)
    assert code == 422 and body["ok"] is False and "invalid TOML" in body["error"]


def test_removed_server_series_disappear(env, servers):
    up, down = servers
    env.wait_status(healthy(up.port))
    assert f"127.0.0.1:{down.port}" in env.metrics()
    env.config_path.write_text(env.make_config(reals=[up.port]))
    env.reload()
    text = env.metrics()
    assert f"127.0.0.1:{down.port}" not in text
    assert f"127.0.0.1:{up.port}" in text


def test_unchanged_reload_keeps_generation(env):
    env.reload()
    doc = env.status()
    assert doc["config"]["generation"] == 1 and doc["config"]["last_reload_ok"] is True


# CLI -------------------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pulsed.cli", *args], capture_output=True, text=True, timeout=30
    )


def test_cli_status_drain_weight_enable(env, servers):
    up, down = servers
    # Both servers checked once (first probes are spread over the interval).
    env.wait_status(lambda d: healthy(up.port)(d) and real_of(d, down.port)["last_check"])
    cfg = ("-c", str(env.config_path))
    out = cli("status", *cfg)
    assert out.returncode == 0, out.stderr
    assert "TCP  192.0.2.10:80 wlc" in out.stdout
    assert f"127.0.0.1:{down.port}" in out.stdout and "connect refused" in out.stdout
    real = f"web/127.0.0.1:{up.port}"
    out = cli("drain", real, *cfg)
    assert out.returncode == 1 and "last serving real server of web" in out.stderr
    out = cli("drain", real, "--force", *cfg)
    assert out.returncode == 0 and out.stdout.strip().endswith(": drain"), out.stderr
    assert cli("weight", real, "5", *cfg).stdout.strip().endswith("weight 5")
    assert cli("weight", real, "clear", *cfg).stdout.strip().endswith("weight configured")
    assert cli("enable", real, *cfg).stdout.strip().endswith(": enabled")
    assert real_of(env.status(), up.port)["mode"] == "enabled"


def test_cli_errors_are_one_line(env, servers, tmp_path):
    real = f"web/127.0.0.1:{servers[0].port}"
    bad_token = tmp_path / "bad-token"
    bad_token.write_text("nope\n")
    bad_token.chmod(0o600)  # a secret: owner only, or the config is refused
    out = cli("drain", real, "-c", str(env.config_path), "--token-file", str(bad_token))
    assert out.returncode == 1 and out.stderr.strip() == "pulsed: 403: wrong token"
    out = cli("drain", "web/127.0.0.1:1", "-c", str(env.config_path))
    assert out.returncode == 1 and "404: no real server" in out.stderr
    out = cli("weight", real, "lots", "-c", str(env.config_path))
    assert out.returncode == 2 and "expected 0..65535" in out.stderr
    out = cli("status", "--url", f"http://127.0.0.1:{free_port()}")
    assert out.returncode == 1
    assert "is pulsed running?" in out.stderr and len(out.stderr.strip().splitlines()) == 1
