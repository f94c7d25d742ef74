"""The lab's stand: what runs, how it starts and stops, and the clean-up.

``with Stand("nat") as stand:`` builds the namespaces, starts the two real
servers and pulsed on the router, and waits until pulsed has programmed the
IPVS table (and holds the VIP). It then lends the steps (lab/steps.py) what
they need: load generators on the client, a second router, the admin
command line, and ways to wait on the kernel that fail at once if a router's
pulsed dies. Leaving the block, even on Ctrl-C or halfway through a failure,
stops everything it started and removes every namespace and /run/pulsed-lab.

pulsed is used only through its command line and observed only through the
kernel (the IPVS table, the VIP).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lab import router_config
from lab.loadgen import LoadGen, LoadThread, Outcome, Summary
from lab.netns import LabError, run
from lab.processes import Processes
from lab.report import Reporter, RunningLoads, spread_text, weights_text
from lab.topology import CLIENT, ROUTERS, SERVERS, VIP, Topology, teardown
from lab.watch import AddressWatcher, TableWatcher, Weights, has_address

REPO = Path(__file__).resolve().parent.parent
RUNTIME = Path("/run/pulsed-lab")
SERVICE = f"{VIP}:80"
SERVER_NAMES = {"plab-rs1": "rs1", "plab-rs2": "rs2"}  # namespace -> the name it answers with
MASTER, BACKUP = ROUTERS


def ipvs_available() -> bool:
    """Whether this kernel can do IPVS (loading the module if needed)."""
    if os.path.exists("/proc/net/ip_vs"):
        return True
    subprocess.run(["modprobe", "ip_vs"], capture_output=True, check=False)
    return os.path.exists("/proc/net/ip_vs")


class Stand:
    """One lab's namespaces and processes: ``with Stand("nat") as stand: ...``."""

    def __init__(
        self,
        mode: str = "nat",
        reporter: Reporter | None = None,
        rate: float = 100.0,
        concurrency: int = 8,
        pulsed: str | None = None,
    ) -> None:
        self.topo = Topology(mode)
        self.mode = mode
        self.say = reporter or Reporter()
        self.rate = rate
        self.concurrency = concurrency
        self.pulsed = pulsed or str(Path(sys.executable).with_name("pulsed"))
        self.source_config = REPO / "etc" / ("lab.toml" if mode == "nat" else "lab-dr.toml")
        self.config = RUNTIME / "router.toml"
        self.servers = {SERVER_NAMES[ns]: f"{self.topo.server_address(ns)}:80" for ns in SERVERS}
        # What the router is configured with now (the reload step changes one).
        self.weights = router_config.configured_weights(self.source_config.read_text())
        self.processes = Processes(RUNTIME)
        self.running = RunningLoads(self.say, self.spread_text)
        self.watchers: list[TableWatcher | AddressWatcher] = []
        self.table: TableWatcher | None = None  # the master router's IPVS table
        # pulsed builds without VRRP or the admin API (as during development) still run
        # the steps they can: the lab then holds the VIP itself and says what it skipped.
        self.vrrp = importlib.util.find_spec("pulsed.ha.node") is not None
        self.admin_cli = importlib.util.find_spec("pulsed.admin_cli") is not None

    # Set-up and tear-down ---------------------------------------------------

    def __enter__(self) -> Stand:
        try:
            self.start()
        except BaseException as exc:
            if isinstance(exc, LabError):
                self.show_logs()
            self.close()
            raise
        return self

    def __exit__(self, kind: type | None, *exc: object) -> None:
        if kind is not None and issubclass(kind, LabError):
            self.show_logs()
        self.close()

    def show_logs(self, lines: int = 12) -> None:
        """The end of each pulsed log, so a failure can be understood after clean-up."""
        for log in sorted(RUNTIME.glob("*.log")):
            with contextlib.suppress(OSError):
                tail = log.read_text(errors="replace").rstrip().splitlines()[-lines:]
                self.say.info(f"last lines of {log.name}:")
                for line in tail:
                    self.say.info(f"  {line[:400]}")

    def start(self) -> None:
        left = teardown()
        if left:
            self.say.info(f"removed leftovers of an earlier run: {' '.join(left)}")
        shutil.rmtree(RUNTIME, ignore_errors=True)
        RUNTIME.mkdir(parents=True)
        # The admin API's bearer token, readable by root only from the start.
        fd = os.open(RUNTIME / "api-token", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as token:
            token.write(secrets.token_hex(16) + "\n")
        t0 = time.monotonic()
        self.topo.build()
        self.say.info(
            f"namespaces: plab-client, plab-router, plab-router2, plab-rs1, plab-rs2"
            f" (+ plab-switch with the bridges) built in {time.monotonic() - t0:.1f}s"
        )
        for ns in SERVERS:
            self.start_server(ns)
        self.say.info(
            "real servers: " + ", ".join(f"{name} on {addr}" for name, addr in self.servers.items())
        )
        text = self.source_config.read_text()
        if not self.vrrp:
            # Without VRRP the lab puts the VIP on the router itself.
            text = router_config.without_vrrp(text)
        self.config.write_text(text)
        if not self.vrrp:
            self.say.info("this pulsed has no VRRP yet: the lab puts the VIP on plab-router itself")
            self.topo.static_vips(MASTER)
        self.table = self.watch_table(MASTER)
        t0 = time.monotonic()
        self.start_pulsed(MASTER, self.config)
        self.say.info(
            f"pulsed: ip netns exec plab-router {self._short(self.pulsed)} run -c {self.config}"
            f" (a copy of {self.source_config.relative_to(REPO)})"
        )
        self.wait_table(
            self.table,
            self.fully_programmed,
            timeout=90,
            what="pulsed to program both real servers at full weight",
            router=MASTER,
        )
        if self.vrrp:
            self.wait_vip(MASTER, timeout=30)
        self.say.info(
            f"router ready in {time.monotonic() - t0:.1f}s: IPVS table {self.weights_text()},"
            f" VIP {VIP} on plab-router"
        )

    def close(self) -> None:
        self.running.stop_all()
        for watcher in self.watchers:
            with contextlib.suppress(Exception):
                watcher.close()
        self.watchers.clear()
        self.processes.stop_all()
        teardown()
        shutil.rmtree(RUNTIME, ignore_errors=True)

    def _short(self, path: str) -> str:
        with contextlib.suppress(ValueError):
            return str(Path(path).relative_to(REPO))
        return path

    # What runs --------------------------------------------------------------

    def start_server(self, ns: str) -> None:
        """Start the real server of namespace ``ns`` and wait until it listens."""
        name = SERVER_NAMES[ns]
        proc = self.processes.start(
            name, ns, [sys.executable, str(REPO / "lab" / "realserver.py"), "--name", name]
        )
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().strip()
        if line != "ready":
            raise LabError(f"real server {name} did not start (said {line!r})")

    def server_namespace(self, name: str) -> str:
        return next(ns for ns, n in SERVER_NAMES.items() if n == name)

    def start_pulsed(self, router: str, config: Path) -> subprocess.Popen:
        return self.processes.start(
            router, router, [self.pulsed, "run", "-c", str(config)], log=True
        )

    def kill(self, name: str, sig: int) -> None:
        """Stop a real server or a router with ``sig`` (a step's failure, not the clean-up)."""
        self.processes.stop(name, sig)

    def admin(self, *args: str) -> str:
        """``pulsed ARGS -c CONFIG`` on the master router; its output, or LabError."""
        proc = run([self.pulsed, *args, "-c", str(self.config)], ns=MASTER, check=False)
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise LabError(f"pulsed {' '.join(args)} failed: {detail[-1] if detail else ''}")
        return proc.stdout

    def watch_table(self, router: str) -> TableWatcher:
        """Follow the lab service in ``router``'s IPVS table until the stand closes."""
        table = TableWatcher(router, SERVICE)
        self.watchers.append(table)
        return table

    def watch_vip(self, router: str) -> AddressWatcher:
        """Follow the VIP on ``router``'s interfaces until the stand closes."""
        vip = AddressWatcher(router, VIP)
        self.watchers.append(vip)
        return vip

    # Waiting on the kernel --------------------------------------------------

    def fully_programmed(self, table: Weights) -> bool:
        """Whether an IPVS table has every real server at its configured weight."""
        return all(table.get(a) == self.weights[a] for a in self.servers.values())

    def wait_table(
        self,
        table: TableWatcher,
        predicate: Callable[[Weights], bool],
        timeout: float,
        what: str,
        router: str,
    ) -> float:
        """TableWatcher.wait_for, failing at once (with its log) if the router's pulsed exits."""
        deadline = time.monotonic() + timeout
        while True:
            self.processes.check_alive(router)
            try:
                return table.wait_for(
                    predicate, min(1.0, max(deadline - time.monotonic(), 0)), what
                )
            except LabError:
                if time.monotonic() >= deadline:
                    raise LabError(
                        f"timed out after {timeout:.0f}s waiting for {what}"
                        f" (IPVS table: {table.current or 'no service'})"
                    ) from None

    def wait_vip(self, router: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not has_address(router, VIP):
            self.processes.check_alive(router)
            if time.monotonic() > deadline:
                raise LabError(f"{router} did not take the VIP {VIP} within {timeout:.0f}s")
            time.sleep(0.05)

    def hold(self, seconds: float) -> None:
        """Let time pass (the load runs on), failing early if a router's pulsed died."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(0.2, left))
            self.processes.check_alive(*self.processes.running.keys() & set(ROUTERS))

    # Load -------------------------------------------------------------------

    def load(
        self,
        rate: float | None = None,
        keepalive: bool = False,
        concurrency: int | None = None,
        flat_out: bool = False,
        quiet: bool = False,
    ) -> LoadThread:
        """Start the client's load generator: the lab's rate unless told otherwise."""
        gen = LoadGen(
            VIP,
            80,
            concurrency=concurrency or (1 if keepalive else self.concurrency),
            rate=None if flat_out else (rate or self.rate),
            keepalive=keepalive,
        )
        return self.running.start(LoadThread(gen, CLIENT), quiet)

    def stop_load(self, thread: LoadThread) -> list[Outcome]:
        return self.running.stop(thread)

    # Figures as text --------------------------------------------------------

    def spread_text(self, s: Summary) -> str:
        return spread_text(s, list(self.servers))

    def weights_text(self, weights: Weights | None = None) -> str:
        """``weights`` (by default the master's IPVS table now) by real server name."""
        weights = self.table.current if weights is None and self.table else weights or {}
        return weights_text(weights, self.servers)

    def expected_shares(self) -> dict[str, float]:
        """Each real server's share of requests, as its configured weight says."""
        total = sum(self.weights[a] for a in self.servers.values())
        return {n: self.weights[a] / total for n, a in self.servers.items()}
