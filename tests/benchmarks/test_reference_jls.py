"""``python -m benchmarks.reference.jls`` without the official code (the project's
environment cannot import it): its command line, the refusal naming what is missing, and
our side's training steps."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.reference import jls
from neural_graphs.inr import render


@pytest.fixture
def no_official_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing of the official code imported or importable in this test."""
    for name in ("dng_models", "dng_graph_utils", "dng_siren_utils"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(sys, "path", [p for p in sys.path
                                      if not (Path(p or ".") / "dng_models.py").is_file()])


def test_help_and_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    args = jls.build_parser().parse_args([])
    assert (args.models, args.batch_size, args.warmup, args.rounds, args.reference_dir) == (
        ["jls", "inr2inr"], 64, 1, 5, None)
    with pytest.raises(SystemExit) as info:
        jls.main(["--help"])
    assert info.value.code == 0
    assert "python -m benchmarks.reference.jls" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        jls.main(["--rounds", "0"])
    assert info.value.code == 2


@pytest.mark.usefixtures("no_official_code")
def test_a_folder_without_the_official_code_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        jls.main(["--reference-dir", str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'dng_models.py'} not found" in err
    assert "dddiowww/DNG checkout" in err


@pytest.mark.usefixtures("no_official_code")
def test_no_folder_and_nothing_importable_is_refused(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        jls.main(["--models", "jls"])
    assert info.value.code == 2
    assert "dng_models (dddiowww/DNG) is not importable" in capsys.readouterr().err


@pytest.mark.parametrize("model", list(jls.MODELS))
def test_our_training_step_learns(model: str) -> None:
    params = jls.sirens(2, seed=0)
    net, step = jls.our_step(model, params, render(params).clamp(0, 1))
    before = [p.detach().clone() for p in net.parameters()]
    assert math.isfinite(step())
    assert any(not torch.equal(a, p) for a, p in zip(before, net.parameters()))
