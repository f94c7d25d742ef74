"""Headless Chromium driven over the DevTools protocol, for the page's tests.

Waiting is event-driven: a MutationObserver inside the page resolves when
the expected condition holds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import shutil
from pathlib import Path

import aiohttp

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


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

    async def click(self, selector: str) -> None:
        """Click the element ``selector`` names, once it is there."""
        found = json.dumps(selector)
        await self.wait_for(f"document.querySelector({found})")
        await self.evaluate(f"document.querySelector({found}).click()")

    async def answer(self, expected: str, value: str | None = None, ok: bool = True) -> str:
        """Answer the page's open question (the <dialog>) once its text contains
        ``expected``: type ``value`` if given, then ok (or cancel). Its text."""
        shown = f"$('ask').open && $('ask-text').textContent.includes({json.dumps(expected)})"
        await self.wait_for(shown)
        text = await self.evaluate("$('ask-text').textContent")
        if value is not None:
            await self.evaluate(f"$('ask-input').value = {json.dumps(value)}")
        await self.click("#ask-ok" if ok else "#ask-cancel")
        return text

    async def resize(self, width: int, height: int, mobile: bool = False) -> None:
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=mobile,
        )

    async def full_screenshot(self, path: Path) -> Path:
        """The whole page, not only the viewport."""
        result = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(result["data"]))
        return path

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
