"""An in-memory IPVS table that refuses what the kernel refuses.

For unit tests. It returns the kernel's errno for each refusal (checked
against a real kernel by tests/kernel), so code tested against it handles the
same errors in production. It also counts writes, as the netlink backend does.
"""

from __future__ import annotations

import errno
from dataclasses import replace
from typing import TYPE_CHECKING

from pulsed.ipvs.base import Backend, BackendError
from pulsed.model import SCHEDULERS, Dest, Forwarding, Op, OpKind, Service, ServiceKey, Table


class MemoryBackend:
    """Kernel-faithful fake of the IPVS table."""

    def __init__(self, table: Table | None = None) -> None:
        self._services: dict[ServiceKey, Service] = dict(table.services) if table else {}
        self.writes = 0
        self.fail_next: dict[ServiceKey, int] = {}  # inject errno for a service's next op

    async def dump(self) -> Table:
        return self.table()

    async def refresh(self) -> Table:
        return self.table()  # reading memory costs nothing, so always in full

    def table(self) -> Table:
        return Table(dict(self._services))

    async def apply(self, ops: list[Op]) -> list[BackendError | None]:
        results: list[BackendError | None] = []
        for op in ops:
            try:
                self.apply_one(op)
            except BackendError as exc:
                results.append(exc)
            else:
                results.append(None)
        return results

    async def close(self) -> None:
        return None

    def apply_one(self, op: Op) -> None:
        self.writes += 1
        key = op.service.key
        injected = self.fail_next.pop(key, 0)
        if injected:
            raise BackendError(injected)
        handler = _HANDLERS[op.kind]
        handler(self, op)

    # Service operations ---------------------------------------------------

    def _add_service(self, op: Op) -> None:
        svc = op.service
        if svc.key in self._services:
            raise BackendError(errno.EEXIST, "service already exists")
        _check_scheduler(svc.scheduler)
        self._services[svc.key] = replace(svc, dests=())

    def _set_service(self, op: Op) -> None:
        have = self._existing(op.service.key)
        _check_scheduler(op.service.scheduler)
        self._services[have.key] = replace(op.service, dests=have.dests)

    def _del_service(self, op: Op) -> None:
        self._existing(op.service.key)
        del self._services[op.service.key]

    # Destination operations -----------------------------------------------

    def _add_dest(self, op: Op) -> None:
        have = self._existing(op.service.key)
        dest = _valid_dest(have, op.dest)
        if dest.key in have.dest_map():
            raise BackendError(errno.EEXIST, "destination already exists")
        self._services[have.key] = replace(have, dests=(*have.dests, dest))

    def _set_dest(self, op: Op) -> None:
        have = self._existing(op.service.key)
        dest = _valid_dest(have, op.dest)
        dests = have.dest_map()
        if dest.key not in dests:
            raise BackendError(errno.ENOENT, "destination not found")
        dests[dest.key] = dest
        self._services[have.key] = replace(have, dests=tuple(dests.values()))

    def _del_dest(self, op: Op) -> None:
        have = self._existing(op.service.key)
        assert op.dest is not None
        dests = have.dest_map()
        if dests.pop(op.dest.key, None) is None:
            raise BackendError(errno.ENOENT, "destination not found")
        self._services[have.key] = replace(have, dests=tuple(dests.values()))

    def _existing(self, key: ServiceKey) -> Service:
        svc = self._services.get(key)
        if svc is None:
            raise BackendError(errno.ESRCH, "service not found")
        return svc


def _check_scheduler(name: str) -> None:
    if len(name.encode()) >= 16:  # IP_VS_SCHEDNAME_MAXLEN, NUL included
        raise BackendError(errno.EINVAL, "scheduler name too long")
    if name not in SCHEDULERS:
        raise BackendError(errno.ENOENT, f"scheduler {name!r} not found")


def _valid_dest(svc: Service, dest: Dest | None) -> Dest:
    assert dest is not None
    if dest.weight < 0:
        raise BackendError(errno.ERANGE, "weight out of range")
    if dest.upper_threshold and dest.lower_threshold > dest.upper_threshold:
        raise BackendError(errno.ERANGE, "lower threshold above upper threshold")
    if dest.family != svc.key.family and dest.forwarding is not Forwarding.TUNNEL:
        # The kernel allows mixed families only for IPIP tunnelling.
        raise BackendError(errno.EINVAL, "address family differs from the service's")
    return dest


_HANDLERS = {
    OpKind.ADD_SERVICE: MemoryBackend._add_service,
    OpKind.SET_SERVICE: MemoryBackend._set_service,
    OpKind.DEL_SERVICE: MemoryBackend._del_service,
    OpKind.ADD_DEST: MemoryBackend._add_dest,
    OpKind.SET_DEST: MemoryBackend._set_dest,
    OpKind.DEL_DEST: MemoryBackend._del_dest,
}


if TYPE_CHECKING:
    # The type checker holds MemoryBackend to the Backend protocol: a fake whose
    # methods drift from the kernel backend's would test code the daemon never runs.
    _conforms: type[Backend] = MemoryBackend
