"""The lab's five steps, driven from outside pulsed, each returning what it measured.

``Lab`` builds the topology, starts the real servers and pulsed on the
router, and runs the steps. Each step prints live progress through a
``Reporter`` and returns a ``StepResult`` whose figures the driver prints,
the benchmark records, and the end-to-end tests assert on. pulsed is used
only through its command line (``pulsed run``, ``pulsed drain``, SIGHUP,
``kill -9``) and observed only through the kernel (the IPVS table, the VIP).
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab.loadgen import LoadGen, LoadThread, Outcome, Summary, summarize
from lab.netns import LabError, ns_argv, run
from lab.topology import CLIENT, ROUTERS, SERVERS, VIP, Topology, teardown
from lab.watch import AddressWatcher, TableWatcher, has_address

REPO = Path(__file__).resolve().parent.parent
RUNTIME = Path("/run/pulsed-lab")
SERVICE = f"{VIP}:80"
NAMES = {"plab-rs1": "rs1", "plab-rs2": "rs2"}


class Reporter:
    """Where the steps tell the user what happens. The default prints plain lines."""

    def __init__(self, stream=None, live: bool = False) -> None:
        self.stream = stream or sys.stdout
        self.live = live  # a terminal: progress lines overwrite each other
        self._pending = False
        self.lock = threading.RLock()  # the load tickers print from their own threads

    def _write(self, text: str) -> None:
        with self.lock:
            self.stream.write(text)
            self.stream.flush()

    def _end_progress(self) -> None:
        if self._pending:
            self._write("\n")
            self._pending = False

    def heading(self, text: str) -> None:
        self._end_progress()
        self._write(f"\n== {text}\n")

    def info(self, text: str) -> None:
        self._end_progress()
        self._write(f"   {text}\n")

    def progress(self, text: str) -> None:
        if self.live:
            self._write(f"\r   {text}\x1b[K")
            self._pending = True
        else:
            self._write(f"   {text}\n")

    def result(self, text: str) -> None:
        self._end_progress()
        self._write(f"   => {text}\n")


class QuietReporter(Reporter):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def _write(self, text: str) -> None:
        self.lines.append(text)


class Ticker:
    """Prints, every ``tick`` seconds, what a running load saw since the previous tick."""

    def __init__(self, thread: LoadThread, say: Reporter, show, tick: float = 1.0) -> None:
        self.load, self.say, self.show, self.tick = thread, say, show, tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ticker", daemon=True)

    def start(self) -> Ticker:
        self._thread.start()
        return self

    def _run(self) -> None:
        last = time.monotonic()
        while True:
            stopped = self._stop.wait(self.tick)
            now = time.monotonic()
            if not stopped or now - last > 0.3:
                self.say.progress(self.show(summarize(list(self.load.outcomes), last, now)))
            last = now
            if stopped:
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass
class StepResult:
    name: str
    summary: Summary
    figures: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"step": self.name, "load": self.summary.as_dict(), **self.figures}


class Lab:
    """One lab run: ``with Lab("nat") as lab: lab.balancing(); ...``."""

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
        self.servers = {NAMES[ns]: f"{self.topo.server_address(ns)}:80" for ns in SERVERS}
        self.weights = self._config_weights(self.source_config.read_text())
        self.procs: dict[str, subprocess.Popen] = {}
        self.loads: list[LoadThread] = []
        self._tickers: dict[LoadThread, Ticker] = {}
        self.watchers: list = []
        self.table: TableWatcher | None = None
        # pulsed builds without VRRP or the admin API (as during development) still run
        # the steps they can: the lab then holds the VIP itself and says what it skipped.
        self.vrrp = importlib.util.find_spec("pulsed.ha.node") is not None
        self.admin_cli = importlib.util.find_spec("pulsed.admin_cli") is not None

    # Set-up and tear-down ---------------------------------------------------

    def __enter__(self) -> Lab:
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
        self.config.write_text(self._runtime_config(self.source_config.read_text()))
        if not self.vrrp:
            self.say.info("this pulsed has no VRRP yet: the lab puts the VIP on plab-router itself")
            self.topo.static_vips("plab-router")
        self.table = TableWatcher("plab-router", SERVICE)
        self.watchers.append(self.table)
        t0 = time.monotonic()
        self.start_pulsed("plab-router", self.config)
        self.say.info(
            f"pulsed: ip netns exec plab-router {self._short(self.pulsed)} run -c {self.config}"
            f" (a copy of {self.source_config.relative_to(REPO)})"
        )
        self.wait_table(
            self.table,
            lambda w: all(w.get(a) == self.weights[a] for a in self.servers.values()),
            timeout=90,
            what="pulsed to program both real servers at full weight",
            router="plab-router",
        )
        if self.vrrp:
            self.wait_vip("plab-router", timeout=30)
        self.say.info(
            f"router ready in {time.monotonic() - t0:.1f}s: IPVS table {self._weights_text()},"
            f" VIP {VIP} on plab-router"
        )

    def close(self) -> None:
        for ticker in self._tickers.values():
            ticker.stop()
        self._tickers.clear()
        for load in self.loads:
            with contextlib.suppress(Exception):
                load.stop()
        self.loads.clear()
        for watcher in self.watchers:
            with contextlib.suppress(Exception):
                watcher.close()
        self.watchers.clear()
        for name in list(self.procs):
            self.stop_process(name)
        teardown()
        shutil.rmtree(RUNTIME, ignore_errors=True)

    def _runtime_config(self, text: str) -> str:
        if not self.vrrp:
            # Without VRRP the lab puts the VIP on the router itself.
            text = re.sub(r"(?ms)^\[vrrp\].*?(?=^\[\[service\]\])", "", text)
        return text

    @staticmethod
    def _config_weights(text: str) -> dict[str, int]:
        pairs = re.findall(r'address = "([^"]+)"\s*\nweight = (\d+)', text)
        return {addr: int(w) for addr, w in pairs}

    def _short(self, path: str) -> str:
        with contextlib.suppress(ValueError):
            return str(Path(path).relative_to(REPO))
        return path

    # Processes --------------------------------------------------------------

    def _spawn(self, name: str, ns: str, argv: list[str], log: Path | None = None):
        out = open(log, "ab") if log else subprocess.PIPE  # noqa: SIM115 - closed by the child
        proc = subprocess.Popen(
            ns_argv(ns, argv),
            stdout=out,
            stderr=subprocess.STDOUT if log else None,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the driver, which stops them in order
        )
        if log:
            out.close()
        self.procs[name] = proc
        return proc

    def start_server(self, ns: str) -> None:
        name = NAMES[ns]
        proc = self._spawn(
            name, ns, [sys.executable, str(REPO / "lab" / "realserver.py"), "--name", name]
        )
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().strip()
        if line != "ready":
            raise LabError(f"real server {name} did not start (said {line!r})")

    def start_pulsed(self, router: str, config: Path) -> subprocess.Popen:
        log = RUNTIME / f"{router}.log"
        argv = [self.pulsed, "run", "-c", str(config)]
        return self._spawn(router, router, argv, log=log)

    def stop_process(self, name: str, sig: int = signal.SIGTERM, timeout: float = 5) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def check_alive(self, *names: str) -> None:
        for name in names:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise LabError(f"{name} exited with status {proc.returncode}{self._log_tail(name)}")

    def _log_tail(self, name: str) -> str:
        log = RUNTIME / f"{name}.log"
        with contextlib.suppress(OSError):
            lines = log.read_text(errors="replace").strip().splitlines()
            if lines:
                return "; last log line: " + lines[-1][-300:]
        return ""

    def wait_table(self, table: TableWatcher, predicate, timeout: float, what: str, router: str):
        """TableWatcher.wait_for, failing at once (with its log) if the router's pulsed exits."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive(router)
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
            self.check_alive(router)
            if time.monotonic() > deadline:
                raise LabError(f"{router} did not take the VIP {VIP} within {timeout:.0f}s")
            time.sleep(0.05)

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
        thread = LoadThread(gen, CLIENT).start()
        self.loads.append(thread)
        if not quiet:
            self._tickers[thread] = Ticker(thread, self.say, self.spread_text).start()
        return thread

    def stop_load(self, thread: LoadThread) -> list[Outcome]:
        ticker = self._tickers.pop(thread, None)
        if ticker is not None:
            ticker.stop()
        outcomes = thread.stop()
        with contextlib.suppress(ValueError):
            self.loads.remove(thread)
        return outcomes

    def hold(self, seconds: float) -> None:
        """Let time pass (the load runs on), failing early if a router's pulsed died."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(0.2, left))
            self.check_alive(*self.procs.keys() & set(ROUTERS))

    def spread_text(self, s: Summary) -> str:
        parts = [f"{s.total:5d} req"]
        for name in sorted(self.servers):
            n = s.by_server.get(name, 0)
            parts.append(f"{name} {n:5d} ({100 * n / s.ok if s.ok else 0:3.0f}%)")
        parts.append(f"failed {s.failed}")
        if s.errors:
            parts.append(str(dict(s.errors)))
        return "  ".join(parts)

    def _weights_text(self, weights=None) -> str:
        weights = self.table.current if weights is None and self.table else weights or {}
        by_addr = {a: n for n, a in self.servers.items()}
        return ", ".join(f"{by_addr.get(a, a)} weight {w}" for a, w in sorted(weights.items()))

    def expected_shares(self) -> dict[str, float]:
        total = sum(self.weights[a] for a in self.servers.values())
        return {n: self.weights[a] / total for n, a in self.servers.items()}

    # Step 1 -----------------------------------------------------------------

    def balancing(self, seconds: float = 5.0) -> StepResult:
        say = self.say
        say.heading("Step 1/5  Balancing: the client fetches the VIP, a new connection each time")
        shares = self.expected_shares()
        weights = ", ".join(f"{n} {self.weights[a]}" for n, a in sorted(self.servers.items()))
        say.info(
            f"scheduler wrr, weights {weights}: expect "
            + ", ".join(f"{n} {100 * s:.0f}%" for n, s in sorted(shares.items()))
        )
        thread = self.load()
        t0 = time.monotonic()
        self.hold(seconds)
        s = summarize(self.stop_load(thread), since=t0)
        say.result(f"{self.spread_text(s)} at {s.rate:.0f} req/s")
        return StepResult(
            "balancing",
            s,
            {"expected_share": shares, "share": {n: s.share(n) for n in self.servers}},
        )

    def throughput(self, seconds: float = 5.0, concurrency: int = 32) -> StepResult:
        """Flat out: the request rate through the VIP (a benchmark, not one of the steps)."""
        self.say.heading(f"Throughput: {concurrency} clients flat out for {seconds:.0f}s")
        thread = self.load(concurrency=concurrency, flat_out=True)
        t0 = time.monotonic()
        self.hold(seconds)
        s = summarize(self.stop_load(thread), since=t0)
        self.say.result(
            f"lab/loadgen.py: {s.rate:.0f} req/s (new connection each), p50"
            f" {s.latency_p50 * 1000:.1f} ms, p99 {s.latency_p99 * 1000:.1f} ms, failed {s.failed}"
        )
        figures: dict = {"rate": s.rate}
        if shutil.which("wrk"):
            for label, extra in (("wrk_close", ["-H", "Connection: close"]), ("wrk_keepalive", [])):
                argv = ["wrk", "-t2", f"-c{concurrency}", f"-d{seconds:.0f}s", *extra]
                proc = run([*argv, f"http://{VIP}/"], ns=CLIENT, check=False)
                m = re.search(r"Requests/sec:\s+([\d.]+)", proc.stdout)
                errors = re.search(r"Socket errors: (.*)|Non-2xx.*", proc.stdout)
                figures[label] = float(m.group(1)) if m else None
                self.say.result(
                    f"$ {' '.join(argv)} http://{VIP}/ -> "
                    f"{figures[label] or '?'} req/s{'; ' + errors.group(0) if errors else ''}"
                )
        return StepResult("throughput", s, figures)

    # Step 2 -----------------------------------------------------------------

    def failure(self, victim: str = "rs1", after: float = 3.0) -> StepResult:
        say = self.say
        address = self.servers[victim]
        say.heading(f"Step 2/5  Failure: kill {victim}'s HTTP server under load")
        thread = self.load()
        self.hold(1.0)
        killed_at = time.monotonic()
        self.stop_process(victim, signal.SIGKILL)
        say.info(f"killed {victim} (kill -9); waiting for pulsed to take it out of the pool")
        detected_at = self.table.wait_for(
            lambda w: w.get(address, 0) == 0, timeout=30, what=f"{victim} to reach weight 0"
        )
        detection = detected_at - killed_at
        say.info(f"detected after {detection * 1000:.0f} ms: {self._weights_text()}")
        self.hold(after)
        outcomes = self.stop_load(thread)
        before = summarize(outcomes, killed_at, detected_at)
        after_s = summarize(outcomes, since=detected_at)
        say.result(
            f"time to detection {detection * 1000:.0f} ms; {before.failed} request(s) failed"
            f" before detection, {after_s.failed} after; after detection"
            f" {after_s.by_server.get(victim, 0)} went to {victim}"
        )
        return StepResult(
            "failure",
            after_s,
            {
                "detection_ms": detection * 1000,
                "failed_before_detection": before.failed,
                "failed_after_detection": after_s.failed,
                "to_victim_after_detection": after_s.by_server.get(victim, 0),
            },
        )

    # Step 3 -----------------------------------------------------------------

    def recovery(self, victim: str = "rs1", after: float = 3.0) -> StepResult:
        say = self.say
        address = self.servers[victim]
        full = self.weights[address]
        say.heading(f"Step 3/5  Recovery: bring {victim} back")
        thread = self.load()
        started_at = time.monotonic()
        self.start_server(next(ns for ns, n in NAMES.items() if n == victim))
        serving_at = time.monotonic()
        say.info(
            f"{victim} serves again ({(serving_at - started_at) * 1000:.0f} ms to start);"
            " pulsed must see it pass its checks, then ramp it up"
        )
        up_at = self.table.wait_for(
            lambda w: w.get(address, 0) > 0, timeout=30, what=f"{victim} back in the pool"
        )
        say.info(
            f"back in the pool {(up_at - serving_at) * 1000:.0f} ms after it could serve:"
            f" {self._weights_text()}"
        )
        full_at = None
        ramp: list[int] = []
        shown = 0
        deadline = time.monotonic() + 30
        while full_at is None:
            changes = self.table.changes_since(up_at)
            for at, weights in changes[shown:]:
                w = weights.get(address, 0)
                say.info(f"  +{(at - up_at) * 1000:5.0f} ms  {victim} weight {w}")
                ramp.append(w)
                if w >= full:
                    full_at = at
                    break
            shown = len(changes)
            if full_at is None:
                if time.monotonic() > deadline:
                    raise LabError(f"{victim} never reached its full weight {full}")
                time.sleep(0.1)
        say.info(f"full weight after {(full_at - up_at) * 1000:.0f} ms of slow start")
        t_full = time.monotonic()
        self.hold(after)
        outcomes = self.stop_load(thread)
        during = summarize(outcomes, started_at)
        balanced = summarize(outcomes, since=t_full)
        say.result(
            f"balanced again: {self.spread_text(balanced)}; {during.failed} failed during the step"
        )
        return StepResult(
            "recovery",
            during,
            {
                "back_in_pool_ms": (up_at - serving_at) * 1000,
                "slow_start_ms": (full_at - up_at) * 1000,
                "ramp": ramp,
                "share_after": {n: balanced.share(n) for n in self.servers},
                "expected_share": self.expected_shares(),
            },
        )

    # Step 4 -----------------------------------------------------------------

    def admin(self, *args: str) -> str:
        proc = run([self.pulsed, *args, "-c", str(self.config)], ns="plab-router", check=False)
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise LabError(f"pulsed {' '.join(args)} failed: {detail[-1] if detail else ''}")
        return proc.stdout

    def drain(self, victim: str = "rs2", seconds: float = 2.0) -> StepResult:
        say = self.say
        address = self.servers[victim]
        say.heading("Step 4/5  Drain and reload, under load: no request may fail")
        if not self.admin_cli:
            say.info("skipped the drain: this pulsed has no admin CLI (pulsed drain) yet")
            return StepResult("drain", Summary(), {"skipped": True})
        thread = self.load()
        t0 = time.monotonic()
        self.hold(1.0)
        say.info(f"$ pulsed drain web/{address}")
        called = time.monotonic()
        self.admin("drain", f"web/{address}")
        say.info(f"(the command returned after {time.monotonic() - called:.1f}s)")
        drained_at = self.table.wait_for(
            lambda w: w.get(address, -1) == 0, timeout=15, what=f"{victim} drained to weight 0"
        )
        say.info(f"drained: {self._weights_text()}")
        self.hold(seconds)
        enable_at = time.monotonic()
        try:
            for line in self.admin("status").rstrip().splitlines():
                say.info(f"  {line}")
        except LabError as exc:
            say.info(f"(pulsed status: {exc})")
        say.info(f"$ pulsed enable web/{address}")
        self.admin("enable", f"web/{address}")
        self.table.wait_for(
            lambda w: w.get(address, 0) > 0, timeout=15, what=f"{victim} enabled again"
        )
        self.hold(1.0)
        outcomes = self.stop_load(thread)
        s = summarize(outcomes, since=t0)
        while_drained = summarize(outcomes, drained_at, enable_at)
        say.result(
            f"{s.failed} of {s.total} requests failed; while drained"
            f" {while_drained.by_server.get(victim, 0)} went to {victim}"
        )
        return StepResult(
            "drain",
            s,
            {"to_drained": while_drained.by_server.get(victim, 0), "failed": s.failed},
        )

    def reload(self, server: str = "rs2", new_weight: int = 3, seconds: float = 3.0) -> StepResult:
        say = self.say
        address = self.servers[server]
        text = self.config.read_text()
        pattern = f'address = "{address}"\nweight = {self.weights[address]}'
        if pattern not in text:
            raise LabError(f"cannot find {address}'s weight in {self.config}")
        thread = self.load()
        t0 = time.monotonic()
        self.hold(1.0)
        self.config.write_text(
            text.replace(pattern, f'address = "{address}"\nweight = {new_weight}')
        )
        say.info(
            f"edited {self.config}: {server} weight {self.weights[address]} -> {new_weight};"
            " $ kill -HUP <pulsed>"
        )
        hup_at = time.monotonic()
        self.procs["plab-router"].send_signal(signal.SIGHUP)
        applied_at = self.table.wait_for(
            lambda w: w.get(address) == new_weight, timeout=15, what="the reload to apply"
        )
        self.weights[address] = new_weight
        say.info(f"reloaded in {(applied_at - hup_at) * 1000:.0f} ms: {self._weights_text()}")
        self.hold(seconds)
        outcomes = self.stop_load(thread)
        s = summarize(outcomes, since=t0)
        after = summarize(outcomes, since=applied_at)
        say.result(
            f"{s.failed} of {s.total} requests failed across the reload;"
            f" new spread {self.spread_text(after)}"
        )
        return StepResult(
            "reload",
            s,
            {
                "reload_ms": (applied_at - hup_at) * 1000,
                "failed": s.failed,
                "share_after": {n: after.share(n) for n in self.servers},
                "expected_share": self.expected_shares(),
            },
        )

    # Step 5 -----------------------------------------------------------------

    def failover(self, after: float = 3.0) -> StepResult:
        say = self.say
        say.heading("Step 5/5  Failover: a second router takes over when the master dies")
        if not self.vrrp:
            say.info("skipped: this pulsed has no VRRP yet")
            return StepResult("failover", Summary(), {"skipped": True})
        backup_config = RUNTIME / "router2.toml"
        text = self.config.read_text()
        text = re.sub(r"(?m)^priority = \d+", "priority = 100", text, count=1)
        text = text.replace('/run/pulsed-lab/router"', '/run/pulsed-lab/router2"')
        backup_config.write_text(text)
        backup_table = TableWatcher("plab-router2", SERVICE)
        self.watchers.append(backup_table)
        self.start_pulsed("plab-router2", backup_config)
        say.info(f"pulsed on plab-router2 with priority 100 ({backup_config})")
        self.wait_table(
            backup_table,
            lambda w: all(w.get(a) == self.weights[a] for a in self.servers.values()),
            timeout=90,
            what="the backup router to program both real servers",
            router="plab-router2",
        )
        if has_address("plab-router2", VIP):
            raise LabError("plab-router2 took the VIP while the master was alive")
        say.info(
            f"backup is warm (IPVS programmed: {self._weights_text(backup_table.current)})"
            " and holds no VIP"
        )
        vip_watch = AddressWatcher("plab-router2", VIP)
        self.watchers.append(vip_watch)
        held = self.load(keepalive=True, rate=20, quiet=True)
        thread = self.load()
        self.hold(2.0)
        # A crash, as when the machine loses power: the master vanishes from the network
        # (links down) and its pulsed dies (kill -9). kill -9 alone would leave the VIP
        # on the dead router's interface, still answering.
        # Timed from when the links are down: starting a process costs a good part of a
        # second under the VM's emulation, and the cut happens at the end of it.
        self.topo.router_links_down("plab-router")
        killed_at = time.monotonic()
        self.stop_process("plab-router", signal.SIGKILL)
        say.info("pulled the master's cables (links down) and killed its pulsed (kill -9)")
        vip_at = vip_watch.wait_present(timeout=30, after=killed_at)
        away = vip_at - killed_at
        say.info(f"plab-router2 holds the VIP after {away * 1000:.0f} ms")
        self.hold(after)
        outcomes = self.stop_load(thread)
        held_outcomes = self.stop_load(held)
        s = summarize(outcomes, since=killed_at - 2.0)
        gap = _largest_gap(outcomes, killed_at - 2.0)
        after_vip = summarize(outcomes, since=vip_at)
        # The last second of requests issued (by start time: the list is in completion order).
        last_start = max((o.start for o in outcomes), default=0.0)
        settled = summarize(outcomes, since=last_start - 1.0) if outcomes else Summary()
        failed_at = [round((o.start - killed_at) * 1000) for o in outcomes if not o.ok]
        held_s = summarize(held_outcomes)
        survived = held_s.failed == 0 and held.gen.connects == 1
        say.result(
            f"VIP away {away * 1000:.0f} ms; longest wait between answers {gap * 1000:.0f} ms;"
            f" {s.failed} of {s.total} requests failed {dict(s.errors) or ''};"
            " the long-lived connection"
            f" {'survived' if survived else 'broke'}"
            f" ({held_s.ok} answers, {held.gen.connects} connection(s))"
        )
        return StepResult(
            "failover",
            s,
            {
                "vip_away_ms": away * 1000,
                "largest_gap_ms": gap * 1000,
                "failed": s.failed,
                "failed_after_vip_moved": after_vip.failed,
                "answered_after_vip_moved": after_vip.ok,
                "failed_in_last_second": settled.failed,
                "failures_started_at_ms": failed_at[-20:],
                "held_connection_survived": survived,
                "held_connection_failures": held_s.failed,
                "held_connection_connects": held.gen.connects,
            },
        )


def _largest_gap(outcomes: list[Outcome], since: float) -> float:
    """The longest time without any successful answer, after ``since``."""
    ends = sorted(o.end for o in outcomes if o.ok and o.end >= since)
    if len(ends) < 2:
        return 0.0
    return max(b - a for a, b in itertools.pairwise(ends))


def ipvs_available() -> bool:
    """Whether this kernel can do IPVS (loading the module if needed)."""
    if os.path.exists("/proc/net/ip_vs"):
        return True
    subprocess.run(["modprobe", "ip_vs"], capture_output=True, check=False)
    return os.path.exists("/proc/net/ip_vs")
