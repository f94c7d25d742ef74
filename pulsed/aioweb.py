"""aiohttp.web, imported without reading the system's CA bundle.

When imported, aiohttp makes two TLS contexts for its HTTP client
(``aiohttp.connector``), and each reads the system's CA bundle: about 2 MiB
of the daemon's resident memory (1.7-2.0 MiB measured at 10,000 real
servers, docs/benchmarks.md). pulsed serves HTTP with aiohttp and never uses
its client, so OpenSSL's default CA locations (``SSL_CERT_FILE``,
``SSL_CERT_DIR``) point at nothing for the time of that import only; then
they are put back as they were, and pulsed's own HTTPS checks read the CAs
as usual. A client made from aiohttp's default contexts in this process
would fail to verify any server (never the reverse).

The environment is the process's: import this before any thread starts
(``pulsed run`` does, before the event loop). Imported after aiohttp
itself, it changes nothing.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import TYPE_CHECKING

_CA_LOCATIONS = ("SSL_CERT_FILE", "SSL_CERT_DIR")


def _import_web() -> ModuleType:
    saved = {name: os.environ.get(name) for name in _CA_LOCATIONS}
    try:
        for name in _CA_LOCATIONS:
            os.environ[name] = os.devnull
        from aiohttp import web
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return web


if TYPE_CHECKING:
    # The type checker sees aiohttp.web itself, not a module of unknown type.
    from aiohttp import web
else:
    web = _import_web()
