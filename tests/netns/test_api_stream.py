"""Streamed /metrics and /status over real HTTP: whole when they succeed, never a
cut-off body that looks complete when rendering fails half-way."""

from __future__ import annotations

import aiohttp
import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from pulsed.api import make_app
from pulsed.metrics import ActivityRecorder, MetricsRenderer
from tests.unit.standin import stand_in


class BreaksHalfway(MetricsRenderer):
    def chunks(self, size: int = 256 * 1024):
        pieces = super().chunks(size=4096)
        yield next(pieces)
        yield next(pieces)
        raise RuntimeError("renderer bug")


async def client_for(daemon, renderer=None) -> TestClient:
    client = TestClient(TestServer(make_app(daemon, renderer), host="127.0.0.1"))
    await client.start_server()
    return client


async def test_large_documents_arrive_whole(tmp_path):
    daemon = stand_in(tmp_path, services=50, reals=20)
    client = await client_for(daemon)
    try:
        resp = await client.get("/metrics")
        text = await resp.text()
        assert resp.status == 200 and resp.headers["Transfer-Encoding"] == "chunked"
        assert text.count("\npulsed_real_up{") == 1000
        assert text.rstrip().splitlines()[-1].startswith("process_")
        resp = await client.get("/status")
        doc = msgspec.json.decode(await resp.read())
        assert resp.status == 200 and resp.headers["Content-Type"] == "application/json"
        assert sum(len(s["reals"]) for s in doc["services"]) == 1000
    finally:
        await client.close()


async def test_a_render_failure_halfway_drops_the_connection(tmp_path):
    daemon = stand_in(tmp_path, services=50, reals=20)
    client = await client_for(daemon, BreaksHalfway(daemon.snapshot, ActivityRecorder()))
    try:
        resp = await client.get("/metrics")
        assert resp.status == 200  # the headers went out with the first piece
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
        # The server is still fine for the next request.
        assert (await client.get("/healthz")).status == 200
    finally:
        await client.close()


async def test_head_sends_headers_only(tmp_path):
    daemon = stand_in(tmp_path, services=5, reals=2)
    client = await client_for(daemon)
    try:
        for path, kind in (("/metrics", "text/plain"), ("/status", "application/json")):
            resp = await client.head(path)
            assert resp.status == 200 and resp.headers["Content-Type"].startswith(kind)
            assert await resp.read() == b""
            # The same connection still parses the next response.
            resp = await client.get(path)
            assert resp.status == 200 and len(await resp.read()) > 1000
    finally:
        await client.close()
