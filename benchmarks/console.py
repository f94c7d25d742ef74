"""Console benchmarks: the page in Chromium at 1,000 services x 10 real servers, and /status.

    flock /tmp/pulsed-bench.lock .venv/bin/python benchmarks/console.py

The real daemon (``pulsed run --backend memory``, benchmarks/ops.py's Daemon)
serves 1,000 services x 10 real servers = 10,000 real servers (check "none":
every server up at once, so the page shows its full table). Then:

- /status: time to read the whole streamed document over HTTP, and its size;
- first paint: headless Chromium opens the page; ``first-contentful-paint``
  (the header) and the time until every service is drawn (the page's
  ``data-loaded``), both from navigation start (the browser's own clock);
- one refresh: inside the page, fetch /status, parse it, redraw what changed
  (nothing here: check "none" keeps every figure still) and force the layout,
  timed with ``performance.now()``; then the same with every service redrawn,
  as when every one changed (a probe ran on each).

Each figure is the median of ``--repeat`` runs (with min and max).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "benchmarks")]

from ops import Daemon, free_port, get, header, vip  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class Browser:
    """Headless Chromium and its one page, over the DevTools websocket (the tests have
    a fuller one; benchmarks do not import test code)."""

    def __init__(self, proc, session, ws) -> None:
        self.proc, self.session, self.ws = proc, session, ws
        self.ids = itertools.count(1)

    @classmethod
    async def launch(cls, url: str, profile: Path) -> Browser:
        proc = await asyncio.create_subprocess_exec(
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update",
            f"--user-data-dir={profile}", "--remote-debugging-port=0",
            "--window-size=1280,800", url,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stderr is not None
        port = None
        while port is None:
            line = (await proc.stderr.readline()).decode()
            if not line:
                raise SystemExit("chromium exited before DevTools came up")
            found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            port = int(found.group(1)) if found else None
        asyncio.get_running_loop().create_task(_drain(proc.stderr))
        session = aiohttp.ClientSession()
        async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
            page = next(t for t in await resp.json(content_type=None) if t["type"] == "page")
        ws = await session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        return cls(proc, session, ws)

    async def evaluate(self, expression: str):
        """The value of ``expression`` (awaited), asked again if the page navigated."""
        for _ in range(20):
            ident = next(self.ids)
            params = {"expression": expression, "awaitPromise": True, "returnByValue": True}
            await self.ws.send_json({"id": ident, "method": "Runtime.evaluate", "params": params})
            async for msg in self.ws:
                data = json.loads(msg.data)
                if data.get("id") == ident:
                    break
            if "context was destroyed" in json.dumps(data.get("error", "")):
                continue
            result = data["result"]
            if "exceptionDetails" in result:
                raise SystemExit(f"in the page: {result['exceptionDetails']}")
            return result["result"].get("value")
        raise SystemExit("the page kept navigating")

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()
        self.proc.terminate()
        await self.proc.wait()


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


# One poll's work, timed in the page: fetch and parse /status, redraw, lay out.
# ``%s``: true to redraw every service (as when every one changed), false for
# the page's own rule (only the services whose data changed).
REFRESH_JS = """(async () => {
  window.setTimeout = () => 0;  // the page's own polling stops: one refresh at a time
  if (%s) drawn.clear();
  const t0 = performance.now();
  const st = await (await fetch('/status', {cache: 'no-store'})).json();
  const t1 = performance.now();
  render(st);
  document.body.offsetHeight;  // the layout of the new rows
  const t2 = performance.now();
  return [t2 - t0, t2 - t1];
})()"""

PAINT_JS = """new Promise((resolve) => {
  const done = () => {
    const fcp = performance.getEntriesByName('first-contentful-paint')[0];
    resolve([fcp ? fcp.startTime : null, performance.now()]);
  };
  const loaded = () => document.body && document.body.dataset.loaded === 'true';
  if (loaded()) { done(); return; }
  new MutationObserver((_, obs) => {
    if (loaded()) { obs.disconnect(); done(); }
  }).observe(document, {attributes: true, childList: true, subtree: true});
})"""


def console_config(state: Path, port: int, services: int, reals: int) -> str:
    parts = [header(state, port)]
    for i in range(services):
        address, vport = vip(i)
        parts.append(
            f'[[service]]\nname = "s{i}"\nvip = "{address}"\nport = {vport}\n'
            f'sorry_server = "192.0.2.1:{vport}"\n[service.check]\ntype = "none"\n'
        )
        c, d = divmod(i, 250)
        for r in range(reals):
            parts.append(f'[[service.real]]\naddress = "10.{c}.{d}.{r + 1}:80"\nweight = {r + 1}\n')
    return "\n".join(parts)


def spread(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):.0f} ms"
        f" (min {min(values):.0f}, max {max(values):.0f}; {len(values)} runs)"
    )


async def page_figures(url: str, repeat: int, workdir: Path) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {
        k: [] for k in ("fcp", "loaded", "refresh", "render", "all", "all_render")
    }
    for run in range(repeat):
        browser = await Browser.launch(url, workdir / f"profile-{run}")
        try:
            fcp, loaded = await browser.evaluate(PAINT_JS)
            figures["fcp"].append(fcp)
            figures["loaded"].append(loaded)
            await asyncio.sleep(2)  # the page's first poll is over
            for name, everything in (("refresh", "false"), ("all", "true")):
                whole, render = await browser.evaluate(REFRESH_JS % everything)
                figures[name].append(whole)
                figures["render" if name == "refresh" else "all_render"].append(render)
        finally:
            await browser.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--reals", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pulsed-bench-console-") as tmp:
        work = Path(tmp)
        port = free_port()
        text = console_config(work / "state", port, args.services, args.reals)
        daemon = Daemon(work, text)
        url = f"http://127.0.0.1:{port}"
        try:
            print(
                f"{args.services} services x {args.reals} real servers;"
                f" READY=1 after {daemon.start_seconds:.1f} s"
            )
            time.sleep(2)  # the first passes and checks settle
            status_ms = []
            size = 0
            for _ in range(args.repeat * 2):
                started = time.perf_counter()
                size = len(get(url + "/status"))
                status_ms.append((time.perf_counter() - started) * 1000)
            print(f"/status: {spread(status_ms)}, {size / 1e6:.1f} MB")
            figures = asyncio.run(page_figures(url + "/", args.repeat, work))
            print(f"first contentful paint: {spread(figures['fcp'])}")
            print(f"every service drawn (from navigation start): {spread(figures['loaded'])}")
            print(f"one refresh (fetch, parse, redraw, layout): {spread(figures['refresh'])}")
            print(f"  of which redraw and layout: {spread(figures['render'])}")
            print(f"one refresh, every service redrawn: {spread(figures['all'])}")
            print(f"  of which redraw and layout: {spread(figures['all_render'])}")
        finally:
            daemon.stop()


if __name__ == "__main__":
    main()
