"""The FRR backend: VIPs as addresses on pulsed's TUN interface (pulsed.announce.tun),
FRR's state read with ``vtysh`` (JSON), off the event loop and cached.

pulsed never writes FRR's config: FRR runs as its own service with
``redistribute connected route-map`` matching pulsed's interface
(etc/frr/frr.conf.example). Reading it is a child process with a timeout,
at most one at a time, every ``poll_interval``; readers see the last result
and its age.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Collection
from typing import Any

import structlog

from pulsed.announce.base import AnnounceStatus, DaemonView, PeerView
from pulsed.announce.config import BgpConfig
from pulsed.announce.tun import AnnounceInterface, TunError, accept_routes, host_prefix
from pulsed.checks.reaper import reaper, watch_exit

log = structlog.get_logger(__name__)

MAX_OUTPUT = 4 << 20  # bytes read from one vtysh call
SLOPPY = ("/proc/sys/net/ipv4/vs/sloppy_tcp", "/proc/sys/net/ipv4/vs/sloppy_sctp")


class VtyshError(Exception):
    """vtysh failed; the message is one line saying what to do."""


class FrrAnnouncer:
    def __init__(self, config: BgpConfig, fd: int | None = None) -> None:
        self.config = config
        self.interface = AnnounceInterface(config.interface, fd)
        self._open = False
        self._problem = ""
        self._wanted: tuple[str, ...] = ()
        self._announced: tuple[str, ...] = ()
        # When each announced VIP went on the interface (monotonic): FRR is asked
        # whether it carries a VIP only once it had a poll interval to take it.
        self._since: dict[str, float] = {}
        self._view = DaemonView()
        self._poller: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._logged = ""

    # Announcer ----------------------------------------------------------

    async def start(self) -> None:
        await self._open_interface()
        vips = list(self.config.vip_thresholds())
        if self.config.accept_local:
            for line in await accept_routes(vips):
                log.error("bgp.accept_route_failed", error=line)
        if self.config.sloppy:
            set_sloppy()
        self._poller = asyncio.create_task(self._poll(), name="bgp-poll")

    async def announce(self, vips: Collection[str]) -> None:
        wanted = tuple(sorted(vips))
        async with self._lock:
            self._wanted = wanted
            if not self._open:
                await self._open_interface()
            if not self._open:
                return
            before = self._announced
            errors = await self.interface.sync(wanted)
            for line in errors:
                log.error("bgp.address_failed", error=line)
            with contextlib.suppress(Exception):
                self._announced = tuple(sorted(await self.interface.current()))
            now = time.monotonic()
            self._since = {v: self._since.get(v, now) for v in self._announced}
            for vip in sorted(set(self._announced) - set(before)):
                log.warning("bgp.announced", vip=vip)
            for vip in sorted(set(before) - set(self._announced)):
                log.warning("bgp.withdrawn", vip=vip)

    async def stop(self, withdraw: bool) -> int | None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        async with self._lock:
            if not withdraw:
                return self.interface.detach()
            if self._open:
                await self.interface.sync(())  # each withdrawal seen one by one
            await self.interface.close()
            if self._announced:
                log.warning("bgp.withdrawn_all", vips=len(self._announced))
            self._announced = ()
            self._since = {}
            self._open = False
        return None

    def descriptor(self) -> int:
        fd = self.interface.fd
        return fd if fd is not None and self._open else -1

    def status(self) -> AnnounceStatus:
        return AnnounceStatus(
            daemon="frr",
            interface=self.interface.ifname,
            interface_ok=self._open,
            problem=self._problem,
            announced=self._announced,
            routing=self._view,
        )

    # Internals ------------------------------------------------------------

    async def _open_interface(self) -> None:
        try:
            await self.interface.open()
        except TunError as exc:
            problem = f"bgp: {exc}; nothing is announced until it is fixed"
            if problem != self._problem:
                log.error("bgp.interface_failed", error=problem)
            self._problem = problem
            return
        self._open, self._problem = True, ""

    async def _poll(self) -> None:
        while True:
            started = time.monotonic()
            view = await self.read_daemon()
            self._view = view
            line = "" if view.ok else view.problem
            if line != self._logged:
                if line:
                    log.error("bgp.routing_daemon", error=line, action="serving without announcing")
                else:
                    log.info("bgp.routing_daemon_ok", peers=len(view.peers))
                self._logged = line
            if not self._open:  # e.g. the name was taken: try again
                await self.announce(self._wanted)
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.0, float(self.config.poll_interval) - elapsed))

    async def read_daemon(self) -> DaemonView:
        started = time.monotonic()
        try:
            summary = await self.vtysh("show bgp summary json")
            bfd = await self._bfd()
            peers = parse_summary(summary, bfd)
            problem = ""
            if not _has_router(summary):
                problem = (
                    "bgp: FRR has no 'router bgp': configure it (etc/frr/frr.conf.example);"
                    " nothing is announced upstream"
                )
            elif settled := self._settled(started):
                vip = settled[int(started) % len(settled)]
                problem = await self._check_redistributed(vip)
                if vip not in self._settled(started):  # withdrawn meanwhile: nothing to say
                    problem = ""
        except VtyshError as exc:
            return DaemonView(False, str(exc), (), time.time(), time.monotonic() - started)
        return DaemonView(not problem, problem, peers, time.time(), time.monotonic() - started)

    def _settled(self, now: float) -> list[str]:
        """The VIPs announced for at least one poll interval before ``now``."""
        wait = float(self.config.poll_interval)
        return [v for v in self._announced if self._since.get(v, now) <= now - wait]

    async def _bfd(self) -> dict[str, str]:
        try:
            out = await self.vtysh("show bfd peers json")
        except VtyshError:
            return {}  # bfdd not running: no BFD, which is allowed
        return parse_bfd(out)

    async def _check_redistributed(self, vip: str) -> str:
        ip, length = host_prefix(vip)
        family = "ipv4" if ip.version == 4 else "ipv6"
        out = await self.vtysh(f"show bgp {family} unicast {ip}/{length} json")
        if isinstance(out, dict) and out.get("paths"):
            return ""
        return (
            f"bgp: FRR does not carry {ip}/{length} in BGP: add 'redistribute connected"
            f" route-map' matching interface {self.interface.ifname} (etc/frr/frr.conf.example)"
        )

    async def vtysh(self, command: str) -> Any:
        """One vtysh command's JSON output; VtyshError (one line) otherwise."""
        argv = [self.config.vtysh]
        if self.config.vty_socket:
            argv += ["--vty_socket", self.config.vty_socket]
        argv += ["-c", command]
        timeout = float(self.config.command_timeout)
        try:
            out, code = await run_command(argv, timeout)
        except FileNotFoundError:
            raise VtyshError(
                f"bgp: {self.config.vtysh} not found: install FRR (apt install frr) and start it"
            ) from None
        except TimeoutError:  # before OSError: TimeoutError is one
            raise VtyshError(
                f"bgp: vtysh did not answer '{command}' within {timeout:g}s: is FRR overloaded?"
            ) from None
        except OSError as exc:
            why = exc.strerror or str(exc) or type(exc).__name__
            raise VtyshError(f"bgp: cannot run {self.config.vtysh}: {why}") from None
        text = out.decode(errors="replace")
        if code != 0 or "failed to connect" in text:
            first = text.strip().splitlines()[-1] if text.strip() else f"exit {code}"
            if "failed to connect" in text or "is not running" in text:
                raise VtyshError(
                    "bgp: FRR is not running (vtysh cannot reach bgpd): start it"
                    " (systemctl start frr, with bgpd=yes in /etc/frr/daemons)"
                )
            raise VtyshError(f"bgp: vtysh '{command}' failed: {first[:200]}")
        # vtysh may say something of its own before the JSON (stderr shares the pipe),
        # e.g. "% Can't open configuration file /etc/frr/vtysh.conf due to 'Permission
        # denied'." when pulsed is not in the frr group: the JSON starts at a line of
        # its own.
        lines = text.splitlines(keepends=True)
        start = next((i for i, line in enumerate(lines) if line[:1] in ("{", "[")), None)
        try:
            if start is None:
                if text.strip():
                    raise ValueError("no JSON")
                return {}
            return json.loads("".join(lines[start:]))
        except ValueError:
            first = text.strip().splitlines()[0][:200]
            raise VtyshError(f"bgp: vtysh '{command}' gave no JSON: {first}") from None


