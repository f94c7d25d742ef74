"""keepalived (and ldirectord) on a config, then pulsed on its import: the same IPVS table.

For each of Debian's keepalived samples with virtual servers, and for
ldirectord's example: the director runs in a namespace ("pimp-lb") that
reaches every real server's address in a second namespace ("pimp-rs"),
where one small server answers HTTP 200 on every port the config names, so
that both programs see every real server up. keepalived runs first
(``--check``: the IPVS part only; VRRP is not what is compared), its table is
read with ``ipvsadm -Sn``, the table is flushed, pulsed runs on the imported
config (its [[vrrp]] tables left out, for the same reason), and the two
tables must be equal.

One rewrite of the samples: their ``digest`` lines are replaced by the MD5
of the page served here (the samples' digests are of pages we do not
have, and keepalived would take the servers down). pulsed does not check
digests (reported by the import), so this makes the two see the same.

``make test`` compares the samples in ``QUICK`` and ldirectord's example
(each takes one to two minutes in the emulated VM); ``PULSED_IMPORT_ALL=1``
compares every sample (docs/migrating.md has the full run and its command).

The tables are compared after an observation window: what is checked is
that nothing changes (a server taken down by one program only), and a
change that does not happen cannot be awaited. The window covers the
samples' delay_loop (6 s) and retries.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import tomli

from pulsed.importers.emit import Table, render
from pulsed.importers.run import import_config
from tests.support.daemon import DaemonProcess

SAMPLES = Path("/usr/share/doc/keepalived/samples")
LDIRECTORD_EXAMPLE = Path("/usr/share/doc/ldirectord/examples/ldirectord.cf")
LB, RS = "pimp-lb", "pimp-rs"
BODY = b"Test Page: pulsed import equivalence\n"
WINDOW = 16.0  # seconds: delay_loop 6 s + retry 3 x delay_before_retry 3 s, and some
# Samples whose checks cannot be served by a plain HTTP/TCP server here, or that need
# what this machine does not have: why each is not compared.
NOT_COMPARED = {
    "keepalived.conf.HTTP_GET.port": "SSL_GET: needs a TLS server",
    "keepalived.conf.SSL_GET": "SSL_GET: needs a TLS server",
    "keepalived.conf.status_code": "SSL_GET: needs a TLS server",
    "keepalived.conf.virtualhost": "SSL_GET: needs a TLS server",
    "keepalived.conf.IPv6": "SMTP_CHECK: needs an SMTP server in the namespace (not built here)",
    "keepalived.conf.SMTP_CHECK": "SMTP_CHECK: needs an SMTP server in the namespace",
    "keepalived.conf.UDP_CHECK": "UDP_CHECK: keepalived counts silence as up without"
    " require_reply; pulsed's udp check wants a reply",
    "keepalived.conf.misc_check": "MISC_CHECK: its script /usr/local/bin/script.sh is not here",
    "keepalived.conf.misc_check_arg": "MISC_CHECK: its script is not here",
    "keepalived.conf.fwmark": "real servers without a port: pulsed cannot program port 0"
    " (the import uses the check port and says so)",
}


# The samples make test compares: plain HTTP_GET with a sorry server, a
# virtual_server_group, and quorum (the others are compared with PULSED_IMPORT_ALL=1).
QUICK = {"keepalived.conf.sample", "keepalived.conf.virtual_server_group", "keepalived.conf.quorum"}


def with_virtual_servers() -> list[str]:
    if not SAMPLES.is_dir():
        return []
    every = sorted(
        p.name
        for p in SAMPLES.glob("keepalived.conf.*")
        if re.search(r"^\s*virtual_server\s", p.read_text(errors="replace"), re.M)
    )
    return every if os.environ.get("PULSED_IMPORT_ALL") == "1" else [n for n in every if n in QUICK]


def sh(*args: str, check: bool = True) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def in_lb(*args: str) -> str:
    return sh("ip", "netns", "exec", LB, *args)


def table() -> list[str]:
    return sorted(line for line in in_lb("ipvsadm", "-Sn").splitlines() if line.strip())


SERVER = textwrap.dedent(
    """
    import asyncio, sys
    BODY = sys.argv[1].encode()
    async def answer(reader, writer):
        try:
            await asyncio.wait_for(reader.read(4096), 2)
            writer.write(b"HTTP/1.0 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(BODY) + BODY)
            await writer.drain()
        except Exception:
            pass
        writer.close()
    async def main():
        for port in sys.argv[2:]:
            await asyncio.start_server(answer, "0.0.0.0", int(port))
        print("ready", flush=True)
        await asyncio.Event().wait()
    asyncio.run(main())
    """
)


class Lab:
    """The two namespaces, the real servers' addresses and the answering server."""

    def __init__(self) -> None:
        self.server: subprocess.Popen | None = None

    def up(self, addresses: set[str], ports: set[int]) -> None:
        self.down()
        sh("ip", "netns", "add", LB)
        sh("ip", "netns", "add", RS)
        sh(
            "ip",
            "link",
            "add",
            "pimp-a",
            "netns",
            LB,
            "type",
            "veth",
            "peer",
            "pimp-b",
            "netns",
            RS,
        )
        in_lb("ip", "addr", "add", "10.255.0.1/30", "dev", "pimp-a")
        in_lb("ip", "link", "set", "pimp-a", "up")
        in_lb("ip", "link", "set", "lo", "up")
        rs = ("ip", "netns", "exec", RS)
        sh(*rs, "ip", "addr", "add", "10.255.0.2/30", "dev", "pimp-b")
        sh(*rs, "ip", "link", "set", "pimp-b", "up")
        sh(*rs, "ip", "link", "set", "lo", "up")
        for addr in sorted(addresses):
            sh(*rs, "ip", "addr", "add", f"{addr}/32", "dev", "lo")
            in_lb("ip", "route", "add", f"{addr}/32", "via", "10.255.0.2")
        self.server = subprocess.Popen(
            [*rs, sys.executable, "-c", SERVER, BODY.decode(), *map(str, sorted(ports))],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.server.stdout is not None
        assert self.server.stdout.readline().strip() == "ready"

    def down(self) -> None:
        if self.server is not None:
            self.server.kill()
            self.server.wait()
            self.server = None
        for ns in (LB, RS):
            sh("ip", "netns", "del", ns, check=False)


@pytest.fixture
def lab():
    if shutil.which("keepalived") is None:
        pytest.skip("keepalived is not installed")
    lab = Lab()
    yield lab
    lab.down()


def targets(doc: dict) -> tuple[set[str], set[int]]:
    """Every real server's (and sorry server's, and check's) address and port."""
    addresses: set[str] = set()
    ports: set[int] = set()
    for svc in doc.get("service", []):
        for text in [r["address"] for r in svc.get("real", [])] + [svc.get("sorry_server", "")]:
            if not text:
                continue
            host, _, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
            addresses.add(host)
            if port:
                ports.add(int(port))
        for check in [svc.get("check", {})] + [r.get("check", {}) for r in svc.get("real", [])]:
            if "port" in check:
                ports.add(check["port"])
    addresses.discard("127.0.0.1")
    return addresses, ports


def to_table(value: dict) -> Table:
    out = Table()
    for key, item in value.items():
        if isinstance(item, dict) and key in ("daemon", "api", "check", "checks", "hooks"):
            out.values[key] = to_table(item)
        elif (
            isinstance(item, list)
            and item
            and all(isinstance(i, dict) for i in item)
            and key
            in (
                "service",
                "real",
            )
        ):
            out.values[key] = [to_table(i) for i in item]
        else:
            out.values[key] = item
    return out


def pulsed_config(text: str, tmp_path: Path) -> Path:
    doc = tomli.loads(text)
    for key in ("vrrp", "vrrp_script", "vrrp_sync_group"):
        doc.pop(key, None)
    doc.setdefault("daemon", {}).update(
        {"state_dir": str(tmp_path / "state"), "log_format": "json", "resync_interval": "500ms"}
    )
    doc["api"] = {"enabled": False}
    path = tmp_path / "pulsed.toml"
    path.write_text(render(to_table(doc)))
    return path


def observe(start_timeout: float = 180.0) -> list[str]:
    """The table once it has held still for the whole window (see the module's docstring),
    counted from the program's first entry: under the VM's emulation ldirectord (perl)
    takes tens of seconds to start."""
    deadline = time.monotonic() + start_timeout
    while not table():
        if time.monotonic() > deadline:
            return []
        time.sleep(0.5)
    deadline = time.monotonic() + 4 * WINDOW
    last, since = table(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = table()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= WINDOW:
            return now
    raise AssertionError(f"the table did not settle: {last}")


def run_pulsed(config: Path) -> list[str]:
    in_lb("ipvsadm", "-C")
    daemon = DaemonProcess(config, netns=LB)
    try:
        daemon.wait_for("daemon.started", timeout=60)
        return observe()
    finally:
        daemon.stop()
        in_lb("ipvsadm", "-C")


@pytest.mark.parametrize("name", with_virtual_servers())
def test_keepalived_sample_and_its_import_program_the_same_table(
    name: str, lab: Lab, tmp_path: Path
) -> None:
    if name in NOT_COMPARED:
        pytest.skip(NOT_COMPARED[name])
    digest = hashlib.md5(BODY).hexdigest()
    conf = tmp_path / "keepalived.conf"
    text = (SAMPLES / name).read_text()
    conf.write_text(re.sub(r"(\bdigest\s+)[0-9a-fA-F]+", rf"\g<1>{digest}", text))
    imported = import_config("keepalived", str(conf))
    addresses, ports = targets(tomli.loads(imported.text))
    lab.up(addresses, ports)
    in_lb("ipvsadm", "-C")
    keepalived = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            LB,
            "keepalived",
            "--check",
            "-n",
            "-l",
            "-D",
            "-f",
            str(conf),
            "-p",
            str(tmp_path / "k.pid"),
            "-c",
            str(tmp_path / "c.pid"),
            "-r",
            str(tmp_path / "v.pid"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        expected = observe()
    finally:
        keepalived.send_signal(signal.SIGTERM)
        log = keepalived.communicate(timeout=30)[0]
    assert expected, f"keepalived programmed nothing; its log:\n{log[-3000:]}"
    in_lb("ipvsadm", "-C")
    got = run_pulsed(pulsed_config(imported.text, tmp_path))
    assert got == expected


def test_ldirectord_example_and_its_import_program_the_same_table(lab: Lab, tmp_path: Path) -> None:
    if shutil.which("ldirectord") is None or not LDIRECTORD_EXAMPLE.exists():
        pytest.skip("ldirectord is not installed (Makefile TEST_PKGS has it)")
    conf = tmp_path / "ldirectord.cf"
    conf.write_text(LDIRECTORD_EXAMPLE.read_text())
    imported = import_config("ldirectord", str(conf))
    addresses, ports = targets(tomli.loads(imported.text))
    lab.up(addresses, ports)
    in_lb("ipvsadm", "-C")
    ldirectord = subprocess.Popen(
        ["ip", "netns", "exec", LB, "/usr/sbin/ldirectord", "-d", str(conf), "start"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        expected = observe()
    finally:
        ldirectord.send_signal(signal.SIGTERM)
        try:
            log = ldirectord.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            ldirectord.kill()
            log = ldirectord.communicate()[0]
    assert expected, f"ldirectord programmed nothing; its log:\n{log[-3000:]}"
    in_lb("ipvsadm", "-C")
    got = run_pulsed(pulsed_config(imported.text, tmp_path))
    assert got == expected
