"""Property: every config that check-config accepts starts and reloads.

Hypothesis writes config files from every section pulsed knows, with values
at and beyond the edges of their ranges (and files that exist or not). Each
is validated the way ``check-config`` does. A refused config must give one
line per problem; an accepted one must start a daemon on the memory backend,
and a reload to a second generated config must succeed exactly when that
config is accepted, all without an exception anywhere.

Real servers are on loopback only (the probes are real), VRRP is left out (it
may only run in a network namespace) and the API is off (its port is
covered by the API tests).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from pulsed.config import ConfigError, load_config
from pulsed.daemon import Daemon
from pulsed.ipvs.memory import MemoryBackend


# Mostly good values, with the edges and the nonsense operators write.
def _mostly(good: list[Any], bad: list[Any]) -> st.SearchStrategy[Any]:
    """A good value 19 times in 20, else one past an edge: with a few dozen
    keys, about half the configs are accepted and go on to run."""
    return st.integers(0, 19).flatmap(
        lambda n: st.sampled_from(bad) if n == 0 else st.sampled_from(good)
    )


DURATIONS = _mostly(["1s", "250ms", "2s", "0s", "1h", "1m"], ["1ms", "2d", "400d", "9" * 400 + "s"])
SHORT = _mostly(["100ms", "200ms", "500ms", "1s"], ["0s", "1ms", "2d", "9" * 300 + "ms"])
INTS = _mostly([1, 2, 3, 100, 1000], [0, 1001, 65535, 65536, -1, 2**31, 2**63 - 1])
WEIGHTS = _mostly([0, 1, 5, 100, 65535], [-1, 65536, 2**63 - 1])
VIPS = _mostly(
    ["192.0.2.100", "192.0.2.101", "2001:db8::1"], ["fe80::1%lo", "999.1.1.1", "::", "x"]
)
REALS = _mostly(
    ["127.0.0.1:1", "127.0.0.2:9", "127.0.0.3", "[::1]:1"], ["[fe80::2%lo]:80", "nope:80"]
)
SCHEDULERS = _mostly(["wlc", "rr", "wrr", "mh", "sh"], ["bogus", ""])


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(value)


def _table(header: str, body: dict[str, Any]) -> str:
    lines = [header]
    lines += [f"{k} = {_toml_value(v)}" for k, v in body.items() if not isinstance(v, dict)]
    return "\n".join(lines) + "\n"


def _maybe(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.none(), strategy)


def _fields(**spec: st.SearchStrategy) -> st.SearchStrategy[dict[str, Any]]:
    """Each key present or not; absent keys take pulsed's defaults."""
    return st.fixed_dictionaries({k: _maybe(v) for k, v in spec.items()}).map(
        lambda d: {k: v for k, v in d.items() if v is not None}
    )


checks = _fields(
    type=_mostly(["tcp", "none", "http", "exec"], ["udp", ""]),
    interval=st.one_of(SHORT, DURATIONS),
    timeout=SHORT,
    rise=INTS,
    fall=INTS,
    jitter=SHORT,
    initial_state=_mostly(["down", "up"], ["sideways"]),
    path=_mostly(["/", "/health"], ["no-slash", "/a b"]),
    max_bytes=_mostly([256, 65536], [100, 2**40]),
    command=_mostly([["true"], ["false"], ["/bin/sh", "-c", "exit 0"]], [["/nonexistent"], []]),
)
reals = _fields(
    address=REALS,
    weight=WEIGHTS,
    forwarding=_mostly(["nat", "dr", "tunnel"], ["magic"]),
    upper_threshold=INTS,
    lower_threshold=INTS,
).map(lambda d: {"address": "127.0.0.1:1", **d})
services = st.tuples(
    _fields(
        name=st.sampled_from(["web", "api", "dns", "mail"]),
        vip=VIPS,
        port=_mostly([80, 443, 53], [0, 65536]),
        protocol=_mostly(["tcp", "udp", "sctp"], ["icmp"]),
        scheduler=SCHEDULERS,
        persistence=DURATIONS,
        drain_timeout=DURATIONS,
        slow_start=DURATIONS,
        min_healthy=_mostly([0, 1, 5, "50%"], [-1, 2**63 - 1, "150%", "x"]),
        on_failure=st.sampled_from(["quiesce", "remove"]),
        sorry_server=_mostly(["127.0.0.9:80"], ["nope"]),
    ),
    checks,
    st.lists(reals, max_size=3),
)
daemon_sections = _fields(
    resync_interval=st.one_of(SHORT, DURATIONS),
    full_resync_interval=DURATIONS,
    retry_interval=st.one_of(SHORT, DURATIONS),
    probe_tick_max=_mostly(["0s", "50ms", "1s", "10ms"], ["2s"]),
)


@st.composite
def config_texts(draw) -> str:
    parts = []
    daemon = draw(daemon_sections)
    svcs = draw(st.lists(services, max_size=3))
    if not svcs:
        parts.append("service = []\n")
    parts.append(_table("[daemon]", {"state_dir": "@STATE@", **daemon}))
    parts.append(_table("[api]", {"enabled": False}))
    for svc, check, real_list in svcs:
        parts.append(
            _table("[[service]]", {"name": "web", "vip": "192.0.2.100", "port": 80, **svc})
        )
        if check:
            parts.append(_table("[service.check]", check))
        for real in real_list:
            parts.append(_table("[[service.real]]", real))
    return "\n".join(parts)


async def _start_and_reload(path: Path, second: str, second_ok: bool) -> None:
    loop = asyncio.get_running_loop()
    loop_errors: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    ready = asyncio.Event()
    daemon = Daemon(
        path,
        MemoryBackend(),
        load_config(path),
        notify=lambda m: m.startswith("READY=1") and ready.set(),
    )
    with capture_logs() as logs:
        task = asyncio.create_task(daemon.run())
        await asyncio.wait_for(ready.wait(), 30)
        path.write_text(second)
        assert await daemon.reload() is second_ok, daemon.reload_status.last_error
        daemon.request_stop()
        await asyncio.wait_for(task, 30)
    assert not loop_errors
    assert not [e for e in logs if "exc_info" in e or e.get("log_level") == "critical"]


def _accepted(path: Path) -> bool:
    try:
        load_config(path)
    except ConfigError as exc:
        assert exc.issues and all("\n" not in str(issue) for issue in exc.issues)
        return False
    return True


@settings(
    # A short seeded run in the suite; PULSED_PROPERTY_EXAMPLES=5000 for a long one.
    max_examples=int(os.environ.get("PULSED_PROPERTY_EXAMPLES", "200")),
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(first=config_texts(), second=config_texts())
def test_every_accepted_config_starts_and_reloads(first: str, second: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state = os.path.join(tmp, "state")
        path = Path(tmp) / "pulsed.toml"
        first, second = first.replace("@STATE@", state), second.replace("@STATE@", state)
        path.write_text(second)
        second_ok = _accepted(path)
        path.write_text(first)
        if not _accepted(path):
            event("refused")
            return
        event("accepted: started" + (", reloaded" if second_ok else ", reload refused"))
        asyncio.run(_start_and_reload(path, second, second_ok))
