"""CNN accuracy prediction (CNN_Generalization_Train, neural_graphs.zoo_data): a tiny zoo of
small CNNs trained on synthetic images, converted to neural graphs, split by network and
learned from through the shared training loop."""

from __future__ import annotations

import io
import json
import math
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau
from torch_geometric.data import Batch

import CNN_Generalization_Train as cgt
from jobs.encoder_jobs import add_output_dropout, output_mlp
from neural_graphs import to_neural_graph
from neural_graphs.zoo import ZooConfig, ZooData, generate_zoo, load_zoo
from neural_graphs.zoo_data import (
    cache_path,
    family_kernel_shape,
    load_zoo_graphs,
    split_by_network,
)
from utils.Train_Test import run_name

TINY = ["--hidden", "8", "--layers", "1", "--rff-dim", "8", "--batch-size", "16"]


def synthetic_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """8x8 grey images of 4 classes: the class is the bright quadrant."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    images = rng.integers(0, 60, (n, 8, 8)).astype(np.uint8)
    for image, label in zip(images, labels):
        row, col = divmod(int(label), 2)
        image[row * 4:row * 4 + 4, col * 4:col * 4 + 4] += 150
    return images, labels


def make_zoo(out: Path, family: str, num: int = 24) -> Path:
    train_x, train_y = synthetic_images(32, 0)
    test_x, test_y = synthetic_images(32, 1)
    data = ZooData.from_uint8("synthetic", train_x, train_y, test_x, test_y, num_classes=4)
    config = ZooConfig(family=family, num=num, epochs=[0, 2], batch_size=8,
                       group_size=8 if family == "wild" else 32)
    generate_zoo(config, data, out, device="cpu", progress=False, log=lambda line: None)
    return out


@pytest.fixture(scope="module")
def small_zoo(tmp_path_factory) -> Path:
    return make_zoo(tmp_path_factory.mktemp("zoo") / "small", "small")


@pytest.fixture(scope="module")
def wild_zoo(tmp_path_factory) -> Path:
    return make_zoo(tmp_path_factory.mktemp("zoo") / "wild", "wild", num=16)


def copy_zoo(zoo: Path, dest: Path) -> Path:
    shutil.copytree(zoo, dest, ignore=shutil.ignore_patterns("neural_graphs_*"))
    return dest


def dirs(root: Path) -> list[str]:
    return ["--log-dir", str(root / "log"), "--checkpoint-dir", str(root / "ckpt"),
            "--device", "cpu", "--seeds", "0"]


def train(argv: list[str]) -> int:
    with redirect_stdout(io.StringIO()):
        return cgt.main(argv)


def records(root: Path, side: str) -> list[dict]:
    path = root / "log" / f"{run_name(cgt.SCRIPT, side, 0)}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- the dataset


def test_graphs_are_the_members_neural_graphs_with_their_accuracy(small_zoo):
    zoo = load_zoo_graphs(small_zoo, progress=False)
    members = load_zoo(small_zoo)
    assert len(zoo) == len(members) == 48 and zoo.family == "small"
    assert zoo.kernel_shape == (3, 3) and zoo.architectures == 2  # relu and tanh
    for graph, member in zip(zoo.graphs[::7], members[::7]):
        expected = to_neural_graph(member.model(), kernel_shape=(3, 3))
        assert torch.equal(graph.edge_attr, expected.edge_attr)
        assert torch.equal(graph.edge_index, expected.edge_index)
        assert torch.equal(graph.x, expected.x)
        assert float(graph.y) == pytest.approx(member.test_acc, abs=1e-7)
        assert (int(graph.network), int(graph.epoch)) == (member.network, member.epoch)
    batch = Batch.from_data_list(zoo.graphs[:5])
    assert batch.y.shape == (5,) and batch.edge_attr.shape[1] == 9


def test_the_cache_is_used_and_a_changed_zoo_is_converted_again(small_zoo, tmp_path,
                                                                 capsys):
    zoo_dir = copy_zoo(small_zoo, tmp_path / "zoo")
    first = load_zoo_graphs(zoo_dir, progress=False)
    path = cache_path(zoo_dir, (3, 3))
    assert path.is_file() and "cached in" in capsys.readouterr().err
    again = load_zoo_graphs(zoo_dir, progress=False)
    assert capsys.readouterr().err == ""  # read from the cache, nothing converted
    assert all(torch.equal(a.edge_attr, b.edge_attr) and torch.equal(a.y, b.y)
               for a, b in zip(first.graphs, again.graphs))
    # Another manifest (a regenerated zoo): the cache no longer applies.
    manifest = zoo_dir / "manifest.json"
    manifest.write_text(manifest.read_text() + "\n")
    load_zoo_graphs(zoo_dir, progress=False)
    assert "another version of the zoo" in capsys.readouterr().err
    # A corrupt cache is converted again rather than trusted.
    path.write_bytes(b"not a torch file")
    assert len(load_zoo_graphs(zoo_dir, progress=False)) == len(first)
    assert "unreadable" in capsys.readouterr().err


def test_split_by_network_keeps_every_checkpoint_of_a_network_together():
    networks = np.repeat(np.arange(50), 4)
    train, val, test = split_by_network(networks, seed=3)
    assert (len(train), len(val), len(test)) == (160, 20, 20)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(200))
    sets = [set(networks[part].tolist()) for part in (train, val, test)]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert all(np.sum(networks[part] == n) == 4 for part, s in zip((train, val, test), sets)
               for n in s)
    assert [p.tolist() for p in split_by_network(networks, seed=3)] == [
        p.tolist() for p in (train, val, test)]
    assert split_by_network(networks, seed=4)[2].tolist() != test.tolist()
    with pytest.raises(ValueError, match="at least 3 networks"):
        split_by_network([0, 0, 1], seed=0)


def test_train_networks_keeps_nested_training_networks_and_the_same_held_out_ones():
    networks = np.repeat(np.arange(50), 4)
    full = split_by_network(networks, seed=3)
    kept = {}
    for count in (1, 10, 20, 40):
        train, val, test = split_by_network(networks, seed=3, train_networks=count)
        assert val.tolist() == full[1].tolist() and test.tolist() == full[2].tolist()
        kept[count] = set(networks[train].tolist())
        assert len(kept[count]) == count and len(train) == 4 * count
        assert kept[count] <= set(networks[full[0]].tolist())
    assert kept[1] <= kept[10] <= kept[20] <= kept[40]
    assert [p.tolist() for p in split_by_network(networks, 3, train_networks=40)] == [
        p.tolist() for p in full]
    for bad in (0, 41):
        with pytest.raises(ValueError, match=f"between 1 and the 40 training networks.*{bad}"):
            split_by_network(networks, seed=3, train_networks=bad)


def test_kernel_shape_is_the_family_largest():
    assert family_kernel_shape({"config": {"family": "small"}}) == (3, 3)
    wild = {"config": {"family": "wild", "wild_space": {"kernel_size": [3, 5, 7]}}}
    assert family_kernel_shape(wild) == (7, 7)
    vit = {"config": {"family": "vit", "vit_skeleton": {"patch_size": 4}}}
    assert family_kernel_shape(vit) == (4, 4)  # the patch embedding, its one convolution
    with pytest.raises(ValueError, match="unknown zoo family"):
        family_kernel_shape({"config": {"family": "mlp"}})


def test_bad_zoo_folders_give_clear_errors(small_zoo, tmp_path, capsys):
    assert train(["--zoo-dir", str(tmp_path / "none")] + dirs(tmp_path)) == 2
    assert "manifest.json not found" in capsys.readouterr().err
    zoo_dir = copy_zoo(small_zoo, tmp_path / "zoo")
    manifest = json.loads((zoo_dir / "manifest.json").read_text())
    manifest["complete"] = False
    (zoo_dir / "manifest.json").write_text(json.dumps(manifest))
    assert train(["--zoo-dir", str(zoo_dir)] + dirs(tmp_path)) == 2
    assert "incomplete" in capsys.readouterr().err


# --------------------------------------------------------------------------- training


def test_the_final_record_has_the_kendall_tau_of_the_best_checkpoint_on_held_out_networks(
        small_zoo, tmp_path):
    argv = ["--zoo-dir", str(small_zoo), "--encoder", "ngnn", "--epochs", "2"]
    assert train(argv + TINY + dirs(tmp_path)) == 0
    got = records(tmp_path, "ngnn")
    assert [r.get("final", False) for r in got] == [False, False, True]
    final = got[-1]
    assert {"kendall_tau", "r2", "test_mse"} <= final.keys()
    # Recompute from the best checkpoint on the held-out networks.
    args = cgt._parse(argv + TINY + dirs(tmp_path))
    data = cgt.SPLITS.get(args)
    held_out = {int(g.network) for g in data.test}
    assert held_out and not held_out & {int(g.network) for g in data.train + data.val}
    model = cgt.build_predictor(args, 0, "ngnn")
    ckpt = torch.load(tmp_path / "ckpt" / f"{run_name(cgt.SCRIPT, 'ngnn', 0)}_best.pt",
                      weights_only=False)
    model.load_state_dict(ckpt["model"])
    model.eval()
    with torch.no_grad():
        prediction = torch.sigmoid(model(Batch.from_data_list(data.test)).double())
    truth = torch.tensor([float(g.y) for g in data.test], dtype=torch.float64)
    assert final["kendall_tau"] == pytest.approx(kendalltau(prediction, truth).statistic,
                                                 abs=1e-6)
    r2 = 1 - float(((prediction - truth) ** 2).sum() / ((truth - truth.mean()) ** 2).sum())
    assert final["r2"] == pytest.approx(r2, rel=1e-5, abs=1e-6)
    # Within each checkpoint epoch, averaged over the epochs.
    epoch = torch.tensor([int(g.epoch) for g in data.test])
    within = [kendalltau(prediction[epoch == e], truth[epoch == e]).statistic
              for e in epoch.unique()]
    within = [tau for tau in within if tau == tau]
    assert len(within) >= 2
    assert final["kendall_tau_same_epoch"] == pytest.approx(sum(within) / len(within),
                                                            abs=1e-6)


def test_reverse_edges_scale_ngnn_by_the_degrees_of_both_directions(small_zoo, tmp_path):
    from torch_geometric.utils import degree

    argv = ["--zoo-dir", str(small_zoo), *TINY, *dirs(tmp_path)]
    data = cgt.SPLITS.get(cgt._parse(argv))
    both = torch.cat([degree(g.edge_index[0], g.num_nodes) + degree(g.edge_index[1], g.num_nodes)
                      for g in data.train])
    for flags, reverse, degrees in (([], False, None), (["--reverse-edges"], True, both)):
        encoder = cgt.build_predictor(cgt._parse(argv + flags), 0, "ngnn").encoder
        assert encoder.reverse_edges is reverse
        if degrees is not None:  # PNA's mean log(d + 1) over every training node
            assert encoder.convs[0].aggr_module.avg_deg_log.item() == pytest.approx(
                float((degrees + 1).log().mean()), rel=1e-6)
    assert train(argv + ["--encoder", "ngnn", "--epochs", "1", "--reverse-edges"]) == 0
    assert records(tmp_path, "ngnn")[-1]["final"]


def test_append_stats_gives_graph_encoders_the_statistics_of_every_held_out_graph(
        small_zoo, tmp_path):
    from neural_graphs.encoders import WithStatistics

    argv = ["--zoo-dir", str(small_zoo), *TINY, "--append-stats", *dirs(tmp_path)]
    args = cgt._parse(argv)
    model = cgt.build_predictor(args, 0, "dng")
    assert isinstance(model.encoder, WithStatistics)
    stored = [g.statnn_features for g in cgt.SPLITS.get(args).test]
    assert all(s is not None for s in stored)
    assert isinstance(cgt.build_predictor(args, 1, "statnn").encoder, cgt.nn.Module)
    # another seed or encoder on the same splits reads the statistics already stored
    assert all(g.statnn_features is s for g, s in zip(cgt.SPLITS.get(args).test, stored))
    assert train(argv + ["--encoder", "dng", "--epochs", "1"]) == 0
    final = records(tmp_path, "dng")[-1]
    assert final["final"] and -1.0 <= final["kendall_tau"] <= 1.0
    with pytest.raises(SystemExit, match="--append-stats True, this command gives False"):
        train([a for a in argv if a != "--append-stats"]
              + ["--encoder", "dng", "--epochs", "2", "--resume"])


def test_statnn_learns_to_rank_the_training_networks(small_zoo, tmp_path):
    argv = ["--zoo-dir", str(small_zoo), "--encoder", "statnn", "--epochs", "60",
            "--lr", "1e-2", "--hidden", "32", "--batch-size", "16"]
    assert train(argv + dirs(tmp_path)) == 0
    got = records(tmp_path, "statnn")[:-1]
    assert got[-1]["train_loss"] < got[0]["train_loss"]
    assert max(r["train_kendall_tau"] for r in got[-5:]) > 0.4


def test_mse_loss_predicts_through_a_sigmoid_and_resume_continues_exactly(small_zoo, tmp_path):
    # Augmented by function-preserving rescalings: still an exact resume.
    argv = ["--zoo-dir", str(small_zoo), "--encoder", "dng", "--loss", "mse", "--sign-flip",
            "0.5", "--neuron-scale", "2"] + TINY
    assert train(argv + ["--epochs", "2"] + dirs(tmp_path / "a")) == 0
    model = cgt.build_predictor(cgt._parse(argv + dirs(tmp_path / "a")), 0, "dng")
    assert model.squash
    assert train(argv + ["--epochs", "1"] + dirs(tmp_path / "b")) == 0
    assert train(argv + ["--epochs", "2", "--resume"] + dirs(tmp_path / "b")) == 0
    keys = ("epoch", "train_loss", "val_loss", "val_kendall_tau")
    full, resumed = records(tmp_path / "a", "dng"), records(tmp_path / "b", "dng")
    assert [tuple(r[k] for k in keys) for r in resumed[:-1]] == [
        tuple(r[k] for k in keys) for r in full[:-1]]
    assert resumed[-1]["kendall_tau"] == full[-1]["kendall_tau"]
    # A resume with another loss or augmentation is refused.
    with pytest.raises(SystemExit, match="--loss"):
        train(["--zoo-dir", str(small_zoo), "--encoder", "dng", "--loss", "bce"] + TINY
              + ["--epochs", "3", "--resume"] + dirs(tmp_path / "b"))
    with pytest.raises(SystemExit, match="--neuron-scale 2.0, this command gives 1.0"):
        train([a for a in argv if a not in ("--neuron-scale", "2")]
              + ["--epochs", "3", "--resume"] + dirs(tmp_path / "b"))


def test_bce_rank_trains_on_logits_and_reports_tau(small_zoo, tmp_path):
    argv = ["--zoo-dir", str(small_zoo), "--encoder", "statnn", "--loss", "bce_rank"] + TINY
    assert train(argv + ["--epochs", "2"] + dirs(tmp_path)) == 0
    assert not cgt.build_predictor(cgt._parse(argv + dirs(tmp_path)), 0, "statnn").squash
    got = records(tmp_path, "statnn")
    assert all(math.isfinite(r["train_loss"]) for r in got[:-1])
    assert -1.0 <= got[-1]["kendall_tau"] <= 1.0


def test_weight_noise_resumes_exactly_and_a_cosine_schedule_falls(small_zoo, tmp_path):
    argv = ["--zoo-dir", str(small_zoo), "--encoder", "dng", "--weight-noise", "0.1",
            "--weight-dropout", "0.01"] + TINY
    args = cgt._parse(argv + dirs(tmp_path / "a"))
    loader = cgt.zoo_loaders(args, 0, False)[0]
    plain = cgt.SPLITS.get(args).train
    assert not torch.equal(loader.dataset[0].edge_attr, plain[0].edge_attr)
    assert train(argv + ["--epochs", "2"] + dirs(tmp_path / "a")) == 0
    assert train(argv + ["--epochs", "1"] + dirs(tmp_path / "b")) == 0
    assert train(argv + ["--epochs", "2", "--resume"] + dirs(tmp_path / "b")) == 0
    keys = ("epoch", "train_loss", "val_loss")
    full, resumed = records(tmp_path / "a", "dng"), records(tmp_path / "b", "dng")
    assert [tuple(r[k] for k in keys) for r in resumed[:-1]] == [
        tuple(r[k] for k in keys) for r in full[:-1]]
    with pytest.raises(SystemExit, match="--weight-noise 0.1, this command gives 0.0"):
        train([a if a != "0.1" else "0" for a in argv]
              + ["--epochs", "3", "--resume"] + dirs(tmp_path / "b"))
    cosine = argv + ["--lr-schedule", "cosine", "--epochs", "3"] + dirs(tmp_path / "c")
    assert train(cosine) == 0
    got = records(tmp_path / "c", "dng")
    assert got[2]["lr"] < got[1]["lr"] < got[0]["lr"] < 1e-3
    header = (tmp_path / "c" / "log" / "CNN_Generalization_Train_dng_seed0.txt").read_text()
    assert "lr_schedule=cosine" in header.splitlines()[0]


def test_park_recipe_adds_dropout_where_asked_and_leaves_the_eval_function(small_zoo, tmp_path):
    from neural_graphs.encoders import DNGEncoder

    argv = ["--zoo-dir", str(small_zoo), *TINY, *dirs(tmp_path)]
    recipe = ["--dropout", "0.2", "--node-dropout", "0.3"]
    batch = Batch.from_data_list(cgt.SPLITS.get(cgt._parse(argv)).test[:6])
    for side in ("dng", "ngnn", "statnn"):
        torch.manual_seed(0)
        plain = cgt.build_predictor(cgt._parse(argv), 0, side)
        torch.manual_seed(0)
        dropped = cgt.build_predictor(cgt._parse(argv + recipe), 0, side)
        head = output_mlp(dropped.encoder)
        after_relu = [type(b).__name__ for a, b in zip(head, list(head)[1:])
                      if isinstance(a, cgt.nn.ReLU)]
        assert after_relu and after_relu == ["Dropout"] * len(after_relu)
        assert all(m.p == 0.2 for m in head if isinstance(m, cgt.nn.Dropout))
        assert not any(isinstance(m, cgt.nn.Dropout) for m in plain.modules())
        dngs = [m for m in dropped.modules() if isinstance(m, DNGEncoder)]
        assert [m.dropout for m in dngs] == ([0.3] if side == "dng" else [])
        # dropout holds no parameters: the same draws build the same weights, and in
        # eval mode both compute the same function; in training mode they differ
        assert [n for n, _ in plain.named_parameters()] != [] and all(
            torch.equal(a, b) for a, b in zip(plain.parameters(), dropped.parameters()))
        with torch.no_grad():
            assert torch.equal(plain.eval()(batch), dropped.eval()(batch))
            assert not torch.equal(plain.train()(batch), dropped.train()(batch))


def test_park_optimizer_is_adamw_with_the_flags_and_adam_without_them(small_zoo, tmp_path):
    from torch.optim import Adam

    from utils.optim import WarmupClipAdamW

    argv = ["--zoo-dir", str(small_zoo), *TINY, *dirs(tmp_path)]
    params = [torch.nn.Parameter(torch.zeros(3))]
    assert cgt.configure(cgt._parse(argv)).optimizer is Adam
    job = cgt.configure(cgt._parse(argv + ["--weight-decay", "5e-4", "--amsgrad",
                                           "--max-grad-norm", "10"]))
    optimizer = job.optimizer(params, lr=1e-3)
    assert isinstance(optimizer, WarmupClipAdamW)
    group = optimizer.param_groups[0]
    assert (group["weight_decay"], group["amsgrad"]) == (5e-4, True)
    assert optimizer.max_grad_norm == 10.0
    optimizer = cgt.configure(cgt._parse(argv + ["--amsgrad"])).optimizer(params, lr=1e-3)
    assert optimizer.param_groups[0]["weight_decay"] == 0.0 and optimizer.max_grad_norm is None
    park = ["--encoder", "dng", "--dropout", "0.2", "--node-dropout", "0.2",
            "--weight-decay", "5e-4", "--amsgrad", "--max-grad-norm", "10"]
    assert train(argv + park + ["--epochs", "1"]) == 0
    assert records(tmp_path, "dng")[-1]["final"]
    with pytest.raises(SystemExit, match="--node-dropout 0.2, this command gives 0.0"):
        train(argv + [a if a != "--node-dropout" else "--dropout" for a in park]
              + ["--epochs", "2", "--resume"])


def test_the_batch_defaults_to_the_zoo_family_and_the_flag_wins(small_zoo, wild_zoo, tmp_path):
    for zoo, family_batch in ((small_zoo, 128), (wild_zoo, 32)):
        args = cgt._parse(["--zoo-dir", str(zoo), *dirs(tmp_path)])
        assert args.batch_size is None
        cgt.configure(args)
        assert args.batch_size == family_batch
        args = cgt._parse(["--zoo-dir", str(zoo), "--batch-size", "16", *dirs(tmp_path)])
        cgt.configure(args)
        assert args.batch_size == 16
    tiny = [a for a in TINY if a not in ("--batch-size", "16")]
    assert train(["--zoo-dir", str(wild_zoo), "--encoder", "statnn", "--epochs", "1", *tiny,
                  *dirs(tmp_path)]) == 0
    header = (tmp_path / "log" / f"{run_name(cgt.SCRIPT, 'statnn', 0)}.txt").read_text()
    assert "epochs 1, batch 32 x 1 process(es)" in header


def test_probes_give_the_graph_encoders_learned_images_of_the_zoo_shape(small_zoo, tmp_path):
    """``--probes N``: each graph encoder gets N learned images of the zoo's image shape,
    every CNN of a batch is probed, and the images learn; without the flag each encoder
    gets its default count, with ``--probes 0`` none; StatNN ignores the flag; a resume
    with another count is refused."""
    from neural_graphs.encoders.probes import ProbeFeatures

    def probes_of(model):
        return [m for m in model.modules() if isinstance(m, ProbeFeatures)]

    argv = ["--zoo-dir", str(small_zoo), *TINY, *dirs(tmp_path)]
    args = cgt._parse(argv + ["--probes", "3"])
    assert cgt.SPLITS.get(args).zoo.image_shape == (1, 8, 8)
    batch = Batch.from_data_list(cgt.SPLITS.get(args).train[:5])
    for side in ("dng", "ngnn", "ngt"):
        model = cgt.build_predictor(args, 0, side)
        (probes,) = probes_of(model)
        assert tuple(probes.images.shape) == (3, 1, 8, 8)
        (grad,) = torch.autograd.grad(model(batch).sum(), probes.images)
        assert grad.abs().sum() > 0
        default = cgt.ENCODER_DEFAULTS[side].probes
        assert [p.num_probes for p in probes_of(cgt.build_predictor(cgt._parse(argv), 0,
                                                                      side))] == \
            ([default] if default else [])
        assert not probes_of(cgt.build_predictor(cgt._parse(argv + ["--probes", "0"]), 0,
                                                 side))
    assert not probes_of(cgt.build_predictor(args, 0, "statnn"))
    assert {cgt.ENCODER_DEFAULTS[side].probes for side in ("dng", "ngnn", "ngt")} == {32}
    assert train(argv + ["--encoder", "dng", "--probes", "3", "--epochs", "1"]) == 0
    assert records(tmp_path, "dng")[-1]["final"]
    with pytest.raises(SystemExit, match="--probes 3, this command gives 0"):
        train(argv + ["--encoder", "dng", "--probes", "0", "--epochs", "2", "--resume"])


def test_probes_are_refused_for_a_zoo_without_its_image_shape(small_zoo, tmp_path, capsys):
    zoo = copy_zoo(small_zoo, tmp_path / "zoo")
    manifest = json.loads((zoo / "manifest.json").read_text())
    del manifest["config"]["image_shape"]
    (zoo / "manifest.json").write_text(json.dumps(manifest))
    argv = ["--zoo-dir", str(zoo), "--encoder", "dng", "--epochs", "1", *TINY]
    assert train(argv + ["--probes", "2"] + dirs(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "--probes: the zoo" in err and "does not record its image shape" in err, err
    assert not (tmp_path / "log").exists()


def test_vit_zoos_get_no_probes_by_default_and_refuse_the_flag(small_zoo, tmp_path,
                                                              monkeypatch):
    from types import SimpleNamespace

    from neural_graphs.zoo_data import ZooGraphs

    vit = ZooGraphs([], (4, 4), "vit", "", 1, (1, 28, 28))
    args = cgt._parse(["--zoo-dir", str(small_zoo), *dirs(tmp_path)])
    assert cgt.probe_images(args, vit, "dng") == {}
    small = ZooGraphs([], (3, 3), "small", "", 1, (1, 28, 28))
    assert cgt.probe_images(args, small, "dng") == {"probes": 32, "probe_shape": (1, 28, 28)}
    assert cgt.probe_images(args, small, "statnn") == {}
    five = cgt._parse(["--zoo-dir", str(small_zoo), "--probes", "5", *dirs(tmp_path)])
    assert cgt.probe_images(five, small, "ngt") == {"probes": 5, "probe_shape": (1, 28, 28)}
    assert cgt.probe_images(five, small, "nfn") == cgt.probe_images(five, vit, "ngt") == {}
    monkeypatch.setattr(cgt.SPLITS, "get", lambda args: SimpleNamespace(zoo=vit))
    with pytest.raises(cgt.JobRefused, match="a vit zoo get no probe images"):
        cgt.configure(cgt._parse(["--zoo-dir", str(small_zoo), "--probes", "4",
                                  *dirs(tmp_path)]))
    assert cgt.configure(args).task is not None


def test_probe_shape_needs_probes_and_a_graph_encoder():
    from jobs.zoo_jobs import make_zoo_encoder
    from neural_graphs.encoders.build import build_encoder

    with pytest.raises(ValueError, match=r"probe_shape \(1, 8, 8\) needs probes > 0"):
        build_encoder("dng", 1, hidden=8, layers=1, probe_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="the statnn encoder has no probe features"):
        build_encoder("statnn", 1, hidden=8, layers=1, probes=2, probe_shape=(1, 8, 8))
    with pytest.raises(ValueError, match=r"probes=2 needs the probe images' probe_shape"):
        make_zoo_encoder("dng", 8, 1, 8, 1.0, probes=2)


def test_node_dropout_is_refused_for_an_encoder_without_node_states():
    from neural_graphs.encoders.build import build_encoder

    with pytest.raises(ValueError, match="node_dropout is an option of the dng encoder only"):
        build_encoder("ngnn", 1, hidden=8, layers=1, node_dropout=0.1)
    with pytest.raises(ValueError, match=r"node_dropout must be in \[0, 1\), got 1.0"):
        build_encoder("dng", 1, hidden=8, layers=1, node_dropout=1.0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got -0.1"):
        add_output_dropout(build_encoder("dng", 1, hidden=8, layers=1), -0.1)


def test_augmented_training_networks_reach_statnn_as_their_own_statistics(small_zoo, tmp_path):
    argv = ["--zoo-dir", str(small_zoo), "--neuron-scale", "3", "--sign-flip", "0.5"] + TINY
    args = cgt._parse(argv + dirs(tmp_path))
    train_loader = cgt.zoo_loaders(args, 0, False)[0]
    plain = cgt.SPLITS.get(args).train
    assert "statnn_features" not in next(iter(train_loader))
    changed = [not torch.equal(train_loader.dataset[i].edge_attr, graph.edge_attr)
               for i, graph in enumerate(plain)]
    assert len(changed) == len(plain) and all(changed)
    val_loader = cgt.zoo_loaders(args, 0, False)[1]
    assert val_loader.dataset is cgt.SPLITS.get(args).val  # held-out networks as they are
    assert train(argv + ["--encoder", "statnn", "--epochs", "1"] + dirs(tmp_path)) == 0
    assert records(tmp_path, "statnn")[-1]["final"] is True


def test_encoders_that_read_one_architecture_are_refused_on_a_mixed_zoo(wild_zoo, tmp_path,
                                                                        capsys):
    argv = ["--zoo-dir", str(wild_zoo), "--epochs", "1"] + TINY
    assert train(argv + ["--encoder", "nfn"] + dirs(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "the nfn side cannot be built" in err and "wild family" in err
    assert "reads one architecture" in err and "Traceback" not in err
    assert load_zoo_graphs(wild_zoo, progress=False).kernel_shape == (7, 7)
    # Under --encoder all the graph encoders still train; NFN is skipped with a note.
    assert train(argv + ["--encoder", "all", "--max-train-batches", "1"]
                 + dirs(tmp_path / "all")) == 0
    assert "the nfn encoder is skipped" in capsys.readouterr().err
    trained = {p.stem for p in (tmp_path / "all" / "log").glob("*.jsonl")}
    assert trained >= {run_name(cgt.SCRIPT, side, 0) for side in ("ngnn", "ngt", "dng")}
    assert run_name(cgt.SCRIPT, "nfn", 0) not in trained
    assert records(tmp_path / "all", "ngt")[-1]["final"] is True


def test_train_networks_trains_on_fewer_networks_and_is_checked(small_zoo, tmp_path,
                                                                       capsys):
    argv = ["--zoo-dir", str(small_zoo), "--encoder", "statnn", "--epochs", "1"]
    args = cgt._parse(argv + ["--train-networks", "5"] + dirs(tmp_path))
    data, full = cgt.SPLITS.get(args), cgt.SPLITS.get(cgt._parse(argv + dirs(tmp_path)))
    assert len({int(g.network) for g in data.train}) == 5
    assert {int(g.network) for g in data.train} < {int(g.network) for g in full.train}
    assert [int(g.network) for g in data.test] == [int(g.network) for g in full.test]
    assert train(argv + ["--train-networks", "5"] + dirs(tmp_path)) == 0
    assert records(tmp_path, "statnn")[-1]["final"]
    with pytest.raises(SystemExit, match="--train-networks 5, this command gives 6"):
        train(argv + ["--train-networks", "6", "--resume", "--epochs", "2"] + dirs(tmp_path))
    capsys.readouterr()
    assert train(argv + ["--train-networks", "999"] + dirs(tmp_path / "many")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --train-networks: ") and "got 999" in err, err
    assert not (tmp_path / "many" / "log").exists()


def test_help_lists_the_job_flags(capsys):
    assert cgt.main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--zoo-dir", "--encoder {statnn,nfn,ngnn,ngt,dng,all}",
                 "--loss {bce,mse,bce_rank}", "--split-seed", "--train-networks N",
                 "--hidden", "--rff-sigma", "--dropout P", "--node-dropout P",
                 "--weight-decay", "--amsgrad", "--max-grad-norm", "--probes N"):
        assert flag in text


@pytest.mark.parametrize("argv,flag", [
    (["--rff-sigma", "-1"], "--rff-sigma"), (["--rff-sigma", "nan"], "--rff-sigma"),
    (["--hidden", "0"], "--hidden"), (["--rff-dim", "0"], "--rff-dim"),
    (["--threads", "0"], "--threads"), (["--split-seed", "-1"], "--split-seed"),
    (["--train-networks", "0"], "--train-networks"),
    (["--sign-flip", "1.5"], "--sign-flip"), (["--neuron-scale", "0.5"], "--neuron-scale"),
    (["--dropout", "1"], "--dropout"), (["--node-dropout", "-0.1"], "--node-dropout"),
    (["--weight-decay", "-1"], "--weight-decay"), (["--probes", "-1"], "--probes"),
    (["--max-grad-norm", "nan"], "--max-grad-norm")])
def test_the_parser_refuses_values_out_of_range(argv, flag, small_zoo, tmp_path, capsys):
    assert train(["--zoo-dir", str(small_zoo), *argv] + dirs(tmp_path)) == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "Traceback" not in err
    assert not (tmp_path / "log").exists()


def test_help_shows_per_encoder_epochs_and_no_data_dir(capsys):
    assert cgt.main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "training epochs; default per encoder: statnn 100, nfn 40, ngnn 20, ngt 8, dng 8" \
        in text
    assert "[--data-dir" not in text and "(default: 20)" not in text


def test_a_damaged_zoo_is_refused_with_the_reason_before_training(small_zoo, tmp_path, capsys):
    zoo_dir = copy_zoo(small_zoo, tmp_path / "zoo")
    shard = sorted(p for p in zoo_dir.iterdir() if p.suffix == ".pt")[0]
    shard.write_bytes(shard.read_bytes()[:100])
    assert train(["--zoo-dir", str(zoo_dir), "--no-graph-cache"] + dirs(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --zoo-dir: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and not (tmp_path / "log").exists()
