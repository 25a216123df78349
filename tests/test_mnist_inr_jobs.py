"""The MNIST INR jobs end to end on tiny INR sets: classification
(MNIST_INR_Classification_Train), dilation (MNIST_INR_Dilation_Train) and the CNN ceiling
(MNIST_INR_CNN_Ceiling): final records, resume, clear errors, the optimizer recipe, and
the editor's identity start and equivariance."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

import MNIST_INR_Classification_Train as classify
import MNIST_INR_CNN_Ceiling as ceiling
import MNIST_INR_Dilation_Train as dilation
import MNIST_INR_Fit
from jobs.encoder_jobs import batch_size_for, materialize
from neural_graphs.inr import SIREN, render, stack_siren_params
from neural_graphs.inr_data import INRGraphDataset
from neural_graphs.inr_fit import FitConfig, images_digest, load_inr_set, run_fit, stratified_split
from neural_graphs.permute import hidden_permutation
from tests.conftest import SHARED_DATA
from utils.optim import WarmupClipAdamW
from utils.Train_Test import build_parser

TINY = ["--hidden", "8", "--layers", "1", "--batch-size", "16", "--seeds", "0",
        "--warmup-steps", "2"]


def _records(log_dir: Path, run: str) -> list[dict]:
    lines = (log_dir / f"{run}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _dirs(tmp_path: Path, name: str) -> list[str]:
    return ["--log-dir", str(tmp_path / name / "log"), "--checkpoint-dir",
            str(tmp_path / name / "ckpt")]


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 SIRENs fitted for 3 steps to synthetic images (labels 0..9; 28/4/8 split)."""
    rng = np.random.default_rng(0)
    images = (rng.random((40, 28, 28)) ** 4 * 255).astype(np.uint8)
    labels = np.arange(40) % 10
    splits = stratified_split(labels, {"train": 28, "val": 4, "test": 8}, seed=0)
    config = FitConfig(recipe="fast", first_layer_init="siren", steps=3, lr=1e-3, seed=0,
                       source="synthetic", limit=None, copies=0, batch_inrs=40,
                       shard_size=64, stop_psnr=None, check_every=3, dtype="float32",
                       images_sha256=images_digest(images, labels))
    out = tmp_path_factory.mktemp("synthetic_inrs")
    run_fit(images, labels, splits, config, out, progress=False)
    return out


@pytest.fixture(scope="module")
def mnist_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 SIRENs fitted for 5 steps to MNIST test images (python -m MNIST_INR_Fit)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} absent: the dilation targets need the MNIST images")
    out = tmp_path_factory.mktemp("mnist_inrs")
    assert MNIST_INR_Fit.main(["--limit", "30", "--steps", "5", "--mnist-source",
                               "test-split", "--data-dir", str(SHARED_DATA), "--out",
                               str(out), "--recipe", "fast"]) == 0
    return out


