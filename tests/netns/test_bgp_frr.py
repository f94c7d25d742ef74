"""Route health injection against the real FRR from Debian, in namespaces.

An upstream router and three directors (tests/netns/frr_lab.py), each
director running pulsed (``--backend memory``: the route announcement is
what is tested here) next to its own FRR. Health is an exec check on a file
per director, so a test fails a director's service by removing the file.
Times are printed, never asserted (docs/benchmarks.md holds figures).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.netns.frr_lab import Lab, have_frr, sh
from tests.support.daemon import DaemonProcess

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces"),
    pytest.mark.skipif(not have_frr(), reason="needs FRR (apt install frr)"),
]

VIP = "10.97.0.10"
TOKEN = "bgp-test-token"
REPO = Path(__file__).resolve().parents[2]
UPGRADE = [sys.executable, "-m", "pulsed.cli", "upgrade"]


def director_config(tmp: Path, lab: Lab, i: int, **bgp: str) -> Path:
    ns = lab.directors[i - 1]
    base = tmp / f"pulsed-{i}"
    (base / "state").mkdir(parents=True, exist_ok=True)
    token = base / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    (base / "up").touch()
    settings = {
        "vty_socket": f'"{lab.frr[ns].dir}"',
        "poll_interval": '"0.5s"',
        **bgp,
    }
    lines = "\n".join(f"{k} = {v}" for k, v in settings.items())
    path = base / "pulsed.toml"
    path.write_text(
        f"""
[daemon]
state_dir = "{base / "state"}"
[api]
listen = "127.0.0.1:9480"
token_file = "{token}"
[bgp]
vips = ["{VIP}"]
{lines}

[[service]]
name = "web"
vip = "{VIP}"
port = 80
scheduler = "mh"
[service.check]
type = "exec"
command = ["/usr/bin/test", "-e", "{base / "up"}"]
interval = "0.2s"
timeout = "200ms"
rise = 1
fall = 1
[[service.real]]
address = "10.96.0.1:80"
[[service.real]]
address = "10.96.0.2:80"
"""
    )
    return path


def api(ns: str, method: str, path: str) -> dict:
    argv = ["ip", "netns", "exec", ns, "curl", "-s", "-X", method,
            "-H", f"Authorization: Bearer {TOKEN}", f"http://127.0.0.1:9480{path}"]  # fmt: skip
    return json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)


def agreed_status(namespaces: list[str], timeout: float = 30.0) -> list[dict]:
    """Every director's /status once their pool digests agree (and are set)."""
    deadline = time.monotonic() + timeout
    while True:
        docs = [api(ns, "GET", "/status") for ns in namespaces]
        digests = {d["services"][0]["pool_digest"] for d in docs}
        if len(digests) == 1 and None not in digests:
            return docs
        assert time.monotonic() < deadline, f"pool digests still differ: {digests}"
        time.sleep(0.2)  # polling a condition the daemons expose no event for


@pytest.fixture
def lab():
    # Not under pytest's tmp_path: FRR runs as the frr user, which cannot enter it.
    workdir = Path(tempfile.mkdtemp(prefix="pulsed-frr-"))
    workdir.chmod(0o755)
    lab = Lab(workdir, 3)
    try:
        lab.build()
        yield lab
    finally:
        lab.teardown()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def directors(lab, tmp_path):
    procs: list[DaemonProcess] = []

    def start(i: int, **bgp: str) -> DaemonProcess:
        config = director_config(tmp_path, lab, i, **bgp)
        proc = DaemonProcess(config, "--backend", "memory", netns=lab.directors[i - 1])
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.proc.poll() is None:
            proc.proc.send_signal(signal.SIGTERM)
            try:
                proc.proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.proc.kill()
                proc.proc.wait()


