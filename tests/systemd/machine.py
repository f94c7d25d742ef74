"""A Debian system booted with systemd as PID 1 (systemd-nspawn --boot), driven from outside.

The tree comes from scripts/systemd-tree (mmdebstrap: systemd, iproute2, the
Python pulsed's package needs). It boots in its own network namespace, linked to
ours by a veth pair (ve-pulsedsd here, host0 inside), so its VRRP adverts and VIPs
never reach a real network. Commands run inside through nsenter into the
container's PID 1, so no machined or D-Bus is needed on this side.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

NAME = "pulsedsd"
HOST_IF = f"ve-{NAME}"
HOST_ADDR, GUEST_ADDR = "10.77.0.1", "10.77.0.2"


class Machine:
    def __init__(self, root: Path, log: Path) -> None:
        self.root, self.log = root, log
        self.proc: subprocess.Popen | None = None
        self.leader = 0

    @classmethod
    def unpack(cls, tree: Path, work: Path) -> Machine:
        root = work / "root"
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        # tar(1): several times faster than tarfile under the VM's emulated CPU.
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-xf", str(tree)], check=True)
        (root / "etc" / "hostname").write_text(NAME + "\n")
        return cls(root, work / "nspawn.log")

    def boot(self, timeout: float = 180) -> None:
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "--boot", "-D", str(self.root), "-M", NAME, "--register=no",
             "--keep-unit", "--network-veth", "--private-users=no", "--console=read-only"],
            stdin=subprocess.DEVNULL, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited: {self.log.read_text()[-2000:]}")
            self.leader = self.leader or _first_child(self.proc.pid)
            if self.leader:
                state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
                if state in ("running", "degraded"):
                    self._link()
                    return
            time.sleep(1)
        raise RuntimeError(f"the container did not boot in {timeout} s: {self.log.read_text()}")

    def _link(self) -> None:
        subprocess.run(["ip", "addr", "add", f"{HOST_ADDR}/24", "dev", HOST_IF], check=True)
        subprocess.run(["ip", "link", "set", HOST_IF, "up"], check=True)
        self.run("ip", "addr", "add", f"{GUEST_ADDR}/24", "dev", "host0")
        self.run("ip", "link", "set", "host0", "up")

    def run(self, *argv: str, check: bool = True, timeout: float = 120, input: str | None = None):
        """A command inside the container (all its namespaces), as root."""
        out = subprocess.run(
            ["nsenter", "-t", str(self.leader), "-a", "--", *argv],
            capture_output=True, text=True, timeout=timeout, input=input,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "SYSTEMD_PAGER": ""},
        )  # fmt: skip
        if check and out.returncode != 0:
            command = " ".join(argv)
            raise AssertionError(f"{command}: exit {out.returncode}\n{out.stdout}{out.stderr}")
        return out

    def show(self, unit: str, *props: str) -> dict[str, str]:
        text = self.run("systemctl", "show", unit, "-p", ",".join(props)).stdout
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def journal(self, unit: str, *extra: str) -> str:
        return self.run("journalctl", "--no-pager", "-o", "cat", "-u", unit, *extra).stdout

    def poweroff(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None and self.leader:
            self.run("systemctl", "poweroff", check=False)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _first_child(pid: int) -> int:
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        if children:
            return int(children[0])
    return 0


def tools_missing() -> str | None:
    for tool in ("systemd-nspawn", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install systemd-container)"
    if os.geteuid() != 0:
        return "needs root"
    return None