# --------------------------------------------------------------------------- classification


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_classification_final_record_and_exact_resume(synthetic_set: Path, tmp_path: Path,
                                                      schedule: str) -> None:
    base = ["--inr-dir", str(synthetic_set), "--encoder", "ngnn", "--probes", "4",
            "--augment", "--sign-flip", "0.5", "--lr-schedule", schedule, *TINY]
    run = "MNIST_INR_Classification_Train_ngnn_seed0"
    assert classify.main([*base, "--epochs", "2", *_dirs(tmp_path, "whole")]) == 0
    assert classify.main([*base, "--epochs", "1", *_dirs(tmp_path, "cut")]) == 0
    assert classify.main([*base, "--epochs", "2", "--resume", *_dirs(tmp_path, "cut")]) == 0
    whole = _records(tmp_path / "whole" / "log", run)
    cut = _records(tmp_path / "cut" / "log", run)
    assert [r["epoch"] for r in whole] == [1, 2, 2] and whole[-1]["final"]
    assert 0 <= whole[-1]["test_acc"] <= 100 and whole[-1]["final_metrics"] == ["test_acc"]
    assert [r.get("final", False) for r in cut] == [False, False, True]
    for key in ("train_loss", "val_loss", "val_acc"):
        assert [r[key] for r in cut[:2]] == [r[key] for r in whole[:2]], key
    assert cut[-1]["test_acc"] == whole[-1]["test_acc"]
    a = torch.load(tmp_path / "whole" / "ckpt" / f"{run}_last.pt", weights_only=False)
    b = torch.load(tmp_path / "cut" / "ckpt" / f"{run}_last.pt", weights_only=False)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["optimizer"]["param_groups"][0]["warmup_step"] == 2 * 2  # 28 INRs, batch 16
    # The logged rate is that of each epoch's last step: 2 warm-up steps of 4, then a
    # cosine that ends at zero, or the rate held.
    assert [r["lr"] for r in whole[:2]] == pytest.approx(
        [1e-3, 0.0 if schedule == "cosine" else 1e-3], abs=1e-12)
    with pytest.raises(SystemExit, match="trained with --hidden 8, this command gives 4"):
        classify.main([*base, "--epochs", "3", "--resume", "--hidden", "4",
                       *_dirs(tmp_path, "cut")])
    with pytest.raises(SystemExit, match="trained with --sign-flip 0.5, this command gives 0.0"):
        classify.main([*[v for v in base if v not in ("--sign-flip", "0.5")], "--epochs", "3",
                       "--resume", *_dirs(tmp_path, "cut")])
    other = "constant" if schedule == "cosine" else "cosine"
    with pytest.raises(SystemExit, match=f"trained with --lr-schedule '{schedule}'"):
        classify.main([*base, "--epochs", "3", "--resume", "--lr-schedule", other,
                       *_dirs(tmp_path, "cut")])


def test_reverse_edges_reach_ngnn_only(synthetic_set: Path) -> None:
    for flag, reverse in (("--reverse-edges", True), ("--no-reverse-edges", False)):
        args = build_parser(classify.JOB).parse_args(
            ["--inr-dir", str(synthetic_set), "--probes", "2", "--hidden", "4", "--batch-size",
             "8", "--dropout", "0", flag])
        ngnn = classify.build_classifier(args, 0, "ngnn")
        assert ngnn.reverse_edges is reverse
        assert (ngnn.edge_direction is not None) is reverse
        assert not hasattr(classify.build_classifier(args, 0, "dng"), "edge_direction")


def test_classification_gives_graph_encoders_more_probes_unless_told(synthetic_set: Path) -> None:
    def probes(argv: list[str], side: str) -> int:
        args = build_parser(classify.JOB).parse_args(
            ["--inr-dir", str(synthetic_set), "--hidden", "4", "--batch-size", "8",
             "--dropout", "0", *argv])
        return classify.build_classifier(args, 0, side).embed.probes.num_probes

    for side, default in (("ngnn", 128), ("ngt", 128), ("dng", 256)):
        assert probes([], side) == default
        assert probes(["--probes", "8"], side) == 8
        assert dilation.ENCODER_DEFAULTS[side].probes == 64  # the other jobs keep 64


def test_sign_flip_reaches_the_training_split_only(synthetic_set: Path) -> None:
    args = build_parser(classify.JOB).parse_args(["--inr-dir", str(synthetic_set), "--sign-flip",
                                             "0.25"])
    assert classify.training_augment(args).sign_flip == 0.25
    assert classify.training_augment(args).rotate == 0
    splits = classify.SPLITS.get(args.inr_dir, classify.training_augment(args), 0)
    assert splits["train"].augment.sign_flip == 0.25
    assert not splits["val"].augment.active and not splits["test"].augment.active
    with pytest.raises(SystemExit):
        build_parser(classify.JOB).parse_args(["--inr-dir", str(synthetic_set), "--sign-flip", "2"])


@pytest.mark.parametrize("train_size, world_size, batch", [
    (7000, 1, 128), (1280, 1, 128), (1279, 1, 64), (700, 1, 64), (700, 2, 32), (28, 1, 16),
    (0, 1, 16)])
