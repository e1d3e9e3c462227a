"""The import graph of the package, read with ``ast`` from the source tree (every ``import``, at module level
or inside a function): dependencies run one way (DESIGN 2), and there are no cycles.

    service
      ->  workers.tasks (+ workers.celery_app, workers.runtime, workers.settings)
      ->  workers.audit
      ->  workers.engine
    db  (beside: used by service and the tasks layer)

The error hierarchy ``workers.engine.errors`` and the atomic file writes ``workers.engine.files`` (both torch-free,
no project imports of their own) are the two modules every layer,
``db`` included, may import."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "workers", "db")
SHARED = {"workers.engine.errors", "workers.engine.files"}

# layer -> the layers it may import (besides itself and SHARED)
LAYERS = {
    "service": {"tasks", "audit", "engine", "db"},
    "tasks": {"audit", "engine", "db"},
    "audit": {"engine"},
    "engine": set(),
    "db": set(),
}


def layer_of(module: str) -> str:
    if module.startswith("service"):
        return "service"
    if module.startswith("db"):
        return "db"
    if module.startswith(("workers.audit",)):
        return "audit"
    if module.startswith(("workers.engine",)):
        return "engine"
    if module.startswith(("workers.tasks", "workers.celery_app", "workers.runtime", "workers.settings")) \
            or module == "workers":
        return "tasks"
    raise AssertionError(f"{module} is in no layer: add it to layer_of")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py") if "migrations" not in p.parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports (``from a.b import c`` counts as ``a.b.c`` when that is a module)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != me:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = source_files()
    known = {module_name(p) for p in files}
    return {module_name(p): imports_of(p, known) for p in files}


def test_import_graph_sees_the_known_edges() -> None:
    graph = import_graph()
    assert "workers.engine.optimise" in graph["workers.engine.visualize"]
    assert "workers.audit.flags" in graph["workers.audit.options"]
    assert "db.models" in graph["workers.tasks.stages"]


def test_every_import_runs_down_the_layers() -> None:
    wrong = [f"{src} ({layer_of(src)}) imports {dst} ({layer_of(dst)})"
             for src, targets in import_graph().items() for dst in sorted(targets)
             if dst not in SHARED and layer_of(dst) != layer_of(src) and layer_of(dst) not in LAYERS[layer_of(src)]]
    assert not wrong, "\n".join(wrong)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_there_are_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


@pytest.mark.parametrize("graph, cyclic", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
    ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, False),
])
def test_cycle_finder_finds_cycles_and_only_cycles(graph: dict[str, set[str]], cyclic: bool) -> None:
    assert (find_cycle(graph) is not None) is cyclic


def test_layer_check_catches_an_upward_import(tmp_path: Path) -> None:
    bad = REPO / "workers" / "engine" / "_layer_probe_tmp.py"
    bad.write_text("from workers.audit import flags\n")
    try:
        graph = import_graph()
        assert "workers.audit.flags" in graph["workers.engine._layer_probe_tmp"]
        assert layer_of("workers.audit.flags") not in LAYERS[layer_of("workers.engine._layer_probe_tmp")]
    finally:
        bad.unlink()
