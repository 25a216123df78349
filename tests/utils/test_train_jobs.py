"""The training loop on jobs other than the twins (utils.Train_Test.JobConfig, utils.tasks):
PyG batches, sides chosen by a flag, a test split and the final record, regression tasks."""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
from contextlib import redirect_stdout
from functools import partial
from pathlib import Path

import pytest
import torch
from scipy.stats import kendalltau
from torch import nn
from torch.optim import SGD, Adam
from torch.utils.data import TensorDataset
from torch_geometric.data import Data
from torch_geometric.nn import GCNConv, global_mean_pool

from utils import Train_Test as tt
from utils.job_data import split_loaders
from utils.tasks import (
    Task,
    batch_size,
    classification,
    grouped_kendall_tau,
    kendall_tau,
    pairwise_rank_loss,
    scalar_regression,
    target,
    to_device,
)

# --------------------------------------------------------------------------- toy jobs


def random_graphs(n: int, seed: int) -> list[Data]:
    """Graphs of 3 to 6 nodes with 3 features; class 1 when feature 0 averages above 0."""
    g = torch.Generator().manual_seed(seed)
    graphs = []
    for _ in range(n):
        nodes = int(torch.randint(3, 7, (1,), generator=g))
        x = torch.randn(nodes, 3, generator=g)
        ring = torch.arange(nodes)
        edge_index = torch.stack([torch.cat([ring, (ring + 1) % nodes]),
                                  torch.cat([(ring + 1) % nodes, ring])])
        graphs.append(Data(x=x, edge_index=edge_index, y=(x[:, 0].mean() > 0).long().view(1)))
    return graphs


class GCN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = GCNConv(3, 8), nn.Linear(8, 2)

    def forward(self, batch) -> torch.Tensor:
        h = torch.relu(self.conv(batch.x, batch.edge_index))
        return self.head(global_mean_pool(h, batch.batch))


class MeanPool(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, 2)

    def forward(self, batch) -> torch.Tensor:
        return self.head(global_mean_pool(batch.x, batch.batch))


ENCODERS = {"gcn": GCN, "mean": MeanPool}


def build_encoder(args: argparse.Namespace, seed: int, side: str) -> nn.Module:
    if side == "broken":
        raise tt.SideUnavailable("no such encoder yet")
    return ENCODERS[side]()


def graph_loaders(args: argparse.Namespace, seed: int, distributed: bool):
    splits = (random_graphs(48, 1), random_graphs(24, 2), random_graphs(24, 3))
    return split_loaders(splits, args.batch_size, seed, distributed)


GRAPH_JOB = tt.JobConfig(
    script="Toy_Graph_Train", title="toy graph classifier", epochs=3, batch_size=8, lr=0.05,
    optimizer=partial(SGD, momentum=0.9), build_model=build_encoder, loaders=graph_loaders,
    sides=tt.SideFlag("--encoder", ("gcn", "mean", "broken"), default="gcn", every="all",
                      help="graph encoder"),
    task=classification(), seeds=(0,), description="Classify toy graphs.")


def vector_loaders(args: argparse.Namespace, seed: int, distributed: bool):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(96, 4, generator=g)
    y = 2.0 * x + 0.1 * torch.randn(96, 4, generator=g)
    sets = [TensorDataset(x[i:i + 32], y[i:i + 32]) for i in (0, 32, 64)]
    return split_loaders(sets, args.batch_size, seed, distributed)


def squared_error(output: torch.Tensor, batch) -> torch.Tensor:
    return ((output - target(batch)) ** 2).mean(1)


def identity_error(output: torch.Tensor, batch) -> dict[str, torch.Tensor]:
    x, y = batch
    return {"identity": ((x - y) ** 2).mean(1).double()}


def mse_metrics(values: dict[str, torch.Tensor]) -> dict[str, float]:
    return {"mse": float(values["loss"].mean()), "identity_mse": float(values["identity"].mean())}


DILATION_LIKE = Task(loss=squared_error, metrics=mse_metrics, collect=identity_error,
                     best_metric="mse", higher_is_better=False,
                     test_metrics={"test_mse": "mse", "identity_mse": "identity_mse"})

VECTOR_JOB = tt.JobConfig(
    script="Toy_Map_Train", title="toy linear map", epochs=4, batch_size=8, lr=0.3,
    optimizer=SGD, build_model=lambda args, seed, side: nn.Linear(4, 4), loaders=vector_loaders,
    sides=tt.SideFlag("--model", ("linear",), default="linear"), task=DILATION_LIKE, seeds=(0,),
    description="Learn a linear map.")