def test_default_batch_gives_small_sets_ten_steps_an_epoch(train_size: int, world_size: int,
                                                         batch: int) -> None:
    assert batch_size_for(train_size, world_size) == batch


def test_the_classifier_sizes_its_batch_to_the_set_unless_told(synthetic_set: Path,
                                                              tmp_path: Path) -> None:
    base = ["--inr-dir", str(synthetic_set), "--encoder", "statnn", "--epochs", "1",
            *[a for a in TINY if a not in ("--batch-size", "16")]]
    run = "MNIST_INR_Classification_Train_statnn_seed0"
    for name, extra, batch in (("auto", [], 16), ("told", ["--batch-size", "32"], 32)):
        assert classify.main([*base, *extra, *_dirs(tmp_path, name)]) == 0
        header = (tmp_path / name / "log" / f"{run}.txt").read_text().splitlines()[0]
        assert f"batch {batch} x 1 process" in header, header
    with pytest.raises(ValueError, match="world_size >= 1"):
        batch_size_for(10, 0)


def test_every_encoder_trains_and_reports_test_acc(synthetic_set: Path,
                                                   tmp_path: Path) -> None:
    argv = ["--inr-dir", str(synthetic_set), "--encoder", "all", "--epochs", "1", "--probes",
            "0", *TINY, *_dirs(tmp_path, "all")]
    assert classify.main(argv) == 0
    for side in classify.ENCODER_NAMES:
        last = _records(tmp_path / "all" / "log", f"MNIST_INR_Classification_Train_{side}_seed0")
        assert last[-1]["final"] and 0 <= last[-1]["test_acc"] <= 100, side
        assert last[-1]["model"] == side
    # a run of a few steps is not worth compiling (--compile auto); only NG-T offers it
    headers = {side: (tmp_path / "all" / "log" / f"MNIST_INR_Classification_Train_{side}"
                      "_seed0.txt").read_text().splitlines()[0]
               for side in classify.ENCODER_NAMES}
    assert "compiled layers off" in headers["ngt"]
    assert not any("compiled layers" in h for side, h in headers.items() if side != "ngt")


def test_grad_checkpointing_flag_reaches_the_encoder_and_the_header(synthetic_set: Path,
                                                                     tmp_path: Path) -> None:
    argv = ["--inr-dir", str(synthetic_set), "--encoder", "dng", "--epochs", "1", "--probes",
            "0", "--grad-checkpointing", *TINY, *_dirs(tmp_path, "ckpt")]
    assert classify.main(argv) == 0
    log = tmp_path / "ckpt" / "log" / "MNIST_INR_Classification_Train_dng_seed0.txt"
    assert "gradient checkpointing" in log.read_text().splitlines()[0]


