"""The package's unit under a real systemd: install, start, reload, watchdog, sandbox, stop.

The tests share one booted system and run in this file's order.
"""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import threading
import time

from tests.systemd.machine import HOST_IF

UNIT = "pulsed.service"
VIP = "192.0.2.100"


def wait_for(what, fn, timeout=60.0, every=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := fn():
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_fresh_install_makes_a_token_and_starts_nothing(machine):
    mode = machine.run("stat", "-c", "%a %U", "/etc/pulsed/api-token").stdout.split()
    assert mode == ["600", "root"]
    assert len(machine.run("cat", "/etc/pulsed/api-token").stdout.strip()) == 64
    state = machine.show(UNIT, "ActiveState", "UnitFileState", "LoadState")
    assert state == {"ActiveState": "inactive", "UnitFileState": "disabled", "LoadState": "loaded"}
    conffiles = machine.run("dpkg-query", "-W", "-f=${Conffiles}", "pulsed").stdout
    assert "/etc/pulsed/pulsed.toml" in conffiles
    man5 = "/usr/share/man/man5/pulsed.toml.5.gz"
    assert machine.run("test", "-e", man5, check=False).returncode == 0
    assert machine.run("systemd-analyze", "verify", UNIT, check=False).stderr == ""


def test_start_reaches_ready(machine):
    machine.run("pulsed", "check-config", "/etc/pulsed/pulsed.toml")
    machine.run("systemctl", "start", UNIT)  # Type=notify: returns once READY=1 arrived
    state = machine.show(UNIT, "ActiveState", "SubState", "StatusText", "MainPID")
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
    assert re.search(r"1 services, 1 real servers, generation 1", state["StatusText"]), state
    # The daemon programmed the kernel from inside its sandbox.
    ipvs = machine.run("cat", "/proc/net/ip_vs").stdout
    assert "C0000264:0050" in ipvs, ipvs  # 192.0.2.100:80


def test_reload_goes_through_reloading_to_ready(machine):
    states: list[str] = []
    done = threading.Event()

    def watch():
        while not done.is_set():
            states.append(machine.show(UNIT, "ActiveState")["ActiveState"])

    # A second real server: an unchanged file would reload to the same generation.
    second = '[[service.real]]\naddress = "10.77.0.3:80"\n'
    machine.run("sh", "-c", "cat >> /etc/pulsed/pulsed.toml", input=second)
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        machine.run("systemctl", "reload", UNIT)
    finally:
        done.set()
        watcher.join()
    state = machine.show(UNIT, "ActiveState", "StatusText")
    assert state["ActiveState"] == "active"
    assert "1 services, 2 real servers, generation 2" in state["StatusText"], state
    journal = machine.journal(UNIT)
    assert "Reloading pulsed" in journal and "Reloaded pulsed" in journal, journal[-2000:]
    assert "reloading" in states, states


def test_journal_priorities_find_what_moves_traffic(machine):
    """journalctl -p warning shows VRRP role changes and a refused reload; info stays out."""
    config = "/etc/pulsed/pulsed.toml"
    good = machine.run("cat", config).stdout
    machine.run("sh", "-c", f"cat > {config}", input=good + "\n[[service]]\nname = \n")
    try:
        machine.run("systemctl", "reload", UNIT)
        try:
            wait_for(
                "the refused reload in the journal",
                lambda: "reload.failed" in machine.journal(UNIT, "-p", "err"),
            )
        except AssertionError:
            entries = machine.run(
                "journalctl", "--no-pager", "-u", UNIT, "-o", "json", "-n", "12",
                "--output-fields=PRIORITY,MESSAGE,_PID",
            ).stdout  # fmt: skip
            raise AssertionError(
                f"no reload.failed at -p err; the journal's last entries:\n{entries}"
            ) from None
    finally:
        machine.run("sh", "-c", f"cat > {config}", input=good)
    warnings = machine.journal(UNIT, "-p", "warning")
    assert re.search(r'"event": "vrrp\.(master|backup)"', warnings), warnings[-2000:]
    assert "reload.failed" in warnings
    assert "reconcile.applied" not in warnings  # info: below warning
    notices = machine.journal(UNIT, "-p", "notice")
    assert "daemon.started" in notices and "reload.applied" in notices, notices[-2000:]
    assert machine.show(UNIT, "ActiveState")["ActiveState"] == "active"  # the old config runs


def test_every_path_works_inside_the_sandbox(machine):
    """The installed unit's sandbox, applied to a probe: fails if /proc/net is hidden again."""
    unit = machine.run("cat", f"/lib/systemd/system/{UNIT}").stdout
    dropped = ("Type=", "NotifyAccess=", "ExecStart", "ExecReload=", "ExecStopPost=",
               "WatchdogSec=", "Restart", "Description=")  # fmt: skip
    lines = [ln for ln in unit.splitlines() if not ln.startswith(dropped)]
    service = lines.index("[Service]")
    lines[service + 1 : service + 1] = [
        "Type=oneshot",
        "ExecStart=/opt/pulsed/bin/python3 /usr/local/lib/pulsed-sandbox-probe.py",
    ]
    probe = "pulsed-sandbox-probe.service"
    machine.run("sh", "-c", f"cat > /etc/systemd/system/{probe}", input="\n".join(lines) + "\n")
    machine.run("systemctl", "daemon-reload")
    started = machine.run("systemctl", "start", probe, check=False)
    output = machine.journal(probe)
    assert "ok fast resync (/proc/net/ip_vs)" in output, output
    assert started.returncode == 0 and "FAIL" not in output, output
    paths = ("IPVS over generic netlink", "rtnetlink", "sysctl read", "raw sockets", "state dir")
    for name in paths:
        assert f"ok {name}" in output, output
    # The running daemon's own view, in its own mount namespace (its /proc mount).
    pid, procfs_path = machine.show(UNIT, "MainPID")["MainPID"], "/proc/net/ip_vs"
    own = machine.run("nsenter", "-t", pid, "-m", "-n", "head", "-1", procfs_path, check=False)
    assert own.stdout.startswith("IP Virtual Server"), own.stdout + own.stderr


def test_stalled_process_is_restarted_by_the_watchdog(machine):
    before = machine.show(UNIT, "MainPID", "NRestarts")
    machine.run("kill", "-STOP", before["MainPID"])

    def restarted():
        now = machine.show(UNIT, "MainPID", "NRestarts", "ActiveState")
        moved = now["MainPID"] not in ("0", before["MainPID"]) and now["ActiveState"] == "active"
        return now if moved and int(now["NRestarts"]) > int(before["NRestarts"]) else None

    # WatchdogSec=10s, then SIGABRT (pending on a stopped process), SIGKILL after
    # TimeoutAbortSec (= TimeoutStopSec, 10 s), RestartSec=2s.
    wait_for("the watchdog restart", restarted, timeout=90, every=1)
    assert "Watchdog timeout" in machine.journal(UNIT)


def _adverts(stop: threading.Event, seen: list[tuple[int, int]]):
    """VRRP adverts (VRID, priority) arriving on our end of the veth."""
    # A packet socket sees them without joining 224.0.0.18 (a raw IP socket would not).
    eth_p_ip = 0x0800
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(eth_p_ip))
    s.bind((HOST_IF, eth_p_ip))
    s.settimeout(0.2)
    try:
        while not stop.is_set():
            try:
                data = s.recv(2048)
            except TimeoutError:
                continue
            if len(data) < 24 or data[9] != 112:  # IP protocol 112: VRRP
                continue
            ihl = (data[0] & 0x0F) * 4
            _, vrid, priority = struct.unpack_from("!BBB", data, ihl)
            seen.append((vrid, priority))
    finally:
        s.close()


