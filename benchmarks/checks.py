"""Health-check throughput: N HTTP probes, a fresh connection each, through HealthMonitor.

A small HTTP server runs in another process on loopback (``--serve``); this
process runs only pulsed's HealthMonitor. Reported: sustained checks/s,
this process's CPU as a share of one core (time.process_time), event-loop
lag p50/p99 from a sampler task, probe latency, and failures by reason.

    flock /tmp/pulsed-bench.lock .venv/bin/python benchmarks/checks.py --rate 2000
    flock /tmp/pulsed-bench.lock .venv/bin/python benchmarks/checks.py --rate 5000 --uvloop

``--impl aiohttp`` swaps in an aiohttp-client probe for comparison (the
reason pulsed's http probe is written on asyncio's Protocol API).

``--type`` probes another protocol instead (tcp, udp, dns, smtp, icmp,
grpc, send_expect), each against a minimal server of its protocol in the
server process (grpcio's own health service for grpc; the kernel answers
icmp echo on loopback):

    flock /tmp/pulsed-bench.lock .venv/bin/python benchmarks/checks.py --rate 1000 --type dns
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator

import msgspec
import structlog

import pulsed
from pulsed.checks.base import ProbeResult, Target, error_result, timeout_result
from pulsed.checks.config import MAX_RUN, CheckConfig
from pulsed.checks.monitor import DEFAULT_MAX_TICK, HealthMonitor
from pulsed.durations import Duration
from pulsed.model import DestKey, ServiceKey

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


# --- the server (runs in its own process) ---------------------------------------


class _Handler(asyncio.Protocol):
    # Requests answered so far, per listening port; printed as JSON on
    # SIGUSR1 (the neutral check counter).
    requests: collections.Counter[int] = collections.Counter()

    def __init__(self, port: int) -> None:
        self.port = port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" in self.buffer:
            _Handler.requests[self.port] += 1
            self.transport.write(RESPONSE)  # type: ignore[attr-defined]
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        pass


class _LineHandler(_Handler):
    """send_expect's server: "+PONG" to each line (Redis's PING)."""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\n" in self.buffer:
            _Handler.requests[self.port] += 1
            self.buffer = b""
            self.transport.write(b"+PONG\r\n")  # type: ignore[attr-defined]


class _SmtpHandler(_Handler):
    """smtp's server: banner, EHLO, QUIT; nothing else."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        transport.write(b"220 bench ESMTP\r\n")  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if line.upper().startswith(b"EHLO"):
                _Handler.requests[self.port] += 1
                self.transport.write(b"250-bench\r\n250 SIZE 1000000\r\n")  # type: ignore[attr-defined]
            else:
                self.transport.write(b"221 bye\r\n")  # type: ignore[attr-defined]
                self.transport.close()


class _Datagrams(asyncio.DatagramProtocol):
    """udp's server echoes; dns's answers each query NOERROR with no records
    (the query with the QR bit set: what a parser must accept)."""

    def __init__(self, port: int, dns: bool) -> None:
        self.port = port
        self.dns = dns

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        _Handler.requests[self.port] += 1
        if self.dns and len(data) >= 12:
            data = data[:2] + bytes([data[2] | 0x80, 0x80]) + data[4:]
        self.transport.sendto(data or b"pong", addr)  # type: ignore[attr-defined]


_STREAM_SERVERS = {
    "http": _Handler,
    "tcp": _Handler,
    "send_expect": _LineHandler,
    "smtp": _SmtpHandler,
}


def serve(ports: list[int], use_uvloop: bool, kind: str = "http") -> None:
    if kind == "grpc":
        serve_grpc(ports)
        return
    if use_uvloop:
        import uvloop

        uvloop.install()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for port in ports:
            if kind in ("udp", "dns"):
                await loop.create_datagram_endpoint(
                    lambda p=port: _Datagrams(p, kind == "dns"), local_addr=("127.0.0.1", port)
                )
                continue
            handler = _STREAM_SERVERS.get(kind, _Handler)
            await loop.create_server(
                lambda p=port, h=handler: h(p), "127.0.0.1", port, backlog=4096
            )

        def report() -> None:
            print(json.dumps(_Handler.requests), flush=True)

        loop.add_signal_handler(signal.SIGUSR1, report)
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def serve_grpc(ports: list[int]) -> None:
    """grpcio's health service (the test extra), SERVING, on every port."""
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    for port in ports:
        server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


