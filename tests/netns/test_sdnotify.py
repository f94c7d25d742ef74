"""sd_notify, the systemd unit and the Containerfile, checked with the real tools.

The test plays systemd: it binds the NOTIFY_SOCKET datagram socket and
reads what the real daemon sends at start, reload, watchdog and stop.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from pulsed.sdnotify import Notifier, socket_address, watchdog_interval
from tests.netns.pop_daemon import TOKEN, LoopbackServer, Pulsed, config_text, free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def config(tmp_path):
    up = LoopbackServer(up=True)
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)  # a secret: owner only, or the config is refused
    yield config_text(tmp_path / "state", free_port(), token, [up.port])
    up.close()


def test_not_under_systemd_means_no_notifier():
    assert Notifier.from_environment({}) is None
    assert Notifier.from_environment({"NOTIFY_SOCKET": "relative/path"}) is None


def test_abstract_socket_names():
    assert socket_address("@pulsed/notify") == b"\0pulsed/notify"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"


def test_abstract_socket_receives_messages():
    name = f"pop-notify-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(b"\0" + name.encode())
        server.settimeout(5)
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": "@" + name})
        assert notifier is not None
        assert notifier.send("STATUS=hello")
        assert server.recv(100) == b"STATUS=hello"
        notifier.close()


def test_watchdog_interval_is_half_and_respects_pid():
    assert watchdog_interval({"WATCHDOG_USEC": "10000000"}) == 5.0
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({}) is None
    mine = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(mine) == 1.0
    assert watchdog_interval({**mine, "WATCHDOG_PID": "1"}) is None


def test_send_to_a_missing_socket_does_not_raise(tmp_path):
    notifier = Notifier(str(tmp_path / "absent.sock"))
    assert notifier.send("READY=1") is False
    notifier.close()


def test_daemon_lifecycle_messages(tmp_path, config):
    daemon = Pulsed(tmp_path, config, env={"WATCHDOG_USEC": "400000"})
    try:
        daemon.start()
        ready = next(m for m in daemon.messages if "READY=1" in m)
        assert re.search(r"STATUS=1 services, 1 real servers, generation 1", ready)
        # Two pings prove the watchdog repeats (every 200 ms here), not just the first.
        daemon.wait_message(lambda m: m == "WATCHDOG=1")
        daemon.wait_message(lambda m: m == "WATCHDOG=1")
        daemon.proc.send_signal(1)  # SIGHUP
        reloading = daemon.wait_message(lambda m: "RELOADING=1" in m)
        usec = int(re.search(r"MONOTONIC_USEC=(\d+)", reloading).group(1))
        assert abs(usec - __import__("time").monotonic_ns() // 1000) < 60_000_000
        assert "READY=1" in daemon.wait_message(lambda m: "READY=1" in m)
        assert daemon.stop() == 0
        assert "STOPPING=1" in daemon.messages
    finally:
        daemon.close()


def test_daemon_without_notify_socket_starts(tmp_path, config):
    # No NOTIFY_SOCKET: the daemon must still run; READY is observed through /healthz here.
    daemon = Pulsed(tmp_path, config, env={"NOTIFY_SOCKET": ""})
    try:
        daemon.start_without_notify()
        code, body = daemon.json("GET", "/healthz")
        assert (code, body) == (200, {"status": "ok"})
        assert daemon.stop() == 0
        assert daemon.messages == []
    finally:
        daemon.close()


def test_systemd_unit_verifies(tmp_path):
    unit = (REPO / "systemd" / "pulsed.service").read_text()
    pulsed = shutil.which("pulsed") or str(REPO / ".venv" / "bin" / "pulsed")
    # verify checks that ExecStart= exists; point it at this checkout's entry point.
    (tmp_path / "pulsed.service").write_text(unit.replace("/usr/bin/pulsed", pulsed))
    out = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "pulsed.service")],
        capture_output=True,
        text=True,
    )
    # verify also loads the units this one names (network-online.target and what it pulls
    # in): their packages' own warnings (e.g. ldirectord's KillMode=none) are not ours.
    ours = [line for line in (out.stdout + out.stderr).splitlines() if "pulsed" in line]
    assert out.returncode == 0 and ours == [], out.stdout + out.stderr
    assert "Type=notify\n" in unit and "WatchdogSec=" in unit
    assert "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW\n" in unit
    assert "ProtectSystem=strict" in unit and "StateDirectory=pulsed" in unit


def test_containerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(REPO / ".venv" / "bin" / "hadolint")
    out = subprocess.run([hadolint, str(REPO / "Containerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    text = (REPO / "Containerfile").read_text()
    assert text.count("FROM ") == 2  # multi-stage
    assert "--network host" in text and "--cap-add NET_ADMIN" in text