def test_stop_hands_the_vips_over(machine):
    def has_vip():
        return VIP in machine.run("ip", "-4", "addr", "show", "host0").stdout

    wait_for("the VIP on host0 (master)", has_vip, timeout=60)
    stop, seen = threading.Event(), []
    listener = threading.Thread(target=_adverts, args=(stop, seen))
    listener.start()
    try:
        wait_for("an advert", lambda: (51, 200) in seen, timeout=10)
        machine.run("systemctl", "stop", UNIT)
        wait_for("the priority 0 advert", lambda: (51, 0) in seen, timeout=5)
    finally:
        stop.set()
        listener.join()
    assert not has_vip()
    assert machine.show(UNIT, "ActiveState")["ActiveState"] == "inactive"


BGP_VIP = "192.0.2.200"
BGP_CONFIG = f"""\
[daemon]
log_format = "auto"

[api]
listen = "127.0.0.1:9480"
token_file = "/etc/pulsed/api-token"

[bgp]
vips = ["{BGP_VIP}"]
poll_interval = "0.5s"

[[service]]
name = "web"
vip = "{BGP_VIP}"
port = 80
scheduler = "mh"
[service.check]
type = "none"
[[service.real]]
address = "10.77.0.1:80"
"""
# Debian's FRR as an operator would set it up from etc/frr/frr.conf.example: only the
# connected routes of pulsed's interface go into BGP (no neighbour is needed to see that).
FRR_CONF = """\
frr defaults datacenter
hostname pulsed-systemd
route-map PULSED-VIPS permit 10
 match interface pulsed-bgp
exit
router bgp 65001
 bgp router-id 192.0.2.2
 address-family ipv4 unicast
  redistribute connected route-map PULSED-VIPS
 exit-address-family
exit
"""


