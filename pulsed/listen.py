"""Binding a listening TCP socket from ``address:port`` text, with a one-line error.

The daemon binds its listeners before anything else (before the first
kernel write), so a taken port or a missing address stops the start with one
line and changes nothing.
"""

from __future__ import annotations

import socket

from pulsed.addresses import join_host_port, split_host_port
from pulsed.model import AF_INET6, family_of

BACKLOG = 128


class ListenError(Exception):
    """``address:port: why`` in one line."""


def bind_tcp(listen: str) -> socket.socket:
    """A non-blocking socket bound to ``listen`` and listening."""
    try:
        host, port = split_host_port(listen)
    except ValueError as exc:
        raise ListenError(f"{listen}: {exc}") from None
    family = socket.AF_INET6 if family_of(host) == AF_INET6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # As aiohttp's own TCPSite does: a restart may rebind at once.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        why = (exc.strerror or type(exc).__name__).lower()
        raise ListenError(f"{join_host_port(host, port)}: {why}") from None
    return sock
