"""The ECMP lab's stand: three directors running pulsed and FRR behind an upstream router.

``with EcmpStand() as stand:`` builds the network (lab/ecmp_topology.py),
starts the three real servers, FRR on the upstream router and on each
director, and pulsed on each director with a ``[bgp]`` table announcing the
VIP, then waits until the upstream router spreads the VIP over all three.
The steps (lab/ecmp_steps.py) then crash, cut, drain and bring back
directors through what it lends them. Leaving the block, even on Ctrl-C,
stops everything and removes every namespace and /run/pulsed-ecmp.

pulsed is used through its command line and observed through the kernel:
the upstream router's route to the VIP, and the directors' IPVS tables.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from lab import ecmp_topology as topo
from lab.ecmp_topology import CLIENT, DIRECTORS, SERVERS, UPSTREAM, VIP
from lab.ecmp_watch import Hops, RouteWatcher, flow_paths, service_counters
from lab.frr import Frr
from lab.held import HeldConnections
from lab.loadgen import LoadGen, LoadThread, Outcome, Summary
from lab.netns import LabError, run
from lab.processes import Processes
from lab.report import Reporter, RunningLoads, spread_text

RUNTIME = Path("/run/pulsed-ecmp")
SERVICE = f"{VIP}:80"
ALL_HOPS: Hops = frozenset(topo.DIRECTOR_UPLINK.values())

UPSTREAM_CONF = """frr defaults datacenter
hostname upstream
router bgp 65000
 bgp router-id {router_id}
 no bgp ebgp-requires-policy
 neighbor DIRECTORS peer-group
 neighbor DIRECTORS remote-as 65001
 neighbor DIRECTORS timers 1 3
 neighbor DIRECTORS timers connect 1
{bfd_neighbor}{neighbors}
 address-family ipv4 unicast
  maximum-paths 16
 exit-address-family
exit
{bfd}"""

DIRECTOR_CONF = """frr defaults datacenter
hostname {name}
route-map PULSED-VIPS permit 10
 match interface pulsed-bgp
exit
router bgp 65001
 bgp router-id {address}
 no bgp ebgp-requires-policy
 neighbor {peer} remote-as 65000
 neighbor {peer} timers 1 3
 neighbor {peer} timers connect 1
{bfd_neighbor} address-family ipv4 unicast
  redistribute connected route-map PULSED-VIPS
 exit-address-family
exit
{bfd}"""

# 100 ms x 3: a dead director or link is found in about 300 ms.
BFD_PROFILE = """bfd
 profile fast
  receive-interval 100
  transmit-interval 100
  detect-multiplier 3
 exit
exit
"""

PULSED_CONF = """# Director {name} of the ECMP lab (make lab MODE=ecmp), from lab/ecmp_stand.py.
[daemon]
state_dir = "{state}"
resync_interval = "5s"
log_format = "json"

[api]
listen = "127.0.0.1:9480"
token_file = "{runtime}/api-token"

[bgp]
vips = ["{vip}"]
vty_socket = "{frr}"
# FRR's state is only shown in /status here; a slow poll spares the IPVS VM's CPUs.
poll_interval = "5s"
command_timeout = "10s"

[[service]]
name = "web"
vip = "{vip}"
port = 80
protocol = "tcp"
scheduler = "{scheduler}"
{flags}forwarding = "dr"