def _in_bgp_table(machine) -> bool:
    out = machine.run("vtysh", "-c", f"show bgp ipv4 unicast {BGP_VIP}/32", check=False).stdout
    return "BGP routing table entry" in out


def test_bgp_drop_in_announces_through_frr_and_a_crash_withdraws(machine):
    """The shipped drop-in, under the real unit: pulsed creates its TUN interface, FRR
    puts the VIP in BGP; kill -9 withdraws it, the restart announces it again."""
    machine.run("sed", "-i", "s/^bgpd=no/bgpd=yes/", "/etc/frr/daemons")
    machine.run("sh", "-c", "cat > /etc/frr/frr.conf", input=FRR_CONF)
    machine.run("systemctl", "restart", "frr")
    example = "/usr/share/doc/pulsed/examples/pulsed-bgp.conf"
    drop_in = "/etc/systemd/system/pulsed.service.d/bgp.conf"
    machine.run("install", "-D", "-m", "0644", example, drop_in)
    machine.run("systemctl", "daemon-reload")
    assert machine.run("systemd-analyze", "verify", UNIT, check=False).stderr == ""
    exposure = machine.run("systemd-analyze", "security", UNIT, check=False).stdout
    print("\nwith the BGP drop-in:", exposure.strip().splitlines()[-1])
    # A host has /dev/net/tun as a static node; this container gets it by hand (the
    # VM's minimal init loads no module on its own).
    subprocess.run(["modprobe", "tun"], check=False, capture_output=True)
    machine.run(
        "sh", "-c", "[ -c /dev/net/tun ] || { mkdir -p /dev/net; mknod /dev/net/tun c 10 200; }"
    )
    machine.run("sh", "-c", "cat > /etc/pulsed/pulsed.toml", input=BGP_CONFIG)
    machine.run("systemctl", "start", UNIT)
    try:
        wait_for("the VIP in FRR's BGP table", lambda: _in_bgp_table(machine), timeout=60)
    except AssertionError as exc:
        routes = machine.run("vtysh", "-c", "show ip route", check=False)
        raise AssertionError(
            f"{exc}\n{machine.journal(UNIT)[-3000:]}\n{routes.stdout}{routes.stderr}"
            f"\n{machine.journal('frr.service')[-1500:]}"
        ) from None
    assert BGP_VIP in machine.run("ip", "-4", "addr", "show", "pulsed-bgp").stdout
    first = machine.show(UNIT, "MainPID")["MainPID"]

    machine.run("systemctl", "kill", "-s", "KILL", "--kill-whom=main", UNIT)
    # Withdrawn by the kernel and FRR alone, before systemd restarts pulsed (RestartSec=2s).
    wait_for("the withdrawal", lambda: not _in_bgp_table(machine), timeout=10, every=0.05)
    wait_for(
        "the restart",
        lambda: machine.show(UNIT, "MainPID")["MainPID"] not in ("0", first),
        timeout=30,
    )
    wait_for("the VIP announced again", lambda: _in_bgp_table(machine), timeout=60)

    machine.run("systemctl", "stop", UNIT)
    assert not _in_bgp_table(machine)
    assert machine.run("ip", "link", "show", "pulsed-bgp", check=False).returncode != 0
