"""A tiny HTTP server that answers every request with its own name.

    python lab/realserver.py --name rs1 [--listen 0.0.0.0:80]

Standard library only, so it runs in any namespace with any Python. It speaks
just enough HTTP/1.1 for the lab: keep-alive for clients that want it (a
long-lived connection must be able to cross a router failover), and
``Connection: close`` for those that ask. Prints ``ready`` on stdout once it
listens, so a launcher can wait for that line instead of sleeping.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

MAX_HEAD = 16384


async def _serve(name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    body = f"{name}\n".encode()
    # CancelledError: the server is stopping; end quietly (Python 3.11 would print it).
    with contextlib.suppress(
        ConnectionError,
        asyncio.IncompleteReadError,
        asyncio.LimitOverrunError,
        asyncio.CancelledError,
    ):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_HEAD:
                break
            lines = head.decode("latin-1").split("\r\n")
            version = lines[0].rsplit(" ", 1)[-1]
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            length = int(headers.get("content-length", "0") or 0)
            if length:
                await reader.readexactly(min(length, 1 << 20))
            connection = headers.get("connection", "").lower()
            keep = connection == "keep-alive" if version == "HTTP/1.0" else connection != "close"
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                + f"Content-Length: {len(body)}\r\nX-Served-By: {name}\r\n".encode()
                + (b"Connection: keep-alive\r\n" if keep else b"Connection: close\r\n")
                + b"\r\n"
                + body
            )
            await writer.drain()
            if not keep:
                break
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def serve(name: str, host: str, port: int) -> None:
    server = await asyncio.start_server(
        lambda r, w: _serve(name, r, w), host, port, reuse_address=True, backlog=1024
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the text every answer carries")
    parser.add_argument("--listen", default="0.0.0.0:80", help="HOST:PORT (default 0.0.0.0:80)")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    try:
        asyncio.run(serve(args.name, host or "0.0.0.0", int(port)))
    except OSError as exc:
        print(f"realserver: cannot listen on {args.listen}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
