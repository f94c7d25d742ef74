"""The status page in real headless Chromium, driven over the DevTools protocol.

Load the page from the real daemon, assert what the DOM shows, take a
screenshot, drain a server through the API and watch the page follow.
Waiting is event-driven: a MutationObserver inside the page resolves when
the expected text appears.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.netns.pop_daemon import TOKEN, Pulsed, config_text, free_port
from tests.support.browser import CHROMIUM, Browser

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="chromium not installed")


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
