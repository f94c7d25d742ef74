"""A load generator that counts every request and its outcome, never sampling.

    python lab/loadgen.py 192.0.2.100:80 --duration 10 [--concurrency 8] [--rate 200]
                          [--keepalive] [--netns plab-client]

Each worker fetches ``/`` in a loop, by default over a fresh TCP connection per
request (so that IPVS schedules every request), and records one ``Outcome``
per request: when it started and ended, which server answered (the body of
the lab's real servers is their name) or why it failed. Nothing is sampled:
the outcome list is the ground truth the lab and its tests count from.

``LoadThread`` runs a generator on its own thread and event loop, optionally
inside a network namespace, so the lab driver can watch it live.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

if __package__ in (None, ""):  # run as a script: make `lab` importable
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))

from lab.netns import enter_netns

MAX_RESPONSE = 65536


@dataclass(slots=True)
class Outcome:
    start: float  # time.monotonic() when the request began (before connect)
    end: float
    server: str | None  # who answered, on success
    error: str | None  # why it failed, else None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Summary:
    total: int = 0
    ok: int = 0
    failed: int = 0
    by_server: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    latency_p50: float = 0.0
    latency_p99: float = 0.0
    latency_max: float = 0.0

    @property
    def rate(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else 0.0

    def share(self, server: str) -> float:
        return self.by_server[server] / self.ok if self.ok else 0.0

    def as_dict(self) -> dict:
        return {
            "total": self.total,
            "ok": self.ok,
            "failed": self.failed,
            "by_server": dict(sorted(self.by_server.items())),
            "errors": dict(self.errors),
            "seconds": round(self.seconds, 3),
            "rate": round(self.rate, 1),
            "latency_p50_ms": round(self.latency_p50 * 1000, 2),
            "latency_p99_ms": round(self.latency_p99 * 1000, 2),
            "latency_max_ms": round(self.latency_max * 1000, 2),
        }


def summarize(
    outcomes: Iterable[Outcome], since: float | None = None, until: float | None = None
) -> Summary:
    """Count the requests that *started* within [since, until)."""
    picked = [
        o
        for o in outcomes
        if (since is None or o.start >= since) and (until is None or o.start < until)
    ]
    s = Summary(total=len(picked))
    latencies = []
    for o in picked:
        if o.ok:
            s.ok += 1
            s.by_server[o.server] += 1
        else:
            s.failed += 1
            s.errors[o.error] += 1
        latencies.append(o.end - o.start)
    if picked:
        first = since if since is not None else min(o.start for o in picked)
        last = until if until is not None else max(o.end for o in picked)
        s.seconds = max(last - first, 1e-9)
        latencies.sort()
        s.latency_p50 = latencies[len(latencies) // 2]
        s.latency_p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        s.latency_max = latencies[-1]
    return s


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "connection closed early"
    if isinstance(exc, OSError) and exc.errno:
        return errno.errorcode.get(exc.errno, str(exc.errno)).lower()
    return type(exc).__name__


def _parse_response(data: bytes) -> tuple[str | None, str | None]:
    """(server, error) from a whole response."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return None, "empty response" if not data else "truncated response"
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return None, "bad status line"
    if parts[1] != "200":
        return None, f"status {parts[1]}"
    return body.decode("utf-8", "replace").strip() or "?", None


