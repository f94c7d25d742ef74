"""The agent check (HAProxy's agent-check): the real server's own word on its state.

A companion of the main check, run on its own schedule (``agent_interval``)
whatever the main check's type: connect to ``agent_port`` on the probed
address, send ``agent_send`` if set, and read one line (at most
MAX_LINE bytes, within ``agent_timeout``). The line holds words separated by
spaces or commas, as HAProxy reads them:

- ``down`` (also ``fail``, ``stopped``): the server is down, whatever its check says;
- ``up``: clears ``down``: the main check decides again;
- ``drain``: weight 0, existing connections go on (as an admin drain);
- ``maint``: maintenance: the same in the IPVS table (weight 0, drained);
- ``ready``: clears ``drain`` and ``maint``;
- ``75%``: the weight, as a percentage of the configured weight (capped at
  100%, as the main check's own weight reports), until another percentage;
- after ``#``: a description, shown in the reason.

Each word sets its part and leaves the others as the last reply left them.
Unknown words are ignored and named in the reason. An agent that cannot be
reached, times out or sends nothing changes nothing (HAProxy, too, leaves a
server's state to its health check when the agent fails): its failure is
shown in the reason only.

The parsing and the state are pure; the probe runs on the ProbeEngine
(pulsed.checks.sockio), placed like every probe (pulsed.checks.placement).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from pulsed.checks.base import ProbeResult, Target
from pulsed.checks.placement import needs_preparing
from pulsed.checks.sockio import Done, Exchange, ProbeEngine, run_exchange
from pulsed.model import family_of

# Most bytes of the agent's reply read: a line is a few words.
MAX_LINE = 512
# Most characters of a reply kept for the reason text.
MAX_SHOWN = 120

Operational = Literal["up", "down"]
Administrative = Literal["drain", "maint"]

_SEPARATORS = re.compile(r"[\s,]+")
_PERCENT = re.compile(r"[0-9]{1,6}%")
_DOWN_WORDS = ("down", "fail", "stopped")


@dataclass(frozen=True, slots=True)
class AgentState:
    """What a server's agent said last (only the first four fields count for
    the table; the others are for people, and equal states compare equal
    whatever they say)."""

    op: Operational | None = None  # "down": the server is down whatever its check says
    admin: Administrative | None = None  # drained, by "drain" or "maint"
    weight_pct: int | None = None
    down_at: float | None = None  # monotonic: when "down" began (pool order, drain deadline)
    reason: str = field(default="", compare=False)
    last_check: float | None = field(default=None, compare=False)  # wall clock
    reachable: bool = field(default=True, compare=False)


def parse_reply(previous: AgentState | None, line: str, wall: float, mono: float) -> AgentState:
    """The state after the agent sent ``line`` (pure)."""
    before = previous or AgentState()
    op, admin, pct = before.op, before.admin, before.weight_pct
    text = line.partition("#")[0]  # the rest describes: shown in the reason
    ignored: list[str] = []
    for word in _SEPARATORS.split(text.strip()):
        lower = word.lower()
        if not word:
            continue
        if lower == "up":
            op = "up"
        elif lower in _DOWN_WORDS:
            op = "down"
        elif lower in ("drain", "maint"):
            admin = "drain" if lower == "drain" else "maint"
        elif lower == "ready":
            admin = None
        elif _PERCENT.fullmatch(word):
            pct = min(int(word[:-1]), 100)
        else:
            ignored.append(word[:20])
    shown = _printable(line.strip())
    reason = f"agent: {shown}" if shown else "agent: empty reply"
    if ignored:
        reason += f" (ignored: {', '.join(ignored[:5])})"
    down_at = before.down_at if before.op == "down" else mono
    return AgentState(
        op=op,
        admin=admin,
        weight_pct=pct,
        down_at=down_at if op == "down" else None,
        reason=reason,
        last_check=wall,
    )


def agent_failed(previous: AgentState | None, result: ProbeResult, wall: float) -> AgentState:
    """The state after an agent could not be reached or read: unchanged but for
    its reason (the server's state is its check's business then)."""
    before = previous or AgentState()
    return AgentState(
        op=before.op,
        admin=before.admin,
        weight_pct=before.weight_pct,
        down_at=before.down_at,
        reason=f"agent unreachable: {result.reason}",
        last_check=wall,
        reachable=False,
    )


def next_state(
    previous: AgentState | None, result: ProbeResult, wall: float, mono: float
) -> AgentState:
    """The state after one agent probe's ``result`` (its reason is the line read)."""
    if result.ok:
        return parse_reply(previous, result.reason, wall, mono)
    return agent_failed(previous, result, wall)


def _printable(text: str) -> str:
    cleaned = "".join(c if c.isprintable() else "?" for c in text[:MAX_SHOWN])
    return cleaned + ("..." if len(text) > MAX_SHOWN else "")


class LineReader:
    """Reads the agent's reply up to its first line break, the connection's
    end, or MAX_LINE bytes, whichever comes first."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> bool:
        self._buffer += data[: MAX_LINE - len(self._buffer)]
        return b"\n" in self._buffer or len(self._buffer) >= MAX_LINE

    def eof(self) -> None:
        pass

    def result(self, latency: float) -> ProbeResult:
        line = self._buffer.split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1")
        return ProbeResult(True, line, latency, "ok")


class AgentProbe:
    """One agent exchange per call, on a ProbeEngine. Its result's reason is
    the line read (ok) or why none was (failed): see next_state()."""

    __slots__ = ("address", "family", "place", "port", "request", "timeout")

    def __init__(self, target: Target) -> None:
        check = target.check
        assert check.agent_port is not None  # only built for checks with an agent
        self.address = target.probe_address
        self.port = check.agent_port
        self.family = family_of(self.address)
        self.timeout = float(check.agent_timeout)
        self.request = check.agent_send.encode()
        self.place = check if needs_preparing(check) else None

    def start(self, engine: ProbeEngine, done: Done, token: object = None) -> Exchange:
        return engine.open(
            self.family,
            self.address,
            self.port,
            self.timeout,
            self.request,
            LineReader(),
            done,
            token,
            self.place,
        )

    async def probe(self) -> ProbeResult:
        return await run_exchange(self.start)