# The keys each probe type needs in the benchmark, on top of type, interval and timeout.
TYPE_KEYS: dict[str, dict] = {
    "udp": {"payload": "ping"},
    "dns": {"query_name": "www.example.org."},
    "send_expect": {"steps": ({"send": "PING\r\n", "expect": "^\\+PONG"},)},
}


def bench_check(args: argparse.Namespace, i: int = 0) -> CheckConfig:
    """The check of the i-th server. Its rise and fall differ from every other
    server's (and change nothing here: every probe passes), so that each server
    has a probe of its own: the same listening sockets serve them all, and
    identical checks of one address and port are probed once for all."""
    fields = {
        "type": args.type,
        "interval": Duration(args.interval),
        "timeout": Duration(args.timeout),
        "rise": 1 + i // MAX_RUN % MAX_RUN,
        "fall": 1 + i % MAX_RUN,
        **TYPE_KEYS.get(args.type, {}),
    }
    return msgspec.convert(fields, CheckConfig, from_attributes=True)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


# --- an aiohttp-client probe, for comparison only ------------------------------------


class AiohttpProbe:
    session = None

    def __init__(self, target: Target) -> None:
        self.url = f"http://{target.address}:{target.probe_port}{target.check.path}"
        self.timeout = float(target.check.timeout)

    async def probe(self) -> ProbeResult:
        import aiohttp

        if AiohttpProbe.session is None:
            connector = aiohttp.TCPConnector(force_close=True, limit=0)
            AiohttpProbe.session = aiohttp.ClientSession(connector=connector)
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                async with AiohttpProbe.session.get(self.url, allow_redirects=False) as resp:
                    await resp.read()
                    status = resp.status
        except TimeoutError:
            return timeout_result(self.timeout, time.perf_counter() - start)
        except OSError as exc:
            return error_result(exc, time.perf_counter() - start)
        except Exception as exc:
            return ProbeResult(False, f"error: {type(exc).__name__}", 0.0, "error")
        ok = 200 <= status < 400
        return ProbeResult(ok, f"status {status}", time.perf_counter() - start)


# --- the load ---------------------------------------------------------------


