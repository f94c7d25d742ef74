"""systemd's notify protocol: READY/RELOADING/STOPPING/STATUS and the watchdog.

The protocol is one datagram per message on the unix socket named by
``NOTIFY_SOCKET`` (a path, or an abstract name written with a leading '@').
It is small enough that a dependency (python-systemd, sdnotify) buys nothing:
those add a C extension or an unmaintained package for ten lines of socket code.

The watchdog ping runs as a task on the daemon's own event loop, so a loop
that stalls stops the pings and systemd restarts the process: that is the
point of ``WatchdogSec``.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping
from typing import Any

import structlog

log = structlog.get_logger(__name__)


def socket_address(name: str) -> str | bytes:
    """The sockaddr for NOTIFY_SOCKET text: '@name' is Linux's abstract namespace."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


def watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Seconds between pings (half of WATCHDOG_USEC), or None when not asked for.

    WATCHDOG_PID, when set, names the process the watchdog is meant for; a
    child that inherited the environment must not answer for its parent.
    """
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000 / 2


class Notifier:
    """Sends sd_notify messages; never raises (a lost notification is logged)."""

    def __init__(self, address: str | bytes, watchdog: float | None = None) -> None:
        self.address = address
        self.watchdog = watchdog
        # Non-blocking: a notify socket whose reader lags must never stall the event
        # loop (a full queue blocks sendto); such a message is dropped and logged.
        self._sock = socket.socket(
            socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
        )
        self._task: asyncio.Task | None = None
        self._warned = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier | None:
        """A Notifier for NOTIFY_SOCKET, or None when not run under systemd's notify."""
        environ = os.environ if environ is None else environ
        name = environ.get("NOTIFY_SOCKET", "")
        if not name or not (name.startswith("/") or name.startswith("@")):
            return None
        return cls(socket_address(name), watchdog_interval(environ))

    def send(self, msg: str) -> bool:
        """Send one message (lines like ``READY=1\\nSTATUS=...``). True if sent."""
        try:
            self._sock.sendto(msg.encode("utf-8", "replace"), self.address)
        except OSError as exc:
            if not self._warned:  # once: a missing socket would otherwise log every ping
                log.warning("sdnotify.send_failed", error=exc.strerror or str(exc))
                self._warned = True
            return False
        self._warned = False
        return True

    def attach(self, daemon: Any = None) -> asyncio.Task | None:
        """Start the watchdog pings on the running loop (if systemd asked for them)."""
        if self.watchdog is None or self._task is not None:
            return None
        self._task = asyncio.get_running_loop().create_task(
            self._ping_forever(self.watchdog), name="sd-watchdog"
        )
        log.info("sdnotify.watchdog", interval=self.watchdog)
        return self._task

    async def _ping_forever(self, interval: float) -> None:
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(interval)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._sock.close()
