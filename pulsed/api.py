"""The HTTP side of the daemon: /status, /metrics, the status page, /healthz, admin calls.

Read-only endpoints need no credentials (the listen address defaults to
localhost). Admin calls need ``Authorization: Bearer <token>`` where the
token is the content of ``api.token_file``, read on every admin call so a
rotated token takes effect at once: no header gives 401, a wrong token 403.
Every error is a JSON object ``{"error": "..."}`` with a one-line message.

Real servers are named in paths as ``SERVICE/REAL``, where SERVICE is the
service key (``tcp:192.0.2.1:80``, ``fwmark:7``) or its name from the config
(``web``), and REAL is ``address:port`` (the port may be left out when it is
the service's). The schema is docs/openapi.yaml.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import structlog

from pulsed.addresses import split_host_port
from pulsed.aioweb import web
from pulsed.api_base import (
    DAEMON,
    TOKENS,
    ApiError,
    Daemon,
    authorize,
    error_response,
    quoted,
    read_json_body,
)
from pulsed.api_guard import (
    MAX_FIELD,
    MAX_HEADERS,
    MAX_LINE,
    BindError,
    BoundSocket,
    Budget,
    ConnectionGuard,
    GuardedHandler,
    GuardedSite,
    bind_listen,
    request_done,
    request_started,
)
from pulsed.api_token import TokenReader
from pulsed.config_api import add_config_routes
from pulsed.keys import IndexedService, parse_service_key, real_key_text
from pulsed.metrics import CONTENT_TYPE, ActivityRecorder, MetricsRenderer, attach_recorder
from pulsed.model import DestKey, RealKey, normalize_address
from pulsed.overrides import MODES, Mode, Override
from pulsed.plan_view import plan_document
from pulsed.readmodel import Snapshot
from pulsed.status_view import service_status, status_chunks

log = structlog.get_logger(__name__)

MAX_BODY = 4096  # admin bodies are tiny JSON objects
MAX_WEIGHT = 65535


RENDERER = web.AppKey("renderer", MetricsRenderer)
# Next to this file (package data); not importlib.resources, which costs
# zipfile and its readers at start for a path that is always on disk.
STATIC_DIR = Path(__file__).resolve().with_name("static")
STATIC_FILES = frozenset(("app.js", "style.css", "index.html"))


@web.middleware
async def json_errors(request: web.Request, handler):
    """Every failure becomes a JSON error with a one-line message, never a traceback.

    It also holds the per-request budgets: the whole answer (handler and
    sending) within ``api.response_timeout``, and the connection marked
    busy for the head deadline (pulsed.api_guard) until the answer is sent.
    """
    connection = request_started(request)
    limit = request.app[DAEMON].config.api.response_timeout
    response: web.StreamResponse | None = None
    try:
        async with asyncio.timeout(limit) as deadline:
            response = await _answer(request, handler)
            # Sent here, not by aiohttp after the middleware, so the deadline
            # covers a client that does not read. Not a FileResponse (the
            # page's few small files): its prepare() cannot be called twice,
            # and aiohttp calls it again; the head deadline covers those.
            if not isinstance(response, web.FileResponse):
                await response.prepare(request)
                await response.write_eof()
    except ConnectionError:  # the client went away; aiohttp drops the connection
        if response is None:
            response = error_response(400, "the client closed the connection")
            response.force_close()
    except TimeoutError:
        if not deadline.expired():
            raise
        log.warning("api.response_timeout", path=quoted(request.path), seconds=limit)
        # A streamed answer starts inside the handler (see _mark_started).
        if request.get(STARTED) and request.transport is not None:
            request.transport.abort()  # cut off: never end it as if whole
        response = error_response(503, f"no answer within {limit:g}s (api.response_timeout)")
        response.force_close()  # (not sent when the connection was cut off)
    finally:
        request_done(connection)
    assert response is not None
    return response


# web.RequestKey is aiohttp 3.13+; a plain key works (with a warning) before it.
STARTED: Any = (
    web.RequestKey("response_started", bool)
    if hasattr(web, "RequestKey")
    else "pulsed.response_started"
)


async def _mark_started(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: from here on, an error cannot be sent on this request."""
    request[STARTED] = True


