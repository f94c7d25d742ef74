"""structlog set-up: one line per event, with a syslog priority journald understands.

Formats:
- ``json``: one JSON object per line;
- ``console``: readable text (colours on a terminal);
- ``journal``: the JSON line behind a ``<N>`` syslog priority prefix, which
  journald (``SyslogLevelPrefix=``, on by default) strips and stores as the
  entry's priority, so ``journalctl -p warning -u pulsed`` finds what matters;
- ``auto``: ``journal`` when stderr is journald's stream (``JOURNAL_STREAM``
  names it), ``console`` on a terminal, else ``json``.

Levels follow one rule: an event that moves traffic is logged at notice or
warning. A server going down, a VRRP role change, a failed-open pool or a
sorry server taking over are warnings; a server coming back, an admin call
and an applied reload are notices (``NOTICE_EVENTS``: structlog has no notice
method, so they are info calls that the renderer marks as notice, priority 5).
A refused reload is an error.

Field names are the same in logs, /status and metrics: ``service`` (a
service's key or name), ``server`` (a real server's ``address:port``),
``instance`` (a VRRP instance's name).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("auto", "json", "console", "journal")
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
# syslog priorities (RFC 5424) by level name.
PRIORITIES = {
    "debug": 7,
    "info": 6,
    "notice": 5,
    "warning": 4,
    "error": 3,
    "critical": 2,
    "exception": 3,
}
# Info events that move traffic, or change what moves it: logged at notice.
NOTICE_EVENTS = frozenset(
    {
        "probe.up",
        "pool.fail_open_ended",
        "pool.sorry_server_off",
        "admin.drain",
        "admin.disable",
        "admin.enabled",
        "admin.weight",
        "reload.applied",
        "reload.vrrp_reconfigured",
        "vrrp.started",
        "vrrp.stopped",
        "vrrp.priority",
        "vrrp.reconfigured",
        "upgrade.handed_over",
        "daemon.started",
        "daemon.stopping",
        "daemon.stopped",
    }
)
# Environment variables that override the config file (the command line overrides both).
ENV_LEVEL = "PULSED_LOG_LEVEL"
ENV_FORMAT = "PULSED_LOG_FORMAT"


def _notice(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Any:
    if event.get("level") == "info" and event.get("event") in NOTICE_EVENTS:
        event["level"] = "notice"
    return event


class _Journal:
    """The inner renderer's line behind journald's ``<N>`` priority prefix."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        priority = PRIORITIES.get(str(event.get("level", "info")), 6)
        return f"<{priority}>{self.inner(logger, method, event)}"


def on_journal(stream: TextIO) -> bool:
    """Whether ``stream`` is journald's stream for this service (systemd sets
    ``JOURNAL_STREAM=<dev>:<inode>`` of the socket it connects to stdout/stderr)."""
    want = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return bool(want) and want == f"{st.st_dev}:{st.st_ino}"


def choose(config_value: str, cli_value: str | None, env: str, allowed: tuple[str, ...]) -> str:
    """The command line's value, else the environment's (when valid), else the config's."""
    if cli_value:
        return cli_value
    from_env = os.environ.get(env, "").strip().lower()
    return from_env if from_env in allowed else config_value


def configure_logging(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> str:
    """Route structlog to ``stream`` (stderr); returns the format in use."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "journal" if on_journal(stream) else "console" if stream.isatty() else "json"
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    elif fmt == "journal":
        renderer = _Journal(structlog.processors.JSONRenderer())
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _notice,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    return fmt
