"""The self-check commands: python -m modules, modules.<File>, models.<File>."""

from __future__ import annotations

import argparse
import ast
import importlib
import runpy
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from modules import LinearAsGNN, MLPAsGNN, MultiHeadSelfAttentionAsGNN, NativeTwin, checks
from modules import __main__ as modules_main
from modules.base import TWIN_REGISTRY
from modules.convert import TWINS
from modules.equivalence import Case, add_check_args, check_case, run_cases
from modules.TransformerAsGNN import TransformerEncoderLayerAsGNN

ROOT = Path(__file__).resolve().parents[2]


def test_python_m_modules_runs_every_component(capsys: pytest.CaptureFixture[str]) -> None:
    assert modules_main.main(["--samples", "4"]) == 0
    out = capsys.readouterr().out
    for name in ("Linear 784->250", "Conv2d 3->64", "MaxPool2d 2", "AdaptiveAvgPool2d 1",
                 "MHA cross-attn", "Transformer 2+2 layers"):
        assert name in out
    assert "configurations within MAE < 1e-06" in out


def test_run_cases_fails_on_a_wrong_twin(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The checker must be able to fail: a twin with a perturbed weight is reported."""
    import modules.equivalence as equivalence

    correct_twin = equivalence.twin_of

    def broken_twin(native: nn.Module) -> nn.Module:
        twin = correct_twin(native)
        with torch.no_grad():
            twin.weight.add_(1e-3)
        return twin

    monkeypatch.setattr(equivalence, "twin_of", broken_twin)
    args = add_check_args(argparse.ArgumentParser()).parse_args(["--samples", "8"])
    assert run_cases([Case("Linear 8->4", lambda: nn.Linear(8, 4), (8,))], args) == 1
    assert "NO" in capsys.readouterr().out


def test_check_case_float64_is_tight() -> None:
    errors, _ = check_case(Case("conv", lambda: nn.Conv2d(3, 4, 3, padding=1), (3, 6, 6)),
                           64, torch.float64, torch.device("cpu"), 0)
    assert errors.max <= 1e-12 and errors.count == 64 * 4 * 36


@pytest.mark.parametrize("name", ["MNIST_MLP", "CWRU_1DCNN"])
def test_model_self_check(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module(f"models.{name}")
    from models.common import model_main

    standard = getattr(module, "MLPMNIST" if name == "MNIST_MLP" else "CNN1DCWRU")
    twin = getattr(module, "MLPAsGNNMNIST" if name == "MNIST_MLP" else "CNN1DCWRUAsGNN")
    assert model_main(name, standard, twin, module.INPUT_SHAPE, 10_000, 8,
                      ["--samples", "16"]) == 0
    out = capsys.readouterr().out
    assert "parameters" in out and "1 of 1 configurations" in out


def test_python_m_component_file_runs_its_checks_without_runpy_warning(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`import modules` used to import every component, so runpy warned that
    modules.MLPAsGNN was in sys.modules before running it as __main__ (MLPAsGNN is also
    a class name: the package must keep both meanings apart). Runs what
    `python -m modules.MLPAsGNN --samples 1` runs, on a freshly imported package."""
    package = [m for m in sys.modules if m == "modules" or m.startswith("modules.")]
    saved = {m: sys.modules.pop(m) for m in package}
    monkeypatch.setattr(sys, "argv", ["modules.MLPAsGNN", "--samples", "1"])
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(SystemExit) as exit_:
                runpy.run_module("modules.MLPAsGNN", run_name="__main__", alter_sys=True)
    finally:
        for m in [m for m in sys.modules if m == "modules" or m.startswith("modules.")]:
            del sys.modules[m]
        sys.modules.update(saved)
    assert exit_.value.code == 0
    assert not [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    out = capsys.readouterr().out
    assert "MLP 784-250-100-10 relu" in out
    assert f"{len(checks.linear_cases())} of {len(checks.linear_cases())} configurations" in out


def _imports_of(path: Path) -> tuple[set[str], list[str]]:
    """Package modules imported at module level, and those imported inside functions."""
    tree = ast.parse(path.read_text())
    top, nested = set(), []

    def names(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        if isinstance(node, ast.ImportFrom) and node.module:
            return [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        return []

    def local(found: list[str]) -> list[str]:
        return [n for n in found if n.split(".")[0] == "modules"
                and ((ROOT / Path(*n.split("."))).with_suffix(".py").exists()
                     or (ROOT / Path(*n.split(".")) / "__init__.py").exists())]

    for node in tree.body:
        is_main = (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                   and getattr(node.test.left, "id", "") == "__name__")
        for inner in ast.walk(node):
            found = local(names(inner))
            if inner is node and not is_main:
                top.update(found)
            elif found and not is_main:
                nested += found
    return top, nested


def test_package_imports_are_acyclic_and_not_deferred() -> None:
    """convert -> layers -> equivalence -> convert used to be a circle, broken by imports
    inside functions; now every import is at module level and the graph has no cycle
    (the entry packages modules/<File>/ and their __main__ included)."""
    files = sorted((ROOT / "modules").rglob("*.py"))
    graph = {}
    for path in files:
        top, nested = _imports_of(path)
        assert not nested, f"{path.name} imports {nested} inside a function"
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph[name] = top - {name}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        if state.get(node) == 1:
            raise AssertionError("import cycle: " + " -> ".join([*trail, node]))
        if state.get(node) == 2:
            return
        state[node] = 1
        for nxt in graph.get(node, ()):
            visit(nxt, [*trail, node])
        state[node] = 2

    for node in graph:
        visit(node, [])
    assert "modules.convert" in graph["modules.equivalence"]


def test_registry_is_filled_by_the_twin_classes() -> None:
    """TWINS used to be a hand-written table; now a twin class registers itself."""
    for native, twin in TWINS.items():
        assert twin.native_type is native and issubclass(twin, NativeTwin)
    assert len(TWINS) == 16

    class Fancy(nn.Linear):
        pass

    class FancyAsGNN(NativeTwin, nn.Module):
        native_type = Fancy

    try:
        assert TWINS[Fancy] is FancyAsGNN
        with pytest.raises(TypeError, match="already has the twin"):
            type("OtherFancyAsGNN", (NativeTwin, nn.Module), {"native_type": Fancy})
    finally:
        TWIN_REGISTRY.pop(Fancy)
    assert Fancy not in TWINS and TWINS[nn.Linear] is LinearAsGNN


def test_every_twin_documents_graph_formula_args_and_shapes() -> None:
    for twin in [*TWINS.values(), MultiHeadSelfAttentionAsGNN, MLPAsGNN]:
        doc = twin.__doc__ or ""
        for part in ("win of" if twin is not MLPAsGNN else "LinearAsGNN", ".. math::",
                     "Args:", "Shapes:"):
            assert part in doc, f"{twin.__name__} docstring lacks {part!r}"


def test_moved_names_stay_importable() -> None:
    import modules
    import modules.MLPAsGNN

    assert modules.TransformerEncoderLayerAsGNN is TransformerEncoderLayerAsGNN
    assert modules.MLPAsGNN is MLPAsGNN  # the class, not the submodule of the same name
    assert modules.MLPAsGNN is not sys.modules["modules.MLPAsGNN"]