def scalar_loaders(args: argparse.Namespace, seed: int, distributed: bool):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(96, 5, generator=g)
    y = torch.sigmoid(x @ torch.tensor([1.0, -2.0, 0.5, 0.0, 1.5]))
    sets = [TensorDataset(x[i:i + 32], y[i:i + 32]) for i in (0, 32, 64)]
    return split_loaders(sets, args.batch_size, seed, distributed)


SCALAR_JOB = tt.JobConfig(
    script="Toy_Score_Train", title="toy score", epochs=3, batch_size=8, lr=0.05,
    optimizer=Adam, build_model=lambda args, seed, side: nn.Linear(5, 1),
    loaders=scalar_loaders, sides=tt.SideFlag("--model", ("linear",), default="linear"),
    task=scalar_regression("bce"), seeds=(0,), description="Predict a score in [0, 1].")


# --------------------------------------------------------------------------- helpers


def dirs(root: Path) -> list[str]:
    return ["--log-dir", str(root / "log"), "--checkpoint-dir", str(root / "ckpt"),
            "--device", "cpu", "--seeds", "0"]


def train(job: tt.JobConfig, argv: list[str]) -> int:
    with redirect_stdout(io.StringIO()):
        return tt.main(job, argv)


def records(log_dir: Path, run: str) -> list[dict]:
    return [json.loads(line) for line in (log_dir / f"{run}.jsonl").read_text().splitlines()]


def best_model(job: tt.JobConfig, root: Path, run: str, side: str) -> nn.Module:
    model = job.build_model(argparse.Namespace(), 0, side)
    ckpt = torch.load(root / "ckpt" / f"{run}_best.pt", weights_only=False)
    model.load_state_dict(ckpt["model"])
    return model.eval()


# --------------------------------------------------------------------------- tests


def test_batch_helpers_take_tuples_and_graph_batches():
    from torch_geometric.data import Batch

    graphs = Batch.from_data_list(random_graphs(3, 0))
    pair = (torch.zeros(5, 2), torch.arange(5))
    assert batch_size(graphs) == 3 and batch_size(pair) == 5
    assert torch.equal(target(graphs), graphs.y) and torch.equal(target(pair), pair[1])
    moved = to_device({"g": graphs, "p": pair}, torch.device("cpu"))
    assert isinstance(moved["p"], tuple) and moved["g"].num_graphs == 3
    with pytest.raises(ValueError, match="no target"):
        target(Data(x=torch.zeros(2, 1)))


def test_to_device_moves_a_graph_batch_tensors_and_leaves_its_descriptions():
    from torch_geometric.data import Batch

    graphs = random_graphs(3, 0)
    for graph in graphs:
        graph.layers = [{"kind": "linear", "nodes": (0, 2), "groups": []}]
    batch = Batch.from_data_list(graphs)
    layers, x = batch.layers, batch.x
    assert to_device(batch, torch.device("cpu")) is batch and batch.x is x  # nothing to move
    moved = to_device(batch, torch.device("meta"))  # a real move, without a GPU
    tensors = [key for key, value in moved.items() if isinstance(value, torch.Tensor)]
    assert {"x", "edge_index", "y", "batch", "ptr"} <= set(tensors)
    assert all(moved[key].device.type == "meta" for key in tensors)
    assert moved.layers is layers and moved.num_graphs == 3


