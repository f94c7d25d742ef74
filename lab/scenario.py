"""The lab's scenario: its steps in order on one stand, and what the lab promises.

scripts/lab runs it; the stand (lab/stand.py) is what runs, the steps
(lab/steps.py) are what is done to it and measured.
"""

from __future__ import annotations

from collections.abc import Iterator

from lab import steps
from lab.stand import Stand
from lab.steps import StepResult


def run(stand: Stand, bench: bool = False) -> Iterator[StepResult]:
    """Each step's result as it ends (a failing step raises LabError after the earlier ones)."""
    yield steps.balancing(stand)
    if bench:
        yield steps.throughput(stand)
    yield steps.failure(stand)
    yield steps.recovery(stand)
    yield steps.drain(stand)
    yield steps.reload(stand)
    yield steps.failover(stand)


def verdicts(results: list[StepResult]) -> list[str]:
    """What the lab promises, checked against what it measured."""
    problems = []
    for r in results:
        f = r.figures
        if "expected_share" in f:
            got = f.get("share") or f.get("share_after") or {}
            for name, want in f["expected_share"].items():
                if abs(got.get(name, 0) - want) > 0.05:
                    problems.append(
                        f"{r.name}: {name} got {100 * got.get(name, 0):.0f}% of requests,"
                        f" weights say {100 * want:.0f}%"
                    )
        if f.get("skipped"):
            continue
        if r.name == "failure" and f["failed_after_detection"]:
            problems.append(f"failure: {f['failed_after_detection']} failed after detection")
        if r.name in ("drain", "reload") and r.summary.failed:
            problems.append(f"{r.name}: {r.summary.failed} request(s) failed")
        if r.name == "drain" and f["to_drained"]:
            problems.append(f"drain: {f['to_drained']} request(s) reached the drained server")
    return problems
