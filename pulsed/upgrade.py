"""Live upgrade, the process side: the running pulsed starts its successor and hands over.

The rules (docs/operations.md, "Upgrades and crashes"):

1. ``pulsed upgrade`` (or SIGUSR2 to the daemon) asks the running process,
   the *old* one, to replace itself. It writes the hand-off file
   (pulsed.handoff: each VRRP instance's role and whether it holds its
   VIPs) and starts ``pulsed run`` again with its own argv: whatever binary
   and code are on disk now. Three descriptors go with it, named in the
   ``PULSED_UPGRADE`` environment variable: the API's listening socket (the
   very same socket, so no connection is refused while both run: the kernel
   queues connections for whichever process accepts first), the write end
   of a *ready* pipe, the read end of a *hold* pipe, and with ``[bgp]`` the
   TUN descriptor that keeps the announce interface (and so the routes) in
   place: the interface lives while either process holds it.
2. The new process takes the hand-off at once (before parsing the config)
   and refuses to start without a trusted one: a successor that could not
   adopt the roles would start as backup and move the VIPs. It starts a
   master instance as MASTER with the VIPs where they are, and sends its
   first advert at once (pulsed.ha.node). Its first reconcile pass meets
   the kernel table the old process left and writes nothing.
3. When it would tell systemd READY=1 it writes ``ready`` on the ready
   pipe instead, and keeps its systemd messages (and watchdog pings) until
   the hold pipe closes: until then systemd's main pid is the old process.
4. The old process then tells systemd ``MAINPID=<new>`` and ``READY=1``,
   closes the hold pipe, and stops without a trace: its VRRP node stops
   without priority 0 and leaves the VIPs on the interfaces, and the IPVS
   services stay even with ``remove_on_shutdown``.
5. If the new process exits, reports a failure, or is not ready within
   ``READY_TIMEOUT``, the old one kills it (SIGKILL: a process killed so
   changes nothing more), removes the hand-off, logs one line and runs on.

Learned from nginx's binary upgrade (the old master forks and execs the new
binary, which inherits the listening sockets through an environment
variable) and HAProxy's (the new process fetches the listeners over a unix
socket, and the old one leaves once the new one runs). Unlike nginx the two
never serve side by side for long: the old process leaves as soon as the new
one is ready, because two VRRP speakers for one router must not last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import msgspec
import structlog

from pulsed.handoff import InstanceRole, handoff_path, take_handoff, write_handoff
from pulsed.statefile import write_atomic

log = structlog.get_logger(__name__)

ENV = "PULSED_UPGRADE"
# Seconds the new process has to become ready (start, first pass, VRRP up).
READY_TIMEOUT = 30.0
RESULT_FILE = "upgrade-result.json"
PID_FILE = "pulsed.pid"


class UpgradeFailed(Exception):
    """The new process did not take over; the message is one line."""


class _Status(Protocol):
    @property
    def state(self) -> str: ...
    @property
    def vips_held(self) -> bool: ...


def instance_roles(statuses: Iterable[_Status]) -> dict[str, InstanceRole]:
    """The hand-off's content from the node's status (one per instance)."""
    roles = {}
    for st in statuses:
        name = getattr(st, "name", "") or "VI_1"  # a lone [vrrp] is VI_1
        roles[name] = InstanceRole(role=st.state, vips_held=st.vips_held)  # type: ignore[arg-type]
    return roles


def listening_socket(api: Any) -> socket.socket | None:
    """The running API server's listening socket (pulsed.api.ApiServer), or None."""
    if api is None:
        return None
    for site in getattr(api.runner, "sites", ()):
        server = getattr(site, "_server", None)  # aiohttp keeps the asyncio Server here
        for sock in getattr(server, "sockets", None) or ():
            return socket.socket(fileno=os.dup(sock.fileno()))
    return None


# ---- the old process -------------------------------------------------------------------------


@dataclass
class Plan:
    """What the old process hands to the new one."""

    state_dir: str
    roles: Mapping[str, InstanceRole]
    api_sock: socket.socket | None = None
    api_listen: str = ""
    # The BGP announce interface's TUN descriptor (pulsed.announce.tun), or -1:
    # the successor holds the same interface, so no route is withdrawn.
    tun_fd: int = -1
    argv: list[str] = field(default_factory=lambda: list(sys.orig_argv))


@dataclass
class Started:
    """A new process that reported ready; ``release()`` lets it speak to systemd."""

    popen: subprocess.Popen
    hold_fd: int

    @property
    def pid(self) -> int:
        return self.popen.pid

    def release(self) -> None:
        if self.hold_fd >= 0:
            os.close(self.hold_fd)
            self.hold_fd = -1


