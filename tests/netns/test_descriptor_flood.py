"""Issue 12's flood, on the real daemon: 1,100 idle API connections with the
descriptor limit systemd gives a unit without LimitNOFILE (1,024).

Before: the connections took every descriptor, every probe failed with "too
many open files", and both real servers were marked down at weight 0. Now
no real server changes state; the probes that could not run are local
errors, counted and shown in /status and /metrics.
"""

from __future__ import annotations

import resource
import socket
import subprocess
import time

import pytest

from tests.netns.pop_daemon import PULSED, TOKEN, Pulsed, config_text, free_port, real_of

FLOOD = 1100
NOFILE = 1024


class LimitedPulsed(Pulsed):
    """The daemon with RLIMIT_NOFILE at 1,024, soft and hard (it cannot raise it)."""

    def _spawn(self) -> None:
        self.log = open(self.workdir / "pulsed.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*PULSED, "run", "-c", str(self.config_path), "--backend", "memory"],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE)),
        )
        self.url = f"http://127.0.0.1:{self._listen_port()}"

    def wait_log(self, needle: str, timeout: float = 60.0) -> None:
        """Until the daemon's log has a line with ``needle`` (the log is the only
        thing that still speaks while the API is flooded)."""
        path = self.workdir / "pulsed.log"
        deadline = time.monotonic() + timeout
        while needle not in path.read_text(errors="replace"):
            assert time.monotonic() < deadline, f"no {needle!r} in the daemon's log"
            assert self.proc is not None and self.proc.poll() is None, "the daemon exited"
            time.sleep(0.05)


@pytest.fixture
def daemon(tmp_path, servers):
    up, down = servers
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    config = config_text(tmp_path / "state", free_port(), token_file, [up.port, down.port])
    daemon = LimitedPulsed(tmp_path, config)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.close()


def test_an_api_flood_changes_no_real_server(daemon, servers):
    up, down = servers
    before = daemon.wait_status(
        lambda d: (
            real_of(d, up.port)["health"] == "up" and real_of(d, down.port)["health"] == "down"
        )
    )
    transitions = {p: real_of(before, p)["last_transition"] for p in (up.port, down.port)}

    host, port = daemon.url.removeprefix("http://").split(":")
    flood: list[socket.socket] = []
    try:
        for _ in range(FLOOD):
            flood.append(socket.create_connection((host, int(port))))
        # The daemon accepts until its descriptors run out; its probes then
        # cannot open a socket. Hold the flood until that has happened.
        daemon.wait_log('"probe.local_error"')
    finally:
        for conn in flood:
            conn.close()

    after = daemon.wait_status(lambda d: d["probes"]["local_errors"] > 0)
    for p, state in ((up.port, "up"), (down.port, "down")):
        real = real_of(after, p)
        assert real["health"] == state
        assert real["last_transition"] == transitions[p]  # no flip, not even a brief one
    assert real_of(after, up.port)["effective_weight"] == 2
    assert after["probes"]["local_errors_by_reason"].keys() == {"emfile"}
    assert sum(real_of(after, p)["local_errors"] for p in (up.port, down.port)) >= 1
    metrics = daemon.metrics()
    assert 'pulsed_probe_local_errors_total{reason="emfile"} 0' not in metrics
    assert "pulsed_real_transitions_total" in metrics
