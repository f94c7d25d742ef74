"""A [vrrp] table for tests, loaded through the one validation the daemon uses (pulsed.config)."""

from __future__ import annotations

import json
from typing import Any

from pulsed.config import parse_config
from pulsed.ha.config import VrrpConfig


def _toml(value: Any) -> str:
    """``value`` as an inline TOML value: tables and arrays of strings, numbers and booleans."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)  # a JSON string, number or boolean is one in TOML too


def vrrp_config(**table: Any) -> VrrpConfig:
    """The [vrrp] table with these keys, written as in a config file (durations as text such
    as '100ms', sub-tables as dicts); pulsed.config.ConfigError if the daemon would refuse it."""
    text = "[vrrp]\n" + "".join(f"{key} = {_toml(value)}\n" for key, value in table.items())
    instances = parse_config(text, "<test>", services_required=False).vrrp
    assert len(instances) == 1
    return instances[0]
