"""VRRPv2 on the wire against Debian's keepalived 2.2.7 (stock version 2, PASS auth), in two
network namespaces joined by a veth pair. Needs root; skipped without keepalived.

keepalived's adverts, captured as frames, must pass our ``validate`` and be byte-identical to
what our ``encode`` builds from the same fields; and keepalived must act on adverts that our
``encode`` built (a higher priority makes its master step down), and refuse a wrong password.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from pulsed.ha.receive import Expect, Rejected, validate
from pulsed.ha.vrrp import MCAST_V4, Advert, Drop, decode, encode

KEEPALIVED = "/usr/sbin/keepalived"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not os.path.exists(KEEPALIVED), reason="keepalived not installed"),
]

V4 = ipaddress.IPv4Address
KA_ADDR, OUR_ADDR = "10.98.0.1", "10.98.0.2"


@dataclass(frozen=True)
class Instance:
    vrid: int
    priority: int
    interval: int  # seconds
    password: str  # "": no authentication block (auth type 0)
    vips: tuple[str, ...]

    def advert(self, priority: int | None = None, password: str | None = None) -> Advert:
        return Advert(
            self.vrid,
            self.priority if priority is None else priority,
            self.interval * 100,
            tuple(V4(v) for v in self.vips),
            version=2,
            password=(self.password if password is None else password).encode(),
        )

    def expect(self) -> Expect:
        return Expect(
            vrid=self.vrid,
            family=4,
            addresses=frozenset(V4(v) for v in self.vips),
            adver_int=self.interval * 100,
            version=2,
            password=self.password.encode(),
        )


INSTANCES = (
    Instance(51, 150, 1, "1234", ("192.0.2.100", "192.0.2.101")),
    Instance(52, 100, 2, "", ("192.0.2.110",)),
    Instance(53, 254, 1, "12345678", ("192.0.2.120",)),  # a full 8 bytes: no padding
)

# Run inside a namespace: capture VRRP frames, or send one raw IPv4 packet.
HELPER = r"""
import select, socket, struct, sys, time
if sys.argv[1] == "capture":
    ifname, src, timeout = sys.argv[2], sys.argv[3], float(sys.argv[5])
    vrids = set(sys.argv[4].split(","))
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    s.bind((ifname, 0))
    print("ready", flush=True)
    end = time.monotonic() + timeout
    while vrids and time.monotonic() < end:
        if not select.select([s], [], [], max(0.0, end - time.monotonic()))[0]:
            break
        ip = s.recv(4096)[14:]
        if len(ip) < 22 or ip[9] != 112 or socket.inet_ntoa(ip[12:16]) != src:
            continue
        ihl, total = (ip[0] & 15) * 4, int.from_bytes(ip[2:4], "big")
        vrids.discard(str(ip[ihl + 1]))
        print(ip[8], socket.inet_ntoa(ip[16:20]), ip[ihl:total].hex(), flush=True)
else:
    ifname, src, dst, payload = sys.argv[2], sys.argv[3], sys.argv[4], bytes.fromhex(sys.argv[5])
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0xC0, 20 + len(payload), 0, 0, 255, 112, 0,
                       socket.inet_aton(src), socket.inet_aton(dst))
    s.sendto(head + payload, (dst, 0))
