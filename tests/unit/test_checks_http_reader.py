"""The status-only reader gives the verdict the full response parser gives.

A check with no body regex and no weight header reads the response head
with StatusReader, which parses the status line alone; for any response
bytes, delivered in any chunks, its result must equal the full parser's
(same verdict, reason and category), except that it does not judge the
framing headers of a body it never reads.
"""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from pulsed.checks.base import Target
from pulsed.checks.config import CheckConfig
from pulsed.checks.http import HttpProbe, StatusReader


def probe(max_bytes: int = 8192, expect: tuple = (200,)) -> HttpProbe:
    check = CheckConfig(type="http", max_bytes=max_bytes, expect_status=expect)
    return HttpProbe(Target("127.0.0.1", 8080, check))


def run(reader, chunks: list[bytes], eof: bool):
    for chunk in chunks:
        if reader.feed(chunk):
            break
    else:
        if eof:
            reader.eof()
    result = reader.result(0.001)
    return result.ok, result.reason, result.category


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


def test_ok_and_wrong_status() -> None:
    p = probe(expect=("2xx",))
    ok = b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n"
    assert run(StatusReader(p), [ok], eof=False) == (True, "status 204", "ok")
    bad = b"HTTP/1.0 503 Service Unavailable\r\n\r\nbusy"
    assert run(StatusReader(p), [bad], eof=False) == (False, "status 503", "status")


def test_head_split_across_reads_and_the_blank_line_split_too() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    chunks = [data[:5], data[5:34], data[34:35], data[35:]]
    assert run(StatusReader(probe()), chunks, eof=False) == (True, "status 200", "ok")


def test_faults_have_the_parsers_reasons() -> None:
    p = probe(max_bytes=64)
    cases = {
        b"": ("connection closed before response", "closed"),
        b"HTTP/1.1 200 OK\r\nX-A: b\r\n": ("connection closed in response headers", "closed"),
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n": ("bad status line", "protocol"),
        b"HTTP/1.1 200 OK\r\n" + b"X" * 100: ("response headers larger than 64 bytes", "protocol"),
    }
    for data, (reason, category) in cases.items():
        assert run(StatusReader(p), [data] if data else [], eof=True) == (False, reason, category)


def test_status_only_checks_use_the_status_reader() -> None:
    assert probe().status_only
    with_regex = CheckConfig(type="http", body_regex="ok")
    assert not HttpProbe(Target("127.0.0.1", 80, with_regex)).status_only
    with_weight = CheckConfig(type="http", weight_header="X-Weight")
    assert not HttpProbe(Target("127.0.0.1", 80, with_weight)).status_only


status_lines = st.sampled_from(
    [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.0 200 OK",
        b"HTTP/1.1 503 Service Unavailable",
        b"HTTP/1.1 404",
        b"HTTP/2 200 OK",
        b"HTTP/1.1 2x0 OK",
        b"SSH-2.0-OpenSSH",
        b"",
    ]
)
headers = st.lists(
    st.sampled_from(
        [
            b"Content-Length: 2",
            b"Transfer-Encoding: chunked",
            b"Server: test",
            b"X-Long: " + b"y" * 300,
        ]
    ),
    max_size=4,
)


@given(
    status_lines,
    headers,
    st.booleans(),
    st.binary(max_size=50),
    st.lists(st.integers(min_value=0, max_value=2000), max_size=6),
    st.booleans(),
    st.sampled_from([64, 256, 8192]),
)
def test_same_verdict_as_the_full_parser(
    line: bytes,
    head: list[bytes],
    complete_head: bool,
    body: bytes,
    cuts: list[int],
    eof: bool,
    max_bytes: int,
) -> None:
    data = b"\r\n".join([line, *head]) + b"\r\n"
    if complete_head:
        data += b"\r\n" + body
    p = probe(max_bytes=max_bytes)
    chunks = split(data, cuts)
    assert run(StatusReader(p), chunks, eof) == run(p._parser(), chunks, eof)
