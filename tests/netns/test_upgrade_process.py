"""A live upgrade of the real daemon (memory backend, no VRRP): the process side.

The test plays systemd with a notify socket that records each message's
sender (SO_PASSCRED), so it can tell which process spoke and when:
the new process must stay silent until the old one said MAINPID=<new>.
A client polls /healthz during the whole upgrade and must never be refused.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.netns.pop_daemon import PULSED, TOKEN, LoopbackServer, config_text, free_port

REPO = Path(__file__).resolve().parents[2]


class FakeSystemd:
    """A NOTIFY_SOCKET that keeps (sender pid, message, time) for every datagram."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.messages: list[tuple[int, str, float]] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        size = socket.CMSG_SPACE(struct.calcsize("3i"))
        while True:
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, size)
            except OSError:
                return
            if not data:
                return
            pid = 0
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", payload[: struct.calcsize("3i")])[0]
            self.messages.append((pid, data.decode(), time.monotonic()))

    def wait(self, pred, timeout: float = 20.0) -> tuple[int, str, float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.messages:
                if pred(m):
                    return m
            time.sleep(0.02)
        raise AssertionError(f"no matching notify message; got {self.messages}")

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class Poller:
    """GET /healthz in a loop; counts answers and refused connections."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ok = 0
        self.refused = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=5) as resp:
                    resp.read()
                self.ok += 1
            except ConnectionRefusedError:
                self.refused += 1
            except OSError as exc:
                self.errors.append(repr(exc))
            time.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def stand(tmp_path):
    real = LoopbackServer(up=True)
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    port = free_port()
    config = tmp_path / "pulsed.toml"
    config.write_text(config_text(tmp_path / "state", port, token, [real.port]))
    systemd = FakeSystemd(tmp_path / "notify.sock")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHDOG_")}
    env.update(NOTIFY_SOCKET=str(systemd.path), WATCHDOG_USEC="400000", PYTHONPATH=str(REPO))
    log = open(tmp_path / "pulsed.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [*PULSED, "run", "-c", str(config), "--backend", "memory"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    pids = [proc.pid]
    stand = {
        "proc": proc,
        "config": config,
        "env": env,
        "url": f"http://127.0.0.1:{port}",
        "systemd": systemd,
        "state": tmp_path / "state",
        "log": tmp_path / "pulsed.log",
        "pids": pids,
    }
    try:
        systemd.wait(lambda m: m[0] == proc.pid and "READY=1" in m[1])
        yield stand
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait(10)
        systemd.close()
        log.close()
        real.close()


def _upgrade(stand) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PULSED, "upgrade", "-c", str(stand["config"])],
        env=stand["env"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_upgrade_hands_over_without_refusing_a_connection(stand):
    proc, systemd = stand["proc"], stand["systemd"]
    old = proc.pid
    poller = Poller(stand["url"])
    time.sleep(0.3)
    result = _upgrade(stand)
    assert result.returncode == 0, result.stderr + stand["log"].read_text()[-3000:]
    assert proc.wait(20) == 0  # the old process left on its own
    pid, msg, handed = systemd.wait(lambda m: "MAINPID=" in m[1])
    new = int(msg.split("MAINPID=")[1].split()[0])
    stand["pids"].append(new)
    assert pid == old and "READY=1" in msg.split("\n")
    assert f"pid {new}" in result.stdout
    time.sleep(1.0)  # the new process answers alone now
    poller.stop()
    assert _alive(new)
    assert poller.refused == 0, poller.errors
    assert poller.errors == []
    assert poller.ok > 20
    # The new process said nothing to systemd before the old one named it main pid; the old
    # one said nothing after (no STOPPING=1: the service is not stopping).
    assert not [m for m in systemd.messages if m[0] == new and m[2] < handed]
    assert not [m for m in systemd.messages if m[0] == old and m[2] > handed]
    # The watchdog is answered by the new process.
    systemd.wait(lambda m: m[0] == new and m[1] == "WATCHDOG=1")
    assert (stand["state"] / "pulsed.pid").read_text().strip() == str(new)
    assert not (stand["state"] / "handoff.json").exists()
    # A second upgrade works from the new process as well.
    result = _upgrade(stand)
    assert result.returncode == 0, result.stderr
    third = int(result.stdout.split("pid ")[-1])
    stand["pids"].append(third)
    assert not _alive(new) and _alive(third)
    # And a stop of the upgraded process is a normal stop.
    os.kill(third, signal.SIGTERM)
    systemd.wait(lambda m: m[0] == third and "STOPPING=1" in m[1])


def test_failed_new_process_leaves_the_old_one_running(stand):
    proc, systemd = stand["proc"], stand["systemd"]
    good = stand["config"].read_text()
    stand["config"].write_text(good + "\n[bogus\n")  # the new process cannot start
    # `pulsed upgrade` checks the config first, as `nginx -t` would.
    assert _upgrade(stand).returncode == 2
    poller = Poller(stand["url"])
    proc.send_signal(signal.SIGUSR2)  # the signal does not check: the new process fails
    deadline = time.monotonic() + 30
    while '"upgrade.failed"' not in stand["log"].read_text():
        assert time.monotonic() < deadline, stand["log"].read_text()[-3000:]
        time.sleep(0.05)
    time.sleep(0.3)
    poller.stop()
    assert proc.poll() is None
    assert poller.refused == 0 and poller.errors == []
    assert poller.ok > 5
    assert (stand["state"] / "pulsed.pid").read_text().strip() == str(proc.pid)
    assert not (stand["state"] / "handoff.json").exists()
    assert not [m for m in systemd.messages if "MAINPID" in m[1]]
    failed = [line for line in stand["log"].read_text().splitlines() if "upgrade.failed" in line]
    assert len(failed) == 1 and "config is not valid" in failed[0]
    # It still upgrades once the config is right again.
    stand["config"].write_text(good)
    result = _upgrade(stand)
    assert result.returncode == 0, result.stderr
    stand["pids"].append(int(result.stdout.split("pid ")[-1]))


def test_sigusr2_upgrades_too(stand):
    proc, systemd = stand["proc"], stand["systemd"]
    proc.send_signal(signal.SIGUSR2)
    _, msg, _ = systemd.wait(lambda m: "MAINPID=" in m[1])
    stand["pids"].append(int(msg.split("MAINPID=")[1].split()[0]))
    assert proc.wait(20) == 0


def test_upgrade_without_a_daemon_says_so(tmp_path):
    config = tmp_path / "pulsed.toml"
    config.write_text(f'service = []\n[daemon]\nstate_dir = "{tmp_path}/state"\n')
    result = subprocess.run(
        [*PULSED, "upgrade", "-c", str(config)], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "no running pulsed" in result.stderr, result.stderr
