"""What the probe-type tests share: a check built as the config loader builds
it, and one probe run whose verdict must come within its timeout."""

from __future__ import annotations

import socket
import time

import msgspec

from pulsed.checks.base import ProbeResult, Target
from pulsed.checks.config import CheckConfig, check_problems
from pulsed.checks.probes import make_probe
from pulsed.durations import Duration, parse_duration

MARGIN = 2.0  # the verdict must come at the timeout, not much later


def check(**fields: object) -> CheckConfig:
    """A CheckConfig as the config loader would build it from TOML values; it
    must also pass validation."""

    def dec_hook(tp: type, obj: object) -> object:
        if tp is Duration:
            return Duration(parse_duration(obj))  # type: ignore[arg-type]
        raise NotImplementedError

    cfg = msgspec.convert(fields, CheckConfig, dec_hook=dec_hook)
    assert check_problems(cfg) == []
    return cfg


async def run_probe(port: int, address: str = "127.0.0.1", **fields: object) -> ProbeResult:
    fields.setdefault("timeout", "1s")
    cfg = check(**fields)
    start = time.monotonic()
    result = await make_probe(Target(address, port, cfg)).probe()
    assert time.monotonic() - start < cfg.timeout + MARGIN
    return result


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