async def lag_sampler(samples: list[float], period: float = 0.01) -> None:
    """How late a 10 ms sleep wakes up. perf_counter, not loop.time(): uvloop's
    clock has millisecond steps. (uvloop's timers are also millisecond-grained,
    so its samples include up to 1 ms of rounding.)"""
    while True:
        expected = time.perf_counter() + period
        await asyncio.sleep(period)
        samples.append(max(0.0, time.perf_counter() - expected))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace) -> dict:
    ports = free_ports(args.server_ports)
    server_cmd = [sys.executable, __file__, "--serve", ",".join(map(str, ports))]
    server_cmd += ["--type", args.type]
    if args.uvloop or args.server_uvloop:
        server_cmd.append("--uvloop")
    server = subprocess.Popen(server_cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        return await measure(args, ports)
    finally:
        server.terminate()
        server.wait()


async def measure(args: argparse.Namespace, ports: list[int]) -> dict:
    servers = int(args.rate * args.interval)
    service = ServiceKey.for_address("tcp", "192.0.2.1", 80)
    targets = {}
    for i in range(servers):
        port = ports[i % len(ports)]
        # Distinct keys; the same few listening sockets serve them all.
        targets[(service, DestKey(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", port))] = Target(
            "127.0.0.1", port, bench_check(args, i)
        )
    results: collections.Counter[str] = collections.Counter()
    latencies: list[float] = []
    counting = False

    def on_result(key: object, result: ProbeResult) -> None:
        if counting:
            results[result.reason] += 1
            latencies.append(result.latency)

    factory = AiohttpProbe if args.impl == "aiohttp" else None
    kwargs = {"probe_factory": factory} if factory else {}
    monitor = HealthMonitor(
        lambda k, h: None, on_result=on_result, max_tick=args.max_tick, **kwargs
    )
    monitor.update(targets)
    lags: list[float] = []
    sampler = asyncio.create_task(lag_sampler(lags))
    await monitor.start()
    tick = monitor.tick
    await asyncio.sleep(args.warmup)  # first probes spread over one interval
    lags.clear()
    counting = True
    cpu0, wall0, times0 = time.process_time(), time.perf_counter(), os.times()
    await asyncio.sleep(args.duration)
    cpu1, wall1, times1 = time.process_time(), time.perf_counter(), os.times()
    counting = False
    await monitor.stop()
    sampler.cancel()
    if AiohttpProbe.session is not None:
        await AiohttpProbe.session.close()
    wall = wall1 - wall0
    total = sum(results.values())
    return {
        "type": args.type,
        "impl": args.impl,
        "loop": "uvloop" if args.uvloop else "asyncio",
        "tick_ms": round(tick * 1000, 2),
        "servers": servers,
        "interval_s": args.interval,
        "target_rate": args.rate,
        "duration_s": round(wall, 2),
        "checks_per_s": round(total / wall, 1),
        "cpu_share_of_one_core": round((cpu1 - cpu0) / wall, 3),
        "cpu_us_per_check": round((cpu1 - cpu0) / max(total, 1) * 1e6, 1),
        "user_us_per_check": round((times1.user - times0.user) / max(total, 1) * 1e6, 1),
        "sys_us_per_check": round((times1.system - times0.system) / max(total, 1) * 1e6, 1),
        "loop_lag_p50_ms": round(percentile(lags, 0.50) * 1000, 2),
        "loop_lag_p99_ms": round(percentile(lags, 0.99) * 1000, 2),
        "probe_latency_p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "probe_latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "results": dict(results.most_common(5)),
        "load_avg_1m": os.getloadavg()[0],
        "rss_mib": rss_mib(),
    }


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


# --- the same load through keepalived (run inside the IPVS VM) ------------------------


def keepalived_conf(ports: list[int], servers: int, interval: float, timeout: float) -> str:
    """keepalived checkers-only config: ``servers`` HTTP_GET real servers on loopback,
    spread over virtual servers (a real server's ip:port is unique per service)."""
    lines = ["global_defs {", "    router_id pulsed_bench", "}"]
    per_vs = len(ports)
    for vs in range((servers + per_vs - 1) // per_vs):
        lines += [
            f"virtual_server 10.77.{vs >> 8}.{vs & 255} 80 {{",
            f"    delay_loop {interval:g}",
            "    lb_algo rr",
            "    lb_kind NAT",
            "    protocol TCP",
        ]
        for port in ports[: min(per_vs, servers - vs * per_vs)]:
            lines += [
                f"    real_server 127.0.0.1 {port} {{",
                "        weight 1",
                "        HTTP_GET {",
                "            url {",
                "                path /",
                "                status_code 200",
                "            }",
                f"            connect_timeout {timeout:g}",
                "            retry 0",
                "        }",
                "    }",
            ]
        lines.append("}")
    return "\n".join(lines) + "\n"


def proc_cpu(pids: list[int]) -> tuple[float, float]:
    """(utime, stime) of processes, in seconds (/proc/PID/stat fields 14 and 15).
    Read the same way for keepalived and for pulsed (this process)."""
    user = system = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        user += int(fields[11])
        system += int(fields[12])
    tick = os.sysconf("SC_CLK_TCK")
    return user / tick, system / tick


def clock_conditions() -> dict:
    """The kernel's clocksource and what one clock reading costs here: without a
    vDSO-readable clock (the IPVS VM under TCG falls back to hpet) every
    time.monotonic() is a system call, which weighs on an event loop that
    reads the clock several times per wake-up more than on keepalived."""
    try:
        with open("/sys/devices/system/clocksource/clocksource0/current_clocksource") as f:
            source = f.read().strip()
    except OSError:
        source = "unknown"
    n = 20000
    cpu0 = time.process_time()
    for _ in range(n):
        time.monotonic()
    return {
        "clocksource": source,
        "monotonic_read_us": round((time.process_time() - cpu0) / n * 1e6, 2),
    }


def server_counts(server: subprocess.Popen) -> dict[int, int]:
    """Requests the server answered so far, per port."""
    assert server.stdout is not None
    server.send_signal(signal.SIGUSR1)
    return {int(port): n for port, n in json.loads(server.stdout.readline()).items()}


def answered(counts: dict[int, int], ports: list[int]) -> int:
    return sum(counts.get(port, 0) for port in ports)


async def compare_keepalived(args: argparse.Namespace) -> dict:
    """The same load through keepalived's checkers and through pulsed's
    HealthMonitor, one after the other, or with ``--concurrent`` both at once
    (each on its own ports of the one server process), so that whatever else
    the machine does weighs on both sides alike."""
    servers = int(args.rate * args.interval)
    ports = free_ports(2 * args.server_ports)
    keepalived_ports, pulsed_ports = ports[: args.server_ports], ports[args.server_ports :]
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", ",".join(map(str, ports)), "--uvloop"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    report: dict = {
        "servers": servers,
        "interval_s": args.interval,
        "duration_s": args.duration,
        "mode": "concurrent" if args.concurrent else "sequential",
        "pulsed_source": os.path.dirname(pulsed.__file__),
        **clock_conditions(),
    }
    me = [os.getpid()]
    try:
        async with _keepalived(keepalived_ports, servers, args) as keepalived_pids:
            if args.concurrent:
                async with _pulsed(pulsed_ports, servers, args):
                    await asyncio.sleep(args.warmup + args.interval)
                    phases = await _measure(server, args.duration, keepalived_pids, me)
                report["keepalived"] = _phase(keepalived_ports, *phases[0])
                report["pulsed"] = _phase(pulsed_ports, *phases[1])
            else:
                await asyncio.sleep(args.warmup + args.interval)
                phases = await _measure(server, args.duration, keepalived_pids)
                report["keepalived"] = _phase(keepalived_ports, *phases[0])
        if not args.concurrent:
            await asyncio.sleep(1)
            async with _pulsed(pulsed_ports, servers, args):
                await asyncio.sleep(args.warmup + args.interval)
                phases = await _measure(server, args.duration, me)
            report["pulsed"] = _phase(pulsed_ports, *phases[0])
        report["pulsed"]["loop"] = "uvloop" if args.uvloop else "asyncio"
        # For matching a system-wide profile (perf record -a) to each side.
        report["pids"] = {"keepalived": keepalived_pids, "pulsed": me, "server": server.pid}
        report["cpu_per_check_ratio_pulsed_over_keepalived"] = round(
            report["pulsed"]["cpu_us_per_check"] / report["keepalived"]["cpu_us_per_check"], 3
        )
    finally:
        server.terminate()
        server.wait()
    return report


@contextlib.asynccontextmanager
async def _keepalived(
    ports: list[int], servers: int, args: argparse.Namespace
) -> AsyncIterator[list[int]]:
    """keepalived's checkers running; yields the PIDs of its parent and checker."""
    with tempfile.TemporaryDirectory(prefix="pck-keepalived-") as tmp:
        conf = os.path.join(tmp, "keepalived.conf")
        with open(conf, "w") as f:
            f.write(keepalived_conf(ports, servers, args.interval, args.timeout))
        pid_file, checker_pid_file = os.path.join(tmp, "k.pid"), os.path.join(tmp, "c.pid")
        command = ["keepalived", "-n", "-C", "-G", "-f", conf]
        keepalived = subprocess.Popen(
            [*command, "-p", pid_file, "-c", checker_pid_file],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while not os.path.exists(checker_pid_file) or not os.path.getsize(checker_pid_file):
                if keepalived.poll() is not None:
                    raise RuntimeError(f"keepalived exited with status {keepalived.returncode}")
                await asyncio.sleep(0.1)  # keepalived signals nothing else
            with open(checker_pid_file) as f:
                yield [keepalived.pid, int(f.read())]
        finally:
            keepalived.terminate()
            keepalived.wait()


@contextlib.asynccontextmanager
async def _pulsed(ports: list[int], servers: int, args: argparse.Namespace) -> AsyncIterator[None]:
    """pulsed's HealthMonitor probing, as the daemon runs it."""
    check = CheckConfig(
        type="http", interval=Duration(args.interval), timeout=Duration(args.timeout)
    )
    service = ServiceKey.for_address("tcp", "192.0.2.1", 80)
    targets = {
        (service, DestKey(f"10.0.{i >> 8}.{i & 255}", ports[i % len(ports)])): Target(
            "127.0.0.1", ports[i % len(ports)], check
        )
        for i in range(servers)
    }
    monitor = HealthMonitor(lambda k, h: None, max_tick=args.max_tick)
    monitor.update(targets)
    await monitor.start()
    try:
        yield
    finally:
        await monitor.stop()


async def _measure(server: subprocess.Popen, duration: float, *sides: list[int]) -> list[tuple]:
    """(cpu before, cpu after, counts before, counts after, wall) per side (a PID list)."""
    before = [proc_cpu(pids) for pids in sides]
    counts0, t0 = server_counts(server), time.perf_counter()
    await asyncio.sleep(duration)
    after = [proc_cpu(pids) for pids in sides]
    counts1, t1 = server_counts(server), time.perf_counter()
    return [(b, a, counts0, counts1, t1 - t0) for b, a in zip(before, after, strict=True)]


def _phase(
    ports: list[int],
    cpu0: tuple[float, float],
    cpu1: tuple[float, float],
    counts0: dict[int, int],
    counts1: dict[int, int],
    wall: float,
) -> dict:
    checks = answered(counts1, ports) - answered(counts0, ports)
    user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    per_check = 1e6 / max(checks, 1)
    return {
        "checks_per_s": round(checks / wall, 1),
        "cpu_share_of_one_core": round((user + system) / wall, 3),
        "cpu_us_per_check": round((user + system) * per_check, 1),
        "user_us_per_check": round(user * per_check, 1),
        "sys_us_per_check": round(system * per_check, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000, help="checks per second wanted")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--server-ports", type=int, default=8)
    parser.add_argument("--uvloop", action="store_true", help="uvloop for pulsed and the server")
    parser.add_argument("--server-uvloop", action="store_true", help="uvloop for the server only")
    parser.add_argument("--impl", choices=["pulsed", "aiohttp"], default="pulsed")
    parser.add_argument(
        "--type",
        choices=["http", "tcp", "udp", "dns", "smtp", "icmp", "grpc", "send_expect"],
        default="http",
        help="the probe type (and so the protocol of the server)",
    )
    parser.add_argument(
        "--max-tick",
        type=float,
        default=DEFAULT_MAX_TICK,
        help="HealthMonitor's max_tick in seconds ([daemon] probe_tick_max; 0: no tick)",
    )
    parser.add_argument(
        "--compare-keepalived",
        action="store_true",
        help="same load through keepalived's checkers, then pulsed (needs IPVS: run in the VM)",
    )
    parser.add_argument(
        "--concurrent",
        action="store_true",
        help="with --compare-keepalived: run both sides at the same time, on separate ports",
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve([int(p) for p in args.serve.split(",")], args.uvloop, args.type)
        return
    # Per-server up/down lines would flood the terminal; the figures are the output.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.uvloop:
        import uvloop

        uvloop.install()
    report = asyncio.run(compare_keepalived(args) if args.compare_keepalived else run(args))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
