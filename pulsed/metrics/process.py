"""The standard ``process_*`` metrics of this process, read from /proc.

The same names, types and units as every Prometheus client library exports
(CPU seconds, resident and virtual memory, open and maximum descriptors,
start time), so dashboards written for them work unchanged.

Written here rather than taken from prometheus_client's ProcessCollector:
importing that collector loads the whole client (its HTTP, WSGI and ASGI
exposition, gzip, mmap), 1 MiB of resident memory for six numbers, against
a budget of 64 MiB at 10,000 real servers.
"""

from __future__ import annotations

import os
import resource

from pulsed.metrics.text import head

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = resource.getpagesize()


def _boot_time() -> float | None:
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


_BOOT = _boot_time()


def _stat_fields() -> list[bytes] | None:
    """/proc/self/stat from field 3 (state) on: the command name may hold spaces
    and parentheses, so the split starts after its last ')'."""
    try:
        with open("/proc/self/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()
    except OSError:
        return None


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def _sample(name: str, kind: str, help_text: str, value: float) -> str:
    return head(name, kind, help_text) + f"{name} {value!r}\n"


def process_metrics() -> str:
    """The exposition text of the process metrics; a figure /proc cannot give is left out."""
    figures: list[tuple[str, str, str, float]] = []
    fields = _stat_fields()
    if fields is not None and len(fields) > 21:
        # proc(5) numbers the fields from 1 (14 utime, 15 stime, 22 starttime,
        # 23 vsize, 24 rss in pages); this list starts at field 3.
        cpu = (int(fields[11]) + int(fields[12])) / _TICKS
        figures += [
            ("process_cpu_seconds_total", "counter",
             "Total user and system CPU time spent in seconds.", cpu),
            ("process_virtual_memory_bytes", "gauge",
             "Virtual memory size in bytes.", float(fields[20])),
            ("process_resident_memory_bytes", "gauge",
             "Resident memory size in bytes.", float(int(fields[21]) * _PAGE)),
        ]  # fmt: skip
        if _BOOT is not None:
            start = _BOOT + int(fields[19]) / _TICKS
            help_text = "Start time of the process since unix epoch in seconds."
            figures.append(("process_start_time_seconds", "gauge", help_text, start))
    fds = _open_fds()
    if fds is not None:
        figures.append(
            ("process_open_fds", "gauge", "Number of open file descriptors.", float(fds))
        )
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY:
        figures.append(("process_max_fds", "gauge",
                        "Maximum number of open file descriptors.", float(soft)))  # fmt: skip
    return "".join(_sample(*figure) for figure in figures)
