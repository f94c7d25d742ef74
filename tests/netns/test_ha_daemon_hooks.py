"""Notify hooks of the real daemon (``pulsed run --backend memory``) in namespaces: the
commands and FIFO lines of each VRRP transition and of a real server going down, and a
notify_master that hangs delays no advert. Needs root; touches only the lab's namespaces."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import stat
import subprocess
import sys

import pytest

from lab.ha_pair import VIP, HaPair, netns_exec, toml_value

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

REAL_PORT = 8081
# A real server inside router 1's namespace: accepts and closes, until killed.
LISTENER = (
    "import socket, sys\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    f"s.bind(('127.0.0.1', {REAL_PORT})); s.listen(128); print('ready', flush=True)\n"
    "while True: s.accept()[0].close()\n"
)


def daemon_config(lab: HaPair, *, priority: int, fifo: str = "", timeout: str = "10s",
                  real_hooks: str = "", **vrrp) -> str:  # fmt: skip
    inst = {
        "name": "VI_1",
        "interface": lab.ifname(0),
        "vrid": 51,
        "priority": priority,
        "advert_interval": "100ms",
        "virtual_addresses": [f"{VIP}/24"],
        "garp_count": 3,
        "track_interval": "50ms",
        **vrrp,
    }
    return (
        f'[daemon]\nstate_dir = "{lab.dir}/r1-state"\n\n'
        '[api]\nlisten = "127.0.0.1:9480"\nstatus_refresh = "100ms"\n\n'
        f'[hooks]\ntimeout = "{timeout}"\nfifo = "{fifo}"\n\n'
        "[[vrrp]]\n"
        + "".join(f"{k} = {toml_value(v)}\n" for k, v in inst.items())
        + f'\n[[service]]\nname = "web"\nvip = "{VIP}"\nport = 80\n'
        '[service.check]\ntype = "tcp"\ninterval = "100ms"\ntimeout = "100ms"\nrise = 1\nfall = 1\n'
        f'[[service.real]]\naddress = "127.0.0.1:{REAL_PORT}"\n{real_hooks}'
    )


class FifoReader:
    """The notify FIFO's reader end, opened before the daemon starts (it writes only
    while a reader is there); ``lines()`` drains what has arrived."""

    def __init__(self, path: str) -> None:
        os.mkfifo(path)
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.buf = b""

    def lines(self) -> list[str]:
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.fd, 65536):
                self.buf += chunk
        return self.buf.decode().splitlines()

    def close(self) -> None:
        os.close(self.fd)


def hook_script(lab: HaPair) -> tuple[str, str]:
    """A notify command that appends its arguments, one call per line, to a file."""
    calls = os.path.join(lab.dir, "calls.log")
    path = os.path.join(lab.dir, "hook.sh")
    with open(path, "w") as f:
        f.write(f'#!/bin/sh\necho "$*" >> {calls}\n')
    os.chmod(path, stat.S_IRWXU)
    return path, calls


def read_calls(path: str) -> list[str]:
    with contextlib.suppress(FileNotFoundError), open(path) as f:
        return f.read().splitlines()
    return []


async def eventually(cond, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.05)


async def test_notify_commands_and_fifo_follow_every_transition(lab):
    hook, calls = hook_script(lab)
    fifo = FifoReader(os.path.join(lab.dir, "notify.fifo"))
    real = subprocess.Popen(netns_exec(lab.routers[0], sys.executable, "-c", LISTENER),
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert real.stdout is not None and real.stdout.readline().strip() == "ready"
        text = daemon_config(
            lab,
            priority=100,
            fifo=fifo.path,
            notify_master=[hook, "master"],
            notify_backup=[hook, "backup"],
            notify=[hook, "notify"],
            real_hooks=f'notify_up = ["{hook}", "up"]\nnotify_down = ["{hook}", "down"]\n',
        )
        daemon = await lab.start_daemon(0, text)
        # Alone on the segment: BACKUP at start, MASTER after the master-down interval.
        await daemon.wait_event(lambda e: e.get("event") == "vrrp.master", timeout=20)
        await lab.wait_for(lambda: lab.holders() == [0])
        # A higher-priority peer takes over: BACKUP; it dies: MASTER again.
        peer = await lab.start_pulsed(1, priority=200)
        await daemon.wait_event(lambda e: e.get("event") == "vrrp.backup" and e["old"] == "master")
        await lab.wait_for(lambda: lab.holders() == [1])
        mark = len(daemon.events)
        peer.kill(signal.SIGKILL)
        await peer.wait()
        await daemon.wait_event(lambda e: e.get("event") == "vrrp.master", start=mark)
        # (the killed peer's VIP stays on its interface: kill -9 of the bare node)
        await lab.wait_for(lambda: 0 in lab.holders())
        # The real server goes down.
        real.kill()
        real.wait()
        server = f"127.0.0.1:{REAL_PORT}"
        await eventually(lambda: f"down web {server}" in read_calls(calls))
        # The last transition's lines came before the server went down.
        assert fifo.lines()[-1] == f'RS "web" {server} DOWN'
        want_fifo = [
            'INSTANCE "VI_1" BACKUP 100',
            'INSTANCE "VI_1" MASTER 100',
            'INSTANCE "VI_1" BACKUP 100',
            'INSTANCE "VI_1" MASTER 100',
        ]
        await eventually(lambda: [x for x in fifo.lines() if x.startswith("INSTANCE")] == want_fifo)
        await eventually(lambda: f'RS "web" {server} DOWN' in fifo.lines())
        got = read_calls(calls)
        print("\n".join(got))
        print("\n".join(fifo.lines()))
        # notify_<state> gets no extra argument; notify gets TYPE NAME STATE PRIORITY.
        assert [x for x in got if x in ("master", "backup")] == [
            "backup",
            "master",
            "backup",
            "master",
        ]
        assert [x for x in got if x.startswith("notify ")] == [
            "notify INSTANCE VI_1 BACKUP 100",
            "notify INSTANCE VI_1 MASTER 100",
            "notify INSTANCE VI_1 BACKUP 100",
            "notify INSTANCE VI_1 MASTER 100",
        ]
        # notify_down gets the service's name and the server's address.
        assert got.count(f"down web {server}") == 1
        assert set(got) <= {
            "master",
            "backup",
            *(f"notify INSTANCE VI_1 {s} 100" for s in ("MASTER", "BACKUP")),
            f"up web {server}",
            f"down web {server}",
        }
    finally:
        real.kill()
        real.wait()
        fifo.close()


def _hook_pids(marker: str) -> list[int]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
            if marker.encode() in f.read():
                out.append(int(pid))
    return out


async def test_hanging_notify_master_delays_no_advert(lab):
    """While notify_master hangs, an observer on the segment timestamps every advert of the
    master. Bound: the peer's master-down interval (3 x 100 ms + (256 - 100) / 256 x 100 ms
    = 360.9 ms): a gap that long and the peer would take over, which is what a hook on the
    heartbeat's path would cause. The figures are printed; the peer's transitions are
    counted too. The hook is killed at the [hooks] timeout."""
    marker = f"hang-{lab.tag}"
    timeout = 3.0
    hang = [sys.executable, "-c", "import time; time.sleep(3600)", marker]
    cap = await lab.capture()
    peer = await lab.start_pulsed(1, priority=100)
    await peer.wait_event(lambda e: e.get("event") == "applied" and e["role"] == "master")
    text = daemon_config(lab, priority=200, timeout=f"{timeout:g}s", notify_master=hang)
    daemon = await lab.start_daemon(0, text)
    became = await daemon.wait_event(lambda e: e.get("event") == "vrrp.master", timeout=20)
    await peer.wait_event(lambda e: e.get("event") == "role" and e["old"] == "master")
    mark = len(peer.events)
    await eventually(lambda: _hook_pids(marker) != [], timeout=5)
    hung = _hook_pids(marker)
    await asyncio.sleep(timeout + 0.5)  # the whole hang, and the kill at the timeout
    failed = await daemon.wait_event(lambda e: e.get("event") == "hook.failed", timeout=5)
    assert "timeout" in failed["reason"], failed
    assert _hook_pids(marker) == [], "the hanging hook outlived its timeout"
    # Every advert of the master from its first as master to the end of the hang.
    ts = [
        e["t"]
        for e in cap.events
        if e.get("event") == "advert" and e["src"] == lab.addr(0) and e["prio"] == 200
    ]
    gaps = [b - a for a, b in itertools.pairwise(ts)]
    mdi = 3 * 0.1 + (256 - 100) / 256 * 0.1
    span = ts[-1] - ts[0]
    print(
        f"hook pids {hung}; master since {became.get('timestamp', '?')}; {len(ts)} adverts "
        f"over {span:.2f} s; largest gap {max(gaps) * 1000:.1f} ms, "
        f"mean {sum(gaps) / len(gaps) * 1000:.1f} ms (bound: the peer's master-down "
        f"interval {mdi * 1000:.1f} ms)"
    )
    assert span >= timeout, "the observer did not watch the whole hang"
    assert max(gaps) < mdi
    assert [e for e in peer.events[mark:] if e.get("event") == "role"] == []
    assert lab.holders() == [0]