def test_graph_classification_with_a_test_split_and_resume(tmp_path, capsys):
    run = tt.run_name("Toy_Graph_Train", "gcn", 0)
    assert run == "Toy_Graph_Train_gcn_seed0"
    assert train(GRAPH_JOB, dirs(tmp_path / "a") + ["--encoder", "all"]) == 0
    assert "the broken side is skipped" in capsys.readouterr().err
    assert {p.stem for p in (tmp_path / "a" / "log").glob("*.jsonl")} == {
        "Toy_Graph_Train_gcn_seed0", "Toy_Graph_Train_mean_seed0"}
    full = records(tmp_path / "a" / "log", run)
    assert [r.get("final", False) for r in full] == [False, False, False, True]
    final = full[-1]
    assert final["model"] == "gcn" and final["best_metric"] == "val_acc"
    assert final["final_metrics"] == ["test_acc"]
    best_epoch = max(full[:-1], key=lambda r: r["val_acc"])["epoch"]  # first of the best
    assert final["best_epoch"] == best_epoch
    # test_acc is the best checkpoint's accuracy on the test split.
    model = best_model(GRAPH_JOB, tmp_path / "a", run, "gcn")
    test = graph_loaders(argparse.Namespace(batch_size=8), 0, False)[2]
    with torch.no_grad():
        correct = sum(int((model(b).argmax(1) == b.y).sum()) for b in test)
    assert final["test_acc"] == pytest.approx(100.0 * correct / 24, abs=1e-12)
    assert final["test_acc"] == final["test_acc"] and "Test (best checkpoint" in (
        tmp_path / "a" / "log" / f"{run}.txt").read_text()

    # Two epochs, then a resume to three: the same records; one final record, at the end.
    assert train(GRAPH_JOB, dirs(tmp_path / "b") + ["--epochs", "2"]) == 0
    assert records(tmp_path / "b" / "log", run)[-1]["final"] is True
    assert train(GRAPH_JOB, dirs(tmp_path / "b") + ["--resume"]) == 0
    resumed = records(tmp_path / "b" / "log", run)
    keys = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "best_val_acc")
    assert [tuple(r[k] for k in keys) for r in resumed[:-1]] == [
        tuple(r[k] for k in keys) for r in full[:-1]]
    assert [r.get("final", False) for r in resumed] == [False, False, False, True]
    assert resumed[-1]["test_acc"] == final["test_acc"]


def test_a_finished_run_without_its_test_is_tested_on_resume(tmp_path, capsys):
    argv = dirs(tmp_path) + ["--encoder", "mean", "--epochs", "2"]
    run = tt.run_name("Toy_Graph_Train", "mean", 0)
    assert train(GRAPH_JOB, argv) == 0
    jsonl = tmp_path / "log" / f"{run}.jsonl"
    lines = jsonl.read_text().splitlines()
    jsonl.write_text("\n".join(lines[:-1]) + "\n")  # killed before the test was logged
    assert train(GRAPH_JOB, argv + ["--resume"]) == 0
    again = jsonl.read_text().splitlines()
    assert again[:-1] == lines[:-1]
    assert json.loads(again[-1])["test_acc"] == json.loads(lines[-1])["test_acc"]
    assert train(GRAPH_JOB, argv + ["--resume"]) == 0  # now finished and tested: skipped
    assert jsonl.read_text().splitlines() == again


def test_an_unavailable_side_asked_for_alone_is_an_error(tmp_path, capsys):
    assert train(GRAPH_JOB, dirs(tmp_path) + ["--encoder", "broken"]) == 2
    assert "the broken side cannot be built" in capsys.readouterr().err