async def _answer(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.message, exc.headers)
        if exc.close:
            response.force_close()
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        path = quoted(request.path)
        message = {
            404: f"no such endpoint: {request.method} {path}",
            405: f"method {quoted(request.method)} not allowed on {path}",
        }.get(exc.status, exc.reason)
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return error_response(exc.status, message, headers)
    except ConnectionError:
        raise  # the client went away mid-request: not an error of ours (see json_errors)
    except (UnicodeError, RecursionError) as exc:
        # Bytes that are not text, or input nested deeper than Python recurses:
        # the request is malformed, whatever part of the code met it first.
        log.warning("api.bad_input", path=quoted(request.path), error=type(exc).__name__)
        what = "nested too deeply" if isinstance(exc, RecursionError) else "not valid text"
        response = error_response(400, f"malformed request: {what}")
        response.force_close()
        return response
    except Exception as exc:
        log.exception("api.error", path=quoted(request.path), method=request.method)
        return error_response(500, f"internal error: {type(exc).__name__}")


# Read-only ---------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def status(request: web.Request) -> web.StreamResponse:
    # msgspec encodes the 10,000-server document several times faster than
    # json.dumps; streamed a few services at a time (see status_chunks).
    return await _stream(request, status_chunks(request.app[DAEMON].snapshot()), "application/json")


async def metrics(request: web.Request) -> web.StreamResponse:
    return await _stream(request, request.app[RENDERER].chunks(), CONTENT_TYPE)


async def _stream(
    request: web.Request, chunks: Iterator[bytes], content_type: str
) -> web.StreamResponse:
    """Send a document in the pieces it is made in (chunked transfer encoding).

    At 10,000 real servers /metrics is ~13 MB and /status ~5 MB: sending each
    piece while the next one is made overlaps the transfer with the work,
    lets probes run in between, and keeps a request's memory to one piece.
    """
    started = time.perf_counter()
    response = web.StreamResponse(headers={"Content-Type": content_type})
    if request.method == "HEAD":  # headers only: a streamed body is not held back for HEAD
        await response.prepare(request)
        await response.write_eof()
        return response
    first = next(chunks)  # the state is read here: a failure still gets a JSON 500
    await response.prepare(request)
    size = len(first)
    try:
        await response.write(first)
        for chunk in chunks:
            size += len(chunk)
            await response.write(chunk)
    except ConnectionError:  # the client went away
        return response
    except Exception:
        log.exception("api.stream_failed", path=request.path, sent=size)
        # Never end a cut-off body as if it were whole: drop the connection.
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    log.debug("api.sent", path=request.path, size=size, seconds=time.perf_counter() - started)
    return response


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def static_file(request: web.Request) -> web.FileResponse:
    """One of the page's files, by exact name; anything else is a JSON 404.

    Not aiohttp's static route: it answers a missing file with an empty
    body, and its path handling is more than a page of three files needs."""
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise ApiError(404, f"no such file: /static/{quoted(name)}")
    return web.FileResponse(STATIC_DIR / name)


# Admin -------------------------------------------------------------------------


def resolve_real(snap: Snapshot, text: str) -> RealKey:
    """``SERVICE/REAL`` -> the key of a configured real server (400 or 404 otherwise)."""
    service_text, sep, real_text = text.rpartition("/")
    if not sep or not service_text or not real_text:
        raise ApiError(
            400, f"{quoted(text)!r}: expected SERVICE/REAL, e.g. tcp:192.0.2.1:80/10.0.0.2:80"
        )
    index = snap.index
    svc = resolve_service(snap, service_text)
    bracketed = real_text.startswith("[")
    if not ("]:" in real_text if bracketed else real_text.count(":") == 1):
        return _real_without_port(svc, real_text)  # an address alone (v4, [v6] or v6)
    try:
        address, port = split_host_port(real_text)
    except ValueError as exc:
        raise ApiError(400, quoted(f"{real_text!r}: {exc}")) from None
    real = index.canonical((svc.key, DestKey(address, port)))
    if real is None:
        raise ApiError(404, f"no real server {quoted(real_text)} in service {svc.name} ({svc.key})")
    return real


