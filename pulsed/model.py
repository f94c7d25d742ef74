"""Value types shared by every part of pulsed.

Everything here is immutable and hashable. A ``Table`` is what the kernel's
IPVS table holds (or should hold): services, each with its destinations.
Kernel statistics ride along on values read back from the kernel but never
take part in equality, so a diff compares configuration only.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import lru_cache
from ipaddress import ip_address
from typing import NamedTuple

AF_INET = socket.AF_INET
AF_INET6 = socket.AF_INET6


class Forwarding(StrEnum):
    NAT = "nat"
    DR = "dr"
    TUNNEL = "tunnel"
    # The kernel reports LOCALNODE for destinations on the router itself;
    # pulsed never writes it but must be able to read it back.
    LOCAL = "local"


# Scheduler flags as the kernel numbers them (include/uapi/linux/ip_vs.h).
# PERSISTENT and HASHED are managed by the kernel/backend, not by users.
SVC_F_PERSISTENT = 0x0001
SVC_F_HASHED = 0x0002
SVC_F_ONEPACKET = 0x0004
SVC_F_SCHED1 = 0x0008
SVC_F_SCHED2 = 0x0010
SVC_F_SCHED3 = 0x0020
USER_FLAGS_MASK = SVC_F_ONEPACKET | SVC_F_SCHED1 | SVC_F_SCHED2 | SVC_F_SCHED3

# The schedulers a stock kernel has (net/netfilter/ip_vs_*.c), the one list
# the config checks names against and the kernel-faithful fake accepts.
SCHEDULERS = (
    "rr",
    "wrr",
    "lc",
    "wlc",
    "lblc",
    "lblcr",
    "dh",
    "sh",
    "sed",
    "nq",
    "mh",
    "fo",
    "ovf",
    "twos",
)
# Scheduler flags by the names the config uses: (the scheduler they belong
# to, or None for the generic names; the kernel's bit).
SCHEDULER_FLAGS: Mapping[str, tuple[str | None, int]] = {
    "sh-fallback": ("sh", SVC_F_SCHED1),
    "sh-port": ("sh", SVC_F_SCHED2),
    "mh-fallback": ("mh", SVC_F_SCHED1),
    "mh-port": ("mh", SVC_F_SCHED2),
    "flag-1": (None, SVC_F_SCHED1),
    "flag-2": (None, SVC_F_SCHED2),
    "flag-3": (None, SVC_F_SCHED3),
}


@lru_cache(maxsize=1 << 16)
def _parsed(address: str) -> tuple[int, str]:
    # ipaddress parsing costs ~9 µs; a 10,000-service config asks many times.
    if not isinstance(address, str) or "%" in address:
        # ipaddress takes "fe80::1%lo", which the kernel's address
        # attributes (and inet_pton) cannot carry: refuse it here, at the root.
        raise ValueError(f"{address!r}: a scoped address (with %) is not an IPVS address")
    parsed = ip_address(address)
    return (AF_INET6 if parsed.version == 6 else AF_INET), str(parsed)


def family_of(address: str) -> int:
    """AF_INET or AF_INET6 for a textual IP address."""
    return _parsed(address)[0]


def normalize_address(address: str) -> str:
    """Canonical text of an IP address, so keys compare equal."""
    return _parsed(address)[1]


@dataclass(frozen=True, slots=True)
class Stats:
    """Kernel counters of a service or destination (cumulative)."""

    connections: int = 0
    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    active_connections: int = 0
    inactive_connections: int = 0


class ServiceKey(NamedTuple):
    """Identity of a virtual service, as the kernel looks it up.

    A fwmark service has ``protocol == "fwmark"``, empty address and port 0;
    its identity is (family, fwmark).

    A named tuple rather than a dataclass: every pass looks up each of
    thousands of services by key in several dicts, and a tuple's hash and
    equality run in C (a dataclass's run in Python: most of a 10,000-service
    diff went there).
    """

    family: int
    protocol: str  # "tcp" | "udp" | "sctp" | "fwmark"
    address: str
    port: int
    fwmark: int = 0

    @classmethod
    def for_address(cls, protocol: str, address: str, port: int) -> ServiceKey:
        return cls(family_of(address), protocol, normalize_address(address), port)

    @classmethod
    def for_fwmark(cls, fwmark: int, family: int = AF_INET) -> ServiceKey:
        return cls(family, "fwmark", "", 0, fwmark)

    @property
    def is_fwmark(self) -> bool:
        return self.protocol == "fwmark"

    def __str__(self) -> str:
        if self.is_fwmark:
            suffix = "/ipv6" if self.family == AF_INET6 else ""
            return f"fwmark:{self.fwmark}{suffix}"
        host = f"[{self.address}]" if self.family == AF_INET6 else self.address
        return f"{self.protocol}:{host}:{self.port}"


@dataclass(frozen=True, slots=True, order=True)
class DestKey:
    """Identity of a real server within one service."""

    address: str
    port: int

    @property
    def family(self) -> int:
        return family_of(self.address)

    def __str__(self) -> str:
        if ":" in self.address:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"


# A real server's identity: its service and its address within it. The one
# key that joins config, health, overrides and the kernel table; its text
# form is pulsed.keys.real_key_text.
RealKey = tuple[ServiceKey, DestKey]


@dataclass(frozen=True, slots=True)
class Dest:
    """A destination (real server) as the kernel holds it."""

    address: str
    port: int
    weight: int = 1
    forwarding: Forwarding = Forwarding.NAT
    upper_threshold: int = 0
    lower_threshold: int = 0
    stats: Stats | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> DestKey:
        return DestKey(self.address, self.port)

    @property
    def family(self) -> int:
        return family_of(self.address)

    def same_settings(self, other: Dest) -> bool:
        return self == other


@dataclass(frozen=True, slots=True)
class Service:
    """A virtual service with its destinations.

    ``timeout`` is the persistence timeout in seconds (0: not persistent).
    ``netmask`` is the persistence netmask as a prefix length.
    ``flags`` holds only user-settable flags (USER_FLAGS_MASK).
    ``dests`` is sorted by key so equal services compare equal.
    """

    key: ServiceKey
    scheduler: str = "wlc"
    flags: int = 0
    timeout: int = 0
    netmask: int = 32
    dests: tuple[Dest, ...] = ()
    stats: Stats | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.dests, key=lambda d: (d.address, d.port)))
        if ordered != self.dests:
            object.__setattr__(self, "dests", ordered)

    def settings(self) -> Service:
        """This service without its destinations: what add/set service needs."""
        return replace(self, dests=()) if self.dests else self

    def same_settings(self, other: Service) -> bool:
        return (
            self.scheduler == other.scheduler
            and self.flags == other.flags
            and self.timeout == other.timeout
            and self.netmask == other.netmask
        )

    def dest_map(self) -> dict[DestKey, Dest]:
        return {d.key: d for d in self.dests}


@dataclass(frozen=True, slots=True)
class Table:
    """A set of services keyed by ServiceKey."""

    services: Mapping[ServiceKey, Service] = field(default_factory=dict)

    @classmethod
    def of(cls, services: Iterable[Service]) -> Table:
        return cls({s.key: s for s in services})

    def __iter__(self) -> Iterator[Service]:
        return iter(self.services.values())

    def __len__(self) -> int:
        return len(self.services)

    def __contains__(self, key: object) -> bool:
        return key in self.services

    def get(self, key: ServiceKey) -> Service | None:
        return self.services.get(key)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Table):
            return NotImplemented
        return dict(self.services) == dict(other.services)

    def __hash__(self) -> int:  # pragma: no cover - tables are not dict keys
        return hash(frozenset(self.services.items()))


class OpKind(StrEnum):
    ADD_SERVICE = "add-service"
    SET_SERVICE = "set-service"
    DEL_SERVICE = "del-service"
    ADD_DEST = "add-dest"
    SET_DEST = "set-dest"
    DEL_DEST = "del-dest"


@dataclass(frozen=True, slots=True)
class Op:
    """One netlink write. ``service`` carries settings only (no dests)."""

    kind: OpKind
    service: Service
    dest: Dest | None = None

    def __str__(self) -> str:
        s = self.service
        if self.dest is None:
            detail = f"scheduler={s.scheduler} flags={s.flags:#x} timeout={s.timeout}"
            if self.kind is OpKind.DEL_SERVICE:
                detail = ""
            return f"{self.kind} {s.key} {detail}".rstrip()
        d = self.dest
        detail = (
            f"forwarding={d.forwarding} weight={d.weight}"
            f" upper={d.upper_threshold} lower={d.lower_threshold}"
        )
        if self.kind is OpKind.DEL_DEST:
            detail = ""
        return f"{self.kind} {s.key} -> {d.key} {detail}".rstrip()
