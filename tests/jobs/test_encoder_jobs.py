"""The shared pieces of the weight-space jobs (jobs.encoder_jobs): the encoder factory,
the optimizer recipe, argparse types for ranged numbers, refusing unreadable data sets, and
running a job as a script's main."""

from __future__ import annotations

import argparse

import pytest
import torch
from torch_geometric.data import Batch

from jobs.encoder_jobs import (
    encoder_side,
    load_or_refuse,
    materialize,
    recipe_optimizer,
    run_job,
)
from neural_graphs import to_neural_graph
from neural_graphs.encoders import NGGNN, DNGEncoder, FlatMLP, NGTransformer, StatNN
from neural_graphs.encoders.build import ENCODER_NAMES, build_encoder
from utils.cli import non_negative_float, positive_float, probability
from utils.optim import WarmupClipAdamW
from utils.store import StoreError
from utils.Train_Test import JobRefused, SideUnavailable


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
    with pytest.raises(ValueError, match="reverse_edges is an option of the ngnn encoder "
                       "only, got 'dng'"):
        build_encoder("dng", 1, hidden=8, layers=1, reverse_edges=True)
    assert build_encoder("ngnn", 1, hidden=8, layers=1, reverse_edges=True).reverse_edges


@pytest.mark.parametrize("name", ["ngnn", "ngt", "dng"])
def test_append_stats_wraps_a_graph_encoder_with_its_embedding_width(name):
    from neural_graphs.encoders import WithStatistics

    encoder = build_encoder(name, 1, hidden=8, layers=1, rff_dim=6, append_stats=True)
    plain = build_encoder(name, 8, hidden=8, layers=1, rff_dim=6)
    assert isinstance(encoder, WithStatistics)
    assert type(encoder.encoder) is type(plain)
    assert encoder.mlp[-1].out_features == 1
    assert [n for n, _ in encoder.encoder.named_parameters()] == [
        n for n, _ in plain.named_parameters()]
    with pytest.raises(ValueError, match="append_stats is an option of the graph encoders "
                       r"\(ngnn, ngt, dng\), got 'statnn'"):
        build_encoder("statnn", 1, hidden=8, layers=1, append_stats=True)


def test_encoder_side_turns_a_missing_package_into_side_unavailable(monkeypatch):
    import neural_graphs.encoders.build as build

    def missing(*args, **kwargs):
        raise ImportError("No module named 'nfn'")

    monkeypatch.setattr(build, "NFN", missing)
    with pytest.raises(SideUnavailable, match="nfn encoder needs a missing package"):
        encoder_side("nfn", 1, hidden=8, layers=1)


def test_recipe_optimizer_builds_warmup_clip_adamw_and_rejects_negative_flags():
    args = argparse.Namespace(weight_decay=1e-3, warmup_steps=5, max_grad_norm=0.0)
    optimizer = recipe_optimizer(args)([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    assert isinstance(optimizer, WarmupClipAdamW)
    assert optimizer.max_grad_norm is None and optimizer.warmup_steps == 5
    assert optimizer.param_groups[0]["amsgrad"] and optimizer.param_groups[0][
        "weight_decay"] == 1e-3
    with pytest.raises(SystemExit, match="non-negative"):
        recipe_optimizer(argparse.Namespace(weight_decay=-1, warmup_steps=0, max_grad_norm=0))


@pytest.mark.parametrize("kind,good,bad", [
    (probability, {"0": 0.0, "0.5": 0.5}, ["1", "1.5", "-0.1", "nan", "x"]),
    (positive_float, {"1e-3": 1e-3, "2": 2.0}, ["0", "-1", "inf", "nan"]),
    (non_negative_float, {"0": 0.0, "3.5": 3.5}, ["-1e-9", "inf", "nan", "x"]),
])
def test_ranged_number_types_refuse_values_outside_their_range(kind, good, bad):
    for text, value in good.items():
        assert kind(text) == value
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError):
            kind(text)
    parser = argparse.ArgumentParser()
    parser.add_argument("--p", type=kind)
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--p", bad[0]])
    assert stop.value.code == 2


def test_load_or_refuse_turns_a_store_error_into_a_refusal_naming_the_flag():
    def damaged():
        raise StoreError("shard x.pt does not match its sha256")

    with pytest.raises(JobRefused, match="^--inr-dir: shard x.pt does not match"):
        load_or_refuse("--inr-dir", damaged)
    with pytest.raises(JobRefused, match="--zoo-dir: .*absent"):
        load_or_refuse("--zoo-dir", lambda: open("/absent/manifest.json"))
    assert load_or_refuse("--inr-dir", lambda: 3) == 3


def test_run_job_returns_the_exit_status_of_argparse(capsys):
    from utils.Train_Test import JobConfig, SideFlag

    job = JobConfig(script="Toy", title="toy", epochs=1, batch_size=1, lr=0.1,
                    optimizer=torch.optim.SGD, build_model=lambda *a: torch.nn.Linear(1, 1),
                    loaders=lambda *a: (), sides=SideFlag("--model", ("m",), default="m"))
    assert run_job(job, ["--help"]) == 0
    assert run_job(job, ["--epochs", "0", "--device", "cpu"]) == 2
    assert "--epochs must be at least 1" in capsys.readouterr().err
