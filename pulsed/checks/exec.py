"""exec: run a command (no shell); exit 0 means up.

``{address}`` and ``{port}`` (and PULSED_ADDRESS, PULSED_PORT) are where the
check probes: its ``address`` and ``port`` when set, else the real server's.
A command opens its own sockets, so ``bind_address`` and ``bind_interface``
reach it as PULSED_BIND_ADDRESS and PULSED_BIND_INTERFACE, for it to honour.

The command may print the server's weight, as a percentage of its
configured weight, as the first word of its output ("75" or "75%"): the
modern form of keepalived's dynamic MISC_CHECK and piranha's load monitor.

Nothing a command starts outlives its probe (pulsed.checks.reaper): it runs
in a session of its own; when it exits, or at its timeout, or when the probe
is cancelled, its whole group is killed, it is reaped, and whatever escaped
the group (``setsid``, a double-forking daemon) is killed by the reaper. The
probe waits for the command's exit (a pidfd on the loop), not for the end of
its output: a helper that inherited stdout and keeps it open cannot hold the
probe past the command's own exit.
"""

from __future__ import annotations

import asyncio
import os
import time

from pulsed.checks.base import ProbeResult, Target, local_result, timeout_result
from pulsed.checks.http import parse_weight_pct
from pulsed.checks.piped import PipedRun, spawn_problem


class ExecProbe:
    def __init__(self, target: Target) -> None:
        check = target.check
        address, port = target.probe_address, str(target.probe_port)
        self.argv = [
            arg.replace("{address}", address).replace("{port}", port) for arg in check.command
        ]
        self.env = {**os.environ, "PULSED_ADDRESS": address, "PULSED_PORT": port}
        # A command opens its own sockets: it is told where to bind them.
        if check.bind_address is not None:
            self.env["PULSED_BIND_ADDRESS"] = check.bind_address
        if check.bind_interface is not None:
            self.env["PULSED_BIND_INTERFACE"] = check.bind_interface
        self.timeout = float(target.check.timeout)

    async def probe(self) -> ProbeResult:
        start = time.perf_counter()
        try:
            run = PipedRun(self.argv, self.env, "stdout")
        except OSError as exc:
            return spawn_failure(self.argv[0], exc, time.perf_counter() - start)
        timed_out = False
        try:
            async with asyncio.timeout(self.timeout):
                await asyncio.shield(run.exited)
        except TimeoutError:
            timed_out = True
        finally:
            latency = time.perf_counter() - start
            # Also when cancelled: the group is killed and reaped before we go.
            code = await asyncio.shield(run.end())
        if timed_out:
            return timeout_result(self.timeout, latency)
        if code != 0:
            reason = f"exit {code}" if code > 0 else f"killed by signal {-code}"
            return ProbeResult(False, reason, latency, "exit")
        words = run.output.split(maxsplit=1)
        weight_pct = parse_weight_pct(words[0]) if words else None
        return ProbeResult(True, "exit 0", latency, "ok", weight_pct)


def spawn_failure(command: str, exc: OSError, latency: float) -> ProbeResult:
    """A command that could not be started: the router's fault when it ran out
    of something or a sandbox refused (pulsed.checks.base.local_fault: a local
    result, which never moves the server), else the command's ("error").
    EACCES is the command's: check-config refuses a file that cannot run."""
    text, fault = spawn_problem(exc)
    if fault is not None:
        return local_result(fault, f"cannot run {command}: {text}", latency)
    return ProbeResult(False, f"cannot run {command}: {text}", latency, "error")
