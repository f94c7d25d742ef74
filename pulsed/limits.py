"""The descriptor budget: how many file descriptors the probes need, and what is
left for the API.

A flood of API connections must never take the descriptors the probes need:
when it did, every probe failed with EMFILE and the servers were blamed
(issue 12). So the probes' share is reserved first, from the number of real
servers, and the API gets at most what is left (``api_connection_budget``);
the API server refuses connections beyond that. At start-up the soft
RLIMIT_NOFILE is raised to the hard limit (``raise_nofile_limit``), which
under systemd is the unit's ``LimitNOFILE`` (docs/operations.md, "Local
faults and the descriptor budget").

The sizes below are pure functions, tested on their own; only
``raise_nofile_limit`` touches the process.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

# The daemon's own descriptors, whatever the config: stdio and logs, the
# asyncio self-pipe and epoll sets (loop, probe engine), netlink sockets
# (IPVS, addresses), VRRP and GARP sockets, the API's listening sockets, state
# and config files being read or written, a subprocess being spawned (its
# pipes and error pipe exist for a moment), with headroom.
BASE_RESERVE = 64
# Descriptors one probe holds while in flight: one socket for tcp, http and
# https; an exec check holds the read end of its output pipe, plus a child
# watcher's pidfd on Pythons that use one.
FDS_PER_PROBE = 2
# pulsed.checks.monitor.HealthMonitor's default max_in_flight: no more probes
# than this run at once, so no more are reserved for.
DEFAULT_MAX_IN_FLIGHT = 2000
# Fewer API connections than this leave the API hardly usable: worth a warning.
MIN_API_CONNECTIONS = 16
# A soft limit above this buys nothing and some kernels refuse it (fs.nr_open).
SOFT_LIMIT_CAP = 1 << 20


def probe_reserve(n_servers: int, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> int:
    """Descriptors kept for the daemon itself and its probes (every real server
    may have one probe in flight, up to ``max_in_flight`` at once)."""
    in_flight = max(0, min(n_servers, max_in_flight))
    return BASE_RESERVE + FDS_PER_PROBE * in_flight


def api_connection_budget(
    nofile_soft: int, n_servers: int, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
) -> int:
    """How many API connections may be open at once without eating into the
    probes' descriptors (0 when there is nothing left; the caller caps it
    further with its own setting). An unlimited soft limit (RLIM_INFINITY, -1;
    Linux never grants it for descriptors) counts as SOFT_LIMIT_CAP."""
    if nofile_soft == resource.RLIM_INFINITY or nofile_soft < 0:
        nofile_soft = SOFT_LIMIT_CAP
    return max(0, nofile_soft - probe_reserve(n_servers, max_in_flight))


def nofile_needed(
    n_servers: int, api_connections: int, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
) -> int:
    """The RLIMIT_NOFILE (LimitNOFILE=) that fits the probes and ``api_connections``."""
    return probe_reserve(n_servers, max_in_flight) + max(0, api_connections)


def wanted_soft_limit(soft: int, hard: int, cap: int = SOFT_LIMIT_CAP) -> int:
    """The soft limit to ask for: the hard limit (at most ``cap``), never lower
    than the current soft limit."""
    ceiling = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
    if soft == resource.RLIM_INFINITY:
        return soft
    return max(soft, ceiling)


@dataclass(frozen=True, slots=True)
class NofileLimit:
    soft: int
    hard: int
    raised_from: int | None = None  # the soft limit before, when it was raised
    problem: str | None = None  # why it could not be raised, one line


def raise_nofile_limit(cap: int = SOFT_LIMIT_CAP) -> NofileLimit:
    """Raise the soft RLIMIT_NOFILE towards the hard limit. Never raises: a
    sandbox may forbid setrlimit (systemd's SystemCallFilter=~@resources
    answers EPERM); then the limit stays, and ``problem`` says why."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = wanted_soft_limit(soft, hard, cap)
    if wanted == soft:
        return NofileLimit(soft, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (OSError, ValueError) as exc:
        text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return NofileLimit(soft, hard, problem=f"cannot raise RLIMIT_NOFILE to {wanted}: {text}")
    return NofileLimit(wanted, hard, raised_from=soft)


def budget_problem(
    nofile_soft: int, n_servers: int, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
) -> str | None:
    """One line when the descriptor limit leaves the API fewer than
    MIN_API_CONNECTIONS connections after the probes' reserve, else None."""
    budget = api_connection_budget(nofile_soft, n_servers, max_in_flight)
    if budget >= MIN_API_CONNECTIONS:
        return None
    needed = nofile_needed(n_servers, MIN_API_CONNECTIONS, max_in_flight)
    return (
        f"descriptor limit {nofile_soft} leaves {budget} API connections after reserving "
        f"{probe_reserve(n_servers, max_in_flight)} for {n_servers} real servers' probes; "
        f"raise LimitNOFILE to at least {needed}"
    )