[service.check]
type = "http"
path = "/"
interval = "1s"
timeout = "800ms"
fall = 2
rise = 1
expect_status = [200]
{reals}"""


def ipvs_available() -> bool:
    from lab.stand import ipvs_available as available

    return available()


class EcmpStand:
    """The ECMP lab's namespaces and processes: ``with EcmpStand() as stand: ...``."""

    def __init__(
        self,
        reporter: Reporter | None = None,
        backend: str | None = None,
        rate: float = 100.0,
        scheduler: str = "mh",
        bfd: bool = True,
        pulsed: str | None = None,
    ) -> None:
        self.say = reporter or Reporter()
        self.rate = rate
        self.scheduler = scheduler
        self.bfd = bfd
        self.pulsed = pulsed or str(Path(sys.executable).with_name("pulsed"))
        # "memory": pulsed without IPVS (a host without ip_vs), to try the routing alone.
        self.backend = backend
        self.processes = Processes(RUNTIME)
        self.frr: dict[str, Frr] = {}
        self.route: RouteWatcher | None = None
        self.running = RunningLoads(self.say, self.spread_text)
        self.held: list[HeldConnections] = []
        self.watching: HeldConnections | None = None  # shown in the live progress
        self.servers = {topo.SERVER_NAMES[s]: f"{topo.SERVER_ADDRESS[s]}:80" for s in SERVERS}

    # Set-up and tear-down ---------------------------------------------------

    def __enter__(self) -> EcmpStand:
        try:
            self.start()
        except BaseException as exc:
            if isinstance(exc, LabError):
                self.show_logs()
            self.close()
            raise
        return self

    def __exit__(self, kind: type | None, *exc: object) -> None:
        if kind is not None and issubclass(kind, LabError):
            self.show_logs()
        self.keep_logs()
        self.close()

    def keep_logs(self) -> None:
        """Copy every log to $PULSED_LAB_LOGS, when set (the VM's --out folder outlives
        the VM; the kernel tier's lab runs there)."""
        dest = os.environ.get("PULSED_LAB_LOGS")
        if not dest:
            return
        for log in sorted(RUNTIME.glob("**/*.log")):
            target = Path(dest) / "ecmp-logs" / log.relative_to(RUNTIME)
            with contextlib.suppress(OSError):
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(log, target)

    def show_logs(self, lines: int = 8) -> None:
        for log in sorted(RUNTIME.glob("**/*.log")):
            with contextlib.suppress(OSError):
                tail = log.read_text(errors="replace").rstrip().splitlines()[-lines:]
                self.say.info(f"last lines of {log.relative_to(RUNTIME)}:")
                for line in tail:
                    self.say.info(f"  {line[:300]}")

    def start(self) -> None:
        left = topo.remove_all()
        if left:
            self.say.info(f"removed leftovers of an earlier run: {' '.join(left)}")
        shutil.rmtree(RUNTIME, ignore_errors=True)
        RUNTIME.mkdir(parents=True)
        RUNTIME.chmod(0o755)  # FRR runs as the frr user below it
        fd = os.open(RUNTIME / "api-token", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as token:
            token.write(secrets.token_hex(16) + "\n")
        # pulsed's announcer needs /dev/net/tun (a module on a stock kernel).
        subprocess.run(["modprobe", "tun"], capture_output=True, check=False)
        t0 = time.monotonic()
        topo.build()
        self.say.info(
            f"namespaces: {CLIENT}, {UPSTREAM}, {' '.join(DIRECTORS)}, {' '.join(SERVERS)}"
            f" (+ {topo.SWITCH} with the bridges) built in {time.monotonic() - t0:.1f}s"
        )
        for ns in SERVERS:
            self.start_server(ns)
        self.say.info(
            "real servers (VIP on lo, DR): "
            + ", ".join(f"{n} on {a}" for n, a in self.servers.items())
        )
        self.start_frr()
        self.route = RouteWatcher(UPSTREAM, VIP)
        t0 = time.monotonic()
        for d in DIRECTORS:
            self.write_config(d)
            self.start_pulsed(d)
        self.say.info(
            f"pulsed on each director: ip netns exec pecmp-dN {self._short(self.pulsed)}"
            f" run -c {RUNTIME}/dN/pulsed.toml (scheduler {self.scheduler}, [bgp] vips = [{VIP}])"
        )
        self.wait_hops(ALL_HOPS, timeout=400, what="all three directors to announce the VIP")
        self.say.info(
            f"ready in {time.monotonic() - t0:.1f}s: {UPSTREAM} routes {VIP} over"
            f" {', '.join(sorted(ALL_HOPS))} (ECMP, L4 hash)"
        )

    def start_frr(self) -> None:
        daemons = ("zebra", "bgpd", "bfdd") if self.bfd else ("zebra", "bgpd")
        bfd_neighbor = " neighbor {peer} bfd profile fast\n" if self.bfd else ""
        neighbors = "\n".join(
            f" neighbor {a} peer-group DIRECTORS" for a in topo.DIRECTOR_UPLINK.values()
        )
        conf = UPSTREAM_CONF.format(
            router_id=topo.UPSTREAM_UPLINK,
            bfd_neighbor=bfd_neighbor.format(peer="DIRECTORS"),
            neighbors=neighbors,
            bfd=BFD_PROFILE if self.bfd else "",
        )
        self.frr[UPSTREAM] = Frr(UPSTREAM, RUNTIME / "up" / "frr", conf, daemons)
        for d in DIRECTORS:
            conf = DIRECTOR_CONF.format(
                name=topo.director_name(d),
                address=topo.DIRECTOR_UPLINK[d],
                peer=topo.UPSTREAM_UPLINK,
                bfd_neighbor=bfd_neighbor.format(peer=topo.UPSTREAM_UPLINK),
                bfd=BFD_PROFILE if self.bfd else "",
            )
            self.frr[d] = Frr(d, self.dir(d) / "frr", conf, daemons)
        for frr in self.frr.values():
            frr.start()
        self.say.info(
            f"FRR ({', '.join(daemons)}) on {UPSTREAM} (AS 65000, maximum-paths 16) and on each"
            f" director (AS 65001); BGP timers 1/3 s" + (", BFD 100 ms x 3" if self.bfd else "")
        )

    def close(self) -> None:
        self.running.stop_all()
        for held in self.held:
            with contextlib.suppress(Exception):
                held.stop()
        self.held.clear()
        if self.route is not None:
            with contextlib.suppress(Exception):
                self.route.close()
        self.processes.stop_all()
        for frr in self.frr.values():
            with contextlib.suppress(Exception):
                frr.stop()
        topo.remove_all()
        shutil.rmtree(RUNTIME, ignore_errors=True)

    def _short(self, path: str) -> str:
        with contextlib.suppress(ValueError):
            return str(Path(path).relative_to(Path(__file__).resolve().parent.parent))
        return path

    # What runs --------------------------------------------------------------

    def dir(self, director: str) -> Path:
        return RUNTIME / topo.director_name(director)

    def config(self, director: str) -> Path:
        return self.dir(director) / "pulsed.toml"

    def write_config(self, director: str) -> None:
        state = self.dir(director) / "state"
        state.mkdir(parents=True, exist_ok=True)
        reals = "".join(
            f'\n[[service.real]]\naddress = "{topo.SERVER_ADDRESS[s]}:80"\nweight = 1\n'
            for s in SERVERS
        )
        # mh-port: the client's port is hashed too, so one client's flows spread.
        flags = 'scheduler_flags = ["mh-port"]\n' if self.scheduler == "mh" else ""
        self.config(director).write_text(
            PULSED_CONF.format(
                name=topo.director_name(director),
                state=state,
                runtime=RUNTIME,
                vip=VIP,
                frr=self.dir(director) / "frr",
                scheduler=self.scheduler,
                flags=flags,
                reals=reals,
            )
        )

    def start_server(self, ns: str) -> None:
        name = topo.SERVER_NAMES[ns]
        here = Path(__file__).resolve().parent
        proc = self.processes.start(
            name, ns, [sys.executable, str(here / "realserver.py"), "--name", name]
        )
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().strip()
        if line != "ready":
            raise LabError(f"real server {name} did not start (said {line!r})")

    def start_pulsed(self, director: str) -> None:
        argv = [self.pulsed, "run", "-c", str(self.config(director))]
        if self.backend:
            argv += ["--backend", self.backend]
        self.processes.start(director, director, argv, log=True)

    def kill_pulsed(self, director: str) -> None:
        """kill -9 of the director's pulsed (its IPVS table and FRR stay)."""
        self.processes.stop(director, signal.SIGKILL)

    def admin(self, director: str, *args: str) -> str:
        """``pulsed ARGS -c CONFIG`` on a director; its output, or LabError."""
        argv = [self.pulsed, *args, "-c", str(self.config(director))]
        proc = run(argv, ns=director, check=False)
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise LabError(f"pulsed {' '.join(args)} failed: {detail[-1] if detail else ''}")
        return proc.stdout

    def api(self, director: str, method: str, path: str) -> dict:
        """One admin API call on a director, with curl: the pulsed CLI's own start-up
        takes most of a minute in the emulated VM, and the drain is timed from here."""
        token = (RUNTIME / "api-token").read_text().strip()
        argv = ["curl", "-sS", "--max-time", "60", "-X", method,
                "-H", f"Authorization: Bearer {token}", f"http://127.0.0.1:9480{path}"]  # fmt: skip
        proc = run(argv, ns=director, check=False)
        if proc.returncode != 0:
            raise LabError(f"{method} {path} on {director} failed: {proc.stderr.strip()}")
        try:
            return json.loads(proc.stdout)
        except ValueError:
            raise LabError(
                f"{method} {path} on {director}: not JSON: {proc.stdout[:200]}"
            ) from None

    def set_scheduler(self, scheduler: str) -> None:
        """Every director's config to ``scheduler``, reloaded; waits for the kernel."""
        self.scheduler = scheduler
        for d in DIRECTORS:
            self.write_config(d)
            self.admin(d, "reload")
        deadline = time.monotonic() + 60
        while not all(self.kernel_scheduler(d) == scheduler for d in DIRECTORS):
            self.processes.check_alive(*DIRECTORS)
            if time.monotonic() > deadline:
                raise LabError(f"the directors did not switch to {scheduler} within 60s")
            time.sleep(0.2)

    def kernel_scheduler(self, director: str) -> str | None:
        out = run(["ipvsadm", "-Ln", "-t", SERVICE], ns=director, check=False).stdout
        for line in out.splitlines():
            if line.startswith("TCP"):
                return line.split()[2]
        return None

    # Waiting on the upstream router -----------------------------------------

    def address(self, director: str) -> str:
        return topo.DIRECTOR_UPLINK[director]

    def director_of(self, hop: str | None) -> str:
        return next(
            (topo.director_name(d) for d, a in topo.DIRECTOR_UPLINK.items() if a == hop), "?"
        )

    def wait_hops(self, want: Hops, timeout: float, what: str) -> float:
        """When the upstream router's next hops for the VIP became ``want``."""
        assert self.route is not None
        deadline = time.monotonic() + timeout
        while True:
            self.processes.check_alive(*(d for d in DIRECTORS if d in self.processes.running))
            try:
                return self.route.wait_for(
                    lambda hops: hops == want, min(1.0, max(deadline - time.monotonic(), 0)), what
                )
            except LabError:
                if time.monotonic() >= deadline:
                    shown = ", ".join(sorted(self.route.current or ())) or "none"
                    raise LabError(
                        f"timed out after {timeout:.0f}s waiting for {what} (next hops: {shown})"
                    ) from None

    def flows(self, ports: list[int]) -> dict[int, str | None]:
        """Client port -> the director's uplink address its flow takes now."""
        return flow_paths(UPSTREAM, VIP, topo.CLIENT_ADDRESS, topo.UP_CLIENT_IF, ports)

    def counters(self) -> dict[str, tuple[int, int]]:
        return {d: service_counters(d, SERVICE) for d in DIRECTORS}

    def hold(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(0.2, left))

    # Load -------------------------------------------------------------------

    def load(
        self,
        rate: float | None = None,
        flat_out: bool = False,
        quiet: bool = False,
        concurrency: int = 8,
    ) -> LoadThread:
        """Short requests from the client, a new connection each (so ECMP spreads them)."""
        gen = LoadGen(VIP, 80, concurrency, rate=None if flat_out else (rate or self.rate))
        return self.running.start(LoadThread(gen, CLIENT), quiet)

    def stop_load(self, thread: LoadThread) -> list[Outcome]:
        return self.running.stop(thread)

    def hold_connections(self, count: int) -> HeldConnections:
        held = HeldConnections(VIP, count).start(CLIENT)
        self.held.append(held)
        return held

    def release(self, held: HeldConnections) -> None:
        held.stop()
        with contextlib.suppress(ValueError):
            self.held.remove(held)

    def spread_text(self, s: Summary) -> str:
        text = spread_text(s, list(self.servers))
        held = self.watching
        if held is not None:
            conns = held.snapshot()
            text += f"  held {sum(h.alive for h in conns)}/{len(conns)} alive"
        return text