async def start_successor(plan: Plan, timeout: float = READY_TIMEOUT) -> Started:
    """Write the hand-off, start the new process and wait until it is ready.

    UpgradeFailed (one line) if it is not: the new process is then killed and
    reaped, and the hand-off removed. ``plan.api_sock`` is closed either way
    (the new process holds its own copy).
    """
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    hold_r, hold_w = os.pipe2(os.O_CLOEXEC)
    popen = None
    try:
        path = write_handoff(plan.state_dir, plan.roles)
        api_fd = plan.api_sock.fileno() if plan.api_sock is not None else -1
        env = dict(os.environ)
        # WATCHDOG_PID names the old process; the new one answers the watchdog from now on.
        env.pop("WATCHDOG_PID", None)
        env[ENV] = json.dumps(
            {
                "ready": ready_w,
                "hold": hold_r,
                "api": api_fd,
                "listen": plan.api_listen,
                "handoff": str(path),
                "tun": plan.tun_fd,
            }
        )
        fds = [ready_w, hold_r] + [fd for fd in (api_fd, plan.tun_fd) if fd >= 0]
        from pulsed.checks.reaper import reaper

        popen = subprocess.Popen(plan.argv, env=env, pass_fds=fds)
        reaper.keep(popen.pid)  # no await since the fork: it is never taken for an orphan
        os.close(ready_w)
        os.close(hold_r)
        ready_w = hold_r = -1
        await _wait_ready(ready_r, popen, timeout)
    except BaseException as exc:
        reason = str(exc) if isinstance(exc, UpgradeFailed) else _one_line(exc)
        for fd in (ready_w, hold_r, hold_w):
            if fd >= 0:
                os.close(fd)
        if popen is not None:
            await _kill(popen)
        handoff_path(plan.state_dir).unlink(missing_ok=True)
        if isinstance(exc, UpgradeFailed | OSError):
            raise UpgradeFailed(reason) from None
        raise
    finally:
        os.close(ready_r)
        if plan.api_sock is not None:
            plan.api_sock.close()
    return Started(popen, hold_w)


