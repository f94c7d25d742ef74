"""A HealthMonitor in a process of its own, then a real local fault in that process.

Run as ``python -m tests.netns.local_fault_child MODE TCP_PORT HTTP_PORT LOOP``
(LOOP: asyncio or uvloop), with MODE one of:

- ``emfile``: the soft RLIMIT_NOFILE is set to 1,024 (what systemd gives a
  unit without LimitNOFILE), then idle TCP connections are opened until the
  process runs out of descriptors, as the API flood of issue 12 did; later
  they are closed again.
- ``seccomp-connect`` / ``seccomp-socket``: a seccomp filter (libseccomp, as
  systemd's SystemCallFilter= installs one) makes connect() or socket()
  fail with EPERM.

Both real servers (loopback, in the parent) are up first. The process prints
one JSON line: the health changes after both came up, the local-error
counts, and each server's final health. Waits are on events, never sleeps.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import json
import resource
import socket
import sys

import structlog

from pulsed.checks.base import Target
from pulsed.checks.config import CheckConfig
from pulsed.checks.monitor import HealthMonitor
from pulsed.durations import Duration
from pulsed.model import DestKey, ServiceKey

SVC = ServiceKey.for_address("tcp", "192.0.2.1", 80)
LOCAL_PER_SERVER = 5  # local errors each server must see during the fault
OK_AFTER = 3  # passes each server must see after the fault is gone


def seccomp_refuse(syscall: str) -> None:
    """Make ``syscall`` fail with EPERM in this process, from now on."""
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    ctx = ctypes.c_void_p(lib.seccomp_init(0x7FFF0000))  # SCMP_ACT_ALLOW
    number = lib.seccomp_syscall_resolve_name(syscall.encode())
    act_errno = 0x00050000 | errno.EPERM  # SCMP_ACT_ERRNO(EPERM)
    if lib.seccomp_rule_add(ctx, act_errno, number, 0) != 0 or lib.seccomp_load(ctx) != 0:
        raise SystemExit(f"cannot load a seccomp filter for {syscall}")
    lib.seccomp_release(ctx)


def exhaust_descriptors() -> tuple[list[socket.socket], socket.socket]:
    """Idle TCP connections to a local listener until EMFILE (the listener does
    not accept them: the kernel's queue holds them, as for a slow API)."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    address = listener.getsockname()
    held: list[socket.socket] = []
    while True:
        try:
            client = socket.socket()
        except OSError as exc:
            if exc.errno == errno.EMFILE:
                return held, listener
            raise
        client.connect(address)
        held.append(client)


async def main(mode: str, tcp_port: int, http_port: int) -> dict:
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
    keys = {
        "tcp": (SVC, DestKey("127.0.0.1", tcp_port)),
        "http": (SVC, DestKey("127.0.0.1", http_port)),
    }
    common = {"interval": Duration(0.05), "timeout": Duration(0.5), "rise": 1, "fall": 1}
    targets = {
        keys["tcp"]: Target("127.0.0.1", tcp_port, CheckConfig(type="tcp", **common)),
        keys["http"]: Target(
            "127.0.0.1",
            http_port,
            CheckConfig(type="http", weight_header="X-Weight", **common),
        ),
    }
    changes: list[tuple[str, bool]] = []
    names = {key: name for name, key in keys.items()}
    both_up = asyncio.Event()
    up: set[str] = set()
    phase = "start"
    local = dict.fromkeys(keys, 0)
    ok_after = dict.fromkeys(keys, 0)
    enough_local = asyncio.Event()
    enough_ok = asyncio.Event()
    categories: dict[str, set[str]] = {name: set() for name in keys}

    def on_change(key, health) -> None:
        name = names[key]
        if phase == "start":
            if health.up:
                up.add(name)
            if up == set(keys):
                both_up.set()
            return
        changes.append((name, health.up))

    def on_result(key, result) -> None:
        name = names[key]
        if phase == "fault":
            categories[name].add(result.category)
            if result.category == "local":
                local[name] += 1
                if min(local.values()) >= LOCAL_PER_SERVER:
                    enough_local.set()
        elif phase == "after" and result.ok:
            ok_after[name] += 1
            if min(ok_after.values()) >= OK_AFTER:
                enough_ok.set()

    monitor = HealthMonitor(on_change, on_result=on_result)
    monitor.update(targets)
    await monitor.start()
    flood = 0
    try:
        async with asyncio.timeout(60):
            await both_up.wait()
            phase = "fault"
            if mode == "emfile":
                resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
                held, listener = exhaust_descriptors()
                flood = len(held)
            else:
                seccomp_refuse(mode.removeprefix("seccomp-"))
            await enough_local.wait()
            if mode == "emfile":
                for client in held:
                    client.close()
                listener.close()
                phase = "after"
                await enough_ok.wait()
    finally:
        await monitor.stop()
    health = monitor.health()
    faults = monitor.local_faults()
    return {
        "flood": flood,
        "changes": changes,
        "categories": {name: sorted(c) for name, c in categories.items()},
        "local_totals": {k: v for k, v in faults.totals.items() if v},
        "health": {
            name: {
                "up": health[key].up,
                "consecutive_fail": health[key].consecutive_fail,
                "weight_pct": health[key].weight_pct,
                "local_errors": health[key].local_errors,
                "local_error": health[key].local_error,
            }
            for name, key in keys.items()
        },
    }


if __name__ == "__main__":
    mode, tcp_port, http_port, loop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    runner = asyncio.run
    if loop == "uvloop":
        import uvloop

        runner = uvloop.run
    print(json.dumps(runner(main(mode, tcp_port, http_port))), flush=True)
