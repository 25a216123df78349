"""Fitted INRs as neural graphs (neural_graphs.inr_data): the graphs are exactly
to_neural_graph of each SIREN, and every augmentation does what it claims."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from neural_graphs import run_neural_graph, to_neural_graph
from neural_graphs.inr import SIREN, render, siren_from_params, stack_siren_params
from neural_graphs.inr_data import (
    DIHEDRAL,
    INRAugment,
    INRGraphDataset,
    InvalidINRSet,
    check_inr_dir,
    dihedral_image,
    graph_features_to_stacked,
    inr_set_images,
    load_inr_splits,
    load_split,
    stacked_to_graph_features,
)
from neural_graphs.inr_fit import FitConfig, images_digest, load_inr_set, run_fit, stratified_split


def _sirens(count: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Stacked parameters of ``count`` SIRENs with non-zero biases everywhere."""
    torch.manual_seed(seed)
    nets = [SIREN() for _ in range(count)]
    for net in nets:
        for layer in net.net:
            if isinstance(layer, torch.nn.Linear):
                torch.nn.init.normal_(layer.bias, std=0.05)
    return stack_siren_params(nets)


def _coords(count: int = 50) -> torch.Tensor:
    return torch.rand(count, 2, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_graphs_equal_to_neural_graph_of_each_siren() -> None:
    params = _sirens(4)
    data = INRGraphDataset(params, torch.arange(4))
    for index in range(4):
        graph = data[index]
        expected = to_neural_graph(siren_from_params(params, index))
        assert set(expected.keys()) <= set(graph.keys())
        for key in expected.keys():
            mine, theirs = graph[key], expected[key]
            if isinstance(theirs, torch.Tensor):
                assert mine.dtype == theirs.dtype and torch.equal(mine, theirs), key
            else:
                assert mine == theirs, key
        assert int(graph.y) == index
        coords = _coords()
        out = run_neural_graph(graph, coords)
        assert torch.allclose(out, siren_from_params(params, index)(coords), atol=1e-6)


def test_graph_features_to_stacked_inverts_stacked_to_graph_features() -> None:
    params = _sirens(3)
    data = INRGraphDataset(params, torch.zeros(3, dtype=torch.long))
    x, attr = stacked_to_graph_features(data.params, data.template)
    back = graph_features_to_stacked(x, attr, data.template.layer_layout)
    assert set(back) == set(params)
    for key, value in params.items():
        assert torch.equal(back[key], value), key
    with pytest.raises(ValueError, match="do not fit"):
        graph_features_to_stacked(x[:, 1:], attr, data.template.layer_layout)


@pytest.mark.parametrize("rescale", [0.0, 0.2])
def test_rotation_translation_rescale_resample_the_image(rescale: float) -> None:
    params = _sirens(6)
    plain = INRGraphDataset(params, torch.zeros(6, dtype=torch.long))
    augment = INRAugment(rotate=45.0, translate=0.5, rescale=rescale)
    data = INRGraphDataset(params, torch.zeros(6, dtype=torch.long), augment, seed=3)
    coords = _coords()
    angles = []
    for index in range(6):
        draw = data.draw(index)
        rot = draw.rotation
        assert torch.allclose(rot @ rot.T, torch.eye(2), atol=1e-6)
        assert abs(float(torch.linalg.det(rot)) - 1) < 1e-6
        angles.append(float(torch.atan2(rot[1, 0], rot[0, 0])))
        assert float(draw.shift.abs().max()) <= 0.5
        assert abs(draw.scale - 1) <= rescale
        moved = draw.scale * coords @ rot.T + draw.shift
        out = run_neural_graph(data[index], coords)
        assert torch.allclose(out, run_neural_graph(plain[index], moved), atol=1e-5)
    assert max(abs(a) for a in angles) <= np.radians(45) + 1e-6
    assert len({round(a, 6) for a in angles}) == 6  # a fresh draw per item


def test_weight_dropout_zeroes_about_p_of_the_weights_and_no_bias() -> None:
    params = _sirens(20)
    plain = INRGraphDataset(params, torch.zeros(20, dtype=torch.long))
    data = INRGraphDataset(params, torch.zeros(20, dtype=torch.long), INRAugment(dropout=0.3))
    zeroed = kept_equal = total = 0
    for index in range(20):
        graph, original = data[index], plain[index]
        assert torch.equal(graph.x, original.x)
        dropped = graph.edge_attr == 0
        zeroed += int(dropped.sum())
        kept_equal += int((graph.edge_attr[~dropped] == original.edge_attr[~dropped]).all())
        total += dropped.numel()
    assert abs(zeroed / total - 0.3) < 0.02, zeroed / total
    assert kept_equal == 20


def test_permutation_keeps_the_function_and_moves_neurons() -> None:
    params = _sirens(3)
    plain = INRGraphDataset(params, torch.zeros(3, dtype=torch.long))
    data = INRGraphDataset(params, torch.zeros(3, dtype=torch.long), INRAugment(permute=True))
    coords = _coords()
    for index in range(3):
        graph = data[index]
        assert not torch.equal(graph.x, plain[index].x)
        assert torch.equal(graph.x.sort(0).values, plain[index].x.sort(0).values)
        assert torch.allclose(run_neural_graph(graph, coords),
                              run_neural_graph(plain[index], coords), atol=1e-6)


def test_sign_flip_negates_hidden_neurons_and_keeps_the_function() -> None:
    params = _sirens(20)
    labels = torch.zeros(20, dtype=torch.long)
    plain = INRGraphDataset(params, labels)
    data = INRGraphDataset(params, labels, INRAugment(sign_flip=0.5), seed=2)
    layout = list(data.template.layer_layout)
    hidden = torch.zeros(sum(layout), dtype=torch.bool)
    hidden[layout[0]:sum(layout) - layout[-1]] = True
    source, target = data.template.edge_index
    coords = _coords().double()
    flipped = 0
    for index in range(20):
        graph, original = data[index], plain[index]
        signs = data.draw(index).signs
        assert set(signs.tolist()) <= {-1.0, 1.0} and bool((signs[~hidden] == 1).all())
        flipped += int((signs == -1).sum())
        assert torch.equal(graph.x[:, 0], original.x[:, 0] * signs)
        assert torch.equal(graph.edge_attr[:, 0],
                          original.edge_attr[:, 0] * signs[source] * signs[target])
        doubled, reference = copy.copy(graph), copy.copy(original)
        for g in (doubled, reference):
            g.x, g.edge_attr = g.x.double(), g.edge_attr.double()
        assert torch.allclose(run_neural_graph(doubled, coords),
                              run_neural_graph(reference, coords), rtol=0, atol=1e-12)
        assert torch.allclose(run_neural_graph(graph, coords.float()),
                              run_neural_graph(original, coords.float()), atol=1e-6)
    assert abs(flipped / (20 * int(hidden.sum())) - 0.5) < 0.06
    # Negating the biases alone, without the weights around them, changes the function.
    broken = copy.copy(plain[0])
    broken.x = broken.x * data.draw(0).signs.unsqueeze(-1)
    assert not torch.allclose(run_neural_graph(broken, coords.float()),
                              run_neural_graph(plain[0], coords.float()), atol=1e-3)
    with pytest.raises(ValueError, match="sign_flip"):
        INRAugment(sign_flip=1.5)


def test_augmentation_is_a_function_of_seed_epoch_and_index() -> None:
    params = _sirens(2)
    labels = torch.zeros(2, dtype=torch.long)
    first = INRGraphDataset(params, labels, INRAugment.default(), seed=5)
    again = INRGraphDataset(params, labels, INRAugment.default(), seed=5)
    assert torch.equal(first[1].edge_attr, again[1].edge_attr)
    assert torch.equal(first[1].edge_attr, first[1].edge_attr)
    assert not torch.equal(first[0].edge_attr, first[1].edge_attr)
    before = first[1].edge_attr
    first.set_epoch(1)
    assert not torch.equal(first[1].edge_attr, before)
    other = INRGraphDataset(params, labels, INRAugment.default(), seed=6)
    assert not torch.equal(other[1].edge_attr, before)
    with pytest.raises(ValueError, match="augmentation strengths"):
        INRAugment(dropout=1.0)
    with pytest.raises(ValueError, match="labels"):
        INRGraphDataset(params, torch.zeros(3, dtype=torch.long))


# --------------------------------------------------------------------------- INR sets


@pytest.fixture(scope="module")
def inr_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A finished set of 20 SIRENs fitted for 2 steps to synthetic images."""
    rng = np.random.default_rng(0)
    images = (rng.random((20, 28, 28)) ** 4 * 255).astype(np.uint8)
    labels = np.arange(20) % 10
    splits = stratified_split(labels, {"train": 10, "val": 4, "test": 6}, seed=0)
    config = FitConfig(recipe="fast", first_layer_init="siren", steps=2, lr=1e-3, seed=0,
                       source="synthetic", limit=None, copies=0, batch_inrs=10, shard_size=8,
                       stop_psnr=None, check_every=2, dtype="float32",
                       images_sha256=images_digest(images, labels))
    out = tmp_path_factory.mktemp("inr_set")
    run_fit(images, labels, splits, config, out, progress=False)
    return out, images


def test_load_inr_splits_keeps_the_sets_order(inr_set: tuple[Path, np.ndarray]) -> None:
    folder, _ = inr_set
    params, labels, splits, manifest = load_inr_set(folder)
    assert check_inr_dir(folder)["count"] == manifest["count"] == 20
    data = load_inr_splits(folder, INRAugment.default())
    for name in ("train", "val", "test"):
        rows = [i for i, s in enumerate(splits) if s == name]
        assert len(data[name]) == len(rows)
        assert torch.equal(data[name].labels, labels[rows])
        for key in params:
            assert torch.equal(data[name].params[key], params[key][rows].float())
        assert data[name].augment.active == (name == "train")
    single = load_split(folder, "val")
    assert torch.equal(single.x, data["val"].x)
    with pytest.raises(ValueError, match="split must be"):
        load_split(folder, "holdout")


def test_check_inr_dir_says_what_is_wrong(inr_set: tuple[Path, np.ndarray],
                                          tmp_path: Path) -> None:
    folder, _ = inr_set
    with pytest.raises(InvalidINRSet, match="is not a folder"):
        check_inr_dir(tmp_path / "absent")
    (tmp_path / "shard_00000.json").write_text("{}")
    with pytest.raises(InvalidINRSet, match=r"no manifest.json \(1 finished shard"):
        check_inr_dir(tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["shards"][0]["file"] = "shard_99999.pt"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidINRSet, match="absent"):
        check_inr_dir(tmp_path)


def test_inr_set_images_checks_the_digest(shared_data: Path) -> None:
    from utils.DataLoader_GNN import load_mnist

    images, labels = load_mnist(shared_data, "t10k", download=False)
    index = np.array([5, 2, 9, 2])
    selected = np.unique(index)
    manifest = {"config": {"source": "test-split",
                           "images_sha256": images_digest(images[selected], labels[selected])},
                "data_dir": str(shared_data), "inrs": {"image_index": index.tolist()}}
    assert np.array_equal(inr_set_images(manifest), images[index])
    wrong = copy.deepcopy(manifest)
    wrong["inrs"]["image_index"] = [5, 2, 8, 2]
    with pytest.raises(InvalidINRSet, match="not those the set was fitted to"):
        inr_set_images(wrong)
    wrong = copy.deepcopy(manifest)
    wrong["config"]["source"] = "synthetic"
    with pytest.raises(InvalidINRSet, match="image source"):
        inr_set_images(wrong)


def test_render_of_the_graph_features_is_the_sirens_image() -> None:
    params = _sirens(3)
    data = INRGraphDataset(params, torch.zeros(3, dtype=torch.long))
    back = graph_features_to_stacked(data.x, data.edge_attr, data.template.layer_layout)
    assert torch.equal(render(back), render(params))


def _render_graph(graph, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    layout = graph.layer_layout
    return render(graph_features_to_stacked(graph.x.to(dtype).view(1, -1),
                                            graph.edge_attr.to(dtype).view(1, -1), layout))[0]


def test_dihedral_matrices_are_the_symmetries_of_the_square() -> None:
    keys = {tuple(d.flatten().tolist()) for d in DIHEDRAL}
    assert len(keys) == 8 and torch.equal(DIHEDRAL[0], torch.eye(2))
    for a in DIHEDRAL:
        assert torch.equal(a @ a.T, torch.eye(2))  # orthogonal, entries 0 and +-1
        for b in DIHEDRAL:
            assert tuple((a @ b).flatten().tolist()) in keys  # closed: a group
    image = torch.arange(7 * 7.0).view(7, 7)
    assert torch.equal(dihedral_image(image, DIHEDRAL[0]), image)
    pictures = {tuple(dihedral_image(image, d).flatten().tolist()) for d in DIHEDRAL}
    assert len(pictures) == 8
    with pytest.raises(ValueError, match="square images"):
        dihedral_image(torch.zeros(4, 5), DIHEDRAL[1])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dihedral_maps_the_render_and_the_target_image_alike(dtype: torch.dtype) -> None:
    params = {k: v.to(dtype) for k, v in _sirens(16).items()}
    images = render(params)
    labels = torch.zeros(16, dtype=torch.long)
    data = INRGraphDataset(params, labels, INRAugment(dihedral=1.0), seed=4, targets=images)
    data.params = {k: v.to(dtype) for k, v in params.items()}
    data.x, data.edge_attr = stacked_to_graph_features(data.params, data.template)
    seen = set()
    for index in range(16):
        draw = data.draw(index)
        assert draw.dihedral is not None and torch.equal(draw.rotation, draw.dihedral)
        seen.add(tuple(draw.dihedral.flatten().tolist()))
        graph = data[index]
        drawn = _render_graph(graph, dtype)
        tolerance = 1e-12 if dtype == torch.float64 else 1e-5
        assert torch.allclose(drawn, graph.target[0].to(dtype), rtol=0, atol=tolerance)
        assert not torch.allclose(drawn, images[index], atol=1e-3)  # the image did move
    assert len(seen) >= 5  # several of the seven other symmetries drawn
    half = INRGraphDataset(params, labels, INRAugment(dihedral=0.5), seed=4)
    moved = sum(half.draw(index).dihedral is not None for index in range(16))
    assert 3 <= moved <= 13


def test_dihedral_leaves_the_other_draws_as_they_were() -> None:
    params = _sirens(4)
    labels = torch.zeros(4, dtype=torch.long)
    flips = INRGraphDataset(params, labels, INRAugment(sign_flip=0.5), seed=1)
    both = INRGraphDataset(params, labels, INRAugment(sign_flip=0.5, dihedral=1.0), seed=1)
    for index in range(4):
        assert torch.equal(flips.draw(index).signs, both.draw(index).signs)
    targets = render(params)
    moving = INRGraphDataset(params, labels, INRAugment(rotate=10.0), targets=targets)
    with pytest.raises(ValueError, match="cannot follow"):
        moving[0]
    with pytest.raises(ValueError, match="dihedral"):
        INRAugment(dihedral=1.5)
