"""The house: every floor imports only from the floors below it, no file imports another
in a circle, the top-level scripts import no script, and no source file is over 600 lines.
Imports are read file by file from the source (module level and inside functions alike)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: the packages from the ground floor up; the top-level scripts stand above them all
FLOORS = ("utils", "modules", "models", "neural_graphs", "jobs", "benchmarks")
MAX_LINES = 600


def source_files() -> list[Path]:
    skip = {"tests", "data", "log", "checkpoint", "runs"}
    return sorted(p for p in REPO.rglob("*.py")
                  if not ({*p.relative_to(REPO).parts} & skip)
                  and not any(part.startswith(".") for part in p.relative_to(REPO).parts))


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports (``from a.b import c`` counts as ``a.b.c``
    where that is a module, else ``a.b``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known
                     else node.module for a in node.names]
        found.update(n for n in names if n in known)
    return found - {module_name(path)}


def floor_of(module: str) -> int:
    top = module.split(".")[0]
    return FLOORS.index(top) if top in FLOORS else len(FLOORS)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = source_files()
    known = {module_name(p) for p in files}
    return {module_name(p): project_imports(p, known) for p in files}


def test_the_house_is_read() -> None:
    names = {module_name(p) for p in source_files()}
    assert {"utils.Train_Test", "modules.conv", "models.common", "neural_graphs.graph",
            "jobs.twins", "benchmarks.common", "MNIST_INR_Fit"} <= names


def test_no_import_runs_up_a_floor(graph: dict[str, set[str]]) -> None:
    upward = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                    if floor_of(b) > floor_of(a))
    assert not upward, "imports from a lower floor to a higher one:\n" + "\n".join(upward)


def test_scripts_import_no_script(graph: dict[str, set[str]]) -> None:
    scripts = {m for m in graph if "." not in m and m not in FLOORS}
    crossing = sorted(f"{a} -> {b}" for a in scripts for b in graph[a] if b in scripts)
    assert not crossing, "\n".join(crossing)


def test_no_import_circle(graph: dict[str, set[str]]) -> None:
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        if state.get(node) == 1:
            raise AssertionError("import circle: " + " -> ".join([*trail, node]))
        if state.get(node) == 2:
            return
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            # A package's own __init__ importing its children is not a circle back.
            if not nxt.startswith(node + "."):
                visit(nxt, [*trail, node])
        state[node] = 2

    for node in sorted(graph):
        visit(node, [])


def test_no_source_file_over_600_lines() -> None:
    long = {str(p.relative_to(REPO)): n for p in source_files()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long
