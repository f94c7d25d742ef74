"""Shell helpers for the kernel tests."""

from __future__ import annotations

import subprocess


def run(*args: str, check: bool = True, input: str | None = None) -> str:
    """Run a command; its stdout. A failure shows the command and its stderr."""
    proc = subprocess.run(args, capture_output=True, text=True, input=input)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def ipvsadm(*args: str, check: bool = True) -> str:
    return run("ipvsadm", *args, check=check)


def saved_rules() -> list[str]:
    """`ipvsadm -Sn` as a sorted list of lines."""
    return sorted(line for line in ipvsadm("-Sn").splitlines() if line.strip())
