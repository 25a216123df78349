"""The ViT zoo family: SimpleViT from torch.nn, the official recipe, members that rebuild."""

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
from neural_graphs import zoo
from neural_graphs.zoo_vit import (
    VIT_EPOCHS,
    SimpleViT,
    _random_crops,
    build_vit,
    predict_module,
    sincos_2d,
    train_vit_group,
    vit_skeleton,
)

SIZE = 16


def synthetic_data(train: int = 64, test: int = 48, seed: int = 0) -> zoo.ZooData:
    """Ten classes, each a fixed random pattern plus noise."""
    rng = np.random.default_rng(seed)
    templates = rng.uniform(0, 255, (10, SIZE, SIZE))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 10, n)
        x = np.clip(0.6 * templates[y] + rng.normal(0, 50, (n, SIZE, SIZE)), 0, 255)
        return x.astype(np.uint8), y

    return zoo.ZooData.from_uint8("synthetic", *draw(train), *draw(test), num_classes=10)


def test_sincos_matches_its_formula() -> None:
    dim, h, w = 8, 3, 5
    table = sincos_2d(h, w, dim)
    assert table.shape == (h * w, dim)
    omega = [1.0, 1e-4]  # 10000^(-i / (dim/4 - 1)) for i = 0, 1
    for y in range(h):
        for x in range(w):
            row = table[y * w + x]
            expected = [math.sin(x * o) for o in omega] + [math.cos(x * o) for o in omega] + \
                [math.sin(y * o) for o in omega] + [math.cos(y * o) for o in omega]
            assert torch.allclose(row.double(), torch.tensor(expected, dtype=torch.float64),
                                  atol=1e-6)
    with pytest.raises(ValueError, match="multiple of 4"):
        sincos_2d(2, 2, 6)


def test_simplevit_is_the_official_shape_from_torch_nn() -> None:
    model = build_vit(vit_skeleton(1, 10, 28))
    assert isinstance(model, SimpleViT)
    layers = model.encoder.layers
    assert len(layers) == 2 and all(layer.norm_first for layer in layers)
    attn = layers[0].self_attn
    assert attn.embed_dim == 32 and attn.num_heads == 4 and attn.batch_first
    assert layers[0].linear1.out_features == 64
    assert model.pos_embed.shape == (1, 49, 32) and "pos_embed" in dict(model.named_buffers())
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    # Mean pooling over tokens: permuting the patches' embeddings and positions together
    # leaves the output unchanged (no class token, no order).
    model = build_vit(vit_skeleton(1, 10, 8)).double().eval()
    tokens = torch.randn(2, 4, 32, dtype=torch.float64)
    perm = torch.tensor([2, 0, 3, 1])
    out = model.head(model.encoder(tokens).mean(1))
    out_perm = model.head(model.encoder(tokens[:, perm]).mean(1))
    assert torch.allclose(out, out_perm, atol=1e-12)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        SimpleViT(image_size=30)
    with pytest.raises(ValueError, match="kind 'vit'"):
        build_vit({"in_channels": 1})


def test_random_crops_shift_each_image_by_its_own_offset() -> None:
    images = torch.arange(2 * 5 * 5, dtype=torch.float64).view(2, 1, 5, 5)
    rng = np.random.default_rng(3)
    crops = _random_crops(images, 2, rng, fill=-1.0)
    offsets = np.random.default_rng(3).integers(0, 5, size=(2, 2))
    padded = F.pad(images, (2,) * 4, value=-1.0)
    for i in range(2):
        oy, ox = offsets[0, i], offsets[1, i]
        assert torch.equal(crops[i], padded[i, :, oy:oy + 5, ox:ox + 5])
    assert _random_crops(images, 0, rng, 0.0) is images


def test_vit_plan_differs_only_by_seed() -> None:
    config = zoo.ZooConfig(family="vit", num=20)
    assert config.epochs == VIT_EPOCHS and config.batch_size == 128 and config.group_size == 8
    groups = zoo.plan_zoo(config, 1, 10, 28)
    assert [len(g["networks"]) for g in groups] == [8, 8, 4]
    nets = [n for g in groups for n in g["networks"]]
    assert [n["network"] for n in nets] == list(range(20))
    assert len({n["hparams"]["seed"] for n in nets}) == 20
    recipes = {json.dumps({k: v for k, v in n["hparams"].items() if k != "seed"},
                          sort_keys=True) for n in nets}
    assert len(recipes) == 1 and json.loads(recipes.pop())["lr"] == 1e-3
    assert len({json.dumps(n["arch"], sort_keys=True) for n in nets}) == 1


