"""Memory stays bounded under hostile servers (the seeded, short form of
benchmarks/hostile.py, which measures RSS over minutes).

What is asserted is deterministic: bytes a response parser holds at any
point of an adversarial stream, Python memory one https probe allocates,
and Python memory left over after rounds of probes against every kind of
hostile server. No timing: a round ends when every probe has its result.
The hostile servers run in another process (benchmarks/hostile.py --serve),
so their own allocations are not counted. No root needed.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from pulsed.checks.base import Target
from pulsed.checks.config import CheckConfig
from pulsed.checks.http import ResponseParser
from pulsed.checks.probes import make_probe
from pulsed.durations import Duration

REPO = Path(__file__).resolve().parents[2]
KIB = 1024


@pytest.fixture(scope="module")
def hostile() -> Iterator[dict[str, int]]:
    """Ports of the hostile servers, by kind (see benchmarks/hostile.py)."""
    server = subprocess.Popen(
        [sys.executable, str(REPO / "benchmarks" / "hostile.py"), "--serve", '{"seed": 7}'],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert server.stdout is not None
        yield json.loads(server.stdout.readline())
    finally:
        server.kill()
        server.wait()


def _streams(rng: random.Random) -> Iterator[bytes]:
    """Responses that never end, or end late: endless headers, bodies by
    length, chunked in big and one-byte chunks, to end of stream, garbage."""
    yield b"HTTP/1.1 200 OK\r\n" + b"X-Junk: " + b"a" * 200_000
    yield b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n" + b"x" * 200_000
    yield b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"4000\r\n" + b"y" * 200_000
    yield b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1\r\nz\r\n" * 40_000
    yield b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"10\r\n0\r\n" * 30_000
    yield b"HTTP/1.0 200 OK\r\n\r\n" + rng.randbytes(200_000)
    yield rng.randbytes(200_000)


@pytest.mark.parametrize("need_body", [True, False])
def test_a_parser_holds_at_most_max_bytes_at_every_step(need_body: bool) -> None:
    """Between reads an exchange keeps one copy of at most max_bytes (it kept a
    second, the body decoded so far, before)."""
    rng = random.Random(11)
    max_bytes = 16 * KIB
    for stream in _streams(rng):
        parser = ResponseParser(need_body, False, max_bytes, lambda resp, latency: resp)
        pos = 0
        while pos < len(stream) and not parser.finished:
            step = rng.choices((1, 7, 100, 1500, 4000, 65536), (1, 1, 2, 4, 4, 1))[0]
            parser.feed(stream[pos : pos + step])
            pos += step
            if not parser.finished:
                held = len(parser.buffer) + len(parser.response.body)
                assert held <= max_bytes, (stream[:60], pos)
        response = parser.result(0.0)
        assert len(response.body) <= max_bytes


def test_http_probes_share_what_servers_cannot_change() -> None:
    """Per-probe objects: the set of expected status codes (300 ints for
    "200-399", 12 KiB) is shared by probes with the same setting, and the
    reason text per status code by all, however many codes servers send."""
    check = CheckConfig(type="http")
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        probes = [make_probe(Target("127.0.0.1", 80, check)) for _ in range(1000)]
        per_probe = (tracemalloc.get_traced_memory()[0] - base) / len(probes)
        base = tracemalloc.get_traced_memory()[0]
        for probe in probes[:10]:
            for status in range(100, 10_000):
                probe.judge_status(status, 0.0)
        reasons = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert per_probe < 2 * KIB, per_probe
    assert reasons < 128 * KIB, reasons


def _check(kind: str, timeout: float = 0.3, **fields: object) -> CheckConfig:
    common = {"timeout": Duration(timeout), "interval": Duration(60.0), "max_bytes": 8 * KIB}
    if kind.startswith("tls_"):
        return CheckConfig(type="https", tls_verify=False, **common, **fields)
    return CheckConfig(type="http", **common, **fields)


async def test_an_https_probe_allocates_no_large_buffer(hostile: dict[str, int]) -> None:
    """asyncio's SSL transport allocated 256 KiB per connection and read
    256 KiB at a time; a probe reading 8 KiB needs a small part of that."""
    check = _check("tls_huge_body", timeout=30.0)  # whatever the machine's load
    probe = make_probe(Target("127.0.0.1", hostile["tls_huge_body"], check))
    await probe.probe()  # first use: the TLS context, imports, caches
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = await probe.probe()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert result.reason == "body did not match" or result.ok  # it did read the body
    assert peak < 96 * KIB, peak


async def test_rounds_of_hostile_probes_leave_nothing_behind(hostile: dict[str, int]) -> None:
    """Every kind of hostile server, status-only, whole-response and https
    checks: after the first rounds, more rounds add (next to) nothing. A
    cache keyed by what servers send (a reason text per status code, per
    probe) or a buffer kept per exchange would grow here."""
    probes = []
    for kind, port in hostile.items():
        probes.append(make_probe(Target("127.0.0.1", port, _check(kind))))
        fields = {"body_regex": "ok", "weight_header": "X-Weight"}
        probes.append(make_probe(Target("127.0.0.1", port, _check(kind, **fields))))

    async def round_() -> None:
        results = await asyncio.gather(*(p.probe() for p in probes))
        assert len(results) == len(probes)

    for _ in range(3):  # warm up: contexts, caches, the loop's own structures
        await round_()
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(20):
            await round_()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 64 * KIB, grown
