"""TLS for https probes: the ssl module's MemoryBIO over a plain asyncio connection.

Not asyncio's ``create_connection(ssl=...)``: its SSL protocol (and
uvloop's) allocates a 256 KiB read buffer for every connection and reads
decrypted data 256 KiB at a time. A probe reads at most ``max_bytes`` of one
response, and under servers that stall handshakes or trickle bodies hundreds
of probes are in flight at once: at about 0.3 MiB each, RSS swung by tens of
megabytes with the number in flight (docs/benchmarks.md, "Memory under
hostile servers"). Here a connection holds OpenSSL's own record buffers and
reads ciphertext into one shared buffer and plaintext in pieces no larger
than what the reader may still take.

The outcome matches asyncio's SSL transport: the same exceptions
(``ssl.SSLCertVerificationError``, ``ssl.SSLError``, ``ConnectionResetError``
when the peer closes during the handshake), and a close after the handshake,
with or without close_notify, is the end of the response.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Protocol, cast

# Plaintext read per call: one TLS record at most.
_READ_SIZE = 16384


class Reader(Protocol):
    def feed(self, data: bytes) -> bool: ...  # True: finished

    def eof(self) -> None: ...


# What the transport reads from the socket into, then handed straight to the
# exchange's MemoryBIO: one buffer for every exchange (the loop runs one
# callback at a time), instead of the 256 KiB bytes object asyncio's socket
# transport allocates for each read of a plain Protocol.
_RECV_BUFFER = memoryview(bytearray(_READ_SIZE + 5 + 256))  # a record and its framing


class TlsExchange(asyncio.BufferedProtocol):
    """Handshake, send ``request``, feed the decrypted response to ``reader``;
    ``done`` resolves when the reader has finished (or fails with the error)."""

    def __init__(
        self,
        context: ssl.SSLContext,
        server_hostname: str | None,
        request: bytes,
        reader: Reader,
        max_bytes: int,
    ) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._incoming, self._outgoing, server_side=False, server_hostname=server_hostname
        )
        self._request = request
        self._reader = reader
        self._left = max_bytes  # plaintext the reader may still take
        self._handshaken = False
        self._transport: asyncio.Transport | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # The probe stops awaiting it at its timeout; a failure after that is moot.
        self.done.add_done_callback(_consume)

    # --- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # loop.create_connection() hands over a stream transport.
        self._transport = cast(asyncio.Transport, transport)
        self._step()

    def get_buffer(self, sizehint: int) -> memoryview:
        return _RECV_BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        self._incoming.write(_RECV_BUFFER[:nbytes])
        self._step()

    def eof_received(self) -> bool:
        if not self._handshaken:  # as asyncio's SSL transport has it
            self._fail(ConnectionResetError("connection lost"))
            return False
        self._incoming.write_eof()
        self._step(eof=True)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self._fail(exc)
        elif not self._handshaken:
            self._fail(ConnectionResetError("connection lost"))
        else:
            self._finish()

    # --- the exchange -----------------------------------------------------------

    def _step(self, eof: bool = False) -> None:
        if self.done.done():
            return
        try:
            if not self._handshaken:
                try:
                    self._ssl.do_handshake()
                except ssl.SSLWantReadError:
                    return
                finally:
                    self._flush()
                self._handshaken = True
                self._ssl.write(self._request)
                self._flush()
            self._read(eof)
        except Exception as exc:
            self._fail(exc)

    def _read(self, eof: bool) -> None:
        while self._left > 0:
            try:
                chunk = self._ssl.read(min(_READ_SIZE, self._left))
            except ssl.SSLWantReadError:
                if eof:
                    self._finish()  # closed without close_notify: the end, as asyncio has it
                return
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                chunk = b""
            if not chunk:
                self._finish()
                return
            self._left -= len(chunk)
            if self._reader.feed(chunk):
                self._finish(fed=True)
                return
        self._finish(fed=True)  # the reader has all it may take

    def _flush(self) -> None:
        if self._outgoing.pending and self._transport is not None:
            self._transport.write(self._outgoing.read())

    def _finish(self, fed: bool = False) -> None:
        if not self.done.done():
            if not fed:
                self._reader.eof()
            self.done.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


def _consume(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
