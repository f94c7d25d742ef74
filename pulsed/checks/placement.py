"""Where a probe comes from: its source address and device.

Every probe type that opens its own socket calls ``prepare_socket`` before
connect() or sendto(), so ``bind_address`` and ``bind_interface`` hold for
all of them (keepalived's PING_CHECK once ignored them, its bug #2697).
"""

from __future__ import annotations

import socket

from pulsed.checks.config import CheckConfig


def needs_preparing(check: CheckConfig) -> bool:
    return check.bind_address is not None or check.bind_interface is not None


def prepare_socket(sock: socket.socket, check: CheckConfig) -> None:
    """Bind ``sock`` to the check's source device and address.

    Raises OSError as the kernel reports it: ENODEV for a missing device,
    EADDRNOTAVAIL for an address this router does not have. Both are the
    router's fault (pulsed.checks.base.local_fault counts EADDRNOTAVAIL;
    callers treat any error here as a setup error, never the server's).
    """
    if check.bind_interface is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, check.bind_interface.encode())
    if check.bind_address is not None:
        sock.bind((check.bind_address, 0))
