"""Operations benchmarks: reload time, /metrics scrape time and size, resident memory.

Each figure comes from the real daemon process (``pulsed run --backend memory``)
and its real HTTP server; the benchmark plays systemd's notify socket so that
"reload finished" is the daemon's own READY=1, not a guess.

    flock /tmp/pulsed-bench.lock .venv/bin/python benchmarks/ops.py reload
    flock /tmp/pulsed-bench.lock .venv/bin/python benchmarks/ops.py scrape

reload: 10,000 services (one real server each, check "none"), one real
server's weight changed in the file, SIGHUP -> READY=1; repeated.
scrape: 1,000 services x 10 real servers = 10,000 real servers, tcp checks
every 10 s against listening loopback ports (so every probe histogram is
filled); after every server has been probed, /metrics is scraped repeatedly;
then VmRSS of the daemon is read from /proc (at READY, after the scrapes,
after /status). ``--python`` runs the daemon under another interpreter, e.g.
a virtualenv holding only the runtime dependencies, as the Containerfile
installs them (the development venv adds rich, which structlog imports).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def header(state: Path, port: int) -> str:
    return (
        f'[daemon]\nstate_dir = "{state}"\nlog_level = "warning"\n\n'
        # No admin calls here: no token file (a named one must exist, mode 0600).
        f'[api]\nlisten = "127.0.0.1:{port}"\n\n'
    )


def vip(i: int) -> tuple[str, int]:
    a, b = divmod(i, 250)
    return f"198.18.{a % 250}.{b + 1}", 1000 + a // 250


def reload_config(state: Path, port: int, services: int, weight: int) -> str:
    parts = [header(state, port)]
    for i in range(services):
        address, vport = vip(i)
        c, d = divmod(i, 250)
        w = weight if i == services // 2 else 1
        parts.append(
            f'[[service]]\nname = "s{i}"\nvip = "{address}"\nport = {vport}\n'
            f'[service.check]\ntype = "none"\n'
            f'[[service.real]]\naddress = "10.{c // 250}.{c % 250}.{d + 1}:80"\nweight = {w}\n'
        )
    return "\n".join(parts)


# With --mixed, the first services use one of these check types each, so the daemon
# has imported the libraries of every probe type (dnspython, hpack, hyperframe) when RSS is read.
# Their servers do not speak these protocols: such services may stay down.
MIXED_CHECKS = {
    "udp": 'payload = "ping"\n',
    "dns": 'query_name = "www.test."\n',
    "smtp": "",
    "icmp": "",
    "grpc": "",
    "send_expect": 'steps = [{ send = "PING\\r\\n", expect = "PONG" }]\n',
}


def scrape_config(
    state: Path, port: int, services: int, ports: list[int], mixed: bool = False
) -> str:
    parts = [header(state, port)]
    kinds = list(MIXED_CHECKS) if mixed else []
    for i in range(services):
        address, vport = vip(i)
        kind = kinds[i] if i < len(kinds) else "tcp"
        parts.append(
            f'[[service]]\nname = "s{i}"\nvip = "{address}"\nport = {vport}\n'
            f'[service.check]\ntype = "{kind}"\ninterval = "10s"\ntimeout = "1s"\nrise = 1\n'
            # A fall of its own per service: every service's check differs, so each of
            # the services x ports real servers has a probe of its own, as with distinct
            # servers (identical checks of one server are probed once).
            f"fall = {1 + i % 1000}\n" + MIXED_CHECKS.get(kind, "")
        )
        for p in ports:
            parts.append(f'[[service.real]]\naddress = "127.0.0.1:{p}"\n')
    return "\n".join(parts)


REPO = Path(__file__).resolve().parent.parent


class Daemon:
    def __init__(self, workdir: Path, config: str, python: str = sys.executable) -> None:
        self.config = workdir / "pulsed.toml"
        self.config.write_text(config)
        self.notify_path = workdir / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.notify.settimeout(120)
        env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHDOG_")}
        env["NOTIFY_SOCKET"] = str(self.notify_path)
        # The source tree, for an interpreter whose environment holds only the
        # runtime dependencies (as the Containerfile installs them).
        env["PYTHONPATH"] = str(REPO)
        self.proc = subprocess.Popen(
            [
                python,
                "-m",
                "pulsed.cli",
                "run",
                "-c",
                str(self.config),
                "--backend",
                "memory",
            ],
            env=env,
            stderr=open(workdir / "pulsed.log", "wb"),  # noqa: SIM115
        )
        started = time.perf_counter()
        self.wait("READY=1")
        self.start_seconds = time.perf_counter() - started

    def wait(self, word: str) -> str:
        while True:
            msg = self.notify.recv(4096).decode()
            if word in msg:
                return msg

    def reload(self) -> float:
        started = time.perf_counter()
        self.proc.send_signal(signal.SIGHUP)
        self.wait("RELOADING=1")
        msg = self.wait("READY=1")
        elapsed = time.perf_counter() - started
        if "failed" in msg:
            raise SystemExit(f"reload failed: {msg}")
        return elapsed

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise SystemExit("no VmRSS")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        self.notify.close()
        log = self.config.parent / "pulsed.log"
        Path("/tmp/pulsed-bench-ops.log").write_bytes(log.read_bytes())


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.read()


def bench_reload(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="pulsed-bench-") as tmp:
        work = Path(tmp)
        port = free_port()
        daemon = Daemon(work, reload_config(work, port, args.services, 1), args.python)
        try:
            times = []
            for round_ in range(args.rounds):
                if round_:
                    time.sleep(args.gap)  # independent samples, as an operator's reloads are
                daemon.config.write_text(reload_config(work, port, args.services, 2 + round_))
                times.append(daemon.reload())
            status = json.loads(get(f"http://127.0.0.1:{port}/status"))
            generation = status["config"]["generation"]
            assert generation == args.rounds + 1, f"reload did not apply: generation {generation}"
            print(f"reload of {args.services} services with one change (SIGHUP -> READY=1):")
            print(f"  start (exec -> READY=1): {daemon.start_seconds * 1000:.0f} ms")
            print(
                f"  reload: median {statistics.median(times) * 1000:.0f} ms,"
                f" min {min(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms"
                f" over {len(times)} reloads, {args.gap:g} s apart"
            )
            print(f"  resident memory: {daemon.rss_mib():.1f} MiB")
        finally:
            daemon.stop()


def accept_and_close(listeners: list[socket.socket]) -> None:
    """Serve as real servers do: accept each connection (and close it). A listener
    that never accepts fills its backlog within seconds at 1,000 probes/s each,
    and then every probe times out: the benchmark would measure failures."""
    sel = selectors.DefaultSelector()
    for s in listeners:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            with contextlib.suppress(OSError):
                key.fileobj.accept()[0].close()  # type: ignore[union-attr]


def result_counts(text: str) -> dict[str, int]:
    """pulsed_real_probe_results_total summed by its result label."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("pulsed_real_probe_results_total{"):
            label = line.split('result="', 1)[1].split('"', 1)[0]
            counts[label] = counts.get(label, 0) + int(float(line.rsplit(" ", 1)[1]))
    return counts


def bench_scrape(args: argparse.Namespace) -> None:
    listeners = []
    for _ in range(args.reals):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(4096)
        listeners.append(s)
    ports = [s.getsockname()[1] for s in listeners]
    threading.Thread(target=accept_and_close, args=(listeners,), daemon=True).start()
    with tempfile.TemporaryDirectory(prefix="pulsed-bench-") as tmp:
        work = Path(tmp)
        port = free_port()
        config = scrape_config(work, port, args.services, ports, args.mixed)
        daemon = Daemon(work, config, args.python)
        may_be_down = len(MIXED_CHECKS) * args.reals if args.mixed else 0
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            rss_ready = daemon.rss_mib()
            # Wait until every server has been probed once (first probes spread over 10 s).
            deadline = time.monotonic() + 60
            while True:
                text = get(url).decode()
                counts = [
                    line
                    for line in text.splitlines()
                    if line.startswith("pulsed_real_probe_duration_seconds_count{")
                ]
                down = text.count(
                    "} 0\n",
                    text.find("pulsed_real_up{"),
                    text.find("# HELP pulsed_real_configured_weight"),
                )
                if (
                    len(counts) >= args.services * args.reals and down <= may_be_down
                ) or time.monotonic() > deadline:
                    break
                time.sleep(1)
            # Steady state: every server up, the last reconcile pass of the start-up done.
            time.sleep(3)
            times, size = [], 0
            for _ in range(args.rounds):
                started = time.perf_counter()
                body = get(url)
                times.append(time.perf_counter() - started)
                size = len(body)
            rss_scrapes = daemon.rss_mib()
            lines = body.count(b"\n")
            reals = args.services * args.reals
            kinds = "tcp checks" + (f" and {', '.join(MIXED_CHECKS)}" if args.mixed else "")
            print(f"/metrics at {reals} real servers ({args.services} x {args.reals}), {kinds}:")
            print(f"  servers with probe histograms: {len(counts)}, down: {down}")
            results = ", ".join(f"{k} {v}" for k, v in sorted(result_counts(body.decode()).items()))
            print(f"  probe results so far: {results}")
            print(
                f"  scrape: median {statistics.median(times) * 1000:.0f} ms,"
                f" min {min(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms"
                f" over {len(times)} scrapes"
            )
            print(f"  size: {size / 1e6:.1f} MB, {lines} lines")
            started = time.perf_counter()
            status = get(f"http://127.0.0.1:{port}/status")
            print(
                f"  /status: {(time.perf_counter() - started) * 1000:.0f} ms,"
                f" {len(status) / 1e6:.1f} MB"
            )
            rec = json.loads(status)["reconcile"]
            print(
                f"  meanwhile on the same event loop: {rec['passes']} reconcile passes,"
                f" the last took {rec['last_duration'] * 1000:.0f} ms"
            )
            for _ in range(4):  # as the status page does, every few seconds
                get(f"http://127.0.0.1:{port}/status")
            print(
                f"  resident memory: {rss_ready:.1f} MiB at READY (before any probe or scrape),"
                f" {rss_scrapes:.1f} MiB after the scrapes,"
                f" {daemon.rss_mib():.1f} MiB after 5 /status requests"
            )
        finally:
            daemon.stop()
            for s in listeners:
                s.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter that runs the daemon (default: this one)",
    )
    sub = parser.add_subparsers(required=True)
    r = sub.add_parser("reload")
    r.add_argument("--services", type=int, default=10_000)
    r.add_argument("--rounds", type=int, default=5)
    r.add_argument(
        "--gap",
        type=float,
        default=1.0,
        help="seconds between reloads (each reload is followed by a reconcile pass"
        " of ~100 ms at 10,000 services; 0: back to back, the next reload waits for it)",
    )
    r.set_defaults(func=bench_reload)
    s = sub.add_parser("scrape")
    s.add_argument("--services", type=int, default=1000)
    s.add_argument("--reals", type=int, default=10)
    s.add_argument("--rounds", type=int, default=10)
    s.add_argument(
        "--mixed",
        action="store_true",
        help="the first services use the udp, dns, smtp, icmp, grpc and send_expect checks",
    )
    s.set_defaults(func=bench_scrape)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
