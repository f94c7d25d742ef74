"""Logs journald can filter: priorities, the notice rule, formats chosen by flag, env or config."""

from __future__ import annotations

import io
import json
import os

import pytest
import structlog
from structlog.testing import capture_logs

from pulsed.logs import ENV_LEVEL, LEVELS, choose, configure_logging


def lines_for(fmt: str, emit) -> list[str]:
    stream = io.StringIO()
    configure_logging(fmt, "debug", stream)
    try:
        emit(structlog.get_logger("t"))
    finally:
        configure_logging("json", "info", io.StringIO())
    return stream.getvalue().splitlines()


def test_journal_lines_carry_the_priority_journald_reads():
    def emit(log):
        log.warning("probe.down", service="web", server="10.0.0.2:80")
        log.info("probe.up", service="web", server="10.0.0.2:80")
        log.info("admin.drain", service="web", server="10.0.0.2:80", caller="127.0.0.1")
        log.error("reload.failed", error="1 problem(s)")
        log.info("reconcile.applied", ops=1)
        log.warning("vrrp.master", instance="VI_1")

    prefixes = [line[:3] for line in lines_for("journal", emit)]
    assert prefixes == ["<4>", "<5>", "<5>", "<3>", "<6>", "<4>"]
    body = json.loads(lines_for("journal", lambda log: log.info("probe.up"))[0][3:])
    assert body["level"] == "notice" and body["event"] == "probe.up"


def test_auto_is_journal_when_stderr_is_journalds_stream(tmp_path, monkeypatch):
    with open(tmp_path / "stream", "w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert configure_logging("auto", "info", stream) == "journal"
        monkeypatch.setenv("JOURNAL_STREAM", "1:2")
        assert configure_logging("auto", "info", stream) == "json"
    configure_logging("json", "info", io.StringIO())


def test_the_command_line_beats_the_environment_which_beats_the_config(monkeypatch):
    monkeypatch.delenv(ENV_LEVEL, raising=False)
    assert choose("info", None, ENV_LEVEL, LEVELS) == "info"
    monkeypatch.setenv(ENV_LEVEL, "DEBUG")
    assert choose("info", None, ENV_LEVEL, LEVELS) == "debug"
    assert choose("info", "error", ENV_LEVEL, LEVELS) == "error"
    monkeypatch.setenv(ENV_LEVEL, "loud")  # not a level: the config's stands
    assert choose("warning", None, ENV_LEVEL, LEVELS) == "warning"


@pytest.mark.parametrize("flag", ["--log-level=verbose", "--log-format=xml"])
def test_the_run_flags_refuse_unknown_values(flag, capsys):
    from pulsed.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["run", flag])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_a_reload_logs_what_changed_and_admin_calls_log_who(tmp_path):
    import asyncio

    from pulsed.config import load_config
    from pulsed.daemon import Daemon
    from pulsed.ipvs.memory import MemoryBackend
    from pulsed.model import DestKey, ServiceKey

    def service(name: str, port: int, weight: int = 1) -> str:
        return (
            f'[[service]]\nname = "{name}"\nvip = "192.0.2.1"\nport = {port}\n'
            f'[service.check]\ntype = "none"\n'
            f'[[service.real]]\naddress = "10.0.0.2:80"\nweight = {weight}\n'
        )

    head = f'[daemon]\nstate_dir = "{tmp_path}"\n[api]\nenabled = false\n'
    path = tmp_path / "pulsed.toml"
    path.write_text(head + service("a", 80) + service("b", 81))

    async def scenario():
        daemon = Daemon(path, MemoryBackend(), load_config(path))
        path.write_text(head + service("a", 80, weight=5) + service("c", 82))
        with capture_logs() as logs:
            assert await daemon.reload()
            key = (ServiceKey.for_address("tcp", "192.0.2.1", 80), DestKey("10.0.0.2", 80))
            daemon.set_mode(key, "drain", caller="192.0.2.50")
        await daemon.monitor.stop()
        return logs

    logs = asyncio.run(scenario())
    applied = next(e for e in logs if e["event"] == "reload.applied")
    assert (applied["added_names"], applied["removed_names"], applied["edited_names"]) == (
        ["c"],
        ["b"],
        ["a"],
    )
    assert applied["services_added"] == applied["services_removed"] == 1
    drain = next(e for e in logs if e["event"] == "admin.drain")
    assert drain["caller"] == "192.0.2.50" and drain["server"] == "10.0.0.2:80"
    assert "real" not in drain