def test_vit_zoo_end_to_end_members_rebuild_and_reproduce(tmp_path: Path) -> None:
    data = synthetic_data()
    config = zoo.ZooConfig(family="vit", num=3, group_size=2, epochs=[0, 1, 2], batch_size=16)
    manifest = zoo.generate_zoo(config, data, tmp_path, device="cpu", progress=False,
                                log=lambda line: None)
    assert manifest["complete"] and manifest["networks"] == 3 and manifest["members"] == 9
    members = zoo.load_zoo(tmp_path)
    for member in members:
        model = member.model(torch.float64)
        assert isinstance(model, SimpleViT) and not model.training
        pred = zoo.predictions(model(data.test_x.double()))
        assert (pred == data.test_y).double().mean().item() == member.test_acc
        train_pred = zoo.predictions(model(data.train_x.double()))
        assert (train_pred == data.train_y).double().mean().item() == member.train_acc
    # Training moved the weights, and a network's members share its initialisation only.
    by_net = {}
    for member in members:
        by_net.setdefault(member.network, {})[member.epoch] = member.state_dict
    for states in by_net.values():
        assert not torch.equal(states[0]["head.weight"], states[2]["head.weight"])
    assert not torch.equal(by_net[0][0]["head.weight"], by_net[1][0]["head.weight"])
    # The same configuration trains the same zoo.
    again = zoo.generate_zoo(config, data, tmp_path / "again", device="cpu", progress=False,
                             log=lambda line: None)
    assert [s["sha256"] for s in again["shards"]] != [] and \
        [m["test_acc"] for s in again["shards"] for m in s["members"]] == \
        [m["test_acc"] for s in manifest["shards"] for m in s["members"]]
    for a, b in zip(zoo.load_zoo(tmp_path / "again"), members):
        assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)


def test_a_group_is_the_networks_trained_alone_with_torch_adam() -> None:
    """Replaying one network by hand (its seed's init, order and crops, torch.optim.Adam)
    gives the member's weights exactly."""
    data = synthetic_data(train=40, test=16)
    config = zoo.ZooConfig(family="vit", num=2, group_size=2, epochs=[1], batch_size=16)
    group = zoo.plan_zoo(config, 1, 10, SIZE)[0]
    members = train_vit_group(group, data, config, dtype=torch.float64)["members"]
    for net, member in zip(group["networks"], members):
        hp = net["hparams"]
        rng = np.random.default_rng(hp["seed"])
        torch.manual_seed(hp["seed"])
        model = build_vit(net["arch"]).double()
        subset = torch.as_tensor(rng.choice(40, 40, replace=False))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        order = subset[torch.as_tensor(rng.permutation(40))]
        x_all, y_all = data.train_x.double(), data.train_y
        for step in range(math.ceil(40 / 16)):
            index = order[step * 16:(step + 1) * 16]
            x = _random_crops(x_all[index], 4, rng, -data.mean / data.std)
            loss = F.cross_entropy(model(x), y_all[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        for key, value in model.state_dict().items():
            assert torch.equal(value, member["state_dict"][key]), key


def test_predict_module_rechecks_near_ties_in_float64() -> None:
    model = build_vit(vit_skeleton(1, 10, 8))
    model.arch = vit_skeleton(1, 10, 8)
    with torch.no_grad():  # every logit equal but the head's bias: ties broken in float64
        model.head.weight.zero_()
        model.head.bias.copy_(torch.linspace(0, 1e-7, 10))
    images = torch.randn(5, 1, 8, 8)
    assert torch.equal(predict_module(model, images), torch.full((5,), 9))
    with pytest.raises(TypeError, match="arch"):
        plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        with torch.no_grad():
            plain[1].weight.zero_()
            plain[1].bias.zero_()
        predict_module(plain, images)


def test_cli_makes_a_vit_zoo_and_describes_it(tmp_path: Path, shared_data: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "zoo"
    assert CNN_Zoo_Generate.main(["--family", "vit", "--num", "2", "--out", str(out),
                                  "--data-dir", str(shared_data), "--epochs", "0,1",
                                  "--train-images", "64", "--test-images", "32"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["family"] == "vit" and config["batch_size"] == 128
    assert config["vit_skeleton"]["dim"] == 32
    assert CNN_Zoo_Generate.main(["--describe", str(out)]) == 0
    text = capsys.readouterr().out
    assert "family vit" in text and "batch_norm" not in text  # no convolution layers
    members = zoo.load_zoo(out)
    assert len(members) == 4 and members[0].model()(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


def test_vit_zoo_members_are_exact_neural_graphs(tmp_path: Path) -> None:
    """Every member's graph (the zoo's cache, patch-sized kernel grid) computes its network
    in float64, and the zoo's graphs load for the accuracy-prediction job."""
    from neural_graphs import run_neural_graph, to_neural_graph
    from neural_graphs.zoo_data import load_zoo_graphs

    data = synthetic_data(train=32, test=16)
    config = zoo.ZooConfig(family="vit", num=2, group_size=2, epochs=[0, 1], batch_size=16)
    zoo.generate_zoo(config, data, tmp_path, device="cpu", progress=False,
                     log=lambda line: None)
    graphs = load_zoo_graphs(tmp_path, progress=False)
    assert graphs.family == "vit" and graphs.kernel_shape == (4, 4) and len(graphs) == 4
    x = data.test_x[:5].double()
    for member, graph in zip(zoo.load_zoo(tmp_path), graphs.graphs):
        model = member.model(torch.float64)
        exact = run_neural_graph(to_neural_graph(model, kernel_shape=(4, 4)), x)
        assert (exact - model(x)).abs().max().item() < 1e-10
        assert float(graph.y) == pytest.approx(member.test_acc)