class LoadGen:
    """Requests ``http://host:port/`` from ``concurrency`` workers, recording every outcome."""

    def __init__(
        self,
        host: str,
        port: int = 80,
        concurrency: int = 4,
        rate: float | None = None,
        timeout: float = 5.0,
        keepalive: bool = False,
    ) -> None:
        self.host, self.port = host, port
        self.concurrency = concurrency
        self.rate = rate  # requests per second over all workers; None: as fast as possible
        self.timeout = timeout
        self.keepalive = keepalive
        self.outcomes: list[Outcome] = []
        self.connects = 0  # TCP connections opened (keep-alive: 1 per worker unless broken)
        self._request = (
            f"GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: pulsed-lab\r\n"
            + ("" if keepalive else "Connection: close\r\n")
            + "\r\n"
        ).encode()

    async def run(self, stop: asyncio.Event) -> None:
        workers = [asyncio.create_task(self._worker(stop, i)) for i in range(self.concurrency)]
        await asyncio.gather(*workers)

    async def _worker(self, stop: asyncio.Event, index: int) -> None:
        period = self.concurrency / self.rate if self.rate else 0.0
        loop = asyncio.get_running_loop()
        next_at = loop.time() + period * index / max(self.concurrency, 1)
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while not stop.is_set():
                if period:
                    delay = next_at - loop.time()
                    if delay > 0:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), delay)
                        if stop.is_set():
                            break
                    # Pace, but never burst to catch up after a slow request.
                    next_at = max(next_at + period, loop.time())
                conn = await self._one(conn)
        finally:
            if conn is not None:
                conn[1].close()

    async def _one(self, conn):
        start = time.monotonic()
        server = error = None
        try:
            async with asyncio.timeout(self.timeout):
                if conn is None:
                    conn = await asyncio.open_connection(self.host, self.port)
                    self.connects += 1
                reader, writer = conn
                writer.write(self._request)
                await writer.drain()
                if self.keepalive:
                    data = await self._read_keepalive(reader)
                else:
                    data = await reader.read(MAX_RESPONSE)
                    while len(data) < MAX_RESPONSE and (chunk := await reader.read(4096)):
                        data += chunk
                server, error = _parse_response(data)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            error = _describe(exc)
        if conn is not None and (error is not None or not self.keepalive):
            conn[1].close()
            conn = None
        self.outcomes.append(Outcome(start, time.monotonic(), server, error))
        return conn

    @staticmethod
    async def _read_keepalive(reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        return head + await reader.readexactly(length)


class LoadThread:
    """Runs a LoadGen on its own thread (inside ``netns`` if given) until ``stop()``."""

    def __init__(self, gen: LoadGen, netns: str | None = None) -> None:
        self.gen = gen
        self.netns = netns
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="loadgen", daemon=True)

    def start(self) -> LoadThread:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def _main(self) -> None:
        try:
            if self.netns:
                enter_netns(self.netns)
            self._loop = asyncio.new_event_loop()
            self._stop = asyncio.Event()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop.run_until_complete(self.gen.run(self._stop))
        finally:
            self._loop.close()

    @property
    def outcomes(self) -> list[Outcome]:
        return self.gen.outcomes

    def stop(self) -> list[Outcome]:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=self.gen.timeout + 5)
        return self.gen.outcomes

    def __enter__(self) -> LoadThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="HOST:PORT, e.g. 192.0.2.100:80")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rate", type=float, default=None, help="requests/s (default: max)")
    parser.add_argument("--timeout", type=float, default=5.0, help="per request, seconds")
    parser.add_argument("--keepalive", action="store_true", help="reuse one connection per worker")
    parser.add_argument("--netns", default=None, help="run inside this network namespace")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"target {args.target!r}: expected HOST:PORT")
    gen = LoadGen(host, int(port), args.concurrency, args.rate, args.timeout, args.keepalive)
    thread = LoadThread(gen, args.netns)
    try:
        thread.start()
    except OSError as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 1
    begin = time.monotonic()
    with contextlib.suppress(KeyboardInterrupt):
        time.sleep(args.duration)
    outcomes = thread.stop()
    summary = summarize(outcomes, since=begin)
    if args.json:
        print(json.dumps(summary.as_dict()))
    else:
        d = summary.as_dict()
        print(
            f"{d['total']} requests in {d['seconds']}s ({d['rate']}/s): {d['ok']} ok,"
            f" {d['failed']} failed {d['errors'] or ''}"
        )
        print(f"by server: {d['by_server']}")
        print(
            f"latency p50 {d['latency_p50_ms']} ms, p99 {d['latency_p99_ms']} ms,"
            f" max {d['latency_max_ms']} ms"
        )
    return 0 if summary.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
