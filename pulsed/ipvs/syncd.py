"""The kernel's IPVS connection synchronisation daemon, over netlink.

A master router multicasts its connection table; a backup listens and fills
its own, so connections survive a failover. The HA code starts the master
daemon when it becomes master and the backup daemon when it becomes backup.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from pulsed.ipvs import wire
from pulsed.ipvs.channel import Channel, resolve_family

SyncState = Literal["master", "backup"]
STATE_CODE: dict[str, int] = {"master": 1, "backup": 2}
STATE_NAME = {code: name for name, code in STATE_CODE.items()}
IFNAMSIZ = 16


def _state(state: str) -> int:
    code = STATE_CODE.get(state)
    if code is None:
        raise ValueError(f"sync daemon state must be 'master' or 'backup', not {state!r}")
    return code


async def start_sync_daemon(state: SyncState, ifname: str, syncid: int) -> None:
    """Start the kernel's master or backup sync daemon on ``ifname``.

    Raises BackendError with the kernel's errno (EEXIST when that state's
    daemon already runs, ENODEV for an unknown interface), IPVSUnavailable
    without IPVS, ValueError for a bad argument.
    """
    code = _state(state)
    if not ifname or len(ifname.encode()) >= IFNAMSIZ:
        raise ValueError(f"interface name {ifname!r} must be 1-15 bytes")
    if not 0 <= syncid <= 255:
        raise ValueError(f"syncid {syncid} must be 0-255")
    body = (
        wire.nla(wire.DAEMON_ATTR_STATE, code.to_bytes(4, "little"))
        + wire.nla(wire.DAEMON_ATTR_MCAST_IFN, ifname.encode() + b"\0")
        + wire.nla(wire.DAEMON_ATTR_SYNC_ID, syncid.to_bytes(4, "little"))
    )
    await _run(wire.CMD_NEW_DAEMON, wire.nest(wire.CMD_ATTR_DAEMON, body))


async def stop_sync_daemon(state: SyncState) -> None:
    """Stop the master or backup sync daemon; BackendError(ESRCH) if it is not running."""
    body = wire.nla(wire.DAEMON_ATTR_STATE, _state(state).to_bytes(4, "little"))
    await _run(wire.CMD_DEL_DAEMON, wire.nest(wire.CMD_ATTR_DAEMON, body))


async def sync_daemons() -> list[dict]:
    """The running sync daemons: [{"state", "ifname", "syncid"}, ...]."""
    family_id = await resolve_family()

    def query() -> list[dict]:
        channel = Channel(family_id)
        try:
            replies = channel.dump(wire.CMD_GET_DAEMON, b"")
        finally:
            channel.close()
        return [d for d in (_parse_daemon(raw) for raw in replies) if d is not None]

    return await asyncio.to_thread(query)


async def _run(cmd: int, payload: bytes) -> None:
    family_id = await resolve_family()

    def request() -> None:
        channel = Channel(family_id)
        try:
            channel.request(cmd, payload)
        finally:
            channel.close()

    await asyncio.to_thread(request)


def _parse_daemon(raw: bytes) -> dict | None:
    top = wire.attrs(raw, wire.HEADER_SIZE, len(raw))
    span = top.get(wire.CMD_ATTR_DAEMON)
    if span is None:
        return None
    a = wire.attrs(raw, *span)

    def u32(t: int) -> int:
        s = a.get(t)
        return int.from_bytes(raw[s[0] : s[0] + 4], "little") if s else 0

    s = a.get(wire.DAEMON_ATTR_MCAST_IFN)
    ifname = wire.text(raw, s) if s else ""
    state = u32(wire.DAEMON_ATTR_STATE)
    return {
        "state": STATE_NAME.get(state, str(state)),
        "ifname": ifname,
        "syncid": u32(wire.DAEMON_ATTR_SYNC_ID),
    }