async def _wait_ready(fd: int, popen: subprocess.Popen, timeout: float) -> None:
    """Read the new process's one report line: ``ready``, or ``failed <why>``."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()
    data = bytearray()

    def readable() -> None:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return
        data.extend(chunk)
        if (not chunk or b"\n" in data) and not got.done():
            got.set_result(bytes(data))

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)
    try:
        async with asyncio.timeout(timeout):
            line = (await got).split(b"\n", 1)[0].decode(errors="replace").strip()
    except TimeoutError:
        raise UpgradeFailed(
            f"the new process (pid {popen.pid}) was not ready in {timeout:g}s"
        ) from None
    finally:
        loop.remove_reader(fd)
    if line == "ready":
        return
    if line.startswith("failed"):
        raise UpgradeFailed(f"the new process (pid {popen.pid}) {line}")
    await asyncio.sleep(0.05)  # EOF: let it exit, to give its status
    code = popen.poll()
    raise UpgradeFailed(
        f"the new process (pid {popen.pid}) exited before it was ready"
        + (f" (status {code})" if code is not None else "")
    )


async def _kill(popen: subprocess.Popen) -> None:
    from pulsed.checks.reaper import reaper

    with contextlib.suppress(ProcessLookupError):
        popen.send_signal(signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        await asyncio.to_thread(popen.wait, 5)
    reaper.forget(popen.pid)


# ---- the new process -------------------------------------------------------------------------


class Successor:
    """This process, started by an upgrade: the descriptors and the hand-off it inherited."""

    def __init__(
        self, ready: int, hold: int, api: int, listen: str, handoff: str, tun: int = -1
    ) -> None:
        self.ready_fd = ready
        self.hold_fd = hold
        self.api_fd = api
        self.tun_fd = tun
        self.api_listen = listen
        self.handoff = handoff
        self.adopt: dict[str, str] = {}
        self.released = False
        self._held: str | None = None
        self._send: Callable[[str], object] = lambda _msg: None
        self._on_release: list[Callable[[], object]] = []

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> Successor | None:
        """The upgrade this process was started by, or None; the variable is removed so that
        the processes pulsed starts do not see it. UpgradeFailed if it is malformed."""
        environ = os.environ if environ is None else environ  # type: ignore[assignment]
        assert environ is not None
        text = environ.pop(ENV, None)
        if text is None:
            return None
        try:
            d = json.loads(text)
            return cls(
                int(d["ready"]),
                int(d["hold"]),
                int(d["api"]),
                d["listen"],
                d["handoff"],
                int(d.get("tun", -1)),  # absent when the old process was older
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise UpgradeFailed(f"{ENV} is malformed: {_one_line(exc)}") from None

    def take_handoff(self) -> None:
        """Read the hand-off; UpgradeFailed (reported to the old process) if it is unusable."""
        doc, why = take_handoff(self.handoff, writer=os.getppid())
        if doc is None:
            self.fail(why)
            raise UpgradeFailed(why)
        self.adopt = doc.adopt()

    def api_socket(self, listen: str) -> socket.socket | None:
        """The inherited API listening socket if the config still listens where the old
        process did; else it is closed and None returned (the daemon binds anew)."""
        fd, self.api_fd = self.api_fd, -1
        if fd < 0:
            return None
        sock = socket.socket(fileno=fd)
        if listen != self.api_listen:
            sock.close()
            return None
        sock.setblocking(False)
        return sock

    def tun_descriptor(self) -> int | None:
        """The inherited TUN descriptor of the BGP announce interface (taken once), or None."""
        fd, self.tun_fd = self.tun_fd, -1
        return fd if fd >= 0 else None

    def report(self, line: str) -> None:
        """Tell the old process ``ready`` or ``failed <why>`` (once)."""
        fd, self.ready_fd = self.ready_fd, -1
        if fd < 0:
            return
        with contextlib.suppress(OSError):  # the old process is gone: nothing to tell
            os.write(fd, line.encode()[:4000] + b"\n")
        os.close(fd)

    def fail(self, why: str) -> None:
        self.report("failed: " + " ".join(why.split()))

    def wrap_notify(self, send: Callable[[str], object]) -> Callable[[str], object]:
        """The daemon's notify: its first READY=1 reports ready to the old process; until the
        old process has handed over, messages to systemd are kept (the last one is sent then)."""
        self._send = send

        def notify(msg: str) -> object:
            if self.released:
                return send(msg)
            if "READY=1" in msg.split("\n"):
                self.report("ready")
            self._held = msg
            return None

        return notify

    def when_released(self, callback: Callable[[], object]) -> None:
        self._on_release.append(callback)

    async def wait_released(self) -> None:
        """Until the old process closes the hold pipe (it handed over, or it died)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        fd = self.hold_fd

        def readable() -> None:
            try:
                chunk = os.read(fd, 64)
            except BlockingIOError:
                return
            if not chunk and not done.done():
                done.set_result(None)

        os.set_blocking(fd, False)
        loop.add_reader(fd, readable)
        try:
            await done
        finally:
            loop.remove_reader(fd)
            os.close(fd)
            self.hold_fd = -1
        self.released = True
        log.info("upgrade.released", old_pid_gone=os.getppid() == 1)
        if self._held is not None:
            self._send(self._held)
        for callback in self._on_release:
            callback()

    def close(self) -> None:
        for fd in (self.ready_fd, self.api_fd, self.tun_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.ready_fd = self.api_fd = self.tun_fd = -1


# ---- the `pulsed upgrade` command: find the daemon, signal it, wait for the outcome -----------


class UpgradeResult(msgspec.Struct, kw_only=True):
    old_pid: int
    ok: bool
    new_pid: int = 0
    reason: str = ""
    at: float = 0.0


def write_result(state_dir: str, result: UpgradeResult) -> None:
    with contextlib.suppress(OSError):  # only `pulsed upgrade` reads it
        write_atomic(Path(state_dir) / RESULT_FILE, msgspec.json.encode(result) + b"\n")


def read_result(state_dir: str) -> UpgradeResult | None:
    try:
        data = (Path(state_dir) / RESULT_FILE).read_bytes()
        return msgspec.json.decode(data, type=UpgradeResult)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def write_pid(state_dir: str, pid: int | None = None) -> None:
    """``pulsed.pid`` in the state directory: the process `pulsed upgrade` signals."""
    with contextlib.suppress(OSError):
        write_atomic(
            Path(state_dir) / PID_FILE, f"{os.getpid() if pid is None else pid}\n".encode()
        )


def read_pid(state_dir: str) -> int | None:
    """The daemon's pid if the pid file names a live pulsed process."""
    try:
        pid = int((Path(state_dir) / PID_FILE).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"pulsed" in cmdline else None


def request_upgrade(state_dir: str, timeout: float = READY_TIMEOUT + 15) -> tuple[bool, str]:
    """Signal the daemon and wait for its outcome: (ok, one line to print)."""
    pid = read_pid(state_dir)
    if pid is None:
        return False, f"no running pulsed found (pid file {Path(state_dir) / PID_FILE})"
    with contextlib.suppress(OSError):  # an earlier outcome must not be taken for this one
        (Path(state_dir) / RESULT_FILE).unlink()
    asked = time.time()
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = read_result(state_dir)
        if result is not None and result.old_pid == pid and result.at >= asked:
            if not result.ok:
                return False, f"upgrade failed, pid {pid} keeps running: {result.reason}"
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            return True, f"upgraded: pid {pid} handed over to pid {result.new_pid}"
        if not _alive(pid):
            return False, f"pid {pid} exited without reporting an upgrade"
        time.sleep(0.05)
    return False, f"no outcome from pid {pid} within {timeout:g}s"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our child in tests) has exited.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__
