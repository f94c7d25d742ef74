"""How the lab tells the user what happens: headings, lines, live progress, figures as text."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Mapping

from lab.loadgen import LoadThread, Outcome, Summary, summarize


class Reporter:
    """Where the steps tell the user what happens. The default prints plain lines."""

    def __init__(self, stream=None, live: bool = False) -> None:
        self.stream = stream or sys.stdout
        self.live = live  # a terminal: progress lines overwrite each other
        self._pending = False
        self.lock = threading.RLock()  # the load tickers print from their own threads

    def _write(self, text: str) -> None:
        with self.lock:
            self.stream.write(text)
            self.stream.flush()

    def _end_progress(self) -> None:
        if self._pending:
            self._write("\n")
            self._pending = False

    def heading(self, text: str) -> None:
        self._end_progress()
        self._write(f"\n== {text}\n")

    def info(self, text: str) -> None:
        self._end_progress()
        self._write(f"   {text}\n")

    def progress(self, text: str) -> None:
        if self.live:
            self._write(f"\r   {text}\x1b[K")
            self._pending = True
        else:
            self._write(f"   {text}\n")

    def result(self, text: str) -> None:
        self._end_progress()
        self._write(f"   => {text}\n")


class QuietReporter(Reporter):
    """Keeps every line instead of printing it (the tests read them only on failure)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def _write(self, text: str) -> None:
        self.lines.append(text)


class LoadTicker:
    """Prints, every ``tick`` seconds, what a running load saw since the previous tick."""

    def __init__(
        self,
        thread: LoadThread,
        say: Reporter,
        show: Callable[[Summary], str],
        tick: float = 1.0,
    ) -> None:
        self.load, self.say, self.show, self.tick = thread, say, show, tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ticker", daemon=True)

    def start(self) -> LoadTicker:
        self._thread.start()
        return self

    def _run(self) -> None:
        last = time.monotonic()
        while True:
            stopped = self._stop.wait(self.tick)
            now = time.monotonic()
            # The final, partial tick is shown only if it covers a useful stretch.
            if not stopped or now - last > 0.3:
                self.say.progress(self.show(summarize(list(self.load.outcomes), last, now)))
            last = now
            if stopped:
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def spread_text(s: Summary, server_names: list[str]) -> str:
    """Requests per real server, with their share, and the failures: one progress line."""
    parts = [f"{s.total:5d} req"]
    for name in sorted(server_names):
        n = s.by_server.get(name, 0)
        parts.append(f"{name} {n:5d} ({100 * n / s.ok if s.ok else 0:3.0f}%)")
    parts.append(f"failed {s.failed}")
    if s.errors:
        parts.append(str(dict(s.errors)))
    return "  ".join(parts)


def weights_text(weights: Mapping[str, int], servers: Mapping[str, str]) -> str:
    """An IPVS table's weights by real server name (``servers``: name -> address)."""
    by_addr = {a: n for n, a in servers.items()}
    return ", ".join(f"{by_addr.get(a, a)} weight {w}" for a, w in sorted(weights.items()))


class RunningLoads:
    """A stand's load generators, each with its live ticker unless quiet."""

    def __init__(self, say: Reporter, show: Callable[[Summary], str]) -> None:
        self.say, self.show = say, show
        self.loads: list[LoadThread] = []
        self._tickers: dict[LoadThread, LoadTicker] = {}

    def start(self, thread: LoadThread, quiet: bool = False) -> LoadThread:
        self.loads.append(thread.start())
        if not quiet:
            self._tickers[thread] = LoadTicker(thread, self.say, self.show).start()
        return thread

    def stop(self, thread: LoadThread) -> list[Outcome]:
        ticker = self._tickers.pop(thread, None)
        if ticker is not None:
            ticker.stop()
        outcomes = thread.stop()
        with contextlib.suppress(ValueError):
            self.loads.remove(thread)
        return outcomes

    def stop_all(self) -> None:
        for ticker in self._tickers.values():
            ticker.stop()
        self._tickers.clear()
        for load in self.loads:
            with contextlib.suppress(Exception):
                load.stop()
        self.loads.clear()