def test_side_flag_help_and_checks(capsys):
    with pytest.raises(SystemExit):
        tt.main(VECTOR_JOB, ["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--model {linear} the side to train: linear (default: linear)" in text
    with pytest.raises(ValueError, match="default 'gat' is not one of"):
        tt.SideFlag("--encoder", ("gcn",), default="gat")


def test_regression_task_keeps_the_lowest_val_loss_and_reports_its_test_keys(tmp_path):
    assert train(VECTOR_JOB, dirs(tmp_path)) == 0
    run = tt.run_name("Toy_Map_Train", "linear", 0)
    got = records(tmp_path / "log", run)
    epochs, final = got[:-1], got[-1]
    assert final["final"] is True and final["final_metrics"] == ["test_mse", "identity_mse"]
    assert final["best_epoch"] == min(epochs, key=lambda r: r["val_mse"])["epoch"]
    assert epochs[-1]["best_val_mse"] == min(r["val_mse"] for r in epochs)
    model = best_model(VECTOR_JOB, tmp_path, run, "linear")
    _, _, test = vector_loaders(argparse.Namespace(batch_size=8), 0, False)
    x, y = test.dataset.tensors
    with torch.no_grad():
        assert final["test_mse"] == pytest.approx(float(((model(x) - y) ** 2).mean()), rel=1e-6)
    assert final["identity_mse"] == pytest.approx(float(((x - y) ** 2).mean()), rel=1e-6)
    assert final["test_mse"] < final["identity_mse"]  # it did learn the map
    assert "val loss" in (tmp_path / "log" / f"{run}.txt").read_text()


def test_scalar_regression_reports_kendall_tau_and_r2_of_the_best_checkpoint(tmp_path):
    assert train(SCALAR_JOB, dirs(tmp_path)) == 0
    run = tt.run_name("Toy_Score_Train", "linear", 0)
    got = records(tmp_path / "log", run)
    epochs, final = got[:-1], got[-1]
    assert {"kendall_tau", "r2", "test_mse"} <= final.keys()
    assert final["best_epoch"] == max(epochs, key=lambda r: r["val_kendall_tau"])["epoch"]
    model = best_model(SCALAR_JOB, tmp_path, run, "linear")
    _, _, test = scalar_loaders(argparse.Namespace(batch_size=8), 0, False)
    x, y = test.dataset.tensors
    with torch.no_grad():
        prediction = torch.sigmoid(model(x)[:, 0].double())
    assert final["kendall_tau"] == pytest.approx(kendalltau(prediction, y).statistic, abs=1e-12)
    r2 = 1 - ((prediction - y) ** 2).sum() / ((y - y.double().mean()) ** 2).sum()
    assert final["r2"] == pytest.approx(float(r2), rel=1e-6)  # float32 outputs, other batches
    assert final["kendall_tau"] > 0.5


def test_grouped_kendall_tau_is_the_mean_tau_within_groups() -> None:
    prediction = torch.tensor([0.1, 0.2, 0.3, 0.9, 0.8, 0.7, 0.5, 0.5])
    truth = torch.tensor([1.0, 2.0, 3.0, 1.0, 2.0, 4.0, 7.0, 8.0])
    group = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    # group 0 in order (+1), group 1 reversed (-1), group 2 a constant prediction (no tau)
    assert grouped_kendall_tau(prediction, truth, group) == pytest.approx(0.0, abs=1e-12)
    assert grouped_kendall_tau(prediction[:3], truth[:3], group[:3]) == pytest.approx(1.0)
    assert math.isnan(grouped_kendall_tau(prediction[6:], truth[6:], group[6:]))
    # while the pooled tau sees the groups' offsets
    assert kendall_tau(prediction, truth) != pytest.approx(0.0, abs=1e-3)
    task = scalar_regression("mse", group="epoch")
    with pytest.raises(ValueError, match="batch.epoch"):
        task.collect(torch.zeros(2), Data(y=torch.zeros(2)))


def test_pairwise_rank_loss_is_the_weighted_logistic_loss_of_every_ordered_pair() -> None:
    generator = torch.Generator().manual_seed(0)
    score = torch.randn(7, generator=generator, dtype=torch.float64)
    truth = torch.rand(7, generator=generator, dtype=torch.float64)
    truth[3] = truth[5]  # a tie costs nothing
    expected = torch.zeros(7, dtype=torch.float64)
    for i in range(7):
        for j in range(7):
            if truth[i] != truth[j]:
                sign = 1.0 if truth[i] > truth[j] else -1.0
                expected[i] += abs(truth[i] - truth[j]) * math.log1p(
                    math.exp(-sign * float(score[i] - score[j])))
    got = pairwise_rank_loss(score, truth)
    torch.testing.assert_close(got, expected / 6, rtol=1e-12, atol=1e-12)
    # scores in the targets' order cost less than the same scores reversed
    ordered = truth.argsort().argsort().double()
    assert pairwise_rank_loss(ordered, truth).mean() < pairwise_rank_loss(-ordered, truth).mean()
    # the gradient pushes each sample toward its place in the order
    score = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    pairwise_rank_loss(score, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).sum().backward()
    assert score.grad[0] > 0 > score.grad[2]
    with pytest.raises(ValueError, match=r"\[B\]"):
        pairwise_rank_loss(torch.zeros(3, 1), torch.zeros(3))


def test_bce_rank_adds_the_ranking_term_to_the_bce_and_predicts_through_a_sigmoid() -> None:
    output, y = torch.tensor([[0.3], [-1.0], [2.0]]), torch.tensor([0.4, 0.2, 0.9])
    batch = Data(y=y, epoch=torch.zeros(3))
    bce, both = scalar_regression("bce", group="epoch"), scalar_regression("bce_rank",
                                                                           group="epoch")
    torch.testing.assert_close(both.loss(output, batch),
                               bce.loss(output, batch) + pairwise_rank_loss(output[:, 0], y))
    torch.testing.assert_close(both.collect(output, batch)["prediction"],
                               torch.sigmoid(output[:, 0].double()))
    with pytest.raises(ValueError, match="bce_rank"):
        scalar_regression("rank")


def test_a_task_that_never_improves_still_has_a_best_checkpoint(tmp_path):
    task = Task(loss=squared_error, metrics=lambda v: {"score": math.nan}, best_metric="score",
                higher_is_better=True, test_metrics={"score": "score"})
    job = dataclasses.replace(VECTOR_JOB, task=task, epochs=2)
    assert train(job, dirs(tmp_path)) == 0
    run = tt.run_name("Toy_Map_Train", "linear", 0)
    final = records(tmp_path / "log", run)[-1]
    assert final["best_epoch"] == 1 and math.isnan(final["score"])


# --------------------------------------------------------------------------- job declaration


PER_SIDE_JOB = dataclasses.replace(GRAPH_JOB, script="Toy_Sides_Train",
                                   epochs={"gcn": 2, "mean": 1, "broken": 1})


def test_per_side_default_epochs_are_resolved_after_one_parse_and_shown_in_help(
        tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        tt.main(PER_SIDE_JOB, ["--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "training epochs; default per side: gcn 2, mean 1, broken 1" in text
    assert "(default: 2)" not in text and "(default: None)" not in text
    assert train(PER_SIDE_JOB, ["--encoder", "all"] + dirs(tmp_path / "own")) == 0
    assert [r["epoch"] for r in records(tmp_path / "own" / "log", "Toy_Sides_Train_gcn_seed0")
            ] == [1, 2, 2]
    assert [r["epoch"] for r in records(tmp_path / "own" / "log",
                                        "Toy_Sides_Train_mean_seed0")] == [1, 1]
    assert records(tmp_path / "own" / "log", "Toy_Sides_Train_mean_seed0")[0]["epochs"] == 1
    assert train(PER_SIDE_JOB, ["--encoder", "gcn", "--epochs", "1"]
                 + dirs(tmp_path / "given")) == 0
    assert [r["epoch"] for r in records(tmp_path / "given" / "log",
                                        "Toy_Sides_Train_gcn_seed0")] == [1, 1]
    with pytest.raises(ValueError, match="epochs has no entry for"):
        dataclasses.replace(GRAPH_JOB, epochs={"gcn": 2})


def test_task_and_optimizer_may_differ_per_side(tmp_path):
    """Stages of one job that learn different things (INR2JLS: an autoencoder, then a
    classifier): each side its own task, best metric and optimizer."""
    job = dataclasses.replace(
        GRAPH_JOB, script="Toy_Stages_Train", epochs=1,
        task={"gcn": classification(), "mean": classification("test_other"),
              "broken": classification()},
        optimizer={"gcn": partial(SGD, momentum=0.9), "mean": Adam, "broken": SGD})
    assert job.task_for("mean").test_metrics == {"test_other": "acc"}
    assert job.optimizer_for("gcn").func is SGD and job.optimizer_for("mean") is Adam
    assert train(job, ["--encoder", "mean"] + dirs(tmp_path)) == 0
    last = records(tmp_path / "log", "Toy_Stages_Train_mean_seed0")[-1]
    assert "test_other" in last and "test_acc" in last  # the metric as test_<name> too
    header = (tmp_path / "log" / "Toy_Stages_Train_mean_seed0.txt").read_text()
    assert "Adam(" in header.splitlines()[0]
    for field in ("task", "optimizer"):
        with pytest.raises(ValueError, match=f"{field} has no entry for"):
            dataclasses.replace(GRAPH_JOB, **{field: {"gcn": getattr(job, field)["gcn"]}})


def test_configure_sees_the_parsed_flags_once_and_may_refuse_before_any_run(
        tmp_path, capsys, monkeypatch):
    parses = []
    original = argparse.ArgumentParser.parse_known_args

    def counting(self, *args, **kwargs):
        parses.append(self.prog)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", counting)
    seen = []

    def configure(args):
        seen.append(args.lr)
        return job.replace(optimizer=partial(SGD, momentum=0.5))

    job = VECTOR_JOB.replace(script="Toy_Configured_Train", configure=configure, epochs=1)
    assert train(job, ["--lr", "0.2"] + dirs(tmp_path)) == 0
    assert seen == [0.2] and len(parses) == 1
    ckpt = torch.load(tmp_path / "ckpt" / "Toy_Configured_Train_linear_seed0_last.pt",
                      weights_only=False)
    assert ckpt["optimizer"]["param_groups"][0]["momentum"] == 0.5

    def refuse(args):
        raise tt.JobRefused("--thing: not a readable set")

    refused = job.replace(configure=refuse)
    assert train(refused, dirs(tmp_path / "refused")) == 2
    err = capsys.readouterr().err
    assert err == "error: --thing: not a readable set\n"
    assert not (tmp_path / "refused").exists()


def test_data_dir_is_a_flag_of_jobs_that_read_it_only(capsys):
    assert "--data-dir" in tt.build_parser(VECTOR_JOB).format_help()
    quiet = VECTOR_JOB.replace(reads_data_dir=False)
    assert "--data-dir" not in tt.build_parser(quiet).format_help()
    with pytest.raises(SystemExit) as stop:
        tt.main(quiet, ["--data-dir", "data", "--device", "cpu"])
    assert stop.value.code == 2 and "--data-dir" in capsys.readouterr().err


def test_a_side_that_is_never_skippable_is_an_error_under_every(tmp_path, capsys):
    class Missing(tt.SideUnavailable):
        skippable = False

    def build(args, seed, side):
        if side == "broken":
            raise Missing("a regression")
        return ENCODERS[side]()

    job = GRAPH_JOB.replace(script="Toy_Strict_Train", build_model=build, epochs=1)
    assert train(job, ["--encoder", "all"] + dirs(tmp_path)) == 2
    assert "the broken side cannot be built: a regression" in capsys.readouterr().err


def test_a_warmup_given_as_a_fraction_is_sized_from_the_run_length(tmp_path):
    """A 5-epoch run on 1,000 INRs used to end inside its fixed 100-step warm-up: the
    loop now tells the optimizer the run's step count (epochs x batches per epoch, capped
    by --max-train-batches) and the warm-up is a fraction of it."""
    from utils.optim import WarmupClipAdamW

    seen = []

    def optimizer(params, lr):
        opt = WarmupClipAdamW(params, lr=lr, warmup_steps=None, warmup_fraction=0.25,
                              max_warmup_steps=1000)
        seen.append(opt)
        return opt

    job = VECTOR_JOB.replace(optimizer=optimizer)
    assert train(job, ["--epochs", "3", *dirs(tmp_path)]) == 0
    assert seen[-1].warmup_steps == round(0.25 * 3 * 4)  # 32 samples, batch 8
    assert train(job, ["--epochs", "3", "--max-train-batches", "2", *dirs(tmp_path)]) == 0
    assert seen[-1].warmup_steps == round(0.25 * 3 * 2)
    header = (tmp_path / "log" / "Toy_Map_Train_linear_seed0.txt").read_text().splitlines()[0]
    assert "warmup_steps=2" in header


def test_cpu_runs_keep_freed_memory_and_say_so_in_the_header(tmp_path):
    """Training steps allocate the same large tensors every step; with glibc's defaults
    each is a fresh mmap whose pages fault in again (system time as large as the compute)."""
    import platform

    from utils.memory import allocator_setting

    assert train(VECTOR_JOB, ["--epochs", "1", *dirs(tmp_path)]) == 0
    header = (tmp_path / "log" / "Toy_Map_Train_linear_seed0.txt").read_text().splitlines()[0]
    assert allocator_setting() in header
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert "glibc keeps freed blocks (mmap threshold 32 MiB, trim threshold 1024 MiB)" \
            in header


def test_warmup_of_the_run_is_capped_and_a_fixed_warmup_stays():
    from utils.optim import WarmupClipAdamW

    params = [torch.nn.Parameter(torch.zeros(2))]
    of_run = WarmupClipAdamW(params, warmup_steps=None, warmup_fraction=0.05,
                             max_warmup_steps=1000)
    of_run.plan_run(30)
    assert of_run.warmup_steps == 2
    of_run.plan_run(86_000)
    assert of_run.warmup_steps == 1000
    fixed = WarmupClipAdamW(params, warmup_steps=7, warmup_fraction=0.05)
    fixed.plan_run(10_000)
    assert fixed.warmup_steps == 7
    with pytest.raises(ValueError, match="warmup_fraction"):
        WarmupClipAdamW(params, warmup_steps=None, warmup_fraction=1.5)
