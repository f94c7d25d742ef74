"""The console in real headless Chromium: admin actions, the config editor, the stale view.

The daemon runs with the memory IPVS backend (tests/netns/pop_daemon.py):
"the kernel table" here is that backend's table as /status reports it
(``kernel_weight``). Each action is clicked on the page, confirmed in its
dialog, and followed until the page says the kernel has it; the table is then
read through the API, not from the page.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.netns.pop_daemon import TOKEN, Pulsed, config_text, free_port
from tests.support.browser import CHROMIUM, Browser

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="chromium not installed")

SORRY = "127.0.0.1:9"


def done(action: str) -> str:
    """The page says the kernel has ``action`` (the notice names it)."""
    said = f"$('notice').textContent.startsWith({json.dumps(action)})"
    return f"$('notice').dataset.kind === 'done' && {said}"


def console_config(tmp_path: Path, ports: list[int], *, writable: bool = True) -> str:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    text = config_text(tmp_path / "state", free_port(), token, ports, extra_service=True)
    text = text.replace("port = 80\n", f'port = 80\nsorry_server = "{SORRY}"\n', 1)
    if writable:
        text = text.replace('status_refresh = "1s"', 'status_refresh = "1s"\nconfig_write = true')
    return text


@pytest.fixture
def daemon(tmp_path, servers):
    process = Pulsed(tmp_path, console_config(tmp_path, [s.port for s in servers]))
    process.start()
    yield process
    process.close()


@pytest.fixture
async def browser(daemon, tmp_path):
    page = await Browser.launch(daemon.url + "/", tmp_path / "chromium-profile")
    await page.wait_for("document.body.dataset.loaded === 'true'")
    yield page
    await page.close()


def shots(tmp_path: Path) -> Path:
    return Path(os.environ.get("POP_SCREENSHOT_DIR", tmp_path))


def real(daemon: Pulsed, port: int) -> dict:
    """The real server on ``port`` of service web, from /status."""
    web = next(s for s in daemon.status()["services"] if s["name"] == "web")
    return next(r for r in web["reals"] if r["port"] == port)


async def log_in(browser: Browser) -> None:
    await browser.click("#login")
    await browser.answer("Admin token", TOKEN)
    await browser.wait_for("!$('editor').hidden && $('cfg-text').value.includes('[[service]]')")


async def no_overflow(browser: Browser) -> bool:
    return await browser.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )


async def test_without_a_token_no_control_and_the_api_says_401(daemon, browser, servers):
    up, _ = servers
    await browser.wait_for(f"document.querySelector('tr[data-real$=\"/127.0.0.1:{up.port}\"]')")
    controls = await browser.evaluate(
        "document.querySelectorAll('button[data-action], #editor:not([hidden])').length"
    )
    assert controls == 0
    code, body = daemon.json("POST", f"/api/v1/reals/web/127.0.0.1:{up.port}/drain")
    assert code == 401 and "Bearer" in body["error"]
    for method, path in (("GET", "/api/v1/config"), ("POST", "/api/v1/services/web/drain")):
        assert daemon.json(method, path)[0] == 401
    assert real(daemon, up.port)["mode"] == "enabled"


async def test_the_page_shows_the_whole_router(daemon, browser, servers, tmp_path):
    _up, down = servers
    await browser.wait_for(
        f"document.querySelector('tr[data-real$=\"/127.0.0.1:{down.port}\"] ul.history li')"
    )
    seen = await browser.evaluate(
        """({host: $('host').textContent, version: $('version').textContent,
            vip: document.querySelector('#vip-list tr[data-vip="192.0.2.10"]').textContent,
            sorry: document.querySelector('section[data-service="tcp:192.0.2.10:80"] .sorry')
              .textContent,
            head: document.querySelector('section[data-service="tcp:192.0.2.10:80"] .key')
              .textContent,
            history: document.querySelector('tr.down ul.history').textContent,
            reload: $('reload').hidden})"""
    )
    assert seen["host"] == daemon.status()["hostname"] != ""
    assert seen["version"].startswith("pulsed ")
    assert "192.0.2.10" in seen["vip"]
    assert seen["sorry"] == f"sorry {SORRY}: standing by"
    assert "wlc" in seen["head"]
    assert "down" in seen["history"] and "connect refused" in seen["history"]
    assert seen["reload"] is True
    # A refused reload is prominent, with its error.
    daemon.config_path.write_text(daemon.config_path.read_text() + "\n[bogus]\n")
    daemon.reload()
    text = await browser.wait_for("!$('reload').hidden && $('reload').textContent")
    assert "REFUSED" in text and "bogus" in text
    await browser.screenshot(shots(tmp_path) / "console-reload-refused.png")


async def test_a_drain_clicked_reaches_the_kernel_table(daemon, browser, servers, tmp_path):
    up, _ = servers
    await log_in(browser)
    row = f"tr[data-real$='/127.0.0.1:{up.port}']"
    await browser.click(f"{row} button[data-action=drain]")
    await browser.answer(f"drain 127.0.0.1:{up.port} of web")
    # The only serving server: the API's 409, in the page's words.
    text = await browser.answer("last serving real server")
    assert f"the sorry server {SORRY} takes over" in text
    await browser.wait_for(done(f"drain 127.0.0.1:{up.port} of web"))
    now = real(daemon, up.port)
    assert (now["mode"], now["kernel_weight"]) == ("drain", 0)
    await browser.wait_for(
        f"document.querySelector(\"{row} td.weight-kernel\").textContent === '0'"
    )
    await browser.screenshot(shots(tmp_path) / "console-drained.png")

    await browser.click(f"{row} button[data-action=weight]")
    await browser.answer("New weight", "5")
    await browser.answer("weight 127.0.0.1")
    await browser.wait_for(done(f"weight 127.0.0.1:{up.port} of web"))
    assert real(daemon, up.port)["weight_override"] == 5

    await browser.click(f"{row} button[data-action=enable]")
    await browser.answer("enable")
    await browser.wait_for(done(f"enable 127.0.0.1:{up.port} of web"))
    now = real(daemon, up.port)
    assert (now["mode"], now["kernel_weight"]) == ("enabled", 5)

    await browser.click(
        "section[data-service='tcp:192.0.2.10:80'] button[data-action=drain-service]"
    )
    await browser.answer("drain every real server of web")
    assert "the sorry server" in await browser.answer("drains every real server of web")
    await browser.wait_for(done("drain every real server of web"))
    web = next(s for s in daemon.status()["services"] if s["name"] == "web")
    assert all(r["mode"] == "drain" for r in web["reals"])


async def test_apply_rollback_bad_config_and_concurrent_edit(daemon, browser, servers, tmp_path):
    up, _ = servers
    await log_in(browser)
    original = daemon.config_path.read_text()
    generation = daemon.status()["config"]["generation"]

    # Apply: weight 2 -> 7, through plan, confirmation, write and reload.
    edited = original.replace("weight = 2", "weight = 7", 1)
    await browser.evaluate(f"$('cfg-text').value = {json.dumps(edited)}")
    await browser.click("#cfg-apply")
    await browser.answer("Write the config file and reload: 1 change(s)")
    await browser.wait_for(done("config applied"))
    assert real(daemon, up.port)["kernel_weight"] == 7
    assert daemon.config_path.read_text() == edited
    assert daemon.status()["config"]["generation"] == generation + 1

    # Rollback to the config that was loaded (history entry 1).
    await browser.click("#cfg-history tr[data-history='1'] button[data-action=rollback]")
    await browser.answer("Roll back to config 1")
    await browser.wait_for(done("config rolled back to 1"))
    assert real(daemon, up.port)["kernel_weight"] == 2
    assert daemon.config_path.read_text() == original
    # The page reloads the editor from the daemon after a rollback; the edit below
    # must come after that, or the reload would overwrite it. Exactly the loaded
    # text: the config has more than one "weight = 2".
    await browser.wait_for(f"$('cfg-text').value === {json.dumps(original)}")

    # A bad config: its errors next to their lines, and nothing changes.
    bad = original.replace("weight = 2", "weight = -1", 1)
    bad_line = bad.splitlines().index("weight = -1") + 1
    await browser.evaluate(f"$('cfg-text').value = {json.dumps(bad)}")
    await browser.click("#cfg-validate")
    shown = await browser.wait_for(
        f"document.querySelector('.cfg-error[data-line=\"{bad_line}\"]')?.textContent"
    )
    assert "expected int >= 0" in shown and shown.startswith(f"line {bad_line}:")
    assert await browser.evaluate("document.querySelector('.cfg-line.bad').dataset.line") == str(
        bad_line
    )
    await browser.screenshot(shots(tmp_path) / "console-config-errors.png")
    await browser.evaluate("$('cfg-result').replaceChildren()")
    await browser.click("#cfg-apply")  # plans first: the errors again, no question asked
    await browser.wait_for("document.querySelector('.cfg-line.bad')")
    status = daemon.status()
    assert daemon.config_path.read_text() == original
    assert status["config"]["generation"] == generation + 2
    assert real(daemon, up.port)["kernel_weight"] == 2

    # Someone edits the file on disk: an apply from the page is refused, with the difference.
    on_disk = original + "\n# edited by hand\n"
    daemon.config_path.write_text(on_disk)
    await browser.evaluate(f"$('cfg-text').value = {json.dumps(edited)}")
    await browser.click("#cfg-apply")
    await browser.answer("Write the config file and reload")
    refused = await browser.wait_for(
        "document.querySelector('#cfg-result .cfg-error')?.textContent.includes('409')"
        " && $('cfg-result').textContent"
    )
    assert "changed on disk" in refused and "+# edited by hand" in refused
    assert daemon.config_path.read_text() == on_disk
    assert daemon.status()["config"]["generation"] == generation + 2
    assert real(daemon, up.port)["kernel_weight"] == 2

    code, history = daemon.json("GET", "/api/v1/config/history", token=TOKEN)
    assert code == 200
    actions = [a["action"] for a in history["audit"]]
    assert actions == ["rollback to 1", "apply"]
    assert all(a["who"].startswith("token@") and a["diff"] for a in history["audit"])


async def test_stale_when_the_daemon_stops_and_back_when_it_returns(daemon, browser, tmp_path):
    green = "document.querySelectorAll('.badge.ok, .badge.up, .badge.master').length"
    await browser.wait_for(f"{green} > 0")
    assert daemon.stop() == 0
    await browser.wait_for("document.body.dataset.stale === 'true'")
    seen = await browser.evaluate(
        f"""({{green: {green},
              error: $('error').textContent,
              opacity: getComputedStyle(document.querySelector('main')).opacity}})"""
    )
    assert seen["green"] == 0
    assert "stale" in seen["error"] and "last good status" in seen["error"]
    assert float(seen["opacity"]) < 1
    await browser.screenshot(shots(tmp_path) / "console-stale.png")
    daemon.start()
    await browser.wait_for("document.body.dataset.stale === 'false'", timeout_ms=30000)
    await browser.wait_for(f"{green} > 0")
    assert await browser.evaluate("$('error').hidden") is True


@pytest.mark.parametrize(("width", "mobile"), [(1280, False), (390, True)])
async def test_screenshots_without_horizontal_overflow(daemon, browser, width, mobile, tmp_path):
    await log_in(browser)
    await browser.resize(width, 844, mobile=mobile)
    await browser.wait_for("document.querySelector('button[data-action=drain]')")
    await browser.evaluate("new Promise((r) => requestAnimationFrame(() => r(true)))")
    assert await no_overflow(browser), await browser.evaluate(
        "document.documentElement.scrollWidth"
    )
    shot = await browser.full_screenshot(shots(tmp_path) / f"console-{width}px.png")
    assert shot.stat().st_size > 10_000
