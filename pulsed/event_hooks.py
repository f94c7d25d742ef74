"""Which notify commands and FIFO lines an event calls for (keepalived's conventions).

The daemon reports VRRP instance and sync-group transitions and real servers
going up or down; this module picks the commands the config names for them
and the notify FIFO's line, and hands them to the HookRunner (pulsed.hooks),
which runs them off every hot path.

- an instance or group entering STATE runs its ``notify_<state>`` as given,
  and its generic ``notify`` with ``TYPE NAME STATE PRIORITY`` appended
  (TYPE ``INSTANCE`` or ``GROUP``; a group has no priority: ``0``, as keepalived);
- a real server going up or down runs its ``notify_up`` / ``notify_down``
  with the service's name and the server's ``address:port`` appended;
- the FIFO gets ``INSTANCE "VI_1" MASTER 100``, ``GROUP "G1" BACKUP``,
  ``RS "web" 10.0.0.2:80 UP``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pulsed.config import RealConfig
from pulsed.model import DestKey

# The role names of pulsed.ha.fsm.Role, and "stop", as keepalived writes them.
STATES = {"master": "MASTER", "backup": "BACKUP", "fault": "FAULT", "stop": "STOP"}


class Runner(Protocol):
    def run(self, argv: Sequence[str], extra: Sequence[str] = ()) -> None: ...

    def event_line(self, line: str) -> None: ...


class Notifiable(Protocol):
    """An instance's or a sync group's config (pulsed.ha.config)."""

    @property
    def notify_master(self) -> list[str]: ...
    @property
    def notify_backup(self) -> list[str]: ...
    @property
    def notify_fault(self) -> list[str]: ...
    @property
    def notify_stop(self) -> list[str]: ...
    @property
    def notify(self) -> list[str]: ...


def role_event(
    runner: Runner,
    kind: str,
    name: str,
    cfg: Notifiable | None,
    role: str,
    priority: int | None,
) -> None:
    """An instance (kind "INSTANCE") or sync group ("GROUP") entered ``role``
    (a pulsed.ha.fsm.Role value, or "stop"). INIT is not an event."""
    state = STATES.get(role)
    if state is None:
        return
    shown = str(priority if priority is not None else 0)
    line = f'{kind} "{name}" {state}'
    runner.event_line(f"{line} {shown}" if kind == "INSTANCE" else line)
    if cfg is None:
        return
    specific = getattr(cfg, f"notify_{role}")
    if specific:
        runner.run(specific)
    if cfg.notify:
        runner.run(cfg.notify, (kind, name, state, shown))


def real_event(
    runner: Runner, service: str, real: RealConfig | None, dest: DestKey, up: bool
) -> None:
    """A real server went up or down."""
    server = str(dest)
    runner.event_line(f'RS "{service}" {server} {"UP" if up else "DOWN"}')
    if real is None:
        return
    argv = real.notify_up if up else real.notify_down
    if argv:
        runner.run(argv, (service, server))
