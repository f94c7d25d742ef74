"""The agent check's words (HAProxy agent-check) and what they do to the table."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pulsed.checks.agent import AgentState, LineReader, next_state, parse_reply
from pulsed.checks.base import ProbeResult
from pulsed.checks.config import CheckConfig, check_problems
from pulsed.checks.state import RealHealth, effective
from pulsed.config import parse_config
from pulsed.desired import wanted_table
from pulsed.durations import Duration
from pulsed.keys import KeyIndex


def said(*lines: str) -> AgentState:
    state = None
    for n, line in enumerate(lines):
        state = parse_reply(state, line, 100.0 + n, 10.0 + n)
    assert state is not None
    return state


@pytest.mark.parametrize(
    ("line", "op", "admin", "pct"),
    [
        ("up", "up", None, None),
        ("down", "down", None, None),
        ("fail", "down", None, None),
        ("stopped # disk full", "down", None, None),
        ("drain", None, "drain", None),
        ("maint", None, "maint", None),
        ("ready", None, None, None),
        ("75%", None, None, 75),
        ("up 75%", "up", None, 75),
        ("up,drain,50%", "up", "drain", 50),
        ("UP  Ready , 0%", "up", None, 0),
        ("250%", None, None, 100),  # capped, as the check's own weight reports
    ],
)
def test_each_word_sets_its_part(line, op, admin, pct) -> None:
    state = said(line)
    assert (state.op, state.admin, state.weight_pct) == (op, admin, pct)
    assert state.reason == f"agent: {line.strip()}" and state.reachable


def test_words_not_repeated_keep_what_the_last_reply_said() -> None:
    state = said("down 50%", "drain")
    assert (state.op, state.admin, state.weight_pct) == ("down", "drain", 50)
    state = said("down 50%", "drain", "up", "ready")
    assert (state.op, state.admin, state.weight_pct) == ("up", None, 50)


def test_down_keeps_when_it_began() -> None:
    assert said("down").down_at == 10.0
    assert said("down", "down 10%").down_at == 10.0
    assert said("down", "up", "down").down_at == 12.0
    assert said("up").down_at is None


def test_unknown_words_are_ignored_and_named() -> None:
    state = said("up sideways 12 %x")
    assert state.op == "up"
    assert state.reason == "agent: up sideways 12 %x (ignored: sideways, 12, %x)"


def test_an_empty_reply_changes_nothing() -> None:
    state = said("drain", "")
    assert state.admin == "drain" and state.reason == "agent: empty reply"


def test_an_agent_that_cannot_be_reached_changes_nothing_but_its_reason() -> None:
    before = said("down 30%")
    failed = ProbeResult(False, "connect refused", 0.001, "refused")
    after = next_state(before, failed, 200.0, 20.0)
    assert after == before  # equal for the table
    assert (after.reachable, after.reason) == (False, "agent unreachable: connect refused")
    assert next_state(None, failed, 200.0, 20.0) == AgentState()


def test_the_line_read_is_bounded_and_ends_at_the_first_break() -> None:
    reader = LineReader()
    assert not reader.feed(b"up 5")
    assert reader.feed(b"0%\r\ndown\n")
    assert reader.result(0.0).reason == "up 50%"
    flood = LineReader()
    assert flood.feed(b"x" * 10_000)  # finished at the cap, not after the flood
    assert len(flood.result(0.0).reason) == 512


def test_agent_keys_are_validated() -> None:
    def keys(**kw) -> list[str]:
        return [k for k, _, _ in check_problems(CheckConfig(**kw))]

    assert keys(agent_port=9999) == []
    assert keys(agent_port=0) == ["agent_port"]
    assert keys(agent_interval=Duration(0.001)) == ["agent_interval"]
    assert keys(agent_timeout=Duration(3.0)) == ["agent_timeout"]  # > agent_interval
    assert keys(agent_send="x" * 1025) == ["agent_send"]


UP = RealHealth(up=True, last_ok=True, reason="connected", weight_pct=80, went_up_at=1.0)


def test_effective_lays_the_agent_over_the_check() -> None:
    assert effective(UP) is UP
    down = effective(replace(UP, agent=said("down")))
    assert (down.up, down.went_down_at) == (False, 10.0)
    scaled = effective(replace(UP, agent=said("40%")))
    assert (scaled.up, scaled.weight_pct) == (True, 40)  # the agent's word wins
    failed = RealHealth(up=False, last_ok=False, went_down_at=5.0)
    assert effective(replace(failed, agent=said("up"))).up is False  # up only clears down


CONFIG = """
[[service]]
name = "web"
vip = "192.0.2.1"
port = 80
[[service.real]]
address = "10.0.0.1:80"
weight = 100
[[service.real]]
address = "10.0.0.2:80"
weight = 100
"""


@pytest.mark.parametrize(
    ("lines", "weight", "healthy"),
    [
        (("up",), 100, 1.0),
        (("down",), 0, 0.5),
        (("drain",), 0, 1.0),
        (("maint",), 0, 1.0),
        (("drain", "ready"), 100, 1.0),
        (("25%",), 25, 1.0),
        (("down", "up 60%"), 60, 1.0),
    ],
)
def test_the_table_follows_the_agent(lines, weight, healthy) -> None:
    config = parse_config(CONFIG, "t.toml")
    index = KeyIndex(config)
    first, second = index.services[0].reals
    plain = RealHealth(up=True, last_ok=True, reason="connected")
    health = {first: replace(plain, agent=said(*lines)), second: plain}
    wanted = wanted_table(config, health=health, index=index)
    weights = {d.address: d.weight for s in wanted.table for d in s.dests}
    assert weights == {"10.0.0.1": weight, "10.0.0.2": 100}
    assert wanted.healthy["web"] == healthy
