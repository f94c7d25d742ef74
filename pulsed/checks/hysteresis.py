"""Rise/fall hysteresis: pure, so it can be tested exhaustively.

A server that is down comes up after ``rise`` consecutive passing probes; a
server that is up goes down after ``fall`` consecutive failures. The run
counters keep counting past the threshold (they are reported as
"consecutive passes/failures").
"""

from __future__ import annotations

import msgspec


class Hysteresis(msgspec.Struct, frozen=True):
    """Where a server stands (a msgspec Struct: cheap to build, see state.apply_result)."""

    up: bool
    ok_run: int = 0
    fail_run: int = 0


def step(state: Hysteresis, ok: bool, rise: int, fall: int) -> Hysteresis:
    """The state after one more probe result."""
    if ok:
        ok_run, fail_run = state.ok_run + 1, 0
        up = state.up or ok_run >= rise
    else:
        ok_run, fail_run = 0, state.fail_run + 1
        up = state.up and fail_run < fall
    return Hysteresis(up, ok_run, fail_run)
