"""Memory under hostile servers: RSS of the probe engine over time.

Hostile servers run on loopback in another process (``--serve``): they
trickle, send endless headers, endless bodies (by length, chunked, or in
one-byte chunks), garbage, resets, status codes thousands of digits long,
a new status code every time, never answer, or send most of a body and
stall, on a bad day that comes and goes every ``--flap`` seconds; most of
them also serve over TLS. This process runs only pulsed's
HealthMonitor probing them (http checks that read the status alone, http
checks that read the whole response, https, tcp, and optionally exec checks
that flood their output), and samples its own RSS every ``--sample``
seconds. Reported: RSS before probing, at the end of the warm-up ("start"),
the lowest and highest after it, at the end, and the largest difference from
"start" in percent.

    flock /tmp/pulsed-bench.lock .venv/bin/python benchmarks/hostile.py --duration 300

``--tracemalloc`` also reports where Python memory was allocated at the peak
(slower; for finding causes, not for the RSS figure). ``--hold 200`` instead
holds 200 exchanges in flight against one kind of server (``--kinds``,
default tls_partial) and reports memory per exchange.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import ctypes
import gc
import json
import logging
import random
import socket
import ssl
import subprocess
import sys
import time
import tracemalloc

import structlog

from pulsed.checks.base import ProbeResult, Target
from pulsed.checks.config import CheckConfig
from pulsed.checks.monitor import HealthMonitor
from pulsed.checks.probes import make_probe
from pulsed.durations import Duration
from pulsed.model import DestKey, ServiceKey

# --- hostile servers (their own process) ----------------------------------------------

_CHUNK = b"x" * 16384


async def _drain(writer: asyncio.StreamWriter, data: bytes) -> None:
    if writer.transport.is_closing():  # drain() would not say so
        raise ConnectionResetError
    writer.write(data)
    await writer.drain()
    await asyncio.sleep(0)  # drain() may return without yielding: let the others run


async def trickle(reader, writer) -> None:
    await _drain(writer, b"HTTP/1.1 200 OK\r\n")
    while True:  # one header byte at a time, forever
        await _drain(writer, b"a")
        await asyncio.sleep(0.05)


async def huge_headers(reader, writer) -> None:
    await _drain(writer, b"HTTP/1.1 200 OK\r\n")
    line = b"X-Junk: " + _CHUNK + b"\r\n"
    while True:
        await _drain(writer, line)


async def huge_body(reader, writer) -> None:
    await _drain(writer, b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n")
    while True:
        await _drain(writer, _CHUNK)


async def endless_chunked(reader, writer) -> None:
    await _drain(writer, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (len(_CHUNK), _CHUNK)
    while True:
        await _drain(writer, chunk)


async def tiny_chunks(reader, writer) -> None:
    await _drain(writer, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    while True:
        await _drain(writer, b"1\r\nx\r\n" * 2048)


# Seeded (--seed): the same run gives the same garbage and status codes.
RNG = random.Random(0)
FLAP = 0.0  # seconds; see partial()


async def garbage(reader, writer) -> None:
    rng = random.Random(RNG.random())
    while True:
        await _drain(writer, rng.randbytes(16384))


async def reset(reader, writer) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    writer.transport.abort()


async def huge_status(reader, writer) -> None:
    digits = b"9" * 4000  # just under Python's int-conversion limit
    await _drain(writer, b"HTTP/1.1 " + digits + b" No\r\nContent-Length: 0\r\n\r\n")
    writer.close()


async def random_status(reader, writer) -> None:
    # A new code every time: three digits, or thirty.
    status = str(RNG.choice((RNG.randrange(100, 1000), RNG.randrange(10**30, 10**31)))).encode()
    await _drain(writer, b"HTTP/1.1 " + status + b" No\r\nX-Weight: " + status + b"\r\n\r\nx")
    writer.close()


async def _until_closed(reader) -> None:
    while await reader.read(65536):
        pass


async def partial(reader, writer) -> None:
    """A head and most of a body, then nothing until the prober gives up; in
    every other ``--flap`` period, a quick small answer instead: a bad day that
    comes and goes, so the number of exchanges in flight swings with it."""
    if FLAP and int(time.monotonic() / FLAP) % 2:
        await _drain(writer, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return
    await _drain(writer, b"HTTP/1.1 200 OK\r\nContent-Length: 999999\r\n\r\n" + b"x" * 60000)
    await _until_closed(reader)


async def silent(reader, writer) -> None:
    await asyncio.Event().wait()  # reads nothing, says nothing


KINDS = {
    "trickle": trickle,
    "huge_headers": huge_headers,
    "huge_body": huge_body,
    "endless_chunked": endless_chunked,
    "tiny_chunks": tiny_chunks,
    "garbage": garbage,
    "reset": reset,
    "huge_status": huge_status,
    "random_status": random_status,
    "silent": silent,
    "partial": partial,
}
# Served over TLS as well (a silent TLS server stalls the handshake).
TLS_KINDS = (
    "huge_body",
    "endless_chunked",
    "tiny_chunks",
    "trickle",
    "silent",
    "random_status",
    "partial",
)


def _tls_server_context() -> ssl.SSLContext:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    return ctx


def serve(spec: dict) -> None:
    global FLAP
    RNG.seed(spec.get("seed", 0))
    FLAP = spec.get("flap", 0.0)

    async def main() -> None:
        ports = {}
        tls = _tls_server_context()
        for kind, handler in KINDS.items():
            ports[kind] = await _listen(handler, None)
            if kind in TLS_KINDS:
                ports["tls_" + kind] = await _listen(handler, tls)
        print(json.dumps(ports), flush=True)
        await asyncio.Event().wait()

    async def _listen(handler, ctx) -> int:
        async def wrapped(reader, writer) -> None:
            try:
                await handler(reader, writer)
            except (ConnectionError, ssl.SSLError, OSError):
                pass
            finally:
                writer.transport.abort()

        extra = {"ssl": ctx, "ssl_handshake_timeout": 3600} if ctx else {}
        server = await asyncio.start_server(wrapped, "127.0.0.1", 0, backlog=4096, **extra)
        return server.sockets[0].getsockname()[1]

    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # peers that hang up are the point
    import uvloop  # the servers must outpace the prober

    uvloop.install()
    asyncio.run(main())


# --- the probing side ---------------------------------------------------------------


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def malloc_kib() -> tuple[int, int, int]:
    """glibc's heap: (in use, free but kept, mmapped), KiB (0s without mallinfo2)."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):
        return (0, 0, 0)
    return (info.uordblks // 1024, info.fordblks // 1024, info.hblkhd // 1024)


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def targets_for(ports: dict[str, int], args: argparse.Namespace) -> dict:
    common = {
        "interval": Duration(args.interval),
        "timeout": Duration(args.timeout),
        "jitter": Duration(args.interval),
    }
    checks = {
        "status": CheckConfig(type="http", **common),
        "full": CheckConfig(type="http", body_regex="ok", weight_header="X-Weight", **common),
        "tls": CheckConfig(
            type="https", tls_verify=False, body_regex="ok", weight_header="X-Weight", **common
        ),
        "tcp": CheckConfig(type="tcp", **common),
        "exec": CheckConfig(type="exec", command=("yes",), **common),
    }
    kinds = args.kinds.split(",") if args.kinds else list(KINDS)
    plan: list[tuple[str, str]] = []
    for kind in kinds:
        plan += [(kind, "status"), (kind, "full")]
    plan += [("tls_" + kind, "tls") for kind in TLS_KINDS if kind in kinds]
    if "silent" in kinds:
        plan.append(("silent", "tcp"))
    if args.only:
        plan = [(kind, check) for kind, check in plan if check in args.only.split(",")]
    if args.exec:
        plan.append(("-", "exec"))
    service = ServiceKey.for_address("tcp", "192.0.2.1", 80)
    targets = {}
    n = 0
    for kind, check_name in plan:
        port = ports.get(kind, 1)
        for _ in range(args.per_kind):
            n += 1
            key = (service, DestKey(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", port))
            targets[key] = Target("127.0.0.1", port, checks[check_name])
    return targets


async def measure(args: argparse.Namespace, ports: dict[str, int]) -> dict:
    if args.tracemalloc:
        tracemalloc.start(10)
    targets = targets_for(ports, args)
    ports_kind = {port: kind for kind, port in ports.items()}
    results: collections.Counter[str] = collections.Counter()

    def on_result(key: object, result: ProbeResult) -> None:
        results[f"{ports_kind.get(key[1].port, '?')}: {result.category}"] += 1

    monitor = HealthMonitor(lambda k, h: None, on_result=on_result)
    monitor.update(targets)
    before = rss_kib()
    await monitor.start()
    samples: list[tuple] = []
    t0 = time.monotonic()
    start_rss = None
    peak_snapshot = None
    peak_rss = 0
    while (elapsed := time.monotonic() - t0) < args.warmup + args.duration:
        await asyncio.sleep(args.sample)
        monitor.health()  # as the daemon's reconcile pass does
        rss = rss_kib()
        samples.append((round(time.monotonic() - t0, 1), rss, monitor.in_flight, *malloc_kib()))
        if start_rss is None and elapsed >= args.warmup:
            start_rss = rss
        if start_rss is not None and rss > peak_rss:
            peak_rss = rss
            if args.tracemalloc:
                peak_snapshot = tracemalloc.take_snapshot()
    await monitor.stop()
    after = [sample[1] for sample in samples if sample[0] >= args.warmup]
    start_rss = start_rss or after[0]
    report = {
        "targets": len(targets),
        "interval_s": args.interval,
        "timeout_s": args.timeout,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "loop": "uvloop" if args.uvloop else "asyncio",
        "seed": args.seed,
        "trim_threshold_mib": args.trim_threshold,
        "flap_s": args.flap,
        "probes": sum(results.values()),
        "results_by_category": dict(results.most_common()),
        "rss_mib_before_probing": round(before / 1024, 1),
        "rss_mib_start": round(start_rss / 1024, 1),
        "rss_mib_min": round(min(after) / 1024, 1),
        "rss_mib_max": round(max(after) / 1024, 1),
        "rss_mib_end": round(after[-1] / 1024, 1),
        "max_swing_pct_of_start": round(
            max(abs(r - start_rss) for r in after) / start_rss * 100, 1
        ),
        # seconds, RSS MiB, probes in flight, malloc in use, free but kept, mmapped (MiB)
        "samples": [
            (t, round(r / 1024, 1), n, *(round(k / 1024, 1) for k in m))
            for t, r, n, *m in samples[:: max(1, args.every)]
        ],
    }
    if peak_snapshot is not None:
        stats = peak_snapshot.statistics("traceback")[:8]
        report["tracemalloc_top_at_peak"] = [
            {"kib": round(s.size / 1024), "count": s.count, "where": s.traceback.format()[-6:]}
            for s in stats
        ]
        report["tracemalloc_peak_mib"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
    return report


async def hold(args: argparse.Namespace, ports: dict[str, int]) -> dict:
    """Memory per exchange in flight: ``--hold N`` probes of one kind (default
    tls_partial: a head and most of a body, then a stall) held at once."""
    kind = args.kinds or "tls_partial"
    check = CheckConfig(
        type="https" if kind.startswith("tls_") else "http",
        tls_verify=False,
        body_regex="never",
        timeout=Duration(60.0),
        interval=Duration(60.0),
    )
    probes = [make_probe(Target("127.0.0.1", ports[kind], check)) for _ in range(args.hold)]
    warm = "tls_huge_body" if kind.startswith("tls_") else "huge_body"  # contexts, imports
    await asyncio.wait_for(make_probe(Target("127.0.0.1", ports[warm], check)).probe(), 60)
    gc.collect()
    rss0 = rss_kib()
    tracemalloc.start()
    tasks = [asyncio.create_task(p.probe()) for p in probes]
    await asyncio.sleep(args.sample * 3)  # the servers stall: all are held by now
    traced = tracemalloc.get_traced_memory()[0]
    rss1 = rss_kib()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "kind": kind,
        "held": args.hold,
        "rss_kib_per_exchange": round((rss1 - rss0) / args.hold, 1),
        "python_kib_per_exchange": round(traced / args.hold / 1024, 1),
    }


async def run(args: argparse.Namespace) -> dict:
    spec = json.dumps({"seed": args.seed, "flap": 0 if args.hold else args.flap})
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", spec], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        ports = json.loads(server.stdout.readline())
        return await (hold(args, ports) if args.hold else measure(args, ports))
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds after warm-up")
    parser.add_argument(
        "--warmup", type=float, default=60.0, help='seconds before "start" (two --flap periods)'
    )
    parser.add_argument("--per-kind", type=int, default=20, help="targets per server kind")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--sample", type=float, default=1.0, help="seconds between RSS samples")
    parser.add_argument("--every", type=int, default=1, help="report every n-th sample")
    parser.add_argument("--kinds", help="comma-separated server kinds (default: all)")
    parser.add_argument("--only", help="comma-separated check kinds: status,full,tls,tcp")
    parser.add_argument("--exec", action="store_true", help="add exec checks that flood stdout")
    parser.add_argument("--uvloop", action="store_true", help="uvloop for the prober")
    parser.add_argument("--flap", type=float, default=30.0, help="bad-day period (0: always)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the servers' garbage")
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument(
        "--trim-threshold", type=float, default=0, help="MiB; glibc mallopt (0: its default)"
    )
    parser.add_argument("--hold", type=int, default=0, help="see hold(): memory per exchange")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(json.loads(args.serve))
        return
    # probe.up/probe.down lines are not what is measured here.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )
    if args.trim_threshold:
        # glibc: give the heap's top back only past this much free (M_TRIM_THRESHOLD),
        # and a fixed mmap threshold (M_MMAP_THRESHOLD: no dynamic raising), so
        # large blocks never sit in the heap.
        libc = ctypes.CDLL(None)
        libc.mallopt(-1, int(args.trim_threshold * 2**20))
        libc.mallopt(-3, 256 * 1024)
    gc.collect()
    runner = asyncio.run
    if args.uvloop:
        import uvloop

        runner = uvloop.run
    print(json.dumps(runner(run(args)), indent=1))


if __name__ == "__main__":
    main()
