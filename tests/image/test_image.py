"""The container image: check-config and the daemon (memory backend) inside it, /healthz.

Runs on the host (make image-test) after scripts/build-image built the image;
the daemon has no [vrrp] table and the memory backend, so it may use the
host's network. The API listens on a port chosen here, which the image's
HEALTHCHECK must find through the config, not assume.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from pulsed import __version__

REPO = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("PULSED_IMAGE", f"localhost/pulsed:{__version__}")
PODMAN = ["podman", "--runtime", "runc"]
LIMITS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]


def _image_present() -> bool:
    if shutil.which("podman") is None:
        return False
    return subprocess.run([*PODMAN, "image", "exists", IMAGE]).returncode == 0


pytestmark = pytest.mark.skipif(
    not _image_present(), reason=f"podman or the image {IMAGE} missing: run make image"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def config_dir(tmp_path):
    port = free_port()
    (tmp_path / "pulsed.toml").write_text(
        f'[daemon]\nlog_format = "json"\nstate_dir = "/var/lib/pulsed"\n'
        f'[api]\nlisten = "127.0.0.1:{port}"\n'
        '[[service]]\nname = "web"\nvip = "192.0.2.100"\nport = 80\n'
        '[service.check]\ntype = "none"\n[[service.real]]\naddress = "10.0.0.2:80"\n'
    )
    tmp_path.chmod(0o755)
    return tmp_path, port


def podman(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    out = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {out.returncode}\n{out.stdout}{out.stderr}")
    return out


def test_image_keeps_its_healthcheck_and_pins():
    info = json.loads(podman("image", "inspect", IMAGE).stdout)[0]
    health = (info.get("Config") or {}).get("Healthcheck") or info.get("Healthcheck")
    assert health and health["Test"] == ["CMD", "pulsed-healthcheck"], info.get("Config")
    freeze = "import importlib.metadata as m\nfor d in m.distributions(): print(d.name, d.version)"
    frozen = podman("run", "--rm", *LIMITS, "--entrypoint", "/opt/pulsed/bin/python3", IMAGE,
                    "-c", freeze).stdout  # fmt: skip
    lock = (REPO / "requirements" / "runtime.txt").read_text().lower().replace("_", "-")
    for line in frozen.splitlines():
        name, version = line.lower().replace("_", "-").split()
        assert name == "pulsed" or f"{name}=={version}" in lock, f"{line} is not as pinned"


def test_check_config_in_the_image(config_dir):
    folder, _ = config_dir
    out = podman("run", "--rm", *LIMITS, "-v", f"{folder}:/etc/pulsed:ro", IMAGE,
                 "check-config", "/etc/pulsed/pulsed.toml")  # fmt: skip
    assert "valid (1 services, 1 real servers)" in out.stdout
    bad = folder / "bad.toml"
    bad.write_text("[daemon]\nresync_interval = 5\n")
    out = podman("run", "--rm", *LIMITS, "-v", f"{folder}:/etc/pulsed:ro", IMAGE,
                 "check-config", "/etc/pulsed/bad.toml", check=False)  # fmt: skip
    assert out.returncode == 2, out


def test_daemon_in_the_image_is_healthy_where_the_config_says(config_dir):
    folder, port = config_dir
    name = f"pulsed-smoke-{os.getpid()}"
    podman("run", "-d", "--name", name, "--network", "host", *LIMITS,
           "--cap-drop", "ALL", "--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW",
           "-v", f"{folder}:/etc/pulsed:ro", IMAGE,
           "run", "-c", "/etc/pulsed/pulsed.toml", "--backend", "memory")  # fmt: skip
    try:
        deadline, body = time.monotonic() + 60, None
        while time.monotonic() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    body = json.loads(r.read())
            except OSError:
                time.sleep(0.5)
        logs = podman("logs", name, check=False)
        assert body == {"status": "ok"}, logs.stdout + logs.stderr
        # The image's HEALTHCHECK command, run in the container: it finds the port
        # in the config (no port is fixed in the image).
        check = podman("exec", name, "pulsed-healthcheck")
        assert f"http://127.0.0.1:{port}/healthz" in check.stdout
        health = podman("healthcheck", "run", name, check=False)
        assert health.returncode == 0, health.stdout + health.stderr
    finally:
        podman("rm", "-f", "-t", "5", name, check=False)
