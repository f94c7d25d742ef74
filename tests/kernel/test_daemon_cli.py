"""The daemon and `pulsed plan` against the real kernel table (IPVS VM)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess

BASE = """
[daemon]
state_dir = "{state}"
resync_interval = "{resync}"
log_format = "json"
[api]
enabled = false
[[service]]
name = "web"
vip = "192.0.2.100"
port = 80
scheduler = "{scheduler}"
[service.check]
type = "none"
[[service.real]]
address = "10.0.0.2:80"
weight = {weight}
[[service.real]]
address = "10.0.0.3:80"
weight = 100
forwarding = "dr"
"""


def ipvsadm(*args: str) -> str:
    return subprocess.run(["ipvsadm", *args], check=True, capture_output=True, text=True).stdout


def saved() -> list[str]:
    return sorted(ipvsadm("-Sn").splitlines())


@pytest.fixture(autouse=True)
def clean_table():
    ipvsadm("-C")
    yield
    ipvsadm("-C")


@pytest.fixture
def write_config(tmp_path):
    path = tmp_path / "pulsed.toml"

    def write(resync="500ms", scheduler="wlc", weight=100) -> Path:
        state = tmp_path / "state"
        path.write_text(BASE.format(state=state, resync=resync, scheduler=scheduler, weight=weight))
        return path

    return write


def plan(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pulsed.cli", "plan", "-c", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )


WANTED = sorted(
    [
        "-A -t 192.0.2.100:80 -s wlc",
        "-a -t 192.0.2.100:80 -r 10.0.0.2:80 -m -w 100",
        "-a -t 192.0.2.100:80 -r 10.0.0.3:80 -g -w 100",
    ]
)


def test_plan_reports_pending_then_in_sync(write_config):
    config = write_config()
    pending = plan(config)
    assert pending.returncode == 3, pending.stderr
    assert pending.stdout.splitlines() == [
        "add-service tcp:192.0.2.100:80 scheduler=wlc flags=0x0 timeout=0",
        "add-dest tcp:192.0.2.100:80 -> 10.0.0.2:80 forwarding=nat weight=100 upper=0 lower=0",
        "add-dest tcp:192.0.2.100:80 -> 10.0.0.3:80 forwarding=dr weight=100 upper=0 lower=0",
    ]
    ipvsadm("-A", "-t", "192.0.2.100:80", "-s", "wlc")
    ipvsadm("-a", "-t", "192.0.2.100:80", "-r", "10.0.0.2:80", "-m", "-w", "100")
    ipvsadm("-a", "-t", "192.0.2.100:80", "-r", "10.0.0.3:80", "-g", "-w", "100")
    in_sync = plan(config)
    assert in_sync.returncode == 0, in_sync.stdout + in_sync.stderr
    broken = config.parent / "broken.toml"
    broken.write_text("[[service]]\nname = 1\n")
    assert plan(broken).returncode == 2


def test_daemon_programs_repairs_adopts_and_leaves_foreign_services(write_config):
    config = write_config()
    ipvsadm("-A", "-u", "198.51.100.1:53", "-s", "rr")  # someone else's service
    first = DaemonProcess(config)
    try:
        first.wait_for("reconcile.foreign_service", service="udp:198.51.100.1:53")
        assert first.wait_for("daemon.started")["writes_at_start"] == 3
        assert saved() == sorted([*WANTED, "-A -u 198.51.100.1:53 -s rr"])

        # Behind pulsed's back: a flush, then a deleted destination. The resync repairs both.
        ipvsadm("-C")
        first.wait_for("reconcile.applied", ops=3)
        assert saved() == WANTED
        ipvsadm("-d", "-t", "192.0.2.100:80", "-r", "10.0.0.3:80")
        first.wait_for("reconcile.applied", ops=1)
        assert saved() == WANTED
        assert first.stop() == 0
        assert saved() == WANTED  # shutdown leaves the table as it is
    finally:
        first.stop()

    second = DaemonProcess(config)
    try:
        assert second.wait_for("daemon.started")["writes_at_start"] == 0
    finally:
        assert second.stop() == 0


def test_reload_edits_in_place_and_bad_reload_keeps_running(write_config):
    config = write_config()
    daemon = DaemonProcess(config)
    try:
        daemon.wait_for("daemon.started")
        ipvsadm("--set", "0", "0", "0")  # no-op; proves ipvsadm works while pulsed runs
        write_config(scheduler="rr", weight=5)
        daemon.signal(signal.SIGHUP)
        daemon.wait_for("reload.applied")
        applied = daemon.wait_for("reconcile.applied")
        assert applied["ops"] == 2  # one set-service, one set-dest: nothing deleted
        assert saved() == sorted(
            [
                "-A -t 192.0.2.100:80 -s rr",
                "-a -t 192.0.2.100:80 -r 10.0.0.2:80 -m -w 5",
                "-a -t 192.0.2.100:80 -r 10.0.0.3:80 -g -w 100",
            ]
        )
        config.write_text("[[service]]\nname = 'x'\nvip = 'nope'\n")
        daemon.signal(signal.SIGHUP)
        failed = daemon.wait_for("reload.failed")
        assert "service[0].vip" in failed["first"]
        ipvsadm("-C")
        daemon.wait_for("reconcile.applied", ops=3)  # the old config is still in force
        assert "-A -t 192.0.2.100:80 -s rr" in saved()
    finally:
        assert daemon.stop() == 0
