"""The admin token, read off the event loop for every admin call.

The token file is read on every call, so a rotated token takes effect at
once. It is read by ``pulsed.files.read_file`` (non-blocking open, regular
file only, size cap, refused when others may read it) in a worker thread
with a deadline: a FIFO, or a file on a hung mount, fails the call with a
503, and the event loop (probes, /healthz) never waits on it.

A plain ``asyncio.to_thread`` under a timeout would not do: when its deadline
passes, its thread may still be stuck in the kernel. Here at most one read is
in flight at a time; calls while it is stuck fail at once instead of each
parking one more thread of the shared executor on the dead mount.
"""

from __future__ import annotations

import asyncio

import structlog

from pulsed.files import FileProblem, read_file

log = structlog.get_logger(__name__)

READ_TIMEOUT = 2.0


class TokenUnavailable(Exception):
    """Admin calls cannot be checked; the message is one line saying why."""


class TokenReader:
    def __init__(self, timeout: float = READ_TIMEOUT) -> None:
        self.timeout = timeout
        self._reading: asyncio.Future[bytes] | None = None
        self._reading_path = ""
        self._reported: str | None = None

    async def token(self, path: str) -> bytes:
        """The token in ``path`` (surrounding whitespace removed), or TokenUnavailable."""
        try:
            token = await self._read(path)
        except TokenUnavailable as exc:
            self._report(str(exc))
            raise
        if not token:
            problem = f"the token file {path} is empty"
            self._report(problem)
            raise TokenUnavailable(problem)
        if self._reported is not None:
            log.info("api.token_readable", file=path)
            self._reported = None
        return token

    async def _read(self, path: str) -> bytes:
        if not path:
            raise TokenUnavailable("api.token_file is not set")
        reading = self._reading
        if reading is not None and not reading.done():
            if self._reading_path == path:
                # Join the read in flight (it may just be slow).
                return await self._wait(reading, path)
            raise TokenUnavailable(
                f"cannot read the token: a read of {self._reading_path} has not returned;"
                " the file system may be hung"
            )
        reading = asyncio.ensure_future(
            asyncio.to_thread(read_file, path, what="API token file", secret=True)
        )
        # The outcome of a read nobody waits for any more is not an error to report.
        reading.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._reading, self._reading_path = reading, path
        return await self._wait(reading, path)

    async def _wait(self, reading: asyncio.Future[bytes], path: str) -> bytes:
        try:
            async with asyncio.timeout(self.timeout):
                data = await asyncio.shield(reading)
        except TimeoutError:
            raise TokenUnavailable(
                f"cannot read the token: API token file {path} could not be read"
                f" in {self.timeout:g}s"
            ) from None
        except FileProblem as exc:
            raise TokenUnavailable(f"cannot read the token: {exc}") from None
        return data.strip()

    def _report(self, problem: str) -> None:
        """Log a problem once (at error), not once per call."""
        if problem != self._reported:
            log.error("api.token_unusable", reason=problem)
            self._reported = problem
