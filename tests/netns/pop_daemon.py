"""Run the real daemon (``pulsed run --backend memory``) as a subprocess, for the ops tests.

The test plays systemd: it owns the NOTIFY_SOCKET datagram socket, so
"the daemon is ready" and "the reload finished" are events it receives
(READY=1), not sleeps. Real servers are loopback sockets: a listening one
passes a tcp check, a bound but not listening one is refused.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

PULSED = [sys.executable, "-m", "pulsed.cli"]
TOKEN = "pop-test-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackServer:
    """A TCP port on 127.0.0.1 that accepts (listening) or refuses (bound, not listening)."""

    def __init__(self, up: bool = True) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        if up:
            self.sock.listen(128)

    def close(self) -> None:
        self.sock.close()


def config_text(
    state_dir: Path,
    port: int,
    token_file: Path,
    reals: list[int],
    *,
    extra_service: bool = False,
    weights: dict[int, int] | None = None,
) -> str:
    weights = weights or {}
    text = f"""
[daemon]
state_dir = "{state_dir}"
resync_interval = "1s"

[api]
listen = "127.0.0.1:{port}"
token_file = "{token_file}"
status_refresh = "1s"

[[service]]
name = "web"
vip = "192.0.2.10"
port = 80
[service.check]
type = "tcp"
interval = "200ms"
timeout = "150ms"
rise = 1
fall = 1
"""
    for real in reals:
        text += f'[[service.real]]\naddress = "127.0.0.1:{real}"\nweight = {weights.get(real, 2)}\n'
    if extra_service:
        text += '\n[[service]]\nname = "dns"\nvip = "192.0.2.11"\nport = 53\nprotocol = "udp"\n'
        text += '[service.check]\ntype = "none"\n[[service.real]]\naddress = "127.0.0.1:5353"\n'
    return text


class Pulsed:
    """One daemon process and the notify socket it reports to."""

    def __init__(self, workdir: Path, config: str, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.config_path = workdir / "pulsed.toml"
        self.config_path.write_text(config)
        self.notify_path = workdir / f"notify-{time.monotonic_ns()}.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.messages: list[str] = []
        self._inbox: queue.Queue[str] = queue.Queue()
        # Drain the socket all the time, as systemd does: a full queue would block the daemon.
        threading.Thread(target=self._drain, daemon=True).start()
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("WATCHDOG_")}
        self.env = {**inherited, "NOTIFY_SOCKET": str(self.notify_path), **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> Pulsed:
        self._spawn()
        self.wait_message(lambda m: "READY=1" in m)
        return self

    def start_without_notify(self) -> Pulsed:
        """For a daemon with no NOTIFY_SOCKET: wait until /healthz answers."""
        self._spawn()
        deadline = time.monotonic() + 15
        while self.request_or_none("GET", "/healthz") is None:
            assert time.monotonic() < deadline, "the daemon never answered /healthz"
            assert self.proc is not None and self.proc.poll() is None, "the daemon exited"
            time.sleep(0.05)
        return self

    def _spawn(self) -> None:
        self.log = open(self.workdir / "pulsed.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*PULSED, "run", "-c", str(self.config_path), "--backend", "memory"],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self._listen_port()}"

    def request_or_none(self, method: str, path: str):
        try:
            return self.request(method, path)
        except OSError:
            return None

    def _listen_port(self) -> int:
        for line in self.config_path.read_text().splitlines():
            if line.startswith("listen"):
                return int(line.split(":")[-1].strip('"'))
        raise AssertionError("no listen line in the test config")

    def _drain(self) -> None:
        while True:
            try:
                raw = self.notify.recv(4096)
            except OSError:
                return
            if not raw:  # shut down by close()
                return
            msg = raw.decode()
            self.messages.append(msg)
            self._inbox.put(msg)

    def wait_message(self, predicate: Callable[[str], bool], timeout: float = 15.0) -> str:
        """The next notify message that matches (older ones were consumed by earlier waits)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self._inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no matching notify message; got {self.messages}") from None
            if predicate(msg):
                return msg

    def reload(self) -> str:
        """SIGHUP, then wait for RELOADING=1 and the READY=1 that ends the reload."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)
        self.wait_message(lambda m: "RELOADING=1" in m)
        return self.wait_message(lambda m: "READY=1" in m)

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        self.log.close()
        return code

    def close(self) -> None:
        self.stop()
        self.notify.shutdown(socket.SHUT_RDWR)
        self.notify.close()
        self.notify_path.unlink(missing_ok=True)

    # HTTP ---------------------------------------------------------------------

    def request(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def json(self, method: str, path: str, body: Any = None, token: str | None = None):
        status, _, raw = self.request(method, path, body, token)
        return status, json.loads(raw)

    def status(self) -> dict[str, Any]:
        code, doc = self.json("GET", "/status")
        assert code == 200
        return doc

    def metrics(self) -> str:
        code, _, raw = self.request("GET", "/metrics")
        assert code == 200
        return raw.decode()

    def wait_status(self, predicate: Callable[[dict], bool], timeout: float = 10.0) -> dict:
        """Poll /status until ``predicate`` holds: the state is only visible through the API."""
        deadline = time.monotonic() + timeout
        while True:
            doc = self.status()
            if predicate(doc):
                return doc
            if time.monotonic() > deadline:
                raise AssertionError(f"/status never matched; last: {json.dumps(doc)[:2000]}")
            time.sleep(0.05)


def real_of(doc: dict, port: int) -> dict:
    for svc in doc["services"]:
        for real in svc["reals"]:
            if real["port"] == port:
                return real
    raise AssertionError(f"no real server on port {port} in /status")
