"""Shared test set-up: logs go to whatever stream pytest captures right now."""

from __future__ import annotations

import sys

import pytest
import structlog


class _CurrentStderr:
    """A file that always writes to the current sys.stderr (pytest swaps it per test)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return False


@pytest.fixture(autouse=True)
def _structlog_to_captured_stderr():
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),
        cache_logger_on_first_use=False,
    )
    yield
