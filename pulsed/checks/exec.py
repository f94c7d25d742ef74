"""exec: run a command (no shell); exit 0 means up.

The command may print the server's weight, as a percentage of its
configured weight, as the first word of its output ("75" or "75%"): the
modern form of keepalived's dynamic MISC_CHECK and piranha's load monitor.
On timeout the whole process group is killed, so a hung helper and any
children it started do not pile up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

from pulsed.checks.base import ProbeResult, Target, timeout_result
from pulsed.checks.http import parse_weight_pct

_MAX_OUTPUT = 4096


class ExecProbe:
    def __init__(self, target: Target) -> None:
        port = str(target.probe_port)
        self.argv = [
            arg.replace("{address}", target.address).replace("{port}", port)
            for arg in target.check.command
        ]
        self.env = {**os.environ, "PULSED_ADDRESS": target.address, "PULSED_PORT": port}
        self.timeout = float(target.check.timeout)

    async def probe(self) -> ProbeResult:
        start = time.perf_counter()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,  # its own process group, killed as one
            )
        except OSError as exc:
            reason = f"cannot run {self.argv[0]}: {(exc.strerror or 'error').lower()}"
            return ProbeResult(False, reason, time.perf_counter() - start, "error")
        try:
            async with asyncio.timeout(self.timeout):
                output = await _read_capped(proc.stdout)
                code = await proc.wait()
        except TimeoutError:
            await _kill_group(proc)
            return timeout_result(self.timeout, time.perf_counter() - start)
        except asyncio.CancelledError:
            await asyncio.shield(_kill_group(proc))
            raise
        latency = time.perf_counter() - start
        if code != 0:
            reason = f"exit {code}" if code > 0 else f"killed by signal {-code}"
            return ProbeResult(False, reason, latency, "exit")
        words = output.split(maxsplit=1)
        weight_pct = parse_weight_pct(words[0]) if words else None
        return ProbeResult(True, "exit 0", latency, "ok", weight_pct)


async def _read_capped(stream: asyncio.StreamReader | None) -> bytes:
    """All output until EOF, keeping only the first _MAX_OUTPUT bytes (a chatty
    command must not block on a full pipe, nor fill pulsed's memory)."""
    kept = bytearray()
    if stream is None:
        return b""
    while chunk := await stream.read(65536):
        if len(kept) < _MAX_OUTPUT:
            kept += chunk[: _MAX_OUTPUT - len(kept)]
    return bytes(kept)


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(proc.wait(), 5)
