"""``--compile auto|on|off``: which runs get compiled layers, on which modules, and what
the run header says."""

from __future__ import annotations

import argparse

import pytest
from torch import nn

from neural_graphs.encoders import NGGNN, NGTransformer
from utils.compiled import COMPILE_MIN_STEPS, compile_argument, set_compiled_layers


class _Wrapper(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = NGTransformer(2, node_dim=8, edge_dim=4, num_layers=1, heads=2,
                                     attn_dim=8)
        self.head = nn.Linear(2, 1)


@pytest.mark.parametrize("choice, steps, expected", [
    ("auto", COMPILE_MIN_STEPS - 1, False), ("auto", COMPILE_MIN_STEPS, True),
    ("on", 1, True), ("off", 10 ** 6, False)])
def test_choice_and_run_length_decide(choice: str, steps: int, expected: bool) -> None:
    model = _Wrapper()
    said = set_compiled_layers(model, choice, steps)
    assert model.encoder.compile_layers is expected
    assert said == f"compiled layers {'on' if expected else 'off'}"


def test_models_without_compiled_layers_are_left_alone_and_bad_choices_refused() -> None:
    model = nn.Sequential(nn.Linear(2, 2), NGGNN(1, hidden=8, num_layers=1))
    assert set_compiled_layers(model, "on", 10 ** 6) == ""
    with pytest.raises(ValueError, match="compile must be one of"):
        set_compiled_layers(model, "always", 1)


def test_flag_defaults_to_auto() -> None:
    parser = argparse.ArgumentParser()
    compile_argument(parser)
    assert parser.parse_args([]).compile == "auto"
    assert parser.parse_args(["--compile", "off"]).compile == "off"
    with pytest.raises(SystemExit):
        parser.parse_args(["--compile", "yes"])


def test_grad_checkpointing_reaches_every_module_that_offers_it() -> None:
    from neural_graphs.encoders import DNGEncoder

    model = nn.ModuleDict({"ngt": _Wrapper(), "dng": DNGEncoder(1, hidden=8, rff_dim=4)})
    said = set_compiled_layers(model, "off", 1, grad_checkpointing=True)
    assert said == "compiled layers off | gradient checkpointing"
    assert model["ngt"].encoder.grad_checkpointing and model["dng"].grad_checkpointing
    assert set_compiled_layers(model, "off", 1) == "compiled layers off"
    assert not model["ngt"].encoder.grad_checkpointing
    assert not model["dng"].grad_checkpointing
    dng_only = DNGEncoder(1, hidden=8, rff_dim=4)
    assert set_compiled_layers(dng_only, "auto", 1, grad_checkpointing=True) == \
        "gradient checkpointing"
    assert set_compiled_layers(nn.Linear(2, 1), "on", 1, grad_checkpointing=True) == ""
    parser = argparse.ArgumentParser()
    compile_argument(parser)
    assert parser.parse_args([]).grad_checkpointing is False
    assert parser.parse_args(["--grad-checkpointing"]).grad_checkpointing is True


def test_grad_checkpointing_help_names_ngt_activation_budget() -> None:
    parser = argparse.ArgumentParser()
    compile_argument(parser)
    text = " ".join(parser.format_help().split())
    assert f"{NGTransformer.ACTIVATION_BUDGET >> 30} GiB activation budget" in text
