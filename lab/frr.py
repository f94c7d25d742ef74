"""Debian's FRR in a network namespace: zebra, bgpd and (for BFD) bfdd, stopped by pid.

Each namespace gets a directory of its own for the config, the pid files, the
zserv socket and the vty sockets, owned by the frr user the daemons run as,
so several FRRs run side by side without touching /etc/frr or /run/frr.
``vtysh`` reaches one with ``--vty_socket DIR``. Used by the ECMP lab
(lab/ecmp_stand.py) and the netns tests (tests/netns/frr_lab.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from lab.netns import LabError, ns_argv

FRR = Path("/usr/lib/frr")
VTYSH = "/usr/bin/vtysh"


def have_frr() -> bool:
    return (FRR / "zebra").exists() and shutil.which("vtysh") is not None


class Frr:
    """The FRR daemons of one namespace."""

    def __init__(self, netns: str, workdir: Path, conf: str, daemons=("zebra", "bgpd")) -> None:
        self.netns, self.dir, self.daemons = netns, workdir, tuple(daemons)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "frr.conf").write_text(conf)
        shutil.chown(workdir, "frr", "frr")
        shutil.chown(workdir / "frr.conf", "frr", "frr")
        self.pids: list[int] = []

    def start(self) -> None:
        for daemon in self.daemons:
            argv = [
                str(FRR / daemon), "-d", "-u", "frr", "-g", "frr",
                "-f", str(self.dir / "frr.conf"),
                "-i", str(self.dir / f"{daemon}.pid"),
                "-z", str(self.dir / "zserv.api"),
                "--vty_socket", str(self.dir),
                "--log", f"file:{self.dir / daemon}.log",
            ]  # fmt: skip
            if daemon == "bgpd":
                argv += ["-p", "179"]
            proc = subprocess.run(ns_argv(self.netns, argv), capture_output=True, text=True)
            if proc.returncode != 0:
                detail = (proc.stderr or proc.stdout).strip().splitlines()
                raise LabError(f"{daemon} in {self.netns}: {detail[-1] if detail else 'failed'}")
            self.pids.append(int((self.dir / f"{daemon}.pid").read_text()))

    def stop(self) -> None:
        for pid in reversed(self.pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.pids = []

    def vtysh(self, *commands: str) -> str:
        """Run vtysh commands (``-c`` each, in order); their output."""
        argv = [VTYSH, "--vty_socket", str(self.dir)]
        for command in commands:
            argv += ["-c", command]
        return subprocess.run(
            ns_argv(self.netns, argv), capture_output=True, text=True, check=False
        ).stdout
