"""A router namespace with two interfaces to one server namespace, for probe placement.

    router  ra 10.77.1.1/24 ---- sa 10.77.1.2/24  server (10.77.9.9 on lo)
            rb 10.77.2.1/24 ---- sb 10.77.2.2/24

The router reaches 10.77.9.9 through ra (metric 10) and through rb (metric
20): an unbound probe leaves from 10.77.1.1, one bound to rb from 10.77.2.1.
The server answers HTTP (port 8080) and HTTPS (port 8443) and records the
source address of every connection it accepts. Code runs in a namespace on
a thread of its own that entered it (setns moves only the calling thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from lab.netns import enter_netns, run

T = TypeVar("T")

SERVER_ADDRESS = "10.77.9.9"
HTTP_PORT = 8080
HTTPS_PORT = 8443
ROUTER_A = "10.77.1.1"
ROUTER_B = "10.77.2.1"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


class PlacementLab:
    def __init__(self, server_context: ssl.SSLContext | None = None) -> None:
        tag = os.getpid() % 100000
        self.router = f"plc-r{tag}"
        self.server = f"plc-s{tag}"
        self.sources: list[str] = []  # source address of each accepted connection
        self._lock = threading.Lock()
        self._context = server_context
        self._listeners: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def create(self) -> PlacementLab:
        r, s = self.router, self.server
        self.destroy()
        run(["ip", "netns", "add", r])
        run(["ip", "netns", "add", s])
        for name, peer, net in (("ra", "sa", "10.77.1"), ("rb", "sb", "10.77.2")):
            run(["ip", "-n", r, "link", "add", name, "type", "veth", "peer", "name", peer,
                 "netns", s])  # fmt: skip
            run(["ip", "-n", r, "addr", "add", f"{net}.1/24", "dev", name])
            run(["ip", "-n", s, "addr", "add", f"{net}.2/24", "dev", peer])
            run(["ip", "-n", r, "link", "set", name, "up"])
            run(["ip", "-n", s, "link", "set", peer, "up"])
        for ns in (r, s):
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "-n", s, "addr", "add", f"{SERVER_ADDRESS}/32", "dev", "lo"])
        # A probe from 10.77.2.1 may arrive on sa: no reverse-path filter.
        for conf in ("all", "default", "sa", "sb"):
            run(["sysctl", "-q", "-w", f"net.ipv4.conf.{conf}.rp_filter=0"], ns=s)
        run(["ip", "-n", r, "route", "add", SERVER_ADDRESS, "via", "10.77.1.2", "dev", "ra",
             "metric", "10"])  # fmt: skip
        run(["ip", "-n", r, "route", "add", SERVER_ADDRESS, "via", "10.77.2.2", "dev", "rb",
             "metric", "20"])  # fmt: skip
        ready = threading.Barrier(2)
        thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        thread.start()
        self._threads.append(thread)
        ready.wait(10)
        return self

    def destroy(self) -> None:
        self._stop.set()
        for listener in self._listeners:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for thread in self._threads:
            thread.join(5)
        self._listeners, self._threads = [], []
        self._stop = threading.Event()
        for ns in (self.router, self.server):
            run(["ip", "netns", "del", ns], check=False)

    def taken_sources(self) -> list[str]:
        with self._lock:
            taken, self.sources = self.sources, []
        return taken

    def in_router(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``make()`` on an event loop of a thread inside the router namespace."""

        def body() -> T:
            enter_netns(self.router)
            return asyncio.run(make())

        with ThreadPoolExecutor(1) as pool:
            return pool.submit(body).result(60)

    # --- the server ----------------------------------------------------------------

    def _serve(self, ready: threading.Barrier) -> None:
        enter_netns(self.server)
        ports = [(HTTP_PORT, None)]
        if self._context is not None:
            ports.append((HTTPS_PORT, self._context))
        for port, context in ports:
            listener = socket.create_server(("0.0.0.0", port), backlog=64)
            self._listeners.append(listener)
            thread = threading.Thread(target=self._accept, args=(listener, context), daemon=True)
            thread.start()
        ready.wait(10)

    def _accept(self, listener: socket.socket, context: ssl.SSLContext | None) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = listener.accept()
            except OSError:
                return
            with self._lock:
                self.sources.append(peer[0])
            threading.Thread(target=self._answer, args=(conn, context), daemon=True).start()

    def _answer(self, conn: socket.socket, context: ssl.SSLContext | None) -> None:
        conn.settimeout(5)
        with contextlib.suppress(OSError), conn:
            if context is not None:
                conn = context.wrap_socket(conn, server_side=True)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            conn.sendall(RESPONSE)