def resolve_service(snap: Snapshot, text: str) -> IndexedService:
    """A service by its name or key (400 or 404 otherwise)."""
    svc = snap.index.by_name(text)
    if svc is not None:
        return svc
    try:
        key = parse_service_key(text)
    except ValueError as exc:
        if ":" in text:
            raise ApiError(400, quoted(str(exc))) from None
        raise ApiError(404, f"no service named {quoted(text)!r}") from None
    svc = snap.index.by_key(key)
    if svc is None:
        raise ApiError(404, f"no service {key} in the running config")
    return svc


def _real_without_port(svc: IndexedService, text: str) -> RealKey:
    """A real server named by its address alone: the one with that address, if
    there is exactly one; else the error names the candidates."""
    try:
        address = normalize_address(text.removeprefix("[").removesuffix("]"))
    except ValueError:
        raise ApiError(400, f"{quoted(text)!r}: expected ADDRESS or ADDRESS:PORT") from None
    matches = [key for key in svc.reals if key[1].address == address]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ApiError(404, f"no real server {quoted(text)} in service {svc.name} ({svc.key})")
    shown = ", ".join(str(key[1]) for key in matches)
    raise ApiError(
        400, f"{quoted(text)} is ambiguous in service {svc.name}: give the port ({shown})"
    )


def last_serving(snap: Snapshot, key: RealKey) -> str | None:
    """Why taking ``key`` out of its pool leaves the service with no serving real
    server (one line naming what happens then), or None."""
    pool = snap.pools.get(key[0])
    if pool is None or pool.weights.get(key[1], 0) <= 0:
        return None
    svc = snap.index.by_key(key[0])
    assert svc is not None
    sorry = svc.config.sorry_server
    serving = [d for d in pool.weights if pool.weights[d] > 0 and d != key[1]]
    if pool.sorry_in_use or any(snap.index.real((key[0], d)) is not None for d in serving):
        return None
    then = f"the sorry server {sorry} takes over" if sorry else "no server serves it"
    return f"{key[1]} is the last serving real server of {svc.name}: {then}"


def _guard_last(request: web.Request, snap: Snapshot, key: RealKey) -> None:
    """409 unless ``?force=1`` when the call would leave the service with no server."""
    why = last_serving(snap, key)
    if why is not None and request.query.get("force") not in ("1", "true", "yes"):
        raise ApiError(409, f"{why}; repeat with force (pulsed ... --force, or ?force=1)")


def service_still_serves(snap: Snapshot, svc: IndexedService) -> str | None:
    """Why draining every real server of ``svc`` leaves it with none (one line), or None
    when none serves already."""
    pool = snap.pools.get(svc.key)
    if pool is None or pool.sorry_in_use or not any(w > 0 for w in pool.weights.values()):
        return None
    sorry = svc.config.sorry_server
    then = f"the sorry server {sorry} takes over" if sorry else "no server serves it"
    return f"this drains every real server of {svc.name}: {then}"


async def set_service_mode(request: web.Request) -> web.Response:
    """Drain or enable every real server of a service, in one call."""
    await authorize(request)
    daemon = request.app[DAEMON]
    snap = daemon.snapshot()
    svc = resolve_service(snap, request.match_info["service"])
    mode: Mode = "drain" if request.match_info["action"] == "drain" else "enabled"
    if mode == "drain":
        why = service_still_serves(snap, svc)
        if why is not None and request.query.get("force") not in ("1", "true", "yes"):
            raise ApiError(409, f"{why}; repeat with force (pulsed ... --force, or ?force=1)")
    caller = request.remote or ""
    states = []
    for key in svc.reals:
        override = await _persist(functools.partial(daemon.set_mode, key, mode, caller))
        states.append(real_state(key, override))
    return web.json_response({"service": str(svc.key), "name": svc.name, "reals": states})


def real_state(key: RealKey, override: Override) -> dict[str, Any]:
    return {
        "key": real_key_text(key),
        "mode": override.mode,
        "weight_override": override.weight,
        "updated_at": override.updated_at or None,
    }


async def set_mode(request: web.Request) -> web.Response:
    await authorize(request)
    action = request.match_info["action"]
    mode = next((m for m in MODES if m == ("enabled" if action == "enable" else action)), None)
    if mode is None:
        raise ApiError(404, f"unknown action {quoted(action)!r}")
    daemon = request.app[DAEMON]
    snap = daemon.snapshot()
    key = resolve_real(snap, request.match_info["key"])
    if mode != "enabled":
        _guard_last(request, snap, key)
    caller = request.remote or ""
    override = await _persist(lambda: daemon.set_mode(key, mode, caller))
    return web.json_response(real_state(key, override))


