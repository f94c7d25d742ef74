"""What every probe shares: its target, its result, and short reason texts."""

from __future__ import annotations

import contextlib
import errno
import socket
import ssl
import struct
from dataclasses import dataclass
from typing import Protocol

import msgspec

from pulsed.checks.config import CheckConfig


@dataclass(frozen=True, slots=True)
class Target:
    """One real server to probe: where, and how. Targets with the same probe
    (same_probe) share one probe and its health record (pulsed.checks.monitor)."""

    address: str
    port: int
    check: CheckConfig

    @property
    def probe_port(self) -> int:
        return self.check.port if self.check.port is not None else self.port

    @property
    def probe_address(self) -> str:
        return self.check.address if self.check.address is not None else self.address


def same_probe(a: Target, b: Target) -> bool:
    """Whether probing ``a`` and ``b`` is the same thing: the same probed
    address and port, and the same check (every probe is built from these
    three alone, pulsed.checks.probes). Two services with one real server and
    one check are probed once, and a reload that leaves them alone keeps it."""
    return a is b or (
        a.probe_address == b.probe_address
        and a.probe_port == b.probe_port
        and (a.check is b.check or a.check == b.check)
    )


class ProbeResult(msgspec.Struct, frozen=True):
    """The outcome of one probe (a msgspec Struct: built for every probe, and
    about 10x cheaper to build than a frozen dataclass).

    ``reason`` is short human text ("connect refused", "status 503").
    ``category`` is one of a small fixed set, safe as a metric label:
    ok, refused, timeout, reset, closed, unreachable, tls, status, body,
    protocol, exit, error, and ``local``.
    ``weight_pct`` is the weight the server reported for itself, in percent
    of its configured weight, or None when it reported none.
    ``fault`` is set only for category ``local``: the probe could not be
    run or judged because of the router itself (one of LOCAL_FAULTS). Such a
    result says nothing about the server: the monitor records it apart and
    it moves neither the rise/fall counters nor the weight.
    """

    ok: bool
    reason: str
    latency: float
    category: str = "ok"
    weight_pct: int | None = None
    fault: str = ""


class Probe(Protocol):
    """A prepared probe of one target; ``probe`` runs it once, never raises.

    A probe may also offer ``start(engine, done, token) -> handle with
    cancel()``, which runs it on a pulsed.checks.sockio.ProbeEngine and calls
    ``done(token, result)`` once from the loop; the monitor then uses that and
    creates no task.
    """

    async def probe(self) -> ProbeResult: ...


def seconds_text(seconds: float) -> str:
    """'1.0s', '2.5s', '250ms': how reasons spell a duration."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:.1f}s"


def timeout_result(timeout: float, latency: float) -> ProbeResult:
    return ProbeResult(False, f"timeout after {seconds_text(timeout)}", latency, "timeout")


# Errors that name a shortage or a refusal on the router, never the server's
# doing: descriptors (EMFILE per process, ENFILE system-wide), kernel memory
# (ENOBUFS, ENOMEM), a sandbox or local firewall refusing socket() or
# connect() (EPERM, EACCES: no ICMP error from the network maps to these),
# no free local port or source address (EADDRNOTAVAIL; EAGAIN from connect()
# or fork()). Values are metric labels.
_LOCAL_ERRNOS = {
    errno.EMFILE: "emfile",
    errno.ENFILE: "enfile",
    errno.ENOBUFS: "enobufs",
    errno.ENOMEM: "enomem",
    errno.EPERM: "eperm",
    errno.EACCES: "eacces",
    errno.EADDRNOTAVAIL: "eaddrnotavail",
    errno.EAGAIN: "eagain",
}
# Every ``fault`` label: the errnos above, MemoryError ("memory"), a socket
# the router could not set up for another reason ("socket", e.g. a sandbox's
# EAFNOSUPPORT), and a timeout the router caused by not running in time
# ("saturated", see pulsed.checks.monitor).
LOCAL_FAULTS = (*_LOCAL_ERRNOS.values(), "memory", "socket", "saturated")


def local_fault(exc: BaseException) -> str | None:
    """The LOCAL_FAULTS label when ``exc`` is the router's own fault, else None.

    For any probe that catches an exception (socket, TLS, exec spawn): a
    non-None answer means "unknown, not down"; build the result with
    local_result(). TLS errors are never local (ssl.SSLError is an OSError
    whose errno is an SSL code, 1 being SSL_ERROR_SSL, not EPERM).
    """
    if isinstance(exc, MemoryError):
        return "memory"
    if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError):
        return _LOCAL_ERRNOS.get(exc.errno or 0)  # no errno (0, None): not local
    return None


def local_result(fault: str, detail: str, latency: float) -> ProbeResult:
    """A result that says nothing about the server: ``fault`` is a LOCAL_FAULTS label."""
    return ProbeResult(False, f"local error: {detail}", latency, "local", None, fault)


def local_error_result(exc: BaseException, latency: float) -> ProbeResult:
    """local_result() for an exception: labelled by local_fault(exc), or "socket"
    for an error that is local only because of where it happened (creating
    the probe's socket, see pulsed.checks.sockio)."""
    label = local_fault(exc) or "socket"
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        detail = f"{_errno_text(exc)} ({name})"
    elif isinstance(exc, MemoryError):
        detail = "out of memory"
    else:
        detail = type(exc).__name__
    return local_result(label, detail, latency)


def error_result(exc: BaseException, latency: float) -> ProbeResult:
    """Map a socket or TLS error to a short reason and a category (``local``
    for the router's own faults, see local_fault)."""
    if local_fault(exc) is not None:
        return local_error_result(exc, latency)
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or getattr(exc, "reason", None) or "certificate verify failed"
        return ProbeResult(False, f"tls: {detail}", latency, "tls")
    if isinstance(exc, ssl.SSLError):
        # .reason is set only on errors the ssl module raised itself.
        detail = getattr(exc, "reason", None) or exc.strerror or "error"
        return ProbeResult(False, f"tls: {detail}", latency, "tls")
    if isinstance(exc, ConnectionRefusedError):
        return ProbeResult(False, "connect refused", latency, "refused")
    if isinstance(exc, ConnectionResetError):
        return ProbeResult(False, "connection reset", latency, "reset")
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return ProbeResult(False, _errno_text(exc), latency, "unreachable")
    if isinstance(exc, OSError) and exc.errno is not None:
        return ProbeResult(False, _errno_text(exc), latency, "error")
    return ProbeResult(False, f"error: {type(exc).__name__}", latency, "error")


def _errno_text(exc: OSError) -> str:
    return (exc.strerror or errno.errorcode.get(exc.errno or 0, "error")).lower()


# SO_LINGER on with a zero timeout: close() sends RST and skips TIME_WAIT.
LINGER_ZERO = struct.pack("ii", 1, 0)


def set_reset_on_close(sock: socket.socket | None) -> None:
    """Close with RST, not FIN: a checker that opens thousands of connections a
    second must not leave them in TIME_WAIT (HAProxy's checks do the same)."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