def test_ecmp_announce_withdraw_crash_drain(lab, directors, tmp_path):
    hops = {lab.address(i) for i in (1, 2, 3)}
    pulsed = {i: directors(i) for i in (1, 2, 3)}
    took = lab.wait_nexthops(VIP, hops, timeout=60)
    print(f"\nannounced by 3 directors, ECMP upstream after {took:.2f}s")

    # Its service fails on director 1 (the check's file goes): withdrawn there only.
    (tmp_path / "pulsed-1" / "up").unlink()
    took = lab.wait_nexthops(VIP, hops - {lab.address(1)})
    print(f"service failed on d1: withdrawn upstream after {took:.3f}s")
    status = api(lab.directors[0], "GET", "/status")["bgp"]
    assert status["vips"][0]["wanted"] is False
    assert "no healthy real server" in status["vips"][0]["reason"]
    (tmp_path / "pulsed-1" / "up").touch()
    lab.wait_nexthops(VIP, hops)

    # The status document: the session and the digest agree across directors. The
    # route comes back with d1's first healthy server (min_healthy 1); its second one
    # may come up a check later, so the digests are awaited, not sampled once.
    docs = agreed_status(lab.directors)
    assert all(d["bgp"]["routing_daemon"]["peers"][0]["state"] == "Established" for d in docs)

    # Drain director 2: withdrawn, IPVS keeps serving; undrain announces again.
    result = api(lab.directors[1], "POST", "/api/v1/director/drain")
    assert result["drained"] is True
    took = lab.wait_nexthops(VIP, hops - {lab.address(2)})
    print(f"d2 drained: withdrawn upstream after {took:.3f}s (idle: {result['idle']})")
    api(lab.directors[1], "POST", "/api/v1/director/undrain")
    lab.wait_nexthops(VIP, hops)

    # kill -9 of director 3's pulsed: the kernel drops its interface, FRR withdraws.
    start = time.monotonic()
    pulsed[3].proc.send_signal(signal.SIGKILL)
    pulsed[3].proc.wait()
    lab.wait_nexthops(VIP, hops - {lab.address(3)})
    print(f"kill -9 of d3's pulsed: withdrawn upstream after {time.monotonic() - start:.3f}s")
    # The VIP stays local on d3 (IPVS serves what still arrives).
    assert "local " + VIP in sh("ip", "-n", lab.directors[2], "route", "show", "table", "local")

    # A graceful stop withdraws too.
    start = time.monotonic()
    pulsed[1].proc.send_signal(signal.SIGTERM)
    lab.wait_nexthops(VIP, {lab.address(2)})
    print(f"graceful stop of d1: withdrawn upstream after {time.monotonic() - start:.3f}s")
    assert pulsed[1].proc.wait(15) == 0


def test_routing_daemon_missing_or_stopped(lab, directors):
    ns = lab.directors[0]
    lab.frr[ns].stop()  # FRR not running on this director
    proc = directors(1)
    event = proc.wait_for("bgp.routing_daemon", timeout=30)
    print("\n" + event["error"])
    assert "FRR is not running" in event["error"]
    status = api(ns, "GET", "/status")
    assert status["bgp"]["routing_daemon"]["ok"] is False
    assert status["services"][0]["in_kernel"] is True  # serving goes on
    assert proc.proc.poll() is None


def test_vtysh_missing(lab, directors):
    proc = directors(1, vtysh='"/nonexistent/vtysh"')
    event = proc.wait_for("bgp.routing_daemon", timeout=30)
    print("\n" + event["error"])
    assert "not found" in event["error"] and "apt install frr" in event["error"]
    assert proc.proc.poll() is None


