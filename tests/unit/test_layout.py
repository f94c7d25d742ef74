"""The package's layout: imports read top-down (no module imports one that imports it back)."""

from __future__ import annotations

import ast
from pathlib import Path

import pulsed

ROOT = Path(pulsed.__file__).parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the pulsed modules it imports anywhere in its text (functions
    and TYPE_CHECKING blocks included: a deferred import is still a dependency)."""
    modules = _modules()

    def owner(dotted: str) -> str:
        while dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pulsed"):
                assert node.module is not None
                for alias in node.names:
                    deps.add(owner(f"{node.module}.{alias.name}"))
            elif isinstance(node, ast.Import):
                deps.update(owner(a.name) for a in node.names if a.name.startswith("pulsed"))
        deps.discard(name)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_one_that_imports_it_back():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_readers_do_not_reach_into_the_daemon():
    # The API, /status and /metrics read a Snapshot (pulsed.readmodel), never the daemon.
    graph = import_graph()
    for reader in ("pulsed.api", "pulsed.status_view", "pulsed.metrics.render"):
        assert "pulsed.daemon" not in graph[reader], reader


def test_benchmarks_and_lab_do_not_import_test_support():
    for folder in ("benchmarks", "lab"):
        for path in (ROOT.parent / folder).rglob("*.py"):
            assert "tests.support" not in path.read_text(), path
