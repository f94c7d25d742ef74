"""The maintenance directory and shared probes, through the real daemon and /status.

``pulsed run --backend memory`` with two services on one real server on
loopback: the server is probed once for both (probe_shared_with), a file
named after it drains it in both, removing the file brings it back, and a
directory that disappears leaves the servers as they were, with one warning.
"""

from __future__ import annotations

import os

import pytest

from tests.netns.pop_daemon import TOKEN, Pulsed, free_port


def config(state, port, token_file, maintenance, real_port) -> str:
    text = f"""
[daemon]
state_dir = "{state}"
resync_interval = "200ms"

[api]
listen = "127.0.0.1:{port}"
token_file = "{token_file}"
status_refresh = "1s"

[checks]
maintenance_dir = "{maintenance}"
"""
    for n, name in ((1, "web"), (2, "api")):
        text += f"""
[[service]]
name = "{name}"
vip = "192.0.2.{n}"
port = 80
[service.check]
type = "tcp"
interval = "200ms"
timeout = "150ms"
rise = 1
fall = 1
[[service.real]]
address = "127.0.0.1:{real_port}"
name = "backend-1"
weight = 2
"""
    return text


@pytest.fixture
def env(tmp_path, servers):
    up, _ = servers
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    maintenance = tmp_path / "maintenance"
    maintenance.mkdir()
    daemon = Pulsed(
        tmp_path, config(tmp_path / "state", free_port(), token_file, maintenance, up.port)
    )
    daemon.maintenance = maintenance
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.close()


def reals(doc: dict) -> list[dict]:
    return [svc["reals"][0] for svc in doc["services"]]


def weights(*wanted: int):
    """Every real server at this weight in the wanted table and in the kernel's."""
    return lambda doc: (
        not doc["reconcile"]["pending"]
        and all((r["effective_weight"], r["kernel_weight"]) == wanted for r in reals(doc))
    )


def test_a_file_drains_the_server_in_every_service_until_removed(env, servers) -> None:
    up, _ = servers
    doc = env.wait_status(weights(2, 2))
    web, api = reals(doc)
    # One probe feeds both services.
    assert web["probe_shared_with"] == [f"tcp:192.0.2.2:80/127.0.0.1:{up.port}"]
    assert api["probe_shared_with"] == [f"tcp:192.0.2.1:80/127.0.0.1:{up.port}"]
    assert web["probe_shared_count"] == api["probe_shared_count"] == 1
    assert web["maintenance"] is None

    for name in (f"127.0.0.1:{up.port}", "127.0.0.1", "backend-1"):
        path = env.maintenance / name
        path.touch()
        doc = env.wait_status(weights(0, 0))
        for real in reals(doc):
            assert real["health"] == "up" and real["mode"] == "enabled"
            assert real["maintenance"] == f"maintenance file {path}"
            assert real["reason"] == f"in maintenance (maintenance file {path}); health: connected"
        path.unlink()
        doc = env.wait_status(weights(2, 2))
        assert all(r["maintenance"] is None for r in reals(doc))

    # Another server's file, and editors' hidden files, change nothing.
    (env.maintenance / "127.0.0.2").touch()
    (env.maintenance / f".127.0.0.1:{up.port}.swp").touch()
    passes = env.status()["reconcile"]["passes"]
    doc = env.wait_status(lambda d: d["reconcile"]["passes"] >= passes + 2)
    assert weights(2, 2)(doc)


def test_a_directory_that_goes_away_leaves_the_servers_as_they_were(env, servers) -> None:
    up, _ = servers
    env.wait_status(weights(2, 2))
    (env.maintenance / f"127.0.0.1:{up.port}").touch()
    env.wait_status(weights(0, 0))
    moved = env.maintenance.with_name("moved")
    os.rename(env.maintenance, moved)
    passes = env.status()["reconcile"]["passes"]
    doc = env.wait_status(lambda d: d["reconcile"]["passes"] >= passes + 3)
    assert weights(0, 0)(doc)  # still drained: a glitch brings nobody back
    log = (env.workdir / "pulsed.log").read_text()
    assert log.count("maintenance.unreadable") == 1  # one warning, not one per pass
    # Back, without the file: the server returns.
    os.rename(moved, env.maintenance)
    (env.maintenance / f"127.0.0.1:{up.port}").unlink()
    env.wait_status(weights(2, 2))
    assert "maintenance.readable" in (env.workdir / "pulsed.log").read_text()