def test_live_upgrade_keeps_the_route(lab, directors, tmp_path):
    """The successor inherits the announce interface's descriptor: the interface (same
    ifindex) and the upstream's route stay through the whole upgrade."""
    ns, hop = lab.directors[0], lab.address(1)
    old = directors(1)
    lab.wait_nexthops(VIP, {hop}, timeout=60)
    link_before = sh("ip", "-n", ns, "-o", "link", "show", "pulsed-bgp").split(":")[0]
    # Every route change at the upstream router during the upgrade.
    monitor = subprocess.Popen(
        ["ip", "-n", lab.upstream, "monitor", "route"], stdout=subprocess.PIPE, text=True
    )
    state = tmp_path / "pulsed-1" / "state"
    try:
        result = subprocess.run(
            [*UPGRADE, "-c", str(tmp_path / "pulsed-1" / "pulsed.toml")],
            capture_output=True, text=True, timeout=90, cwd=REPO,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr + old.log()
        assert old.proc.wait(30) == 0
        new = int((state / "pulsed.pid").read_text())
        try:
            assert new != old.proc.pid
            # The new process runs its announcer (a full poll of FRR) and keeps the VIP.
            doc = api(ns, "GET", "/status")
            assert doc["bgp"]["vips"][0]["wanted"] is True
            assert doc["bgp"]["vips"][0]["announced"] is True
            link_after = sh("ip", "-n", ns, "-o", "link", "show", "pulsed-bgp").split(":")[0]
            assert link_after == link_before
            assert lab.nexthops(VIP) == {hop}
        finally:
            os.kill(new, signal.SIGTERM)
        # The successor's own stop withdraws as any stop does.
        lab.wait_nexthops(VIP, set())
    finally:
        monitor.terminate()
        changes = monitor.communicate(timeout=10)[0]
    # Nothing was withdrawn before the successor's stop: the first deletion comes last.
    lines = [line for line in changes.splitlines() if VIP in line]
    assert lines and lines[-1].startswith("Deleted"), changes
    assert not [line for line in lines[:-1] if line.startswith("Deleted")], changes


def test_a_drain_survives_a_restart(lab, directors):
    ns, hop = lab.directors[0], lab.address(1)
    first = directors(1)
    lab.wait_nexthops(VIP, {hop}, timeout=60)
    assert api(ns, "POST", "/api/v1/director/drain")["drained"] is True
    lab.wait_nexthops(VIP, set())
    assert first.stop() == 0
    second = directors(1)
    second.wait_for("bgp.starting_drained", timeout=60)
    doc = api(ns, "GET", "/status")["bgp"]
    assert doc["drained"] is True
    assert doc["vips"][0]["wanted"] is False and doc["vips"][0]["announced"] is False
    assert lab.nexthops(VIP) == set()
    api(ns, "POST", "/api/v1/director/undrain")
    lab.wait_nexthops(VIP, {hop})


VIP6 = "fd97::10"


def test_ipv6_vip_is_announced_and_withdrawn(lab, directors, tmp_path):
    """An IPv6 VIP is a /128 on the same interface; FRR carries it over the IPv4
    session with the link's link-local next hop, and a crash withdraws it too."""
    config = director_config(tmp_path, lab, 1)
    text = config.read_text().replace(f'vips = ["{VIP}"]', f'vips = ["{VIP}", "{VIP6}"]')
    up = tmp_path / "pulsed-1" / "up"
    text += f"""
[[service]]
name = "web6"
vip = "{VIP6}"
port = 80
scheduler = "mh"
[service.check]
type = "exec"
command = ["/usr/bin/test", "-e", "{up}"]
interval = "0.2s"
timeout = "200ms"
rise = 1
fall = 1
[[service.real]]
address = "[fd96::1]:80"
"""
    config.write_text(text)
    proc = DaemonProcess(config, "--backend", "memory", netns=lab.directors[0])
    try:
        lab.wait_nexthops(VIP6, {"pbgpu1"}, timeout=60)
        lab.wait_nexthops(VIP, {lab.address(1)})
        doc = api(lab.directors[0], "GET", "/status")["bgp"]
        assert {v["vip"]: v["announced"] for v in doc["vips"]} == {VIP: True, VIP6: True}
        proc.proc.send_signal(signal.SIGKILL)
        proc.proc.wait()
        lab.wait_nexthops(VIP6, set())
        lab.wait_nexthops(VIP, set())
    finally:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait()
