"""The moving average of the weights (utils.averaging, ``--ema-decay``): its formula, and the
training loop validating, keeping, testing and resuming it."""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.optim import SGD
from torch.utils.data import TensorDataset

from utils import Train_Test as tt
from utils.averaging import ema_decay_at, moving_average
from utils.job_data import split_loaders
from utils.tasks import Task, target


def test_moving_average_follows_the_ramped_decay() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)).double()
    averaged = moving_average(model, 0.9)
    expected = None
    for step in range(1, 31):
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn_like(p))
        model(torch.randn(4, 3, dtype=torch.float64))  # moves the running statistics
        averaged.update_parameters(model)
        current = {k: v.clone() for k, v in model.state_dict().items()}
        if expected is None:
            expected = current  # the first update copies
        else:
            d = ema_decay_at(0.9, step)
            expected = {k: v if not v.is_floating_point() else d * expected[k] + (1 - d) * v
                        for k, v in current.items()}
    state = averaged.module.state_dict()
    for key, value in expected.items():
        assert torch.allclose(state[key], value, rtol=0, atol=1e-12), key
    assert int(state["1.num_batches_tracked"]) == 30  # a counter is copied, not averaged
    assert ema_decay_at(0.9, 1) == pytest.approx(0.1) and ema_decay_at(0.9, 1000) == 0.9
    assert moving_average(model, 0.0) is None
    with pytest.raises(ValueError, match=r"decay must be in \[0, 1\)"):
        moving_average(model, 1.0)


def _loaders(args: argparse.Namespace, seed: int, distributed: bool):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(96, 4, generator=g)
    y = 2.0 * x + 0.3 * torch.randn(96, 4, generator=g)
    sets = [TensorDataset(x[i:i + 32], y[i:i + 32]) for i in (0, 32, 64)]
    return split_loaders(sets, args.batch_size, seed, distributed)


def _squared_error(output: torch.Tensor, batch) -> torch.Tensor:
    return ((output - target(batch)) ** 2).mean(1)


JOB = tt.JobConfig(
    script="Toy_Average_Train", title="toy linear map", epochs=4, batch_size=8, lr=0.2,
    optimizer=SGD, build_model=lambda args, seed, side: nn.Linear(4, 4), loaders=_loaders,
    sides=tt.SideFlag("--model", ("linear",), default="linear"),
    task=Task(loss=_squared_error, metrics=lambda v: {"mse": float(v["loss"].mean())},
              best_metric="mse", higher_is_better=False, test_metrics={"test_mse": "mse"}),
    seeds=(0,), description="Learn a linear map.")
RUN = "Toy_Average_Train_linear_seed0"


def _train(root: Path, *flags: str, job: tt.JobConfig = JOB) -> list[dict]:
    argv = ["--log-dir", str(root / "log"), "--checkpoint-dir", str(root / "ckpt"),
            "--device", "cpu", *flags]
    with redirect_stdout(io.StringIO()):
        assert tt.main(job, argv) == 0
    lines = (root / "log" / f"{RUN}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _mse(state: dict[str, torch.Tensor], split: int) -> float:
    model = nn.Linear(4, 4)
    model.load_state_dict(state)
    x, y = _loaders(argparse.Namespace(batch_size=8), 0, False)[split].dataset.tensors
    with torch.no_grad():
        return float(((model(x) - y) ** 2).mean())


def test_a_run_validates_keeps_and_tests_the_average(tmp_path: Path) -> None:
    records = _train(tmp_path / "a", "--ema-decay", "0.8")
    ckpt = torch.load(tmp_path / "a" / "ckpt" / f"{RUN}_last.pt", weights_only=False)
    averaged = {k.removeprefix("module."): v for k, v in ckpt["averaged"].items()
                if k != "n_averaged"}
    assert int(ckpt["averaged"]["n_averaged"]) == 4 * 4  # every optimizer step
    assert not torch.equal(averaged["weight"], ckpt["model"]["weight"])
    # Validation reads the average, not the weights themselves.
    assert records[3]["val_mse"] == pytest.approx(_mse(averaged, 1), rel=1e-6)
    assert records[3]["val_mse"] != pytest.approx(_mse(ckpt["model"], 1), rel=1e-3)
    best = tt.Checkpoints(tmp_path / "a" / "ckpt", RUN).load_best_model()
    assert records[-1]["test_mse"] == pytest.approx(_mse(best, 2), rel=1e-6)
    assert "EMA 0.8" in (tmp_path / "a" / "log" / f"{RUN}.txt").read_text().splitlines()[0]
    # Without the flag, nothing is averaged.
    _train(tmp_path / "b")
    assert torch.load(tmp_path / "b" / "ckpt" / f"{RUN}_last.pt",
                      weights_only=False)["averaged"] is None


def test_a_resumed_run_continues_its_average_exactly(tmp_path: Path) -> None:
    straight = _train(tmp_path / "a", "--ema-decay", "0.8")
    _train(tmp_path / "b", "--ema-decay", "0.8", "--epochs", "2")
    resumed = _train(tmp_path / "b", "--ema-decay", "0.8", "--resume")
    keys = ("epoch", "train_mse", "val_mse", "best_val_mse")
    assert [tuple(r[k] for k in keys) for r in resumed if not r.get("final")] == [
        tuple(r[k] for k in keys) for r in straight if not r.get("final")]
    assert resumed[-1]["test_mse"] == straight[-1]["test_mse"]
    with pytest.raises(SystemExit, match="--ema-decay"):
        _train(tmp_path / "b", "--ema-decay", "0.5", "--epochs", "5", "--resume")
    with pytest.raises(SystemExit):
        tt.build_parser(JOB).parse_args(["--ema-decay", "1"])


def test_a_per_side_default_reaches_each_run_and_the_help() -> None:
    job = dataclasses.replace(JOB, ema_decay={"linear": 0.8})
    parser = tt.build_parser(job)
    assert "default per side: linear 0.8" in " ".join(parser.format_help().split())
    args = parser.parse_args([])
    assert args.ema_decay is None and job.with_side_defaults(args, "linear").ema_decay == 0.8
    given = parser.parse_args(["--ema-decay", "0.5"])
    assert job.with_side_defaults(given, "linear").ema_decay == 0.5
    with pytest.raises(ValueError, match="ema_decay has no entry"):
        dataclasses.replace(JOB, ema_decay={"other": 0.8})


def test_a_per_side_default_trains_like_the_flag(tmp_path: Path) -> None:
    flagged = _train(tmp_path / "a", "--ema-decay", "0.8")
    by_default = _train(tmp_path / "b", job=dataclasses.replace(JOB, ema_decay={"linear": 0.8}))
    assert [r.get("val_mse") for r in by_default] == [r.get("val_mse") for r in flagged]
    assert by_default[-1]["test_mse"] == flagged[-1]["test_mse"]
    plain = _train(tmp_path / "c")
    assert plain[-1]["test_mse"] != flagged[-1]["test_mse"]
