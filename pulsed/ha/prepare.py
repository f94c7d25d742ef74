"""Everything a VRRP instance needs that can fail (its key, a raw socket), built before
anything is swapped: a start or a reload that cannot bring VRRP up fails touching nothing."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pulsed.ha.auth import Authenticator, load_key
from pulsed.ha.config import VrrpConfig, VrrpScript
from pulsed.ha.vrrp import IPPROTO_VRRP


class VrrpSetupError(ValueError):
    """What a valid [vrrp] table needs at run time is missing (the key file cannot be read,
    no raw socket); the message is one line."""


@dataclass(frozen=True)
class PreparedVrrp:
    """One instance, ready to run.

    Holds no socket and no address: building one changes nothing on the system.
    Use it for one instance (its Authenticator is that instance's epoch and counter).
    ``script_weights``: each tracked script's weight, its [[vrrp_script]] default resolved.
    """

    cfg: VrrpConfig
    auth: Authenticator | None
    script_weights: Mapping[str, int] = field(default_factory=dict)


def _check_raw_socket(family: int) -> None:
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    try:
        socket.socket(af, socket.SOCK_RAW, IPPROTO_VRRP).close()
    except OSError as e:
        why = (e.strerror or type(e).__name__).lower()
        msg = f"vrrp: cannot open a raw VRRP socket ({why}); it needs CAP_NET_RAW"
        raise VrrpSetupError(msg) from None
    # The interface itself may appear later: the node waits for it in FAULT (tracking).


def script_weights(cfg: VrrpConfig, scripts: Sequence[VrrpScript] = ()) -> dict[str, int]:
    defaults = {s.name: s.weight for s in scripts}
    return {
        t.script: t.weight if t.weight is not None else defaults.get(t.script, 0)
        for t in cfg.track_scripts
    }


def prepare_vrrp(
    cfg: VrrpConfig, *, check_socket: bool = True, scripts: Sequence[VrrpScript] = ()
) -> PreparedVrrp:
    """Read the auth key and build the Authenticator, check that a raw VRRP socket can be
    opened (``check_socket``). VrrpSetupError (one line) on any failure.

    ``cfg`` was validated when the config was loaded (pulsed.config, the one validation):
    this only does what can still fail at run time, as the key file may have changed since.
    Blocking (it reads the key file): from a running event loop, use ``prepare_vrrp_async``.
    """
    auth = None
    if cfg.auth.key_file:
        try:
            auth = Authenticator(load_key(cfg.auth.key_file))
        except ValueError as e:
            which = f" (instance {cfg.name})" if cfg.name else ""
            raise VrrpSetupError(f"vrrp.auth.key_file{which}: {e}") from None
    if check_socket:
        _check_raw_socket(cfg.family())
    return PreparedVrrp(cfg=cfg, auth=auth, script_weights=script_weights(cfg, scripts))


async def prepare_vrrp_async(
    cfg: VrrpConfig,
    *,
    check_socket: bool = True,
    timeout: float = 2.0,
    scripts: Sequence[VrrpScript] = (),
) -> PreparedVrrp:
    """``prepare_vrrp`` off the event loop; a key file that cannot be read in ``timeout``
    seconds (a hung mount) fails with VrrpSetupError instead of freezing the loop."""
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.to_thread(
                prepare_vrrp, cfg, check_socket=check_socket, scripts=scripts
            )
    except TimeoutError:
        raise VrrpSetupError(f"vrrp.auth.key_file: not read within {timeout:g}s") from None
