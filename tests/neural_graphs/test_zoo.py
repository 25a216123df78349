"""CNN zoo: plain rebuildable members, vectorised training equal to torch's, files, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import CNN_Zoo_Generate
from neural_graphs import zoo, zoo_cnn
from utils.checksums import file_hexdigest

ALLOWED = (nn.Sequential, nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU,
           nn.Tanh, nn.Sigmoid, nn.Dropout, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear,
           zoo.ResidualBlock)


def synthetic_data(train: int = 96, test: int = 64, size: int = 16, seed: int = 0) -> zoo.ZooData:
    """Ten classes, each a fixed random pattern plus noise: learnable in one epoch."""
    rng = np.random.default_rng(seed)
    templates = rng.uniform(0, 255, (10, size, size))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 10, n)
        x = np.clip(0.6 * templates[y] + rng.normal(0, 50, (n, size, size)), 0, 255)
        return x.astype(np.uint8), y

    return zoo.ZooData.from_uint8("synthetic", *draw(train), *draw(test), num_classes=10)


def wild_groups(num: int = 40, group_size: int = 4, size: int = 16) -> list[dict]:
    config = zoo.ZooConfig(family="wild", num=num, group_size=group_size, epochs=[1])
    return zoo.plan_zoo(config, 1, 10, size)


def test_plans_cover_the_families() -> None:
    groups = wild_groups(num=200)
    layers = [layer for g in groups for layer in g["networks"][0]["arch"]["layers"]]
    assert {layer["residual"] for layer in layers} == {"none", "identity", "projection"}
    assert {layer["kernel_size"] for layer in layers} == {3, 5, 7}
    assert {layer["batch_norm"] for layer in layers} == {True, False}
    depths = {len(g["networks"][0]["arch"]["layers"]) for g in groups}
    assert depths == {2, 3, 4, 5}
    assert all(4 <= layer["out_channels"] <= 32 for layer in layers)
    acts = {n["arch"]["activation"] for g in groups for n in g["networks"]}
    assert acts == set(zoo.ACTIVATIONS)
    small = zoo.plan_zoo(zoo.ZooConfig(num=100, group_size=16), 1, 10, 28)
    assert sorted(n["network"] for g in small for n in g["networks"]) == list(range(100))
    for g in small:
        assert len(g["networks"]) <= 16
        assert {n["hparams"]["train_fraction"] for n in g["networks"]} == {g["train_fraction"]}
        assert {(layer["out_channels"], layer["kernel_size"], layer["stride"])
                for n in g["networks"] for layer in n["arch"]["layers"]} == {(16, 3, 2)}
    assert zoo.plan_zoo(zoo.ZooConfig(num=100, group_size=16), 1, 10, 28) == small


def test_build_cnn_is_plain_and_fx_traceable() -> None:
    archs = [n["arch"] for g in wild_groups(num=60, group_size=6) for n in g["networks"][:1]]
    archs.append(zoo.plan_zoo(zoo.ZooConfig(num=2), 1, 10, 28)[0]["networks"][0]["arch"])
    assert any(layer["residual"] == "identity" for a in archs for layer in a["layers"])
    x = torch.randn(3, 1, 16, 16)
    for arch in archs:
        net = zoo.build_cnn(arch).eval()
        kinds = {type(m) for m in net.modules()}
        assert kinds <= set(ALLOWED), kinds - set(ALLOWED)
        traced = torch.fx.symbolic_trace(net)
        assert torch.equal(traced(x), net(x))


def test_build_cnn_rejects_bad_arch() -> None:
    arch = zoo.plan_zoo(zoo.ZooConfig(num=1), 1, 10, 28)[0]["networks"][0]["arch"]
    bad = json.loads(json.dumps(arch))
    bad["layers"][1]["residual"] = "identity"
    bad["layers"][1]["stride"] = 2
    with pytest.raises(ValueError, match="identity shortcut needs"):
        zoo.build_cnn(bad)
    with pytest.raises(ValueError, match="activation must be one of"):
        zoo.build_cnn({**arch, "activation": "swish"})
    with pytest.raises(ValueError, match="misses"):
        zoo.build_cnn({"layers": []})


@pytest.mark.parametrize("family", ["small", "wild"])
def test_stacked_forward_equals_plain_modules_float64(family: str) -> None:
    if family == "wild":
        groups = [g for g in wild_groups(num=48, group_size=6)
                  if any(la["batch_norm"] for la in g["networks"][0]["arch"]["layers"])][:3]
    else:
        groups = zoo.plan_zoo(zoo.ZooConfig(num=24, group_size=8), 1, 10, 16)[:2]
    for g in groups:
        nets = g["networks"]
        archs = [{**n["arch"], "dropout": 0.0} for n in nets]
        stack = zoo.StackedCNNs.initialise(archs, [n["hparams"]["seed"] for n in nets],
                                           [n["hparams"]["init_scale"] for n in nets],
                                           dtype=torch.float64)
        with torch.no_grad():
            for buffer in stack.buffers.values():
                buffer.uniform_(0.5, 1.5)
        plain = [stack.module(i, torch.float64) for i in range(stack.n)]
        shared = torch.randn(5, 1, 16, 16, dtype=torch.float64)
        own = torch.randn(5, stack.n, 16, 16, dtype=torch.float64)
        for layout in (torch.channels_last, torch.contiguous_format, None):
            stack.eval_memory_format = layout  # None: the faster, measured
            out_shared, out_own = stack(shared), stack(own)
            for i, net in enumerate(plain):
                assert (net(shared) - out_shared[:, i]).abs().max() <= 1e-10
                assert (net(own[:, i:i + 1]) - out_own[:, i]).abs().max() <= 1e-10
        out_train = stack(own, training=True)  # BatchNorm on batch statistics
        for i, net in enumerate(plain):
            net.train()
            assert (net(own[:, i:i + 1]) - out_train[:, i]).abs().max() <= 1e-10
            for key, value in net.state_dict().items():
                if "running" in key:
                    assert (value - stack.buffers[key][i]).abs().max() <= 1e-12


def _a_group_of_several() -> list[dict]:
    groups = zoo.plan_zoo(zoo.ZooConfig(num=24, group_size=4), 1, 10, 16)
    return next(g["networks"] for g in groups if len(g["networks"]) >= 3)


def test_a_shared_input_gives_the_gradients_of_its_copies_float64() -> None:
    """A shared input meets the first convolution as one plain convolution of the stacked
    filters (or, before a residual unit, is copied per network): the same function and
    gradients as every network reading its own copy."""
    first_residual = {"in_channels": 1, "num_classes": 10, "activation": "tanh",
                      "dropout": 0.0, "layers": [
                          {"out_channels": 4, "kernel_size": 3, "stride": 2,
                           "batch_norm": True, "residual": "projection"},
                          {"out_channels": 4, "kernel_size": 3, "stride": 1,
                           "batch_norm": False, "residual": "identity"}]}
    nets = _a_group_of_several()
    for archs in ([{**n["arch"], "dropout": 0.0} for n in nets],
                  [first_residual] * 3):
        stack = zoo.StackedCNNs.initialise(archs, list(range(len(archs))), [1.0] * len(archs),
                                           dtype=torch.float64)
        assert isinstance(stack.template[0], nn.Conv2d) != (archs[0] is first_residual)
        shared = torch.randn(6, 1, 16, 16, dtype=torch.float64)
        grads = []
        for x in (shared, shared.repeat(1, stack.n, 1, 1)):
            for p in stack.params.values():
                p.grad = None
            out = stack(x, training=True)
            weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
            (out * weights).sum().backward()
            grads.append((out.detach(), {k: p.grad.clone() for k, p in stack.params.items()}))
        (out_a, grad_a), (out_b, grad_b) = grads
        assert (out_a - out_b).abs().max() <= 1e-12
        for key in grad_a:
            assert (grad_a[key] - grad_b[key]).abs().max() <= 1e-10, key


def test_inference_layout_is_measured_once_per_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    archs = [n["arch"] for n in _a_group_of_several()]
    stack = zoo.StackedCNNs.initialise(archs, list(range(len(archs))), [1.0] * len(archs))
    timed = []
    original = zoo.StackedCNNs._fastest_format

    def counting(self: zoo.StackedCNNs, x: torch.Tensor) -> torch.memory_format:
        timed.append(tuple(x.shape))
        return original(self, x)

    monkeypatch.setattr(zoo.StackedCNNs, "_fastest_format", counting)
    monkeypatch.setattr(zoo_cnn, "_EVAL_FORMATS", {})
    x = torch.randn(40, 1, 16, 16)
    first = stack.eval_format(x)
    assert first in (torch.channels_last, torch.contiguous_format)
    assert timed == [(32, 1, 16, 16)]  # on the first 32 images
    other = zoo.StackedCNNs.initialise(archs, [7] * len(archs), [2.0] * len(archs))
    assert other.eval_format(x[:5]) is first and len(timed) == 1  # same skeleton and shape
    stack.eval_format(torch.randn(3, stack.n, 16, 16))
    assert len(timed) == 2  # one input per network: another measurement
    stack.eval_memory_format = torch.contiguous_format
    assert stack.eval_format(x) is torch.contiguous_format and len(timed) == 2
    with torch.no_grad():
        assert stack(x, training=True).shape == (40, stack.n, 10)  # training: no measurement
    assert len(timed) == 2


def _replay(group: dict, data: zoo.ZooData, config: zoo.ZooConfig) -> list[nn.Module]:
    """Train every network of ``group`` alone with torch.optim, following the documented
    data protocol of train_group."""
    m = len(data.train_x)
    size = max(1, round(group["train_fraction"] * m))
    nets = []
    for n in group["networks"]:
        hp = n["hparams"]
        net = zoo.build_cnn(n["arch"]).double()
        gen = torch.Generator().manual_seed(hp["seed"])
        with torch.no_grad():
            for module in net.modules():
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    bound = 1 / math.sqrt(module.weight[0].numel())
                    for p in (module.weight, module.bias):
                        p.copy_((torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1)
                                * bound * hp["init_scale"])
        if hp["optimizer"] == "adam":
            opt = torch.optim.Adam(net.parameters(), lr=hp["lr"],
                                   weight_decay=hp["weight_decay"])
        else:
            opt = torch.optim.SGD(net.parameters(), lr=hp["lr"], momentum=0.9,
                                  weight_decay=hp["weight_decay"])
        rng = np.random.default_rng(hp["seed"])
        subset = rng.choice(m, size, replace=False)
        net.train()
        for _ in range(max(config.epochs)):
            order = subset[rng.permutation(size)]
            for start in range(0, size, config.batch_size):
                idx = torch.as_tensor(order[start:start + config.batch_size])
                opt.zero_grad()
                F.cross_entropy(net(data.train_x[idx].double()), data.train_y[idx]).backward()
                opt.step()
        nets.append(net.eval())
    return nets


@pytest.mark.parametrize("family", ["small", "wild"])
def test_vectorised_training_equals_torch_optim_float64(family: str) -> None:
    data = synthetic_data(train=40, test=30)
    config = zoo.ZooConfig(family=family, num=12, group_size=6, epochs=[2], batch_size=16)
    groups = zoo.plan_zoo(config, 1, 10, 16)
    group = max(groups, key=lambda g: (len({n["hparams"]["optimizer"] for n in g["networks"]}),
                                       g["train_fraction"]))
    for n in group["networks"]:
        n["arch"]["dropout"] = n["hparams"]["dropout"] = 0.0
    result = zoo.train_group(group, data, config, dtype=torch.float64)
    assert {n["hparams"]["optimizer"] for n in group["networks"]} == {"adam", "sgd"}
    members = {m["network"]: m for m in result["members"]}
    for n, net in zip(group["networks"], _replay(group, data, config)):
        saved = members[n["network"]]["state_dict"]
        for key, value in net.state_dict().items():
            assert (value.double() - saved[key].double()).abs().max() <= 1e-8, key
        pred = zoo.predictions(net(data.test_x.double()))
        assert (pred == data.test_y).double().mean().item() == members[n["network"]]["test_acc"]


def _check_members_reproduce(out: Path, data: zoo.ZooData) -> list[zoo.ZooMember]:
    manifest = json.loads((out / "manifest.json").read_text())
    members = zoo.load_zoo(out)
    nets = {n["network"]: n for s in manifest["shards"] for n in s["networks"]}
    m_train = len(data.train_x)
    for member in members:
        model = member.model(torch.float64)
        logits = model(data.test_x.double())
        pred = logits.argmax(1)
        pred[~logits.isfinite().all(1)] = -1
        assert (pred == data.test_y).double().mean().item() == member.test_acc
        hp = nets[member.network]["hparams"]
        subset = np.random.default_rng(hp["seed"]).choice(
            m_train, max(1, round(hp["train_fraction"] * m_train)), replace=False)
        train_pred = zoo.predictions(model(data.train_x[subset].double()))
        assert (train_pred == data.train_y[subset]).double().mean().item() == member.train_acc
        assert isinstance(model, nn.Sequential) and not model.training
    return members


@pytest.mark.parametrize("family", ["small", "wild"])
def test_zoo_end_to_end_and_rebuilt_members_reproduce_accuracy(tmp_path: Path,
                                                               family: str) -> None:
    data = synthetic_data(train=64, test=48)
    num = 24 if family == "small" else 8
    config = zoo.ZooConfig(family=family, num=num, group_size=8 if family == "small" else 4,
                           epochs=[0, 1], batch_size=16)
    manifest = zoo.generate_zoo(config, data, tmp_path, device="cpu", progress=False,
                                log=lambda line: None)
    assert manifest["complete"] and manifest["networks"] == num
    saved = json.loads((tmp_path / "manifest.json").read_text())
    assert saved["complete"] and saved["config"]["family"] == family
    for shard in saved["shards"]:
        assert file_hexdigest(tmp_path / shard["file"]) == shard["sha256"]
    members = _check_members_reproduce(tmp_path, data)
    alive = sum(n["diverged_epoch"] is None for s in saved["shards"] for n in s["networks"])
    assert len(members) == saved["members"] >= alive * 2
    assert {m.epoch for m in members} == {0, 1}
    first = members[0]
    assert set(first.hparams) >= {"lr", "weight_decay", "init_scale", "dropout",
                                  "activation", "optimizer", "train_fraction", "seed"}


def test_resume_after_interruption_and_corrupt_shard(tmp_path: Path) -> None:
    data = synthetic_data(train=48, test=32)
    config = zoo.ZooConfig(num=24, group_size=6, epochs=[1], batch_size=16)
    quiet = {"device": "cpu", "progress": False, "log": lambda line: None}
    partial = zoo.generate_zoo(config, data, tmp_path / "a", max_groups=2, **quiet)
    assert not partial["complete"] and partial["shards_done"] == 2
    with pytest.raises(zoo.StoreError, match="incomplete"):
        zoo.load_zoo(tmp_path / "a")
    kept = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a").glob("shard_*.pt")}
    shard = sorted(kept)[0]
    (tmp_path / "a" / sorted(kept)[1]).write_bytes(b"torn")  # fails its sha256: redone
    done = zoo.generate_zoo(config, data, tmp_path / "a", **quiet)
    assert done["complete"]
    assert (tmp_path / "a" / shard).stat().st_mtime_ns == kept[shard]
    fresh = zoo.generate_zoo(config, data, tmp_path / "b", **quiet)
    strip = lambda m: [{k: v for k, v in s.items() if k != "sha256"}  # noqa: E731
                       for s in m["shards"]]
    assert strip(done) == strip(fresh)
    resumed, uninterrupted = zoo.load_zoo(tmp_path / "a"), zoo.load_zoo(tmp_path / "b")
    for x, y in zip(resumed, uninterrupted):
        assert all(torch.equal(x.state_dict[k], y.state_dict[k]) for k in x.state_dict)


def test_ranks_split_the_zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = synthetic_data(train=32, test=16)
    config = zoo.ZooConfig(num=16, group_size=4, epochs=[1], batch_size=16)
    quiet = {"device": "cpu", "progress": False, "log": lambda line: None}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    first = zoo.generate_zoo(config, data, tmp_path, **quiet)
    assert not first["complete"] and not (tmp_path / "manifest.json").exists()
    monkeypatch.setenv("RANK", "0")
    second = zoo.generate_zoo(config, data, tmp_path, **quiet)
    assert second["complete"] and second["networks"] == 16
    parts = zoo.assign_groups([5.0, 1.0, 1.0, 3.0], 2)
    assert sorted(sum(parts, [])) == [0, 1, 2, 3] and parts == [[0], [1, 2, 3]]


def test_bad_input_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = synthetic_data(train=32, test=16)
    quiet = {"device": "cpu", "progress": False, "log": lambda line: None}
    zoo.generate_zoo(zoo.ZooConfig(num=2, epochs=[0]), data, tmp_path, **quiet)
    with pytest.raises(zoo.ConfigMismatchError, match="num: saved 2, now 3"):
        zoo.generate_zoo(zoo.ZooConfig(num=3, epochs=[0]), data, tmp_path, **quiet)
    with pytest.raises(zoo.ConfigMismatchError, match="data_sha256"):
        zoo.generate_zoo(zoo.ZooConfig(num=2, epochs=[0]), synthetic_data(32, 16, seed=1),
                         tmp_path, **quiet)
    with pytest.raises(ValueError, match="family must be one of"):
        zoo.ZooConfig(family="zoo")
    with pytest.raises(ValueError, match="num must be at least 1"):
        zoo.ZooConfig(num=0)
    with pytest.raises(FileNotFoundError, match="manifest.json not found"):
        zoo.load_zoo(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        zoo.load_cifar10(tmp_path)
    empty = tmp_path / "empty_data"
    code = CNN_Zoo_Generate.main(["--num", "2", "--out", str(tmp_path / "z"),
                                  "--data-dir", str(empty)])
    assert code == 2 and "t10k-images-idx3-ubyte.gz is missing" in capsys.readouterr().err
    code = CNN_Zoo_Generate.main(["--dataset", "cifar10-gs", "--out", str(tmp_path / "z"),
                                  "--data-dir", str(empty)])
    assert code == 2 and "cifar-10-batches-py" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        CNN_Zoo_Generate.main(["--out", str(tmp_path / "z"), "--epochs", "1,x"])
    assert "comma-separated epochs" in capsys.readouterr().err


def test_cli_on_mnist(tmp_path: Path, shared_data: Path) -> None:
    out = tmp_path / "zoo"
    argv = ["--family", "small", "--num", "4", "--out", str(out), "--data-dir",
            str(shared_data), "--train-images", "64", "--test-images", "100", "--epochs", "1",
            "--group-size", "4"]
    assert CNN_Zoo_Generate.main(argv) == 0
    data = zoo.load_data("mnist", shared_data, 64, 100)
    assert data.train_x.shape == (64, 1, 28, 28)
    members = _check_members_reproduce(out, data)
    assert len({m.network for m in members}) == 4
    assert CNN_Zoo_Generate.main(argv) == 0  # finished: nothing left to train
    with pytest.raises(ValueError, match="--train-images must be between 1 and 5000"):
        zoo.load_data("mnist", shared_data, 6000)


def _fake_cifar(folder: Path, names: dict[str, int], label_key: bytes, classes: int) -> None:
    import pickle

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in names.items():
        entry = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 label_key: list(rng.integers(0, classes, n))}
        (folder / name).write_bytes(pickle.dumps(entry))


def test_cifar_grey_scale(tmp_path: Path) -> None:
    names = {f"data_batch_{i}": 4 for i in range(1, 6)} | {"test_batch": 3}
    _fake_cifar(tmp_path / "cifar-10-batches-py", names, b"labels", 10)
    _fake_cifar(tmp_path / "cifar-100-python", {"train": 6, "test": 2}, b"fine_labels", 100)
    rgb = zoo.load_cifar10(tmp_path)[0].astype(np.float64)  # [20, 3, 32, 32]
    grey = np.clip(np.rint(0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]), 0, 255)
    data = zoo.load_data("cifar10-gs", tmp_path, train_images=12)
    assert data.train_x.shape == (12, 1, 32, 32) and len(data.test_x) == 3
    restored = data.train_x.double().numpy()[:, 0] * data.std + data.mean
    assert np.abs(restored * 255 - grey[:12]).max() < 1e-3
    data100 = zoo.load_data("cifar100-gs", tmp_path)
    assert data100.num_classes == 100 and data100.train_x.shape == (6, 1, 32, 32)
    with pytest.raises(ValueError, match="--test-images must be between 1 and 3"):
        zoo.load_data("cifar10-gs", tmp_path, test_images=4)


def test_a_damaged_shard_of_a_finished_zoo_is_named_and_the_generator_repairs_it(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = synthetic_data(train=32, test=16)
    config = zoo.ZooConfig(num=8, group_size=4, epochs=[0], batch_size=16)
    quiet = {"device": "cpu", "progress": False, "log": lambda line: None}
    zoo.generate_zoo(config, data, tmp_path, **quiet)
    before = zoo.load_zoo(tmp_path)
    shards = sorted(tmp_path.glob("shard_*.pt"))
    kept = {p.name: p.stat().st_mtime_ns for p in shards[1:]}
    shards[0].write_bytes(shards[0].read_bytes()[:64])  # truncated
    with pytest.raises(zoo.StoreError, match=shards[0].name) as caught:
        zoo.load_zoo(tmp_path)
    assert "damaged" in str(caught.value)
    assert "run the same python -m CNN_Zoo_Generate command again" in str(caught.value)
    assert zoo.generate_zoo(config, data, tmp_path, **quiet)["complete"]
    assert {p.name: p.stat().st_mtime_ns for p in shards[1:]} == kept  # only it redone
    after = zoo.load_zoo(tmp_path)
    assert [(m.network, m.epoch) for m in after] == [(m.network, m.epoch) for m in before]
    for x, y in zip(after, before):
        assert all(torch.equal(x.state_dict[k], y.state_dict[k]) for k in x.state_dict)
    (tmp_path / "config.json").write_text("{")  # the command line refuses a damaged folder
    code = CNN_Zoo_Generate.main(["--num", "8", "--out", str(tmp_path), "--data-dir",
                                  str(tmp_path / "no_data")])
    assert code == 2 and "is missing" in capsys.readouterr().err


def test_a_zoo_and_an_inr_set_say_what_they_are(tmp_path: Path) -> None:
    from neural_graphs.inr_data import InvalidINRSet, check_inr_dir
    from neural_graphs.inr_fit import FitConfig, images_digest, load_inr_set, run_fit
    from neural_graphs.zoo_data import load_zoo_graphs

    data = synthetic_data(train=32, test=16)
    quiet = {"device": "cpu", "progress": False, "log": lambda line: None}
    zoo.generate_zoo(zoo.ZooConfig(num=2, epochs=[0]), data, tmp_path / "zoo", **quiet)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    labels = np.arange(6) % 3
    config = FitConfig(recipe="fast", first_layer_init="siren", steps=1, lr=1e-3, seed=0,
                       source="synthetic", limit=None, copies=0, batch_inrs=6, shard_size=6,
                       stop_psnr=None, check_every=1, dtype="float32",
                       images_sha256=images_digest(images, labels))
    run_fit(images, labels, {"train": np.arange(4), "val": np.array([4]),
                             "test": np.array([5])}, config, tmp_path / "inrs", progress=False)
    is_zoo = r"is a CNN zoo \(manifest kind 'cnn-zoo'\), not an INR set; pass it as --zoo-dir"
    is_set = r"is an INR set \(manifest kind 'inr-set'\), not a CNN zoo; pass it as --inr-dir"
    with pytest.raises(zoo.StoreError, match=is_zoo):
        load_inr_set(tmp_path / "zoo")
    with pytest.raises(InvalidINRSet, match=is_zoo):
        check_inr_dir(tmp_path / "zoo")
    with pytest.raises(zoo.StoreError, match=is_set):
        zoo.load_zoo(tmp_path / "inrs")
    with pytest.raises(zoo.StoreError, match=is_set):
        load_zoo_graphs(tmp_path / "inrs", cache=False)
    # manifests written before the kind was recorded are recognised by their contents
    for folder in ("zoo", "inrs"):
        manifest = json.loads((tmp_path / folder / "manifest.json").read_text())
        del manifest["kind"]
        (tmp_path / folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(zoo.StoreError, match=is_zoo):
        load_inr_set(tmp_path / "zoo")
    with pytest.raises(zoo.StoreError, match=is_set):
        zoo.load_zoo(tmp_path / "inrs")
    assert len(zoo.load_zoo(tmp_path / "zoo")) == 2 and load_inr_set(tmp_path / "inrs")


def test_generator_help_and_parser(capsys: pytest.CaptureFixture) -> None:
    text = " ".join(CNN_Zoo_Generate.build_parser().format_help().split())
    assert "(default: 1000)" in text.split("--networks NUM ", 1)[1].split(" --out", 1)[0]
    for action in CNN_Zoo_Generate.build_parser()._actions:
        if action.option_strings and action.dest != "help":
            entry = " ".join((action.help or "").split())
            assert entry and entry.count("default") <= 1, action.dest
    for flags in (["--num", "0"], ["--batch-size", "0"], ["--group-size", "-1"],
                  ["--seed", "-1"], ["--threads", "0"], ["--train-images", "0"],
                  ["--device", "nonsense"]):
        with pytest.raises(SystemExit) as exit_info:
            CNN_Zoo_Generate.main(["--out", "unused", *flags])
        assert exit_info.value.code == 2, flags
    capsys.readouterr()


def _within(value: float, bounds: list[float]) -> bool:
    return bounds[0] <= value <= bounds[1]


def test_small_family_samples_its_ranges_and_the_manifest_records_them(tmp_path: Path) -> None:
    space = zoo.SMALL_SPACE
    config = zoo.ZooConfig(num=400)
    assert config.epochs == zoo.DEFAULT_EPOCHS["small"] == [0, 1, 2, 3, 6, 8, 11, 12]
    assert zoo.ZooConfig(family="wild").epochs == [1, 2, 4, 8]
    nets = [n for g in zoo.plan_zoo(config, 1, 10, 28) for n in g["networks"]]
    sampled = {"seed", "optimizer", "lr", "weight_decay", "init_scale", "dropout",
               "activation", "train_fraction"}
    for n in nets:
        hp = n["hparams"]
        assert set(hp) == sampled
        opt = hp["optimizer"]
        assert _within(hp["lr"], space["lr"][opt])
        assert _within(hp["init_scale"], space["init_scale"][opt])
        assert _within(hp["weight_decay"], space["weight_decay"])
        assert _within(hp["dropout"], space["dropout"])
        assert hp["activation"] in space["activation"]
        assert hp["train_fraction"] in space["train_fraction"]
    for key in ("optimizer", "activation", "train_fraction"):
        assert {n["hparams"][key] for n in nets} == set(space[key])
    sgd = [n["hparams"]["init_scale"] for n in nets if n["hparams"]["optimizer"] == "sgd"]
    assert min(sgd) >= 1.0 and max(sgd) > 3.0  # SGD from small initialisations sat at chance
    # What a zoo records: its ranges in the configuration, every draw in the manifest.
    data = synthetic_data(train=32, test=16)
    quiet = {"device": "cpu", "progress": False, "log": lambda line: None}
    small = zoo.ZooConfig(num=6, epochs=[0], batch_size=16)
    zoo.generate_zoo(small, data, tmp_path, **quiet)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["config"]["hparam_space"] == json.loads(json.dumps(space))
    recorded = {n["network"]: n["hparams"] for s in manifest["shards"] for n in s["networks"]}
    planned = {n["network"]: n["hparams"]
               for g in zoo.plan_zoo(small, 1, 10, 16) for n in g["networks"]}
    assert recorded == planned and len(recorded) == 6
    wild = zoo.ZooConfig(family="wild", num=2, epochs=[0]).to_dict(data)
    assert wild["hparam_space"] == json.loads(json.dumps(zoo.WILD_HPARAM_SPACE))
    with pytest.raises(zoo.ConfigMismatchError, match="hparam_space"):  # another zoo
        zoo.check_config(tmp_path, {**small.to_dict(data), "hparam_space": zoo.HPARAM_SPACE})


def test_wild_family_samples_its_measured_ranges() -> None:
    space = zoo.WILD_HPARAM_SPACE
    nets = [n for g in zoo.plan_zoo(zoo.ZooConfig(family="wild", num=400), 1, 10, 28)
            for n in g["networks"]]
    for n in nets:
        hp, opt = n["hparams"], n["hparams"]["optimizer"]
        assert _within(hp["lr"], space["lr"][opt])
        assert _within(hp["init_scale"], space["init_scale"][opt])
        assert hp["activation"] == n["arch"]["activation"]
    # what collapsed: SGD from small initialisations or low rates, sigmoid without
    # BatchNorm, 8 steps an epoch
    sgd = [n["hparams"] for n in nets if n["hparams"]["optimizer"] == "sgd"]
    assert min(hp["init_scale"] for hp in sgd) >= 1.0 and min(hp["lr"] for hp in sgd) >= 3e-3
    assert {n["hparams"]["train_fraction"] for n in nets} == {0.25, 0.5, 1.0}
    by_norm = {True: set(), False: set()}
    for n in nets:
        by_norm[n["arch"]["layers"][0]["batch_norm"]].add(n["hparams"]["activation"])
    assert by_norm[True] == set(zoo.ACTIVATIONS)
    assert by_norm[False] == set(zoo.ACTIVATIONS) - {"sigmoid"}
    with pytest.raises(ValueError, match="family must be one of"):
        zoo.hparam_space("cnn")


def test_describe_prints_the_accuracy_histogram_per_epoch_and_draws_it(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from neural_graphs.zoo_describe import NEAR_CHANCE, describe_zoo

    data = synthetic_data(train=48, test=40)
    config = zoo.ZooConfig(num=12, group_size=6, epochs=[0, 1, 2], batch_size=16)
    zoo.generate_zoo(config, data, tmp_path, device="cpu", progress=False,
                     log=lambda line: None)
    assert CNN_Zoo_Generate.main(["--describe", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "near-chance" in text and "chance 10.0%" in text and "describe.png" in text
    png = tmp_path / "describe.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    members = zoo.load_zoo(tmp_path)
    desc = describe_zoo(tmp_path)
    assert [row["epoch"] for row in desc["epochs"]] == [0, 1, 2]
    for row in desc["epochs"]:
        acc = np.array([m.test_acc for m in members if m.epoch == row["epoch"]])
        assert sum(row["counts"]) == row["members"] == len(acc)
        assert row["near_chance"] == pytest.approx(np.mean(np.abs(acc - 0.1) <= NEAR_CHANCE))
        assert row["p10"] == pytest.approx(np.percentile(acc, 10))
        line = next(x for x in text.splitlines() if x.split()[:2] == [str(row["epoch"]),
                                                                      str(len(acc))])
        assert line.split("|")[1].split() == [str(c) for c in row["counts"]]
    by_optimizer = desc["final_near_chance_by"]["optimizer"]
    assert sum(n for _, n in by_optimizer.values()) == desc["epochs"][-1]["members"]
    final = {m.network: m.test_acc for m in members if m.epoch == 2}
    near = sum(abs(a - 0.1) <= NEAR_CHANCE for a in final.values())
    assert desc["final_near_chance_by"]["batch_norm"] == {"False": [near, len(final)]}
    assert f"batch_norm: False {near}/{len(final)}" in text


def test_describe_refuses_a_folder_that_is_not_a_zoo(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.json").write_text('{"kind": "cnn-zoo", "shards": 3}')
    for folder, says in (("empty", "manifest.json not found"), ("missing", "not found"),
                         ("other", "not a readable CNN zoo manifest")):
        assert CNN_Zoo_Generate.main(["--describe", str(tmp_path / folder)]) == 2
        out, err = capsys.readouterr()
        assert not out and err.startswith("error: ") and says in err
        assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "empty" / "describe.png").exists()
    with pytest.raises(SystemExit) as exit_info:  # training still needs --out
        CNN_Zoo_Generate.main(["--num", "2"])
    assert exit_info.value.code == 2 and "--out" in capsys.readouterr().err
