"""Where a probe comes from: its source address and device.

Every probe type that opens its own socket calls ``prepare_socket`` before
connect() or sendto(), so ``bind_address`` and ``bind_interface`` hold for
all of them (keepalived's PING_CHECK once ignored them, its bug #2697).

A failure here never reached the network: it is the router's fault (an
interface that does not exist yet, an address this router does not hold),
so the probe's result is a local error (``placement_failure``), which moves
neither the server's state nor its weight. Whether the interface exists is
not a config error: interfaces come and go (a VLAN or a VPN brought up after
pulsed started), and check-config runs where they may not exist at all.
"""

from __future__ import annotations

import errno
import socket

from pulsed.checks.base import ProbeResult, local_fault, local_result
from pulsed.checks.config import CheckConfig


def needs_preparing(check: CheckConfig) -> bool:
    return check.bind_address is not None or check.bind_interface is not None


class PlacementError(OSError):
    """``prepare_socket`` failed; ``what`` names the setting ("interface eth1")."""

    def __init__(self, err: int, strerror: str, what: str) -> None:
        super().__init__(err, strerror)
        self.what = what


def prepare_socket(
    sock: socket.socket | socket.SocketType, check: CheckConfig, family: int | None = None
) -> None:
    """Bind ``sock`` to the check's source device and address.

    Raises PlacementError (an OSError with the kernel's errno): ENODEV for a
    missing device, EADDRNOTAVAIL for an address this router does not have,
    EAFNOSUPPORT for a source address of another family than ``family`` (the
    socket's, when given). Callers turn it into placement_failure().
    """
    name = check.bind_interface
    if name is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, name.encode())
        except OSError as exc:
            raise _placement_error(exc, f"interface {name}") from None
    address = check.bind_address
    if address is not None:
        if family is not None and (":" in address) != (family == socket.AF_INET6):
            raise PlacementError(
                errno.EAFNOSUPPORT,
                "not of the probed address's family",
                f"source address {address}",
            )
        try:
            sock.bind((address, 0))
        except OSError as exc:
            raise _placement_error(exc, f"source address {address}") from None


def _placement_error(exc: OSError, what: str) -> PlacementError:
    err = exc.errno or errno.EINVAL
    return PlacementError(err, exc.strerror or errno.errorcode.get(err, "error"), what)


def placement_failure(exc: BaseException, latency: float) -> ProbeResult | None:
    """The local result for a PlacementError, with a reason naming the setting
    ("local error: cannot use interface eth9: no such device (ENODEV)"); None
    for any other exception."""
    if not isinstance(exc, PlacementError):
        return None
    err = exc.errno or 0
    name = errno.errorcode.get(err, str(err))
    text = (exc.strerror or name).lower()
    return local_result(
        local_fault(exc) or "socket", f"cannot use {exc.what}: {text} ({name})", latency
    )
