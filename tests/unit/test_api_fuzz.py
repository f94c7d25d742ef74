"""Fuzz every API endpoint with raw HTTP: no input may get a 5xx or log a traceback.

Requests are written as bytes, so they carry what a well-behaved client
library refuses to send: non-ASCII bytes in the bearer token and other
headers, bad percent-encoding and raw bytes in paths, bodies nested
thousands deep, huge numbers, bodies of every wrong shape. The server is the
real one (guard, middleware, handlers) in front of a real Daemon with the
memory backend. The seeded run here is short; raise FUZZ_EXAMPLES for a
long one.
"""

from __future__ import annotations

import asyncio
import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pulsed.api import bind_api, serve_api
from tests.unit.test_api_guard import TOKEN, make_daemon, port_of

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "400"))

METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS", "get"])
PREFIXES = st.sampled_from(
    [
        "/",
        "/healthz",
        "/status",
        "/metrics",
        "/static/",
        "/static/app.js",
        "/api/v1/reload",
        "/api/v1/reals/",
        "/api/v1/reals/web/127.0.0.1:8080",
        "/api/v1/reals/tcp:192.0.2.10:80/127.0.0.1:8080",
        "/api/v1/reals/web/127.0.0.1",
        "",
    ]
)
PIECES = st.sampled_from(
    [
        "/drain",
        "/disable",
        "/enable",
        "/weight",
        "web",
        "tcp:192.0.2.10:80",
        "udp:[2001:db8::1]:53",
        "fwmark:7",
        "fwmark:99999999999999999999",
        "127.0.0.1:8080",
        "127.0.0.1:99999",
        "[::1]:80",
        "[::1",
        "%",
        "%zz",
        "%ff%fe",
        "%00",
        "%0A",
        "%0D%0A",
        "%09",
        "%7F",
        "%2F",
        "%C3%A9",
        "%ED%A0%80",
        "..",
        "//",
        "?",
        "?a=%ff&b",
        "#x",
        "\u00e9",
        "\U0001f600",
        "\x00",
        "1" * 5000,
    ]
)
RAW_PATH_BYTES = st.binary(max_size=40).map(
    lambda b: b.replace(b" ", b"").replace(b"\r", b"").replace(b"\n", b"")
)


@st.composite
def paths(draw) -> bytes:
    text = draw(PREFIXES) + "".join(draw(st.lists(PIECES, max_size=4)))
    path = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        path += draw(RAW_PATH_BYTES)
    return path or b"/"


JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@st.composite
def bodies(draw) -> bytes:
    kind = draw(st.integers(0, 6))
    if kind == 0:
        return b""
    if kind == 1:
        return json.dumps({"weight": draw(JSON_VALUES)}).encode()
    if kind == 2:
        return json.dumps(draw(JSON_VALUES)).encode()
    if kind == 3:
        depth = draw(st.integers(1, 2000))
        return b'{"weight": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == 4:
        digits = draw(st.integers(1, 4000))
        return b'{"weight": ' + draw(st.sampled_from([b"", b"-"])) + b"9" * digits + b"}"
    if kind == 5:
        return draw(st.sampled_from([b"1e999", b"NaN", b"-Infinity", b'{"weight": 1e400}']))
    return draw(st.binary(max_size=300))


HEADER_BYTES = st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@st.composite
def authorizations(draw) -> bytes | None:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return None
    if kind == 1:
        return b"Bearer " + TOKEN
    if kind == 2:
        return b"Bearer " + draw(HEADER_BYTES)
    if kind == 3:
        return draw(st.sampled_from([b"Bearer", b"Bearer ", b"Basic dXNlcg==", b"bearer  x"]))
    return draw(HEADER_BYTES)


REAL = "/api/v1/reals/web/127.0.0.1:8080"
# Every documented call, so that the rest of the request (token, body) is
# fuzzed past the router as often as the path is.
ROUTES = st.sampled_from(
    [
        ("GET", "/healthz"),
        ("GET", "/status"),
        ("GET", "/metrics"),
        ("HEAD", "/status"),
        ("GET", "/"),
        ("GET", "/static/style.css"),
        ("GET", REAL),
        ("POST", REAL + "/drain"),
        ("POST", REAL + "/disable"),
        ("POST", REAL + "/enable"),
        ("PUT", REAL + "/weight"),
        ("DELETE", REAL + "/weight"),
        ("POST", "/api/v1/reload"),
    ]
)


@st.composite
def raw_requests(draw) -> tuple[str, bytes]:
    if draw(st.booleans()):
        method, text = draw(ROUTES)
        path = text.encode()
    else:
        method, path = draw(METHODS), draw(paths())
    head = method.encode() + b" " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    auth = draw(authorizations())
    if auth is not None:
        head += b"Authorization: " + auth + b"\r\n"
    for _ in range(draw(st.integers(0, 2))):
        head += b"X-Fuzz: " + draw(HEADER_BYTES) + b"\r\n"
    body = draw(bodies())
    if body or draw(st.booleans()):
        head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    return method, head + b"\r\n" + body


async def send(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()


def test_no_input_gets_a_5xx_or_a_traceback(tmp_path, capsys):
    loop = asyncio.new_event_loop()
    daemon = make_daemon(tmp_path)

    async def start():
        return await serve_api(daemon, await bind_api(daemon.config.api.listen))

    server = loop.run_until_complete(start())
    port = port_of(server)
    seen: set[int] = set()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(raw_requests())
    def check(request):
        method, data = request
        raw = loop.run_until_complete(send(port, data))
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1."), (data[:300], raw[:300])
        status = int(head.split(b" ", 2)[1])
        seen.add(status)
        assert status < 500, (data[:300], raw[:500])
        if status >= 400 and method.upper() != "HEAD":
            assert b"application/json" in head, (data[:300], raw[:300])
            error = json.loads(body)["error"]
            assert isinstance(error, str) and "\n" not in error and len(error) < 400
        log = capsys.readouterr().err
        assert "Traceback" not in log and '"api.error"' not in log, log[-3000:]

    try:
        check()
    finally:
        loop.run_until_complete(server.cleanup())
        loop.close()
    # The run reached the handlers, not only the parser's 400s.
    assert {200, 400, 401, 403, 404} <= seen, seen