"""


def keepalived_conf(ifname: str) -> str:
    out = ["global_defs {\n  router_id pv2test\n}\n"]
    for i, inst in enumerate(INSTANCES):
        auth = ""
        if inst.password:
            auth = f"  authentication {{\n    auth_type PASS\n    auth_pass {inst.password}\n  }}\n"
        vips = "".join(f"    {v}/24\n" for v in inst.vips)
        # No vrrp_version: keepalived's default, version 2.
        out.append(
            f"vrrp_instance VI_{i + 1} {{\n  state MASTER\n  interface {ifname}\n"
            f"  virtual_router_id {inst.vrid}\n  priority {inst.priority}\n"
            f"  advert_int {inst.interval}\n{auth}  virtual_ipaddress {{\n{vips}  }}\n}}\n"
        )
    return "".join(out)


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


class Wire:
    """Namespace ``ka`` runs keepalived on ``pv2a``; namespace ``us`` has ``pv2b``."""

    def __init__(self) -> None:
        tag = f"pv2{os.getpid() % 100000}"
        self.ka, self.us = f"{tag}-ka", f"{tag}-us"
        self.dir = tempfile.mkdtemp(prefix=f"{tag}-")
        self.log = os.path.join(self.dir, "keepalived.log")
        self.proc: subprocess.Popen[bytes] | None = None

    def create(self) -> None:
        run("ip", "netns", "add", self.ka)
        run("ip", "netns", "add", self.us)
        run("ip", "-n", self.ka, "link", "set", "lo", "up")
        run("ip", "-n", self.ka, "link", "add", "pv2a", "type", "veth",
            "peer", "name", "pv2b", "netns", self.us)  # fmt: skip
        run("ip", "-n", self.ka, "addr", "add", f"{KA_ADDR}/24", "dev", "pv2a")
        run("ip", "-n", self.us, "addr", "add", f"{OUR_ADDR}/24", "dev", "pv2b")
        run("ip", "-n", self.ka, "link", "set", "pv2a", "up")
        run("ip", "-n", self.us, "link", "set", "pv2b", "up")

    def start_keepalived(self) -> None:
        conf = os.path.join(self.dir, "keepalived.conf")
        with open(conf, "w") as f:
            f.write(keepalived_conf("pv2a"))
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ka, KEEPALIVED, "-n", "-l", "-D", "--vrrp",
                 "-f", conf, "-p", self.pidfile(""), "-r", self.pidfile("vrrp")],
                stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip

    def pidfile(self, kind: str) -> str:
        return os.path.join(self.dir, f"k{kind}.pid")

    def capture(self, vrids: list[int], timeout: float = 10.0) -> dict[int, tuple[int, str, bytes]]:
        """The first frame keepalived sent for each VRID: (TTL, destination, VRRP payload)."""
        out = run("ip", "netns", "exec", self.us, sys.executable, "-c", HELPER, "capture",
                  "pv2b", KA_ADDR, ",".join(map(str, vrids)), str(timeout))  # fmt: skip
        frames: dict[int, tuple[int, str, bytes]] = {}
        for line in out.splitlines()[1:]:
            ttl, dst, payload = line.split()
            frames.setdefault(bytes.fromhex(payload)[1], (int(ttl), dst, bytes.fromhex(payload)))
        return frames

    def send(self, payload: bytes, dst: str = str(MCAST_V4)) -> None:
        run("ip", "netns", "exec", self.us, sys.executable, "-c", HELPER, "send",
            "pv2b", OUR_ADDR, dst, payload.hex())  # fmt: skip

    def vips(self) -> set[str]:
        out = run("ip", "-n", self.ka, "-4", "-o", "addr", "show", "dev", "pv2a")
        return {line.split()[3].split("/")[0] for line in out.splitlines()}

    def log_text(self) -> str:
        with open(self.log, errors="replace") as f:
            return f.read()

    def wait_for(self, cond: Callable[[], bool], timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < end, "timed out"
            time.sleep(0.05)

    def close(self) -> None:
        # Only the keepalived processes this test started: the VRRP child, then the parent.
        for path in (self.pidfile("vrrp"), self.pidfile("")):
            try:
                with open(path) as f:
                    os.kill(int(f.read().strip()), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(5)
        for ns in (self.ka, self.us):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
        subprocess.run(["rm", "-rf", self.dir], check=False)


@pytest.fixture(scope="module")
def wire() -> Iterator[Wire]:
    w = Wire()
    try:
        w.create()
        w.start_keepalived()
        # Every instance masters its VIPs (after keepalived's master-down time, ~3 s).
        want = {v for inst in INSTANCES for v in inst.vips}
        w.wait_for(lambda: want <= w.vips(), timeout=15)
        yield w
    finally:
        w.close()


def test_keepalived_v2_adverts_decode_and_match_our_encoder(wire):
    frames = wire.capture([inst.vrid for inst in INSTANCES])
    assert sorted(frames) == [inst.vrid for inst in INSTANCES]
    src = V4(KA_ADDR)
    for inst in INSTANCES:
        ttl, dst, payload = frames[inst.vrid]
        assert (ttl, dst) == (255, str(MCAST_V4)), inst
        assert payload[0] == 0x21  # version 2, type 1
        verdict = validate(payload, src=src, dst=MCAST_V4, ttl=ttl, expect=inst.expect())
        assert verdict == inst.advert(), (inst, verdict)
        assert decode(payload, src, MCAST_V4, version=2) == verdict
        assert encode(inst.advert(), src, MCAST_V4) == payload, (inst, payload.hex())
        if not inst.password:
            assert payload[4] == 0 and payload[-8:] == bytes(8)  # auth type 0: zeros
        # A router set up for VRRPv3 hears a mismatch it can name; a wrong password is refused.
        v3_router = dataclasses.replace(inst.expect(), version=3, password=b"")
        v3 = validate(payload, src=src, dst=MCAST_V4, ttl=ttl, expect=v3_router)
        assert isinstance(v3, Rejected)
        assert (v3.reason, v3.version, v3.vrid) == (Drop.VERSION, 2, inst.vrid)
        other_pw = dataclasses.replace(inst.expect(), password=b"x")
        wrong = validate(payload, src=src, dst=MCAST_V4, ttl=ttl, expect=other_pw)
        assert isinstance(wrong, Rejected) and wrong.reason is Drop.AUTH


def test_keepalived_obeys_our_v2_adverts_and_refuses_a_wrong_password(wire):
    ours, dst = V4(OUR_ADDR), MCAST_V4
    vi1, vi2 = INSTANCES[0], INSTANCES[1]
    # A wrong password with a higher priority: keepalived logs it and stays master.
    wire.send(encode(vi1.advert(priority=200, password="4321"), ours, dst))
    wire.wait_for(lambda: "received an invalid passwd" in wire.log_text())
    assert set(vi1.vips) <= wire.vips()
    # Our PASS advert with a higher priority: VI_1 steps down and drops its VIPs.
    wire.send(encode(vi1.advert(priority=200), ours, dst))
    wire.wait_for(lambda: not set(vi1.vips) & wire.vips(), timeout=3)
    # Our auth-type-0 advert with a higher priority: VI_2 steps down too; VI_3 stays.
    wire.send(encode(vi2.advert(priority=200), ours, dst))
    wire.wait_for(lambda: not set(vi2.vips) & wire.vips(), timeout=3)
    assert set(INSTANCES[2].vips) <= wire.vips()
    log = wire.log_text()
    assert "wrong version" not in log and "checksum" not in log.lower(), log
