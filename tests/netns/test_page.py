"""The status page in real headless Chromium, driven over the DevTools protocol.

Load the page from the real daemon, assert what the DOM shows, take a
screenshot, drain a server through the API and watch the page follow.
Waiting is event-driven: a MutationObserver inside the page resolves when
the expected text appears.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
from pathlib import Path

import aiohttp
import pytest

from tests.netns.pop_daemon import TOKEN, Pulsed, config_text, free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="chromium not installed")


# Resolves once the condition holds, re-checked on every DOM mutation.
WAIT_JS = """new Promise((resolve, reject) => {
  const check = () => { try { const v = (%s); if (v) { resolve(v); return true; } }
                        catch (e) {} return false; };
  if (check()) return;
  const obs = new MutationObserver(() => { if (check()) obs.disconnect(); });
  obs.observe(document,
              {subtree: true, childList: true, characterData: true, attributes: true});
  setTimeout(() => { obs.disconnect(); reject(new Error(%s)); }, %d);
})"""


class ContextDestroyed(Exception):
    pass


class Browser:
    """A headless Chromium and one page, over the DevTools websocket."""

    def __init__(self, proc: asyncio.subprocess.Process, session: aiohttp.ClientSession, ws):
        self.proc, self.session, self.ws = proc, session, ws
        self._ids = itertools.count(1)

    @classmethod
    async def launch(cls, url: str, profile: Path) -> Browser:
        proc = await asyncio.create_subprocess_exec(
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--window-size=1280,800",
            url,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        port = None
        assert proc.stderr is not None
        async with asyncio.timeout(30):
            while port is None:
                line = (await proc.stderr.readline()).decode()
                if not line:
                    raise AssertionError("chromium exited before DevTools came up")
                found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
                port = int(found.group(1)) if found else None
        # Keep reading stderr so chromium never blocks on a full pipe.
        asyncio.get_running_loop().create_task(_drain(proc.stderr))
        session = aiohttp.ClientSession()
        async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
            targets = await resp.json(content_type=None)
        page = next(t for t in targets if t["type"] == "page")
        ws = await session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        return cls(proc, session, ws)

    async def call(self, method: str, **params) -> dict:
        ident = next(self._ids)
        await self.ws.send_json({"id": ident, "method": method, "params": params})
        async with asyncio.timeout(30):
            async for msg in self.ws:
                data = json.loads(msg.data)
                if data.get("id") == ident:
                    if "error" in data:
                        if "context was destroyed" in data["error"].get("message", ""):
                            raise ContextDestroyed()
                        raise AssertionError(f"{method}: {data['error']}")
                    return data["result"]
        raise AssertionError("DevTools connection closed")

    async def evaluate(self, expression: str):
        for _ in range(20):
            try:
                result = await self.call(
                    "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
                )
                break
            except ContextDestroyed:  # the page (re)loaded under us: ask the new one
                continue
        else:
            raise AssertionError("the page kept navigating")
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression[:80]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, condition: str, timeout_ms: int = 15000):
        """Resolve when the JS ``condition`` becomes truthy (checked on every DOM change)."""
        message = json.dumps(f"timed out: {condition}")
        return await self.evaluate(WAIT_JS % (condition, message, timeout_ms))

    async def screenshot(self, path: Path) -> Path:
        result = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(result["data"]))
        return path

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        await self.session.close()
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


def row(port: int) -> str:
    return f"document.querySelector('tr[data-real$=\"/127.0.0.1:{port}\"]')"


def cell(port: int, name: str) -> str:
    return f"{row(port)}.querySelector('td.{name}').textContent"


@pytest.fixture
def daemon(tmp_path, servers):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)  # a secret: owner only, or the config is refused
    ports = [s.port for s in servers]
    process = Pulsed(
        tmp_path, config_text(tmp_path / "state", free_port(), token, ports, extra_service=True)
    )
    process.start()
    yield process
    process.close()


async def test_page_shows_state_and_follows_a_drain(daemon, servers, tmp_path):
    up, down = servers
    shots = Path(os.environ.get("POP_SCREENSHOT_DIR", tmp_path))
    browser = await Browser.launch(daemon.url + "/", tmp_path / "chromium-profile")
    try:
        await browser.wait_for(f"{cell(up.port, 'health')} === 'up'")
        await browser.wait_for(f"{cell(down.port, 'reason')} === 'connect refused'")
        texts = await browser.evaluate(
            f"""({{
              ha: document.getElementById('ha').textContent,
              sync: document.getElementById('sync').textContent,
              services: [...document.querySelectorAll('section.service h2')]
                .map(e => e.textContent),
              downHealth: {cell(down.port, "health")},
              upWeight: {cell(up.port, "weight-configured")},
              upEffective: {cell(up.port, "weight-effective")},
              downEffective: {cell(down.port, "weight-effective")},
              serviceReason: document.querySelector('section.service .service-reason').textContent,
              checked: {cell(up.port, "checked")},
            }})"""
        )
        assert texts["ha"] == "HA: standalone"
        assert texts["services"] == ["web", "dns"]
        assert texts["downHealth"] == "down"
        assert (texts["upWeight"], texts["upEffective"], texts["downEffective"]) == ("2", "2", "0")
        assert texts["serviceReason"].startswith("1 of 2 real servers up")
        assert texts["checked"].endswith("s ago")
        before = await browser.screenshot(shots / "status-page.png")
        assert before.stat().st_size > 10_000

        code, _ = daemon.json(
            "POST", f"/api/v1/reals/web/127.0.0.1:{up.port}/drain?force=1", token=TOKEN
        )
        assert code == 200
        await browser.wait_for(f"{cell(up.port, 'mode')} === 'drain'")
        await browser.wait_for(f"{cell(up.port, 'weight-effective')} === '0'")
        reason = await browser.evaluate(cell(up.port, "reason"))
        assert reason.startswith("drained by admin")
        await browser.screenshot(shots / "status-page-drained.png")
    finally:
        await browser.close()


async def test_page_reports_an_unreachable_daemon(daemon, tmp_path):
    browser = await Browser.launch(daemon.url + "/", tmp_path / "chromium-profile")
    try:
        await browser.wait_for("document.body.dataset.loaded === 'true'")
        assert daemon.stop() == 0
        banner = "document.getElementById('error')"
        text = await browser.wait_for(f"!{banner}.hidden && {banner}.textContent")
        assert text.startswith("cannot read the daemon's status")
    finally:
        await browser.close()
