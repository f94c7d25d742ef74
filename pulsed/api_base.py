"""What every API route module shares: the door into the daemon, errors, the token check,
JSON bodies. pulsed.api (the routes and the server) and pulsed.config_api build on it."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Callable
from typing import Any, Protocol

from pulsed.aioweb import web
from pulsed.api_token import TokenReader, TokenUnavailable
from pulsed.checks.base import ProbeResult
from pulsed.checks.state import RealHealth
from pulsed.config import Config
from pulsed.model import RealKey
from pulsed.overrides import Mode, Override
from pulsed.readmodel import Snapshot
from pulsed.reconcile import PassResult


class Daemon(Protocol):
    """The API's door into the daemon: a snapshot for every read, a few calls
    for the admin writes, the event hooks /metrics records, and the config
    (immutable) for the API's own settings."""

    @property
    def config(self) -> Config: ...

    probe_observers: list[Callable[[RealKey, ProbeResult], None]]
    health_observers: list[Callable[[RealKey, RealHealth], None]]
    pass_observers: list[Callable[[PassResult, float], None]]

    def snapshot(self) -> Snapshot: ...

    def set_mode(self, key: RealKey, mode: Mode, caller: str = "") -> Override: ...

    def set_weight(self, key: RealKey, weight: int | None, caller: str = "") -> Override: ...

    async def reload(self) -> bool: ...

    def set_director_drained(self, drained: bool, caller: str = "") -> bool: ...


DAEMON = web.AppKey("daemon", Daemon)
TOKENS = web.AppKey("tokens", TokenReader)
# Longest piece of client input quoted back in an error message.
MAX_QUOTED = 200


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.close = close  # drop the connection after the answer (its input is unusable)


def error_response(status: int, message: str, headers: dict[str, str] | None = None):
    return web.json_response({"error": message}, status=status, headers=headers)


def quoted(text: str) -> str:
    """Client input for an error message: shortened, on one line (a path may
    carry %0A), control characters and undecodable bytes escaped."""
    short = text if len(text) <= MAX_QUOTED else text[:MAX_QUOTED] + "..."
    if short.isprintable():
        return short
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in short)


async def authorize(request: web.Request) -> None:
    """401 without a bearer token, 403 with a wrong one, 503 when the token file
    cannot be used (unset, unreadable, open to others, not read in time)."""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise ApiError(
            401,
            "admin calls need 'Authorization: Bearer <token>' (the token is in api.token_file)",
            {"WWW-Authenticate": 'Bearer realm="pulsed"'},
        )
    daemon = request.app[DAEMON]
    try:
        expected = await request.app[TOKENS].token(daemon.config.api.token_file)
    except TokenUnavailable as exc:
        raise ApiError(503, f"admin calls are off: {exc}") from None
    # Header values are bytes: aiohttp decodes them as UTF-8 with surrogate
    # escapes, so this gives back exactly the bytes the client sent.
    sent = given.strip().encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(sent, expected):
        raise ApiError(403, "wrong token")


async def read_json_body(request: web.Request, limit: int, example: str) -> Any:
    """The JSON body: at most ``limit`` bytes, received within ``api.body_timeout``;
    anything else is a 4xx naming the problem (``example`` shows what is expected).
    The Content-Type is not held against it: ``curl -d`` and Python's urllib label
    a body as a form unless told otherwise, and the bearer token (a header, never a
    cookie) is what keeps other sites' pages out."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, f"body larger than {limit} bytes", close=True)
    timeout = request.app[DAEMON].config.api.body_timeout
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            # read(n) returns what has arrived so far: loop until the end or the cap.
            while size <= limit:
                chunk = await request.content.read(limit + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    except TimeoutError:
        raise ApiError(408, f"body not received within {timeout:g}s", close=True) from None
    if size > limit:
        raise ApiError(413, f"body larger than {limit} bytes", close=True)
    try:
        return json.loads(b"".join(chunks) or b"null")
    except RecursionError:
        raise ApiError(400, f"body must be JSON like {example} (nested too deeply)") from None
    except ValueError:  # includes UnicodeDecodeError
        raise ApiError(400, f"body must be JSON like {example}") from None
