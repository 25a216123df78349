"""The shared pieces of the weight-space jobs: the encoder factory, flag rewriting, and
one loop run per encoder."""

from __future__ import annotations

import argparse

import pytest
import torch
from torch_geometric.data import Batch

from neural_graphs import to_neural_graph
from neural_graphs.encoders import NGGNN, DNGEncoder, FlatMLP, NGTransformer, StatNN
from neural_graphs.encoders.build import ENCODER_NAMES, build_encoder
from utils.encoder_jobs import (
    encoder_side,
    materialize,
    recipe_optimizer,
    replace_flag,
    train_each_side,
)
from utils.optim import WarmupClipAdamW
from utils.Train_Test import SideUnavailable


def _batch() -> Batch:
    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
            for _ in range(3)]
    return Batch.from_data_list([to_neural_graph(n) for n in nets])


@pytest.mark.parametrize("name,cls", [("flatmlp", FlatMLP), ("statnn", StatNN),
                                      ("ngnn", NGGNN), ("ngt", NGTransformer),
                                      ("dng", DNGEncoder)])
def test_build_encoder_gives_the_named_class_and_output_size(name, cls):
    encoder = build_encoder(name, 5, hidden=8, layers=2)
    assert type(encoder) is cls
    assert materialize(encoder, _batch())(_batch()).shape == (3, 5)


def test_build_encoder_passes_fourier_sizes_and_probes():
    for name in ("ngnn", "ngt", "dng"):
        encoder = build_encoder(name, 1, hidden=8, layers=1, probes=4, rff_dim=6,
                                rff_sigma=2.0)
        fourier = [m for m in encoder.modules() if type(m).__name__ == "FourierFeatures"]
        assert fourier and all(m.num_frequencies == 6 and m.sigma == 2.0 for m in fourier)
        assert encoder.embed.probes is not None
    default = build_encoder("ngt", 1, hidden=8, layers=1)  # NG-T's own default sigma: 1
    assert {m.sigma for m in default.modules() if type(m).__name__ == "FourierFeatures"} \
        == {1.0}
    assert default.embed.probes is None


def test_build_encoder_rejects_unknown_names_and_probes_of_baselines():
    with pytest.raises(ValueError, match="unknown encoder 'gcn'"):
        build_encoder("gcn", 1, hidden=8, layers=1)
    with pytest.raises(ValueError, match="statnn encoder has no probe features"):
        build_encoder("statnn", 1, hidden=8, layers=1, probes=4)
    assert set(ENCODER_NAMES) == {"flatmlp", "statnn", "nfn", "ngnn", "ngt", "dng"}


def test_encoder_side_turns_a_missing_package_into_side_unavailable(monkeypatch):
    import neural_graphs.encoders.build as build

    def missing(*args, **kwargs):
        raise ImportError("No module named 'nfn'")

    monkeypatch.setattr(build, "NFN", missing)
    with pytest.raises(SideUnavailable, match="nfn encoder needs a missing package"):
        encoder_side("nfn", 1, hidden=8, layers=1)


def test_replace_flag_drops_every_spelling_and_appends_the_value():
    argv = ["--encoder", "ngnn", "--seeds", "0", "--encoder=dng", "--lr", "0.1"]
    assert replace_flag(argv, "--encoder", "ngt") == ["--seeds", "0", "--lr", "0.1",
                                                      "--encoder", "ngt"]
    assert replace_flag([], "--epochs", "3") == ["--epochs", "3"]


def test_train_each_side_runs_each_side_with_its_epochs_and_keeps_the_first_failure(
        monkeypatch):
    import utils.encoder_jobs as jobs

    seen = []

    def fake_main(job, argv):
        seen.append((job, argv))
        return {"a": 0, "b": 3, "c": 4}[job]

    monkeypatch.setattr(jobs, "train_main", fake_main)
    status = train_each_side(["--encoder", "all", "--seeds", "1"], ["a", "b", "c"],
                             "--encoder", lambda side: side, lambda side: len(side) + 1)
    assert status == 3
    assert seen[0] == ("a", ["--seeds", "1", "--encoder", "a", "--epochs", "2"])
    assert [s[0] for s in seen] == ["a", "b", "c"]
    seen.clear()
    train_each_side(["--epochs", "7"], ["a"], "--encoder", lambda side: side, None)
    assert seen == [("a", ["--epochs", "7", "--encoder", "a"])]


def test_recipe_optimizer_builds_warmup_clip_adamw_and_rejects_negative_flags():
    args = argparse.Namespace(weight_decay=1e-3, warmup_steps=5, max_grad_norm=0.0)
    optimizer = recipe_optimizer(args)([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    assert isinstance(optimizer, WarmupClipAdamW)
    assert optimizer.max_grad_norm is None and optimizer.warmup_steps == 5
    assert optimizer.param_groups[0]["amsgrad"] and optimizer.param_groups[0][
        "weight_decay"] == 1e-3
    with pytest.raises(SystemExit, match="non-negative"):
        recipe_optimizer(argparse.Namespace(weight_decay=-1, warmup_steps=0, max_grad_norm=0))