async def run_command(argv: list[str], timeout: float) -> tuple[bytes, int]:
    """(stdout and stderr, at most MAX_OUTPUT bytes; exit status) of ``argv``,
    started through the reaper like every child of pulsed (pulsed.checks.reaper)
    and killed with its group at ``timeout`` (TimeoutError)."""
    loop = asyncio.get_running_loop()
    read_fd, write_fd = os.pipe()
    try:
        spawned = reaper.spawn(argv, dict(os.environ), write_fd, stderr=write_fd)
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    exited = watch_exit(spawned.pid)
    out = bytearray()
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        try:
            chunk = os.read(read_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk:
            out.extend(chunk[: max(0, MAX_OUTPUT - len(out))])
        elif not done.done():
            done.set_result(None)

    os.set_blocking(read_fd, False)
    loop.add_reader(read_fd, readable)
    try:
        async with asyncio.timeout(timeout):
            await done
            await asyncio.shield(exited)
    finally:
        loop.remove_reader(read_fd)
        os.close(read_fd)
        code = await reaper.end(spawned, exited)
        exited.cancel()
    return bytes(out), code


def _has_router(summary: Any) -> bool:
    return isinstance(summary, dict) and any(
        isinstance(v, dict) and "peers" in v for v in summary.values()
    )


def parse_summary(summary: Any, bfd: dict[str, str]) -> tuple[PeerView, ...]:
    """The peers of ``show bgp summary json`` (every address family, each peer once)."""
    peers: dict[str, PeerView] = {}
    if not isinstance(summary, dict):
        return ()
    for family in summary.values():
        if not isinstance(family, dict) or not isinstance(family.get("peers"), dict):
            continue
        for address, peer in family["peers"].items():
            if not isinstance(peer, dict) or address in peers:
                continue
            uptime = peer.get("peerUptimeMsec")
            sent = peer.get("pfxSnt")
            peers[address] = PeerView(
                address=str(address),
                state=str(peer.get("state", "unknown")),
                uptime_ms=uptime if isinstance(uptime, int) else None,
                prefixes_sent=sent if isinstance(sent, int) else None,
                bfd=bfd.get(str(address), ""),
            )
    return tuple(peers[a] for a in sorted(peers))


def parse_bfd(out: Any) -> dict[str, str]:
    """Peer address -> BFD status from ``show bfd peers json`` (a list)."""
    found: dict[str, str] = {}
    for peer in out if isinstance(out, list) else ():
        if isinstance(peer, dict) and isinstance(peer.get("peer"), str):
            found[peer["peer"]] = str(peer.get("status", "unknown"))
    return found


def set_sloppy() -> None:
    """sloppy_tcp and sloppy_sctp to 1: IPVS then creates a connection for a
    mid-stream packet (not a SYN), which is what a flow that ECMP moved to
    this director sends first. One warning when IPVS is not loaded."""
    for path in SLOPPY:
        try:
            with open(path, "w") as f:
                f.write("1\n")
        except OSError as exc:
            log.warning(
                "bgp.sloppy_unavailable",
                sysctl=path.removeprefix("/proc/sys/").replace("/", "."),
                error=exc.strerror,
                action="load ip_vs, or allow writing it (systemd/pulsed-bgp.conf)",
            )
