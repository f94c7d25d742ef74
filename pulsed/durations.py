"""Durations as operators write them: ``250ms``, ``2s``, ``1m``, ``1h30m``."""

from __future__ import annotations

import re

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h|d)")


def parse_duration(text: str) -> float:
    """Seconds in ``text``; raises ValueError naming the problem.

    A bare ``0`` is accepted; any other number needs a unit, because a
    bare ``5`` could mean seconds or milliseconds depending on who reads it.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a duration string like '2s', got {text!r}")
    s = text.strip()
    if s == "0":
        return 0.0
    pos, total = 0, 0.0
    for match in _PART.finditer(s):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(s) or not s:
        raise ValueError(
            f"invalid duration {text!r}: use a number and a unit (us ms s m h d),"
            " e.g. '250ms', '2s', '1m'"
        )
    # Hundreds of nines make float('inf'); no timer can live with that, nor
    # with years. Each setting has its own narrower range (config.py).
    if not total <= MAX_DURATION:
        raise ValueError(f"duration {_clip(text)!r} is longer than {MAX_DURATION_TEXT}")
    return total


MAX_DURATION = 365 * 86400.0
MAX_DURATION_TEXT = "365d"


def _clip(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def format_duration(seconds: float) -> str:
    """Short text for a duration, the inverse of parse_duration for round values."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds < 60 or seconds % 60:
        return f"{seconds:g}s"
    if seconds % 3600:
        return f"{seconds / 60:g}m"
    return f"{seconds / 3600:g}h"


class Duration(float):
    """Seconds, written in config files as ``250ms``, ``2s``, ``1m``.

    Config structs annotate fields with this type; the config loader turns
    the text into a Duration (see ``pulsed.config``).
    """

    def __repr__(self) -> str:
        return f"Duration({format_duration(self)!r})"

    def __str__(self) -> str:
        return format_duration(self)
