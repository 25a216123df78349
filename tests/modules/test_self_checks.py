"""The self-check commands: python -m modules, modules.<File>, models.<File>."""

from __future__ import annotations

import argparse
import importlib

import pytest
import torch
from torch import nn

from modules import __main__ as modules_main
from modules.equivalence import Case, add_check_args, check_case, run_cases


def test_python_m_modules_runs_every_component(capsys: pytest.CaptureFixture[str]) -> None:
    assert modules_main.main(["--samples", "4"]) == 0
    out = capsys.readouterr().out
    for name in ("Linear 784->250", "Conv2d 3->64", "MaxPool2d 2", "AdaptiveAvgPool2d 1"):
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