async def put_weight(request: web.Request) -> web.Response:
    await authorize(request)
    daemon = request.app[DAEMON]
    snap = daemon.snapshot()
    key = resolve_real(snap, request.match_info["key"])
    weight = await _weight_from_body(request)
    if weight == 0:
        _guard_last(request, snap, key)
    caller = request.remote or ""
    override = await _persist(lambda: daemon.set_weight(key, weight, caller))
    return web.json_response(real_state(key, override))


async def delete_weight(request: web.Request) -> web.Response:
    await authorize(request)
    daemon = request.app[DAEMON]
    key = resolve_real(daemon.snapshot(), request.match_info["key"])
    caller = request.remote or ""
    override = await _persist(lambda: daemon.set_weight(key, None, caller))
    return web.json_response(real_state(key, override))


async def get_real(request: web.Request) -> web.Response:
    snap = request.app[DAEMON].snapshot()
    key = resolve_real(snap, request.match_info["key"])
    text = real_key_text(key)
    view = service_status(snap, key[0])
    for real in view["reals"] if view is not None else ():
        if real["key"] == text:
            return web.json_response(real)
    raise ApiError(404, f"no real server {text}")


async def plan(request: web.Request) -> web.Response:
    """What the daemon would change now: its last pass's wanted table against the kernel's."""
    return web.json_response(plan_document(request.app[DAEMON].snapshot()))


async def reload(request: web.Request) -> web.Response:
    await authorize(request)
    daemon = request.app[DAEMON]
    # Shielded: a client that leaves, or the response deadline, must not cut a
    # reload in half; it finishes and is reported in /status.
    reloading = asyncio.ensure_future(daemon.reload())
    reloading.add_done_callback(lambda f: f.cancelled() or f.exception())
    ok = await asyncio.shield(reloading)
    r = daemon.snapshot().reload
    body: dict[str, Any] = {
        "ok": ok,
        "generation": r.generation,
        "changed": r.last_changed if ok else False,
    }
    if not ok:
        body["error"] = r.last_error
    return web.json_response(body, status=200 if ok else 422)


async def director(request: web.Request) -> web.Response:
    """``pulsed director drain|undrain``: withdraw every BGP VIP (IPVS keeps
    serving what still arrives), or announce them again."""
    await authorize(request)
    daemon = request.app[DAEMON]
    drained = request.match_info["action"] == "drain"
    if not daemon.set_director_drained(drained, request.remote or ""):
        raise ApiError(409, "no [bgp] table: this director announces nothing")
    view = daemon.snapshot().bgp
    return web.json_response(
        {
            "drained": drained,
            "idle": bool(view and view.idle),
            "active_connections": view.active_connections if view else 0,
        }
    )


async def _weight_from_body(request: web.Request) -> int:
    """The weight in a ``{"weight": N}`` body (see read_json_body)."""
    body = await read_json_body(request, MAX_BODY, '{"weight": 5}')
    weight = body.get("weight") if isinstance(body, dict) else None
    if isinstance(weight, bool) or not isinstance(weight, int):
        raise ApiError(400, 'body must be JSON like {"weight": 5} (an integer)')
    if not 0 <= weight <= MAX_WEIGHT:
        shown = f"weight {weight}" if abs(weight) < 10**12 else "weight"
        raise ApiError(400, f"{shown} out of range 0..{MAX_WEIGHT}")
    return weight


async def _persist(action: Callable[[], Override]) -> Override:
    try:
        return action()
    except OSError as exc:
        # The override is refused when it cannot be written: it would not survive a restart.
        raise ApiError(500, f"cannot save the override: {exc.strerror or exc}") from None


# Application -------------------------------------------------------------------


