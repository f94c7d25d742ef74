"""Keys: their one text form, and the index that derives them once per config.

A real server is known everywhere by its ``RealKey`` (pulsed.model): the
health monitor, the overrides, the wanted table and every reader join on it.
``KeyIndex`` derives those keys from a config once, when the config is
loaded, and hands out the same objects to every user; a reload builds a new
index from the old one, so the keys of services it left alone are the very
same objects (dict lookups by identity, and no second copy of 10,000 keys).

The text form (``tcp:192.0.2.1:80/10.0.0.2:80``) is what the API's paths,
the overrides file and the logs use; ``parse_*`` are its inverses and raise
ValueError naming the problem.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from pulsed.addresses import join_host_port, split_host_port
from pulsed.config import Config, RealConfig, ServiceConfig
from pulsed.model import AF_INET, AF_INET6, DestKey, RealKey, ServiceKey

MAX_FWMARK = 2**32 - 1  # as config.Fwmark


# Text codec -------------------------------------------------------------------


def real_key_text(key: RealKey, service_text: str | None = None) -> str:
    """Stable text for a real server: ``tcp:192.0.2.1:80/10.0.0.2:80``.
    ``service_text``: ``str(key[0])``, when the caller made it once for many servers."""
    service, dest = key
    if service_text is None:
        service_text = str(service)
    return f"{service_text}/{join_host_port(dest.address, dest.port)}"


def parse_real_key(text: str) -> RealKey:
    """Inverse of real_key_text; raises ValueError naming the problem."""
    service_text, sep, dest_text = text.rpartition("/")
    if not sep:
        raise ValueError(f"{text!r}: expected SERVICE/REAL, e.g. tcp:192.0.2.1:80/10.0.0.2:80")
    address, port = split_host_port(_unscoped(dest_text))
    return parse_service_key(service_text), DestKey(address, port)


def parse_service_key(text: str) -> ServiceKey:
    """``tcp:192.0.2.1:80``, ``udp:[2001:db8::1]:53`` or ``fwmark:7`` (``fwmark:7/ipv6``);
    the inverse of ``str(ServiceKey)``."""
    protocol, sep, rest = text.partition(":")
    if not sep:
        raise ValueError(f"{text!r}: expected PROTO:VIP:PORT or fwmark:N")
    if protocol == "fwmark":
        mark, sep, fam = rest.partition("/")
        if not (mark.isascii() and mark.isdigit()):
            raise ValueError(f"{text!r}: fwmark must be a number")
        if not 1 <= int(mark) <= MAX_FWMARK:
            raise ValueError(f"{text!r}: fwmark must be between 1 and {MAX_FWMARK}")
        if sep and fam != "ipv6":
            raise ValueError(f"{text!r}: expected fwmark:N or fwmark:N/ipv6")
        return ServiceKey.for_fwmark(int(mark), AF_INET6 if fam == "ipv6" else AF_INET)
    if protocol not in ("tcp", "udp", "sctp"):
        raise ValueError(f"{text!r}: protocol must be tcp, udp, sctp or fwmark")
    address, port = split_host_port(_unscoped(rest))
    return ServiceKey.for_address(protocol, address, port)


def _unscoped(text: str) -> str:
    # ipaddress takes "fe80::1%eth0", the kernel's IPVS table has no scope.
    if "%" in text:
        raise ValueError(f"{text!r}: an address with a scope (%) cannot be in the IPVS table")
    return text


# The index ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class IndexedService:
    """One configured service with its keys: ``reals[i]`` is the key of ``config.real[i]``."""

    config: ServiceConfig
    key: ServiceKey
    reals: tuple[RealKey, ...]

    @property
    def name(self) -> str:
        return self.config.name

    def dests(self) -> Iterator[DestKey]:
        return (key[1] for key in self.reals)

    def real(self, dest: DestKey) -> RealConfig | None:
        """The configured real server at ``dest`` (a service has a handful: a scan)."""
        for real, key in zip(self.config.real, self.reals, strict=True):
            if key[1] == dest:
                return real
        return None


class KeyIndex:
    """Every key of one config, derived once; lookups by key and by service name.

    Immutable once built. ``services`` is in config order.
    """

    __slots__ = ("_by_key", "_by_name", "config", "services")

    def __init__(self, config: Config, previous: KeyIndex | None = None) -> None:
        self.config = config
        known = previous._by_key if previous is not None else {}
        services: list[IndexedService] = []
        for svc in config.service:
            key = svc.key
            old = known.get(key)
            if old is not None and (old.config is svc or old.config == svc):
                services.append(old if old.config is svc else IndexedService(svc, key, old.reals))
                continue
            # A new or changed service: unchanged reals keep their key objects.
            same = {k: k for k in old.reals} if old is not None else {}
            reals = []
            for real in svc.real:
                new = (key, DestKey(*svc.real_endpoint(real)))
                reals.append(same.get(new, new))
            services.append(IndexedService(svc, key, tuple(reals)))
        self.services: tuple[IndexedService, ...] = tuple(services)
        self._by_key: Mapping[ServiceKey, IndexedService] = {s.key: s for s in services}
        self._by_name: Mapping[str, IndexedService] = {s.name: s for s in services}

    def __len__(self) -> int:
        return len(self.services)

    def __iter__(self) -> Iterator[IndexedService]:
        return iter(self.services)

    def by_key(self, key: ServiceKey) -> IndexedService | None:
        return self._by_key.get(key)

    def by_name(self, name: str) -> IndexedService | None:
        return self._by_name.get(name)

    def real_keys(self) -> Iterator[RealKey]:
        """Every configured real server's key, in config order."""
        for svc in self.services:
            yield from svc.reals

    def real_count(self) -> int:
        return sum(len(s.reals) for s in self.services)

    def real(self, key: RealKey) -> RealConfig | None:
        """The configured real server with this key, or None."""
        svc = self._by_key.get(key[0])
        return svc.real(key[1]) if svc is not None else None

    def canonical(self, key: RealKey) -> RealKey | None:
        """The index's own object for an equal key (None if not configured)."""
        svc = self._by_key.get(key[0])
        if svc is not None:
            for mine in svc.reals:
                if mine == key:
                    return mine
        return None
