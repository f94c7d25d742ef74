"""The small interface every IPVS backend implements."""

from __future__ import annotations

import errno
import os
from typing import Protocol

from pulsed.model import Op, Table


class BackendError(Exception):
    """A write or read the kernel refused. ``errno`` is the kernel's code."""

    def __init__(self, code: int, message: str = "") -> None:
        self.errno = code
        self.message = message or os.strerror(code)
        super().__init__(f"{self.message} ({errno.errorcode.get(code, code)})")


class IPVSUnavailable(Exception):
    """The kernel has no IPVS (module not loaded or not built)."""


class Backend(Protocol):
    """What the reconcile loop needs from an IPVS table.

    ``dump`` returns the whole table with statistics attached.
    ``refresh`` returns the whole table too, but may take the fields and
    counters of services that did not visibly change from an earlier read
    (see NetlinkBackend); the reconcile loop uses it between dumps.
    ``apply`` performs ops; it returns one entry per op, None on success
    or a BackendError with the kernel's errno on refusal (EEXIST, ENOENT,
    ESRCH, EINVAL...). Backends may batch writes for speed, but must
    report each op's outcome.

    Each backend module checks its class against this protocol for the type
    checker (``_conforms: type[Backend] = ...``), and
    tests/unit/test_backend_conformance.py checks the signatures at run time.
    """

    async def dump(self) -> Table: ...

    async def refresh(self) -> Table: ...

    async def apply(self, ops: list[Op]) -> list[BackendError | None]: ...

    async def close(self) -> None: ...