def make_app(daemon: Daemon, renderer: MetricsRenderer | None = None) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=MAX_BODY)
    app.on_response_prepare.append(_mark_started)
    if renderer is None:
        recorder = ActivityRecorder()
        attach_recorder(daemon, recorder, daemon.snapshot().index.real_keys())
        renderer = MetricsRenderer(daemon.snapshot, recorder)
    app[DAEMON] = daemon
    app[RENDERER] = renderer
    app[TOKENS] = TokenReader()
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static_file)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    reals = "/api/v1/reals/{key:.+}"
    app.router.add_post(reals + "/{action:drain|disable|enable}", set_mode)
    app.router.add_put(reals + "/weight", put_weight)
    app.router.add_delete(reals + "/weight", delete_weight)
    # Not the action sub-resources: GET .../drain must be a 405, not a lookup of "x/drain".
    actions = "".join(f"(?<!/{a})" for a in ("drain", "disable", "enable", "weight"))
    app.router.add_get("/api/v1/reals/{key:.+" + actions + "}", get_real)
    app.router.add_post("/api/v1/services/{service}/{action:drain|enable}", set_service_mode)
    app.router.add_post("/api/v1/reload", reload)
    app.router.add_post("/api/v1/director/{action:drain|undrain}", director)
    app.router.add_get("/api/v1/plan", plan)
    add_config_routes(app)
    return app


class ApiServer:
    """The running server; ``cleanup()`` stops it. ``guard`` counts connections."""

    def __init__(self, runner: web.AppRunner, url: str, guard: ConnectionGuard) -> None:
        self.runner = runner
        self.url = url
        self.guard = guard

    async def cleanup(self) -> None:
        await self.runner.cleanup()
        self.guard.close()


async def bind_api(listen: str) -> BoundSocket:
    """Step 1 of starting the API: bind and listen on ``listen``, touching nothing else.

    Raises BindError with one line (``api.listen 127.0.0.1:9480: address
    already in use``). The daemon calls this before its first kernel write;
    connections that arrive before ``serve_api`` wait in the kernel's backlog.
    """
    return bind_listen(listen)


async def serve_api(
    daemon: Daemon, bound: BoundSocket, *, max_connections: int | None = None
) -> ApiServer:
    """Step 2: serve the API on the socket from ``bind_api``.

    ``max_connections`` caps ``api.max_connections`` (the descriptors left
    after the probes' reserve: ``pulsed.limits.api_connection_budget``); the
    limits are read from the running config for each new connection and
    request, so a reload applies them.
    """
    api = daemon.config.api
    handler_args: dict[str, Any] = {
        "access_log": None,
        # A backstop only: the guard's head deadline acts first (pulsed.api_guard).
        "keepalive_timeout": 2 * float(api.header_timeout),
        # A body the handler did not read is drained for at most this long.
        "lingering_time": float(api.body_timeout),
        "max_line_size": MAX_LINE,
        "max_field_size": MAX_FIELD,
        "max_headers": MAX_HEADERS,
    }
    runner = web.AppRunner(
        make_app(daemon), handle_signals=False, shutdown_timeout=5.0, **handler_args
    )
    await runner.setup()
    server = runner.server
    assert server is not None
    loop = asyncio.get_running_loop()

    def budget() -> Budget:
        current = daemon.config.api
        limit = current.max_connections
        if max_connections is not None:
            # At least one: /healthz must stay reachable even with no descriptors to spare.
            limit = max(1, min(limit, max_connections))
        return Budget(max_connections=limit, header_timeout=float(current.header_timeout))

    guard = ConnectionGuard(budget, lambda: GuardedHandler(server, loop=loop, **handler_args))
    site = GuardedSite(runner, bound, guard)
    started = time.perf_counter()
    await site.start()
    log.info(
        "api.listening",
        url=bound.url + "/",
        max_connections=budget().max_connections,
        seconds=round(time.perf_counter() - started, 4),
    )
    return ApiServer(runner, bound.url, guard)


async def start_api(
    daemon: Daemon, sock: socket.socket | None = None, *, max_connections: int | None = None
) -> ApiServer:
    """Serve the API: on ``sock`` when the daemon bound it already (before its
    first kernel write), else bind ``api.listen`` now (``bind_api`` then ``serve_api``)."""
    listen = daemon.config.api.listen
    bound = BoundSocket(sock, listen) if sock is not None else await bind_api(listen)
    return await serve_api(daemon, bound, max_connections=max_connections)


__all__ = ["ApiServer", "BindError", "bind_api", "make_app", "serve_api", "start_api"]
