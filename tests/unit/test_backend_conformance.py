"""Every IPVS backend offers the Backend protocol's methods with the same signatures.

The modules hold each backend to the protocol for the type checker
(``_conforms: type[Backend] = ...``); this checks the same at run time, down
to parameter names and defaults, which a structural type check lets drift.
"""

from __future__ import annotations

import importlib.util
import inspect
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from pulsed.ipvs.base import Backend
from pulsed.ipvs.memory import MemoryBackend
from pulsed.ipvs.netlink import NetlinkBackend

ROOT = Path(__file__).resolve().parents[2]


def protocol_methods(protocol: type) -> list[str]:
    """The methods a protocol class declares itself (its own body, no dunders)."""
    return sorted(
        name
        for name, value in vars(protocol).items()
        if inspect.isfunction(value) and not name.startswith("__")
    )


def mismatches(protocol: type, cls: type) -> list[str]:
    """How ``cls`` differs from ``protocol``'s methods: one line each; empty if it conforms."""
    problems = []
    for name in protocol_methods(protocol):
        wanted = getattr(protocol, name)
        got = getattr(cls, name, None)
        if not inspect.isfunction(got):
            problems.append(f"{name}: missing")
            continue
        if inspect.iscoroutinefunction(wanted) != inspect.iscoroutinefunction(got):
            problems.append(f"{name}: async in one, not the other")
        want_params = [
            (p.name, p.kind, p.default) for p in inspect.signature(wanted).parameters.values()
        ]
        got_params = [
            (p.name, p.kind, p.default) for p in inspect.signature(got).parameters.values()
        ]
        if want_params != got_params:
            problems.append(f"{name}: parameters {got_params}, protocol has {want_params}")
        if typing.get_type_hints(wanted) != typing.get_type_hints(got):
            problems.append(
                f"{name}: annotations {typing.get_type_hints(got)},"
                f" protocol has {typing.get_type_hints(wanted)}"
            )
    return problems


def test_the_protocol_has_the_methods_the_reconcile_loop_calls():
    assert protocol_methods(Backend) == ["apply", "close", "dump", "refresh"]


@pytest.mark.parametrize("backend", [MemoryBackend, NetlinkBackend])
def test_backend_matches_the_protocol(backend):
    assert mismatches(Backend, backend) == []


def test_a_drifted_backend_is_caught():
    class Drifted:
        async def dump(self) -> int:  # another return type
            return 0

        def refresh(self):  # not async
            pass

        async def apply(self, operations):  # renamed parameter
            return []

    problems = mismatches(Backend, Drifted)
    assert "close: missing" in problems
    assert "refresh: async in one, not the other" in problems
    assert any(line.startswith("apply: parameters") for line in problems)
    assert any(line.startswith("dump: annotations") for line in problems)


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed")
def test_mypy_passes_on_the_ipvs_package(tmp_path):
    # Errors only for pulsed/ipvs itself: modules it imports are read for
    # their types (follow-imports=silent), checked by `make lint` instead.
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--cache-dir",
            str(tmp_path / "mypy-cache"),
            "--follow-imports=silent",
            "pulsed/ipvs",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
