"""Two routers (or one) and an observer on one L2 segment, in network namespaces (needs root).

The HA tests and the failover benchmark run their routers here: a bridge in the observer
namespace with a veth port per router. Routers run ``python -m pulsed.ha`` or Debian's
keepalived. Names are prefixed ``pha`` and unique per pair; ``close()`` removes everything.

Run as a script (``python lab/ha_pair.py capture|send|recv|stepped ...``) it is the helper
that the pair starts inside a namespace: a frame capture, a raw packet sender or receiver,
or a router with a steppable wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

KEEPALIVED = "/usr/sbin/keepalived"
SUBNET = "10.77.0"
# Run as a script inside other namespaces (capture, send, recv, stepped).
HERE = os.path.abspath(__file__)
# The checkout this file is in: the helpers import pulsed from it, not from an installed copy.
REPO = os.path.dirname(os.path.dirname(HERE))
VIP = "192.0.2.100"
_counter = itertools.count()


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True)


def toml_value(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(v)


def many_vips(count: int) -> list[str]:
    """The VIPs of ``count`` instances (HaPair.many_instances): 192.0.2.100 and up."""
    return [f"192.0.2.{100 + k}" for k in range(count)]


def netns_exec(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


@dataclass
class Proc:
    """A router process whose stdout JSON-line events are collected as they come."""

    name: str
    ns: str
    proc: asyncio.subprocess.Process
    events: list[dict[str, Any]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    status_file: str | None = None
    log: str | None = None
    clock_file: str | None = None  # set for routers started with a steppable wall clock
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _reader: asyncio.Task[None] | None = None

    def start_reader(self) -> None:
        if self.proc.stdout is not None:
            self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            async with self._changed:
                if not line:
                    self._changed.notify_all()
                    return
                text = line.decode(errors="replace").rstrip()
                self.lines.append(text)
                with contextlib.suppress(ValueError):
                    ev = json.loads(text)
                    ev.setdefault("seen", time.time())
                    self.events.append(ev)
                self._changed.notify_all()

    async def wait_event(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0, start: int = 0
    ) -> dict[str, Any]:
        """The first event from index ``start`` matching ``pred``, within ``timeout``."""

        def found() -> dict[str, Any] | None:
            return next((e for e in self.events[start:] if pred(e)), None)

        async with asyncio.timeout(timeout), self._changed:
            while (ev := found()) is None:
                if self._reader is not None and self._reader.done():
                    raise RuntimeError(f"{self.name} exited: {self.lines[-5:]} (log: {self.log})")
                await self._changed.wait()
            return ev

    def role(self) -> str | None:
        roles = [e["new"] for e in self.events if e.get("event") == "role"]
        return roles[-1] if roles else None

    def status(self) -> dict[str, Any]:
        assert self.status_file
        with open(self.status_file) as f:
            return json.load(f)

    async def step_clock(self, offset: float) -> None:
        """Set this router's wall clock to real time + ``offset`` seconds (a clock step, as
        NTP or an operator makes): every time.time()/time_ns() in the process moves at once."""
        assert self.clock_file, "start the router with steppable_clock=True"
        with open(self.clock_file, "w") as f:
            f.write(repr(float(offset)))
        mark = len(self.events)
        self.kill(signal.SIGUSR1)
        await self.wait_event(
            lambda e: e.get("event") == "clock" and e["offset"] == float(offset), start=mark
        )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        # ip netns exec execs the command: the pid is the router's own.
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)

    async def wait(self, timeout: float = 10.0) -> int:
        async with asyncio.timeout(timeout):
            return await self.proc.wait()


class HaPair:
    """The routers' namespaces, the observer's bridge, and every process started on them."""

    def __init__(self, routers: int = 2) -> None:
        n = next(_counter)
        tag = f"pha{os.getpid() % 100000}x{n}"
        self.tag = tag
        self.obs = f"{tag}-obs"
        self.routers = [f"{tag}-r{i + 1}" for i in range(routers)]
        self.dir = tempfile.mkdtemp(prefix=f"{tag}-")
        self.procs: list[Proc] = []
        self._pidfiles: list[str] = []

    # ---- topology
    def ifname(self, i: int) -> str:
        return f"pha{i + 1}"  # inside the router namespace

    def port(self, i: int) -> str:
        return f"pha-p{i + 1}"  # bridge port in the observer namespace

    def addr(self, i: int) -> str:
        return f"{SUBNET}.{i + 1}"

    def create(self) -> HaPair:
        try:
            sh("ip", "netns", "add", self.obs)
            sh("ip", "-n", self.obs, "link", "add", "pha-br", "type", "bridge")
            sh("ip", "-n", self.obs, "link", "set", "pha-br", "up")
            sh("ip", "-n", self.obs, "addr", "add", f"{SUBNET}.100/24", "dev", "pha-br")
            sh("ip", "-n", self.obs, "link", "set", "lo", "up")
            for i, ns in enumerate(self.routers):
                sh("ip", "netns", "add", ns)
                sh("ip", "-n", ns, "link", "set", "lo", "up")
                sh("ip", "-n", ns, "link", "add", self.ifname(i), "type", "veth",
                   "peer", "name", self.port(i), "netns", self.obs)  # fmt: skip
                sh("ip", "-n", self.obs, "link", "set", self.port(i), "master", "pha-br")
                sh("ip", "-n", self.obs, "link", "set", self.port(i), "up")
                sh("ip", "-n", ns, "addr", "add", f"{self.addr(i)}/24", "dev", self.ifname(i))
                sh("ip", "-n", ns, "link", "set", self.ifname(i), "up")
        except BaseException:
            self.close_sync()
            raise
        return self

    def partition(self, i: int, cut: bool) -> None:
        """Silently drop router i's traffic at the bridge; its own link stays up."""
        sh(
            "bridge",
            "-n",
            self.obs,
            "link",
            "set",
            "dev",
            self.port(i),
            "state",
            "0" if cut else "3",
        )

    def link(self, i: int, up: bool) -> None:
        """Take router i's own interface down (or up) inside its namespace."""
        sh("ip", "-n", self.routers[i], "link", "set", self.ifname(i), "up" if up else "down")

    def vips(self, i: int) -> list[str]:
        out = sh("ip", "-n", self.routers[i], "-j", "addr", "show", "dev", self.ifname(i)).stdout
        return [
            a["local"]
            for link in json.loads(out or "[]")
            for a in link.get("addr_info", [])
            if not a["local"].startswith(SUBNET) and a.get("scope") == "global"
        ]

    def holders(self, vip: str = VIP) -> list[int]:
        return [i for i in range(len(self.routers)) if vip in self.vips(i)]

    # ---- routers
    def instances_config(self, i: int, instances: list[dict[str, Any]], tag: str = "") -> str:
        """A pulsed config of router i with one [[vrrp]] table per dict (written as given)."""
        lines: list[str] = []
        for inst in instances:
            lines.append("[[vrrp]]")
            nested = [(k, v) for k, v in inst.items() if isinstance(v, dict)]
            lines.extend(
                f"{k} = {toml_value(v)}" for k, v in inst.items() if not isinstance(v, dict)
            )
            for k, table in nested:
                lines.append(f"[vrrp.{k}]")
                lines.extend(f"{kk} = {toml_value(vv)}" for kk, vv in table.items())
        path = os.path.join(self.dir, f"r{i + 1}{tag}.toml")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def many_instances(self, i: int, count: int, **vrrp: Any) -> list[dict[str, Any]]:
        """``count`` instances VI_1..VI_n of router i: VRID 51 + k, VIP ``many_vips()[k]``/32."""
        out = []
        for k, vip in enumerate(many_vips(count)):
            inst = {
                "name": f"VI_{k + 1}",
                "interface": self.ifname(i),
                "vrid": 51 + k,
                "priority": 100,
                "advert_interval": "100ms",
                "virtual_addresses": [f"{vip}/32"],
                "garp_count": 3,
                "track_interval": "50ms",
            }
            inst.update(vrrp)
            out.append(inst)
        return out

    def pulsed_config(self, i: int, **vrrp: Any) -> str:
        base = {
            "interface": self.ifname(i),
            "vrid": 51,
            "priority": 100,
            "advert_interval": "100ms",
            "virtual_addresses": [f"{VIP}/24"],
            "garp_count": 3,
            "track_interval": "50ms",
        }
        base.update(vrrp)
        lines = ["[vrrp]"]
        nested = []
        for k, v in base.items():
            if isinstance(v, dict):
                nested.append((k, v))
            else:
                lines.append(f"{k} = {toml_value(v)}")
        for k, table in nested:
            lines.append(f"[vrrp.{k}]")
            lines.extend(f"{kk} = {toml_value(vv)}" for kk, vv in table.items())
        path = os.path.join(self.dir, f"r{i + 1}.toml")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    async def start_pulsed(
        self,
        i: int,
        wait_ready: bool = True,
        steppable_clock: bool = False,
        clock_offset: float = 0.0,
        config: str | None = None,
        **vrrp: Any,
    ) -> Proc:
        """``steppable_clock``: run the router with a wall clock that ``step_clock`` moves,
        starting ``clock_offset`` seconds from real time. ``config``: a config file to run
        (e.g. from ``instances_config``) instead of one built from ``vrrp``."""
        conf = config or self.pulsed_config(i, **vrrp)
        status = os.path.join(self.dir, f"r{i + 1}.status.json")
        log = open(os.path.join(self.dir, f"r{i + 1}.log"), "ab")  # noqa: SIM115
        run = [sys.executable, "-m", "pulsed.ha"]
        offset = None
        if steppable_clock:
            offset = os.path.join(self.dir, f"r{i + 1}.clock")
            with open(offset, "w") as f:
                f.write(repr(float(clock_offset)))
            run = [sys.executable, HERE, "stepped", offset]
        proc = await asyncio.create_subprocess_exec(
            *netns_exec(self.routers[i], *run, conf, "--events", "--status-file", status),
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
        log.close()
        p = Proc(f"pulsed-r{i + 1}", self.routers[i], proc, status_file=status, log=log.name)
        p.clock_file = offset
        p.start_reader()
        self.procs.append(p)
        if wait_ready:
            await p.wait_event(lambda e: e.get("event") == "ready")
        return p

    async def start_daemon(self, i: int, text: str) -> Proc:
        """The whole daemon (``pulsed run --backend memory``) in router i with the config
        ``text`` (written to ``daemon_config_path(i)``); its JSON log lines are the Proc's
        events. Only the namespace's own interfaces and addresses are touched."""
        path = self.daemon_config_path(i)
        with open(path, "w") as f:
            f.write(text)
        proc = await asyncio.create_subprocess_exec(
            *netns_exec(self.routers[i], sys.executable, "-m", "pulsed.cli", "run", "-c", path,
                        "--backend", "memory"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=REPO,
        )  # fmt: skip
        p = Proc(f"pulsed-daemon-r{i + 1}", self.routers[i], proc)
        p.start_reader()
        self.procs.append(p)
        return p

    def daemon_config_path(self, i: int) -> str:
        return os.path.join(self.dir, f"r{i + 1}-daemon.toml")

    def http_get(self, i: int, url: str) -> Any:
        """GET ``url`` from inside router i's namespace (e.g. the daemon's /status): JSON."""
        code = (
            "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())"
        )
        return json.loads(sh(*netns_exec(self.routers[i], sys.executable, "-c", code, url)).stdout)

    def keepalived_config(
        self,
        i: int,
        priority: int,
        preempt: bool = True,
        interval: float = 0.1,
        vip: str = f"{VIP}/24",
        unicast_peers: tuple[str, ...] = (),
    ) -> str:
        unicast = ""
        if unicast_peers:
            peers = "\n    ".join(unicast_peers)
            unicast = f"unicast_src_ip {self.addr(i)}\n  unicast_peer {{\n    {peers}\n  }}"
        conf = f"""global_defs {{
  router_id {self.tag}r{i + 1}
  script_user root
  enable_script_security
  vrrp_garp_master_repeat 3
  vrrp_garp_master_delay 0
}}
vrrp_instance VI_{i + 1} {{
  state BACKUP
  interface {self.ifname(i)}
  virtual_router_id 51
  priority {priority}
  advert_int {interval}
  version 3
  {"" if preempt else "nopreempt"}
  {unicast}
  virtual_ipaddress {{
    {vip}
  }}
}}
"""
        path = os.path.join(self.dir, f"k{i + 1}.conf")
        with open(path, "w") as f:
            f.write(conf)
        return path

    def keepalived_instances_config(
        self, i: int, count: int, priority: int, interval: float = 0.1
    ) -> str:
        """keepalived's twin of ``many_instances``: ``count`` VRRPv3 instances, same VRIDs
        and VIPs, in one config."""
        blocks = "".join(
            f"""vrrp_instance VI_{k + 1} {{
  state BACKUP
  interface {self.ifname(i)}
  virtual_router_id {51 + k}
  priority {priority}
  advert_int {interval}
  version 3
  virtual_ipaddress {{
    {vip}/32
  }}
}}
"""
            for k, vip in enumerate(many_vips(count))
        )
        return self.write_keepalived_config(i, blocks)

    def write_keepalived_config(self, i: int, blocks: str) -> str:
        """Router i's keepalived config: the lab's global_defs, then ``blocks``
        (vrrp_instance ... { }); the file's path."""
        conf = f"""global_defs {{
  router_id {self.tag}r{i + 1}
  script_user root
  enable_script_security
  vrrp_garp_master_repeat 3
  vrrp_garp_master_delay 0
}}
{blocks}"""
        path = os.path.join(self.dir, f"k{i + 1}.conf")
        with open(path, "w") as f:
            f.write(conf)
        return path

    async def start_keepalived(
        self,
        i: int,
        priority: int = 100,
        preempt: bool = True,
        vip: str = f"{VIP}/24",
        unicast_peers: tuple[str, ...] = (),
        config: str | None = None,
    ) -> Proc:
        """``config``: a keepalived config to run (e.g. from ``keepalived_instances_config``)
        instead of one built from the other arguments."""
        conf = config or self.keepalived_config(
            i, priority, preempt, vip=vip, unicast_peers=unicast_peers
        )
        pid = os.path.join(self.dir, f"k{i + 1}")
        self._pidfiles.append(pid)
        log = open(os.path.join(self.dir, f"k{i + 1}.log"), "ab")  # noqa: SIM115
        proc = await asyncio.create_subprocess_exec(
            *netns_exec(self.routers[i], KEEPALIVED, "-n", "-l", "-D", "--vrrp", "-f", conf,
                        "-p", pid + ".pid", "-r", pid + ".vrrp.pid"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
        )  # fmt: skip
        log.close()
        p = Proc(f"keepalived-r{i + 1}", self.routers[i], proc, log=log.name)
        p.start_reader()
        self.procs.append(p)
        return p

    def keepalived_pids(self, i: int) -> list[int]:
        """[VRRP child, parent]: kill -9 both (child first) to crash a keepalived router."""
        out = []
        for suffix in (".vrrp.pid", ".pid"):
            path = os.path.join(self.dir, f"k{i + 1}{suffix}")
            with contextlib.suppress(OSError, ValueError), open(path) as f:
                out.append(int(f.read().strip()))
        return out

    def crash_keepalived(self, i: int) -> None:
        pids = self.keepalived_pids(i)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # keepalived refuses to start while its old pid files name a live (or unreaped) pid.
        for suffix in (".vrrp.pid", ".pid"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.dir, f"k{i + 1}{suffix}"))

    def forge(
        self, ns: str, ifname: str, payload: bytes, src: str, dst: str, ttl: int = 255
    ) -> None:
        """Send one raw IPv4 protocol-112 packet with a hand-made header from namespace ``ns``."""
        sh(*netns_exec(ns, sys.executable, HERE, "send", ifname, src, dst,
                       str(ttl), payload.hex()))  # fmt: skip

    def receive(self, ns: str, ifname: str, src: str) -> bytes:
        """The VRRP payload (IP header stripped) of the next packet from ``src`` that arrives
        on ``ifname`` in namespace ``ns``, e.g. a router's unicast advert at its peer."""
        out = subprocess.run(
            netns_exec(ns, sys.executable, HERE, "recv", ifname, src),
            check=True, capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        return bytes.fromhex(out.stdout.strip())

    # ---- observation
    async def capture(self) -> Proc:
        """Gratuitous ARP / NA frames seen by the observer, as JSON lines with receive times."""
        proc = await asyncio.create_subprocess_exec(
            *netns_exec(self.obs, sys.executable, HERE, "capture", "pha-br"),
            stdout=asyncio.subprocess.PIPE,
        )
        p = Proc("capture", self.obs, proc)
        p.start_reader()
        self.procs.append(p)
        await p.wait_event(lambda e: e.get("event") == "ready")
        return p

    async def wait_for(
        self, cond: Callable[[], bool], timeout: float = 10.0, every: float = 0.02
    ) -> None:
        """Poll a condition on kernel state (addresses) with a bounded deadline."""
        async with asyncio.timeout(timeout):
            while not cond():
                await asyncio.sleep(every)

    # ---- teardown
    async def close(self) -> None:
        for p in self.procs:
            if p.proc.returncode is None:
                p.kill(signal.SIGKILL)
        for p in self.procs:
            with contextlib.suppress(Exception):
                await p.wait(5)
            if p._reader is not None:
                p._reader.cancel()
        self.close_sync()

    def close_sync(self) -> None:
        for pid in self._pidfiles:
            for suffix in (".pid", ".vrrp.pid"):
                with contextlib.suppress(OSError, ValueError), open(pid + suffix) as f:
                    os.kill(int(f.read().strip()), signal.SIGKILL)
        for ns in [*self.routers, self.obs]:
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def _capture(ifname: str) -> None:
    """Print one JSON line per ARP announcement or neighbour advertisement on ``ifname``."""
    import ipaddress
    import socket

    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    s.bind((ifname, 0))
    print(json.dumps({"event": "ready"}), flush=True)
    while True:
        frame = s.recv(2048)
        now = time.time()
        etype = int.from_bytes(frame[12:14], "big")
        if etype == 0x0806 and len(frame) >= 42:
            spa, tpa = frame[28:32], frame[38:42]
            if spa == tpa:
                ip = str(ipaddress.IPv4Address(spa))
                src = frame[6:12].hex(":")
                print(json.dumps({"event": "garp", "ip": ip, "mac": src, "t": now}), flush=True)
        elif etype == 0x0800 and len(frame) >= 42 and frame[23] == 112:
            ihl = (frame[14] & 0xF) * 4
            src = str(ipaddress.IPv4Address(frame[26:30]))
            prio = frame[14 + ihl + 2]
            print(json.dumps({"event": "advert", "src": src, "prio": prio, "t": now}), flush=True)
        elif etype == 0x86DD and len(frame) >= 78 and frame[20] == 58 and frame[54] == 136:
            ip = str(ipaddress.IPv6Address(frame[62:78]))
            print(json.dumps({"event": "na", "ip": ip, "t": now}), flush=True)


def _send(ifname: str, src: str, dst: str, ttl: int, payload: bytes) -> None:
    import ipaddress
    import socket
    import struct

    from pulsed.ha.vrrp import IPPROTO_VRRP

    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_VRRP)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
    head = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0xC0, 20 + len(payload), 0, 0, ttl, IPPROTO_VRRP, 0,
        ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed,
    )  # fmt: skip
    s.sendto(head + payload, (dst, 0))


def _run_stepped(offset_file: str, argv: list[str]) -> int:
    """Run ``python -m pulsed.ha ARGV`` with time.time/time_ns offset by the number in
    ``offset_file``, re-read on SIGUSR1 (CLOCK_REALTIME is not namespaced, so a test cannot
    step the real clock of one router; this steps everything in the process that reads it)."""
    real_time, real_time_ns = time.time, time.time_ns
    offset = [0.0]

    def reload(*_: object) -> None:
        with open(offset_file) as f:
            offset[0] = float(f.read().strip() or 0)
        sys.stdout.write(json.dumps({"event": "clock", "offset": offset[0]}) + "\n")
        sys.stdout.flush()

    with open(offset_file) as f:
        offset[0] = float(f.read().strip() or 0)
    signal.signal(signal.SIGUSR1, reload)
    time.time = lambda: real_time() + offset[0]
    time.time_ns = lambda: real_time_ns() + int(offset[0] * 1e9)
    from pulsed.ha.__main__ import main

    return main(argv)


def _recv(ifname: str, src: str) -> None:
    import socket

    from pulsed.ha.transport import parse_ipv4
    from pulsed.ha.vrrp import IPPROTO_VRRP

    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_VRRP)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
    while True:
        pkt = parse_ipv4(s.recv(4096))
        if str(pkt.src) == src:
            print(pkt.payload.hex(), flush=True)
            return


def applied(role: str):
    """Matches the standalone node's event: VIPs added or removed for ``role``."""
    return lambda e: e.get("event") == "applied" and e.get("role") == role


def became(role: str, reason_part: str = ""):
    """Matches the standalone node's event: a transition to ``role``."""
    return lambda e: e.get("event") == "role" and e["new"] == role and reason_part in e["reason"]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "capture":
        with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
            _capture(sys.argv[2])
    elif len(sys.argv) >= 4 and sys.argv[1] == "stepped":
        sys.path.append(REPO)
        sys.exit(_run_stepped(sys.argv[2], sys.argv[3:]))
    elif len(sys.argv) == 4 and sys.argv[1] == "recv":
        sys.path.append(REPO)
        _recv(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 7 and sys.argv[1] == "send":
        _send(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), bytes.fromhex(sys.argv[6]))
    else:
        sys.exit(
            "usage: python lab/ha_pair.py capture IFNAME | send IFNAME SRC DST TTL HEX"
            " | recv IFNAME SRC | stepped OFFSET_FILE CONFIG [pulsed.ha options]"
        )