def test_reference_config_trains_the_published_encoders(synthetic_set: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    """--encoder-config reference: NG-GNN, NG-T and DNG at the references' sizes (their
    parameter counts on 2-32-32-1 SIRENs, README), the other encoders skipped under all."""
    argv = ["--inr-dir", str(synthetic_set), "--encoder", "all", "--encoder-config",
            "reference", "--epochs", "1", "--batch-size", "16", "--seeds", "0",
            "--warmup-steps", "2", *_dirs(tmp_path, "ref")]
    assert classify.main(argv) == 0
    log = tmp_path / "ref" / "log"
    counts = {"ngnn": "92,010", "ngt": "376,586", "dng": "381,322"}
    for side, count in counts.items():
        run = f"MNIST_INR_Classification_Train_{side}_seed0"
        assert _records(log, run)[-1]["final"], side
        header = (log / f"{run}.txt").read_text().splitlines()[0]
        assert f"{count} parameters" in header and "EMA" not in header, header
    assert not any((log / f"MNIST_INR_Classification_Train_{side}_seed0.jsonl").exists()
                   for side in ("flatmlp", "statnn", "nfn"))
    assert "no reference configuration" in capsys.readouterr().err
    refused = [["--encoder", "statnn"], ["--encoder", "dng", "--hidden", "8"],
               ["--encoder", "ngnn", "--dropout", "0.1"], ["--encoder", "ngnn", "--reverse-edges"]]
    for extra in refused:
        assert classify.main(["--inr-dir", str(synthetic_set), "--encoder-config",
                              "reference", "--epochs", "1", "--seeds", "0", *extra,
                              *_dirs(tmp_path, "refused")]) == 2, extra
        err = capsys.readouterr().err
        assert "no reference configuration" in err or "fixes the encoder's sizes" in err, err
        assert len(extra) == 2 or f"drop {extra[2]}" in err, err


def test_bad_inputs_get_clear_errors(synthetic_set: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    for main in (classify.main, dilation.main, ceiling.main):
        assert main(["--inr-dir", str(tmp_path / "absent"), *_dirs(tmp_path, "x")]) == 2
        assert "--inr-dir" in capsys.readouterr().err
    (tmp_path / "unfinished").mkdir()
    assert classify.main(["--inr-dir", str(tmp_path / "unfinished")]) == 2
    assert "no manifest.json" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no probe features"):
        classify.main(["--inr-dir", str(synthetic_set), "--encoder", "flatmlp", "--probes",
                       "4", "--epochs", "1", *TINY, *_dirs(tmp_path, "p")])
    assert not (tmp_path / "x").exists()


def test_warmup_and_clipping_of_the_optimizer() -> None:
    weight = torch.nn.Parameter(torch.zeros(3))
    reference = torch.nn.Parameter(torch.zeros(3))
    ours = WarmupClipAdamW([weight], lr=0.1, warmup_steps=4, max_grad_norm=1.0,
                           weight_decay=0.0)
    plain = torch.optim.AdamW([reference], lr=0.1, weight_decay=0.0)
    grads = [torch.tensor([30.0, 40.0, 0.0]), torch.tensor([0.3, -0.1, 0.2])]
    for step, grad in enumerate(grads * 3, start=1):
        weight.grad = grad.clone()
        reference.grad = grad * min(1.0, 1.0 / float(grad.norm()))
        for group in plain.param_groups:
            group["lr"] = 0.1 * min(1.0, step / 4)
        ours.step()
        plain.step()
        assert torch.allclose(weight, reference, atol=1e-7), step
        assert ours.param_groups[0]["lr"] == 0.1
    state = ours.state_dict()
    again = WarmupClipAdamW([torch.nn.Parameter(torch.zeros(3))], lr=0.1,
                            warmup_steps=4, max_grad_norm=1.0)
    again.load_state_dict(state)
    assert again.param_groups[0]["warmup_step"] == 6


# --------------------------------------------------------------------------- ceiling


def test_ceiling_renders_the_set_and_reports_test_acc(synthetic_set: Path,
                                                      tmp_path: Path) -> None:
    params, labels, splits, _ = load_inr_set(synthetic_set)
    data = ceiling.rendered_splits(str(synthetic_set), chunk=7)
    test_rows = [i for i, s in enumerate(splits) if s == "test"]
    images, targets = data["test"].tensors
    expected = render({k: v[test_rows] for k, v in params.items()})
    assert torch.allclose(images[:, 0], expected, atol=1e-6)
    assert torch.equal(targets, labels[test_rows])
    argv = ["--inr-dir", str(synthetic_set), "--epochs", "1", "--channels", "4",
            "--batch-size", "16", "--seeds", "0", *_dirs(tmp_path, "cnn")]
    assert ceiling.main(argv) == 0
    last = _records(tmp_path / "cnn" / "log", "MNIST_INR_CNN_Ceiling_cnn_seed0")[-1]
    assert last["final"] and 0 <= last["test_acc"] <= 100 and last["model"] == "cnn"


# --------------------------------------------------------------------------- dilation


def _siren_batch(count: int) -> tuple[Batch, dict[str, torch.Tensor]]:
    torch.manual_seed(1)
    params = stack_siren_params([SIREN() for _ in range(count)])
    data = INRGraphDataset(params, torch.zeros(count, dtype=torch.long),
                           targets=torch.rand(count, 28, 28))
    return Batch.from_data_list([data[i] for i in range(count)]), data.params


@pytest.mark.parametrize("delta_scale", [None, 0.01])
@pytest.mark.parametrize("side", ["ngnn", "ngt", "dng", "flatmlp"])
def test_editor_starts_as_the_identity(side: str, delta_scale: float | None) -> None:
    batch, params = _siren_batch(3)
    editor = materialize(dilation.INREditor(side, 8, 1, 0, head_hidden=8,
                                            delta_scale=delta_scale), batch)
    with torch.no_grad():
        assert torch.equal(editor(batch), render(params))
        plain = dilation.dilation_task().collect(editor(batch), batch)["identity"]
    assert torch.allclose(plain, ((render(params) - batch.target) ** 2).mean((1, 2)).double())


@pytest.mark.parametrize("side", ["ngnn", "ngt", "dng"])
def test_edge_deltas_are_the_edge_head_on_each_edges_inputs(side: str) -> None:
    """The edge head's first layer, split into per-neuron projections and taken over chunks
    of edges, is the head on each edge's [h_source, h_target, features(w)]: the same values
    and gradients, float64."""
    batch, _ = _siren_batch(3)
    editor = materialize(dilation.INREditor(side, 8, 1, 4, head_hidden=8), batch).double()
    batch.x, batch.edge_attr = batch.x.double(), batch.edge_attr.double()
    editor.CHUNK_BYTES = 8 * 8 * 10  # ten edges a chunk
    torch.nn.init.normal_(editor.edge_head[-1].weight)
    h = editor.encoder.node_embeddings(batch).states.detach().requires_grad_()
    src, dst = batch.edge_index
    assert len(src) > 10
    ours = editor.edge_deltas(h, batch)
    inputs = torch.cat([h[src], h[dst], editor.weight_features(batch.edge_attr[:, :1])], -1)
    expected = editor.edge_head(inputs)[:, 0]
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-12)
    weights = torch.randn_like(ours)
    inputs = [h, *editor.edge_head.parameters()]
    grads = [torch.autograd.grad((out * weights).sum(), inputs) for out in (ours, expected)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("side, reverse_edges",
                         [("ngnn", False), ("ngnn", True), ("ngt", False), ("dng", False)])
def test_graph_editors_are_permutation_equivariant(side: str, reverse_edges: bool) -> None:
    batch, _ = _siren_batch(2)
    editor = materialize(dilation.INREditor(side, 8, 2, 4, head_hidden=8,
                                            reverse_edges=reverse_edges), batch)
    assert (getattr(editor.encoder, "edge_direction", None) is not None) == reverse_edges
    for head in (editor.node_head, editor.edge_head):
        torch.nn.init.normal_(head[-1].weight)
    graphs = batch.to_data_list()
    new_ids = [hidden_permutation(g, torch.Generator().manual_seed(i))
               for i, g in enumerate(graphs)]
    permuted = []
    for graph, new_id in zip(graphs, new_ids):
        moved = graph.clone()
        moved.x = torch.empty_like(graph.x).index_copy_(0, new_id, graph.x)
        moved.edge_index = new_id[graph.edge_index]
        permuted.append(moved)
    with torch.no_grad():
        dx, de = editor.deltas(batch)
        px, pe = editor.deltas(Batch.from_data_list(permuted))
    offset = torch.tensor([0, graphs[0].num_nodes])
    moved_ids = torch.cat([new_id + o for new_id, o in zip(new_ids, offset)])
    assert not torch.equal(moved_ids, torch.arange(len(moved_ids)))
    assert dx.abs().max() > 0 and de.abs().max() > 0
    assert torch.allclose(px[moved_ids], dx, atol=1e-5)
    assert torch.allclose(pe, de, atol=1e-5)  # edges keep their order, their weights move


@pytest.mark.parametrize("side", ["dng", "flatmlp"])
def test_delta_scales_multiply_each_layers_change(side: str) -> None:
    batch, params = _siren_batch(2)
    plain = materialize(dilation.INREditor(side, 8, 1, 4, head_hidden=8), batch)
    scaled = dilation.INREditor(side, 8, 1, 4, head_hidden=8, delta_scale=0.01)
    materialize(scaled, batch).load_state_dict(
        {**plain.state_dict(), "weight_scale": scaled.weight_scale,
         "bias_scale": scaled.bias_scale})
    for module in (plain.encoder, scaled.encoder) if side == "flatmlp" else \
            (plain.edge_head, plain.node_head, scaled.edge_head, scaled.node_head):
        last = module.mlp[-1] if side == "flatmlp" else module[-1]
        torch.nn.init.normal_(last.weight, generator=torch.Generator().manual_seed(3))
    weight_scale = torch.rand(dilation.MAX_SIREN_LAYERS) + 0.5
    bias_scale = torch.rand(dilation.MAX_SIREN_LAYERS) + 0.5
    with torch.no_grad():
        scaled.weight_scale.copy_(weight_scale)
        scaled.bias_scale.copy_(bias_scale)
        full, part = plain.edited_params(batch), scaled.edited_params(batch)
    assert set(part) == set(params)
    for name, value in params.items():
        index = int(name.split(".")[1]) // 2
        scale = (weight_scale if name.endswith("weight") else bias_scale)[index]
        delta = full[name] - value
        assert delta.abs().max() > 0
        assert torch.allclose(part[name], value + scale * delta, atol=1e-6), name
    loss = scaled(batch).sum()
    loss.backward()
    layers = len(params) // 2
    assert scaled.weight_scale.grad[:layers].abs().min() > 0
    assert torch.equal(scaled.weight_scale.grad[layers:], torch.zeros(
        dilation.MAX_SIREN_LAYERS - layers))


@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan"), float("inf")])
def test_delta_scale_must_be_positive_and_finite(bad: float) -> None:
    with pytest.raises(ValueError, match="delta_scale must be a positive finite number"):
        dilation.INREditor("dng", 8, 1, 0, delta_scale=bad)


def test_dilation_targets_are_cv2_dilations() -> None:
    images = np.zeros((2, 28, 28), np.uint8)
    images[0, 10, 10], images[1, 0, 27] = 200, 90
    out = dilation.dilated_targets(images)
    assert out.shape == (2, 28, 28) and out.dtype == torch.float32
    assert torch.equal(out[0, 9:12, 9:12], torch.full((3, 3), 200 / 255))
    assert float(out[0].sum()) == pytest.approx(9 * 200 / 255)
    assert float(out[1].sum()) == pytest.approx(4 * 90 / 255)
    with pytest.raises(ValueError, match="uint8"):
        dilation.dilated_targets(images.astype(np.float32))


def test_dilation_commutes_with_the_grids_symmetries() -> None:
    from neural_graphs.inr_data import DIHEDRAL, dihedral_image

    rng = np.random.default_rng(0)
    images = (rng.random((4, 28, 28)) ** 6 * 255).astype(np.uint8)
    images[0, 0, 5] = images[1, 27, 27] = 255  # strokes at the border too
    dilated = dilation.dilated_targets(images)
    for matrix in DIHEDRAL:
        moved = dihedral_image(torch.from_numpy(images), matrix).numpy()
        assert torch.equal(dilation.dilated_targets(np.ascontiguousarray(moved)),
                           dihedral_image(dilated, matrix))


def test_dilation_augments_the_training_inrs_and_their_targets_only(mnist_set: Path) -> None:
    from neural_graphs.inr_data import dihedral_image

    args = build_parser(dilation.JOB).parse_args(["--inr-dir", str(mnist_set), "--dihedral",
                                                  "1", "--sign-flip", "0.5"])
    augment = dilation.training_augment(args)
    assert (augment.dihedral, augment.sign_flip, augment.off_grid) == (1.0, 0.5, False)
    splits = dilation._splits(args, 0)
    plain = dilation.SPLITS.get(args.inr_dir, None, 0, dilation._TARGETS[None])["train"]
    train = splits["train"]
    for index in range(4):
        draw = train.draw(index)
        assert draw.dihedral is not None and draw.signs is not None
        assert torch.equal(train[index].target[0],
                           dihedral_image(plain[index].target[0], draw.dihedral))
    assert not splits["val"].augment.active and not splits["test"].augment.active


def test_dilation_end_to_end_on_mnist_inrs(mnist_set: Path, tmp_path: Path) -> None:
    from utils.DataLoader_GNN import load_mnist

    argv = ["--inr-dir", str(mnist_set), "--encoder", "ngnn", "--epochs", "1", "--probes",
            "4", "--head-hidden", "8", *TINY, *_dirs(tmp_path, "dil")]
    assert dilation.main(argv) == 0
    last = _records(tmp_path / "dil" / "log", "MNIST_INR_Dilation_Train_ngnn_seed0")[-1]
    assert last["final"] and set(last["final_metrics"]) == {"test_mse", "identity_mse"}
    params, _, splits, manifest = load_inr_set(mnist_set)
    rows = [i for i, s in enumerate(splits) if s == "test"]
    images, _ = load_mnist(SHARED_DATA, "t10k", download=False)
    index = np.asarray(manifest["inrs"]["image_index"])[rows]
    target = torch.from_numpy(np.stack([cv2.dilate(images[i], np.ones((3, 3), np.uint8))
                                        for i in index])).float() / 255
    identity = ((render({k: v[rows] for k, v in params.items()}) - target) ** 2).mean()
    assert last["identity_mse"] == pytest.approx(float(identity), rel=1e-5)
    assert 0 < last["test_mse"] < 1
    assert dilation.main([*argv, "--epochs", "2", "--resume"]) == 0
    records = _records(tmp_path / "dil" / "log", "MNIST_INR_Dilation_Train_ngnn_seed0")
    assert [r["epoch"] for r in records] == [1, 2, 2] and records[-1]["final"]
    last_ckpt = tmp_path / "dil" / "ckpt" / "MNIST_INR_Dilation_Train_ngnn_seed0_last.pt"
    state = torch.load(last_ckpt, weights_only=False)
    assert torch.allclose(state["model"]["weight_scale"], torch.tensor(dilation.DELTA_SCALE),
                          atol=0.01)  # two epochs of AdamW at 1e-3 from 0.01
    with pytest.raises(SystemExit, match="--delta-scale"):
        dilation.main([*argv, "--epochs", "3", "--resume", "--delta-scale", "0"])
    assert dilation.main([*argv, "--delta-scale", "0"]) == 0
    assert "weight_scale" not in torch.load(last_ckpt, weights_only=False)["model"]
    assert "encoder.edge_direction.weight" in state["model"]  # reversed edges by default
    assert dilation.main([*argv, "--no-reverse-edges"]) == 0
    assert "encoder.edge_direction.weight" not in \
        torch.load(last_ckpt, weights_only=False)["model"]
    with pytest.raises(SystemExit, match="--reverse-edges"):
        dilation.main([*argv, "--epochs", "2", "--resume"])
    augmented = [*argv, "--dihedral", "1", "--sign-flip", "0.5"]
    assert dilation.main(augmented) == 0
    with pytest.raises(SystemExit, match="--dihedral"):
        dilation.main([*augmented, "--epochs", "2", "--resume", "--dihedral", "0.5"])
    figure = tmp_path / "dil" / "log" / "MNIST_INR_Dilation_Train_ngnn_seed0.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_edits_checks_its_stacks(tmp_path: Path) -> None:
    images = torch.rand(3, 28, 28)
    path = dilation.plot_edits(images, images, images, tmp_path / "edits.png", "three")
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match=r"three \[n, H, W\] stacks of one shape"):
        dilation.plot_edits(images, images[:2], images, tmp_path / "bad.png")


# --------------------------------------------------------------------------- command lines


@pytest.mark.parametrize("main,argv,flag", [
    (classify.main, ["--dropout", "1.5"], "--dropout"),
    (classify.main, ["--probes", "-1"], "--probes"),
    (classify.main, ["--hidden", "0"], "--hidden"),
    (classify.main, ["--weight-decay", "-1"], "--weight-decay"),
    (classify.main, ["--max-grad-norm", "nan"], "--max-grad-norm"),
    (dilation.main, ["--head-hidden", "0"], "--head-hidden"),
    (dilation.main, ["--layers", "0"], "--layers"),
    (ceiling.main, ["--dropout", "1"], "--dropout"),
    (ceiling.main, ["--channels", "0"], "--channels"),
    (ceiling.main, ["--warmup-steps", "-3"], "--warmup-steps"),
])
def test_the_parsers_refuse_values_out_of_range(main, argv, flag, synthetic_set: Path,
                                                tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--inr-dir", str(synthetic_set), *argv, *_dirs(tmp_path, "x")]) == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def _help(main, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["--help"]) == 0
    return " ".join(capsys.readouterr().out.split())


def test_help_shows_per_encoder_epochs_the_offered_encoders_and_no_data_dir(
        capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(classify.main, capsys)
    assert "(default: 9)" not in text
    assert "default per encoder: flatmlp 200, statnn 200, nfn 200, ngnn 60, ngt 24, dng 70" in text
    assert "default per encoder: ngnn 128, ngt 128, dng 256" in text
    assert "default per encoder: flatmlp 0.0, statnn 0.0, nfn 0.0, ngnn 0.998, ngt 0.0, dng " \
        "0.998" in text
    edit = _help(dilation.main, capsys)
    hidden = edit.split("--hidden HIDDEN ")[1].split("--layers")[0]
    assert "nfn" not in hidden and "statnn" not in hidden and "flatmlp 256" in hidden
    assert "dng 128" in hidden  # the editor's own DNG width
    assert "default per encoder: flatmlp 2, ngnn 4, ngt 2, dng 1" in edit
    assert "default per encoder: flatmlp 200, ngnn 40, ngt 40, dng 40" in edit
    assert "default per encoder: ngnn 64, ngt 64, dng 64" in edit
    assert "default per encoder: flatmlp 0.0, ngnn 0.998, ngt 0.0, dng 0.998" in edit
    assert "(default: on)" in edit.split("--reverse-edges")[-1]
    assert "(default: off)" in _help(classify.main, capsys).split("--reverse-edges")[-1]
    assert "(default: 30)" in _help(ceiling.main, capsys)
    for main in (classify.main, dilation.main, ceiling.main):
        assert "[--data-dir" not in _help(main, capsys)


def test_the_command_line_is_parsed_once(synthetic_set: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    parses = []
    original = argparse.ArgumentParser.parse_known_args

    def counting(self, *args, **kwargs):
        parses.append(self.prog)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", counting)
    argv = ["--inr-dir", str(synthetic_set), "--encoder", "statnn", "--epochs", "1", *TINY,
            *_dirs(tmp_path, "once")]
    assert classify.main(argv) == 0
    assert parses == ["python -m MNIST_INR_Classification_Train"]


def test_a_damaged_set_is_refused_with_the_reason_before_training(
        synthetic_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    damaged = Path(shutil.copytree(synthetic_set, tmp_path / "damaged"))
    shard = sorted(damaged.glob("shard_*.pt"))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    for main in (classify.main, dilation.main, ceiling.main):
        argv = ["--inr-dir", str(damaged), "--epochs", "1", *TINY, *_dirs(tmp_path, "x")]
        if main is ceiling.main:
            argv = argv[:argv.index("--hidden")] + argv[argv.index("--batch-size"):]
        assert main(argv) == 2, main
        err = capsys.readouterr().err
        assert err.startswith("error: --inr-dir: ") and err.count("\n") == 1, err
        assert "Traceback" not in err
        # The synthetic set has no MNIST images to dilate: the dilation job says so first.
        assert ("sha256" in err) or (main is dilation.main and "image source" in err), err
    assert not (tmp_path / "x").exists()
