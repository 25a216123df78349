"""Tests of the batched SIREN fitting (neural_graphs.inr_fit) and python -m MNIST_INR_Fit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import MNIST_INR_Fit
from neural_graphs import inr_fit
from neural_graphs.inr import (
    SIREN,
    batched_siren_forward,
    make_coordinates,
    render,
    siren_from_params,
)
from neural_graphs.inr_fit import (
    ConfigMismatchError,
    FitConfig,
    StoreError,
    fit_sirens,
    init_siren_params,
    load_inr_set,
    run_fit,
    stratified_limit,
    stratified_split,
)
from utils.checksums import file_hexdigest


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: these tiny fits only lose time to thread hand-offs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _adam_alone(params: dict[str, torch.Tensor], index: int, image: torch.Tensor, steps: int,
                lr: float, coords: torch.Tensor) -> dict[str, torch.Tensor]:
    """INR ``index`` fitted on its own: a SIREN and torch.optim.Adam, the plain way."""
    net = siren_from_params(params, index)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = ((net(coords)[:, 0] - image.reshape(-1)) ** 2).mean()
        loss.backward()
        optimizer.step()
    return {key: value.detach() for key, value in net.state_dict().items()}


@pytest.mark.parametrize("first_layer_init", ["reference", "siren"])
@pytest.mark.parametrize("explicit_coords", [False, True])
def test_batched_fit_equals_adam_on_each_siren_alone(first_layer_init: str,
                                                     explicit_coords: bool) -> None:
    images = torch.rand(3, 28, 28, dtype=torch.float64)
    params = init_siren_params([11, 12, 13], first_layer_init, dtype=torch.float64)
    coords = make_coordinates(dtype=torch.float64)
    result = fit_sirens(params, images, steps=12, lr=1e-3,
                        coords=coords if explicit_coords else None)
    assert result.steps.tolist() == [12, 12, 12]
    for index in range(3):
        alone = _adam_alone(params, index, images[index], 12, 1e-3, coords)
        for key, value in alone.items():
            torch.testing.assert_close(result.params[key][index], value, rtol=0, atol=1e-10)
        mse = ((siren_from_params(result.params, index)(coords)[:, 0]
                - images[index].reshape(-1)) ** 2).mean()
        torch.testing.assert_close(result.mse[index], mse.detach(), rtol=1e-12, atol=0)
    # the fit moved the parameters: the comparison above is not between two unchanged copies
    assert (result.params["net.2.weight"] - params["net.2.weight"]).abs().max() > 1e-3


def test_early_stopped_inrs_equal_adam_for_their_own_step_count() -> None:
    images = torch.rand(4, 28, 28, dtype=torch.float64)
    images[:2] = 0.5 + 0.01 * images[:2]  # nearly flat images: reached after few steps
    params = init_siren_params([1, 2, 3, 4], "siren", dtype=torch.float64)
    result = fit_sirens(params, images, steps=40, lr=1e-3, stop_psnr=25.0, check_every=5)
    steps = result.steps.tolist()
    assert steps[2:] == [40, 40] and all(s < 40 and s % 5 == 0 for s in steps[:2]), steps
    assert (result.psnr[:2] >= 25.0).all()
    coords = make_coordinates(dtype=torch.float64)
    for index in range(4):
        alone = _adam_alone(params, index, images[index], steps[index], 1e-3, coords)
        for key, value in alone.items():
            torch.testing.assert_close(result.params[key][index], value, rtol=0, atol=1e-10)


def test_render_equals_siren_of_siren_from_params() -> None:
    params = init_siren_params([5, 6, 7], "siren", dtype=torch.float64)
    params = {key: value + 0.01 * torch.randn_like(value) for key, value in params.items()}
    images = render(params)
    coords = make_coordinates(dtype=torch.float64)
    assert images.shape == (3, 28, 28)
    for index in range(3):
        net = siren_from_params(params, index)
        assert isinstance(net, SIREN)
        expected = net(coords)[:, 0].reshape(28, 28)
        torch.testing.assert_close(images[index], expected.detach(), rtol=0, atol=1e-12)
    # pixel (row r, column c) is the point (x, y) = (lin[c], lin[r]), as in neural-graphs
    lin = torch.linspace(-1, 1, 28, dtype=torch.float64)
    point = torch.stack([lin[5], lin[2]]).unsqueeze(0)
    single = batched_siren_forward({k: v[:1] for k, v in params.items()}, point)[0, 0, 0]
    torch.testing.assert_close(images[0, 2, 5], single, rtol=0, atol=1e-12)


def test_stratified_split_and_limit_keep_label_proportions() -> None:
    rng = np.random.default_rng(3)
    labels = rng.choice(10, size=10_000, p=np.linspace(0.05, 0.15, 10))
    sizes = {"train": 7000, "val": 1000, "test": 2000}
    splits = stratified_split(labels, sizes, seed=0)
    every = np.concatenate(list(splits.values()))
    assert sorted(every.tolist()) == list(range(10_000))
    class_counts = np.bincount(labels, minlength=10)
    for name, part in splits.items():
        assert len(part) == sizes[name]
        counts = np.bincount(labels[part], minlength=10)
        assert np.abs(counts - class_counts * len(part) / 10_000).max() <= 1.5, (name, counts)
    limited = stratified_limit(splits, 200)
    assert {name: len(part) for name, part in limited.items()} == {
        "train": 140, "val": 20, "test": 40}
    for name, part in limited.items():
        assert set(part) <= set(splits[name])
        counts = np.bincount(labels[part], minlength=10)
        assert np.abs(counts - class_counts * len(part) / 10_000).max() <= 1.5, (name, counts)
    assert np.array_equal(stratified_split(labels, sizes, seed=0)["val"], splits["val"])
    assert not np.array_equal(stratified_split(labels, sizes, seed=1)["val"], splits["val"])
    with pytest.raises(ValueError, match="--limit"):
        stratified_limit(splits, 10_001)


def _synthetic_set(count: int = 30) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    images = (rng.random((count, 28, 28)) ** 4 * 255).astype(np.uint8)
    labels = np.arange(count) % 10
    splits = stratified_split(labels, {"train": count - 10, "val": 4, "test": 6}, seed=0)
    return images, labels, splits


def _config(images: np.ndarray, labels: np.ndarray, **changes: object) -> FitConfig:
    settings = dict(recipe="fast", first_layer_init="siren", steps=6, lr=1e-3, seed=0,
                    source="synthetic", limit=None, copies=1, batch_inrs=5, shard_size=8,
                    stop_psnr=None, check_every=3, dtype="float32",
                    images_sha256=inr_fit.images_digest(images, labels))
    settings.update(changes)
    return FitConfig(**settings)


def test_run_fit_writes_shards_manifest_and_resumes_identically(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images, labels, splits = _synthetic_set()
    config = _config(images, labels)
    manifest = run_fit(images, labels, splits, config, tmp_path / "whole", progress=False)
    # 20 training images with 1 extra copy each, 4 + 6 others: 50 INRs in 7 shards
    assert manifest is not None and manifest["count"] == 50
    assert manifest["split_sizes"] == {"train": 40, "val": 4, "test": 6}
    assert len(manifest["shards"]) == 7
    for shard in manifest["shards"]:
        assert file_hexdigest(tmp_path / "whole" / shard["file"]) == shard["sha256"]
    grid = cv2.imread(str(tmp_path / "whole" / "renders.png"), cv2.IMREAD_GRAYSCALE)
    # 6 + 4 + 6 columns, zoom 3, a label margin on the left and text strips above and below
    margin, strip = inr_fit.RENDER_LABEL_WIDTH, inr_fit.RENDER_TEXT_HEIGHT
    assert grid.shape == (3 * (2 * 28 + 6) + 2 * strip, 3 * (16 * 30 + 2) + margin)
    for rows in (slice(strip, strip + 3 * 32), slice(strip + 3 * 32, strip + 3 * 62)):
        assert (grid[rows, :margin] < 128).any()  # the row labels: original / INR render
    assert (grid[-strip:, margin:] < 128).sum() > 16 * 10  # a PSNR under every render
    assert (grid[:strip, margin:] < 128).any()  # the split names
    params, loaded_labels, split_names, loaded = load_inr_set(tmp_path / "whole")
    assert params["net.0.weight"].shape == (50, 32, 2)
    assert params["net.4.bias"].shape == (50, 1)
    assert split_names[:4] == ["train"] * 4 and loaded["inrs"]["copy"][:4] == [0, 1, 0, 1]
    assert torch.equal(loaded_labels, torch.as_tensor(labels[loaded["inrs"]["image_index"]]))
    # the stored PSNR is the PSNR of the stored parameters on their image
    target = torch.from_numpy(images[loaded["inrs"]["image_index"]]).float() / 255
    psnr = -10 * torch.log10(((render(params) - target) ** 2).mean(dim=(1, 2)))
    torch.testing.assert_close(psnr, torch.tensor(loaded["inrs"]["psnr"]), rtol=0, atol=1e-3)
    # two copies of one image start from different initialisations
    assert not torch.equal(params["net.0.weight"][0], params["net.0.weight"][1])

    # a run killed while fitting its fourth shard, then started again
    real_fit_shard, calls, kill = inr_fit._fit_shard, [], [True]

    def killed_after_three(*args, **kwargs):
        calls.append(args[1])
        if kill[0] and len(calls) == 4:
            raise KeyboardInterrupt
        return real_fit_shard(*args, **kwargs)

    monkeypatch.setattr(inr_fit, "_fit_shard", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        run_fit(images, labels, splits, config, tmp_path / "killed", progress=False)
    assert sorted(p.name for p in (tmp_path / "killed").glob("shard_*.json")) == [
        "shard_00000.json", "shard_00001.json", "shard_00002.json"]
    (tmp_path / "killed" / "shard_00001.pt").write_bytes(b"truncated")  # a damaged shard
    calls.clear()
    kill[0] = False
    resumed = run_fit(images, labels, splits, config, tmp_path / "killed", progress=False)
    assert calls == [1, 3, 4, 5, 6]  # shards 0 and 2 kept, 1 redone (checksum), rest fitted
    again, _, _, _ = load_inr_set(tmp_path / "killed")
    for key in params:
        assert torch.equal(again[key], params[key]), key
    assert resumed["inrs"]["psnr"] == loaded["inrs"]["psnr"]


def test_run_fit_refuses_an_out_folder_of_another_configuration(tmp_path: Path) -> None:
    images, labels, splits = _synthetic_set(20)
    config = _config(images, labels, copies=0, steps=2)
    run_fit(images, labels, splits, config, tmp_path, progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ConfigMismatchError, match=r"steps: saved 2, now 3"):
        run_fit(images, labels, splits, _config(images, labels, copies=0, steps=3), tmp_path,
                progress=False)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "shard_00000.pt").write_bytes(b"x")
    with pytest.raises(ConfigMismatchError, match="not written by this program"):
        run_fit(images, labels, splits, config, foreign, progress=False)



def test_reuse_takes_the_inrs_a_set_holds_and_fits_only_the_rest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images, labels, splits = _synthetic_set()
    whole = run_fit(images, labels, splits, _config(images, labels), tmp_path / "whole",
                    progress=False)
    originals = run_fit(images, labels, splits, _config(images, labels, copies=0, shard_size=7),
                        tmp_path / "originals", progress=False)
    fitted: list[int] = []
    real_fit_sirens = inr_fit.fit_sirens

    def counted(params, targets, *args, **kwargs):
        fitted.append(len(targets))
        return real_fit_sirens(params, targets, *args, **kwargs)

    monkeypatch.setattr(inr_fit, "fit_sirens", counted)
    grown = run_fit(images, labels, splits, _config(images, labels), tmp_path / "grown",
                    progress=False, reuse=tmp_path / "originals")
    # the 30 originals are taken, only the 20 copies of training images fitted, and the set
    # is the one fitting everything gives, to the bit (a fit does not depend on its group)
    assert sum(fitted) == 20 and grown["reused_inrs"] == 30 and originals["count"] == 30
    assert grown["count"] == whole["count"] == 50 and whole["reused_inrs"] == 0
    mine, _, _, _ = load_inr_set(tmp_path / "grown")
    reference, _, _, _ = load_inr_set(tmp_path / "whole")
    for key in reference:
        assert torch.equal(mine[key], reference[key]), key
    assert grown["inrs"] == whole["inrs"]
    metas = [json.loads((tmp_path / "grown" / f"shard_{i:05d}.json").read_text())
             for i in range(len(grown["shards"]))]
    assert [m["reused"] for m in metas] == [4, 4, 4, 4, 4, 8, 2]  # train rows first
    # a subset (--limit) gives what it has: the rest is fitted
    small = stratified_limit(splits, 10)
    run_fit(images, labels, small, _config(images, labels, copies=0, limit=10),
            tmp_path / "limited", progress=False)
    fitted.clear()
    again = run_fit(images, labels, splits, _config(images, labels), tmp_path / "again",
                    progress=False, reuse=tmp_path / "limited")
    assert again["reused_inrs"] == 10 and sum(fitted) == 40
    assert again["inrs"]["psnr"] == whole["inrs"]["psnr"]


def test_reuse_refuses_inrs_fitted_another_way_or_to_other_images(tmp_path: Path) -> None:
    images, labels, splits = _synthetic_set(20)
    run_fit(images, labels, splits, _config(images, labels, copies=0, steps=2),
            tmp_path / "two_steps", progress=False)
    with pytest.raises(ConfigMismatchError, match=r"steps: there 2, here 6.*only copies"):
        run_fit(images, labels, splits, _config(images, labels), tmp_path / "out",
                progress=False, reuse=tmp_path / "two_steps")
    with pytest.raises(FileNotFoundError, match="not a finished"):
        run_fit(images, labels, splits, _config(images, labels), tmp_path / "out",
                progress=False, reuse=tmp_path / "nothing")
    relabelled = (labels + 1) % 10
    run_fit(images, relabelled, splits, _config(images, relabelled, copies=0),
            tmp_path / "relabelled", progress=False)
    with pytest.raises(ConfigMismatchError, match="fitted to other images"):
        run_fit(images, labels, splits, _config(images, labels), tmp_path / "out2",
                progress=False, reuse=tmp_path / "relabelled")
    assert not list((tmp_path / "out2").glob("shard_*"))

def test_fit_sirens_rejects_mismatched_images() -> None:
    params = init_siren_params([1, 2], "reference")
    with pytest.raises(ValueError, match=r"images must be \[2, H, W\]"):
        fit_sirens(params, torch.rand(3, 28, 28), steps=1)


def test_cli_on_real_mnist(shared_data: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--recipe", "fast", "--mnist-source", "test-split", "--data-dir",
            str(shared_data), "--limit", "10", "--steps", "3", "--out", str(tmp_path),
            "--batch-inrs", "4", "--shard-size", "6"]
    assert MNIST_INR_Fit.main(argv) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["split_sizes"] == {"train": 7, "val": 1, "test": 2}
    assert manifest["config"]["source"] == "test-split" and len(manifest["shards"]) == 2
    assert MNIST_INR_Fit.main(argv) == 0  # finished: nothing refitted, manifest rewritten
    assert "2 of 2 shards already fitted" in capsys.readouterr().out
    assert MNIST_INR_Fit.main([*argv[:-6], "--steps", "4", *argv[-6:]]) == 2
    assert "another configuration" in capsys.readouterr().err
    # a damaged shard: the same command refits it (and only it); a damaged configuration
    # file is refused with the reason, exit 2
    (tmp_path / "shard_00001.pt").write_bytes(b"torn")
    with pytest.raises(StoreError, match="shard_00001.pt"):
        load_inr_set(tmp_path)
    assert MNIST_INR_Fit.main(argv) == 0
    assert "1 of 2 shards already fitted" in capsys.readouterr().out
    load_inr_set(tmp_path)
    (tmp_path / "fit_config.json").write_text("{not json")
    assert MNIST_INR_Fit.main(argv) == 2
    assert "fit_config.json is unreadable" in capsys.readouterr().err
    # --reuse: a copy per training image added to a finished set fits only the copies
    (tmp_path / "fit_config.json").write_text(json.dumps(manifest["config"]))
    grown = tmp_path / "grown"
    bigger = [*argv[:-5], str(grown), *argv[-4:], "--copies", "1", "--reuse", str(tmp_path)]
    assert MNIST_INR_Fit.main(bigger) == 0
    assert "10 INRs taken from" in capsys.readouterr().out
    assert json.loads((grown / "manifest.json").read_text())["count"] == 17
    assert MNIST_INR_Fit.main([*bigger[:-1], str(tmp_path / "absent")]) == 0  # finished
    assert MNIST_INR_Fit.main([*bigger[:-1], str(tmp_path / "absent"), "--out",
                               str(tmp_path / "other")]) == 2
    assert "absent/manifest.json not found" in capsys.readouterr().err


def test_a_damaged_shard_is_named_and_refitting_repairs_only_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images, labels, splits = _synthetic_set(20)
    config = _config(images, labels, copies=0, steps=2)
    run_fit(images, labels, splits, config, tmp_path, progress=False)
    before, _, _, _ = load_inr_set(tmp_path)
    shard = tmp_path / "shard_00001.pt"
    shard.write_bytes(shard.read_bytes()[:100])  # truncated
    with pytest.raises(StoreError, match=r"shard_00001\.pt") as caught:
        load_inr_set(tmp_path)
    assert "damaged" in str(caught.value) and "run the same python -m MNIST_INR_Fit" in str(
        caught.value)
    real_fit_shard, calls = inr_fit._fit_shard, []

    def recorded(*args, **kwargs):
        calls.append(args[1])
        return real_fit_shard(*args, **kwargs)

    monkeypatch.setattr(inr_fit, "_fit_shard", recorded)
    run_fit(images, labels, splits, config, tmp_path, progress=False)
    assert calls == [1]  # only the damaged shard is fitted again
    after, _, _, _ = load_inr_set(tmp_path)
    assert all(torch.equal(after[key], before[key]) for key in before)


def _rewrite_shard(folder: Path, index: int, change) -> None:
    """Edit a shard's content and record its new checksum, as a fit would have."""
    data_path, meta_path = folder / f"shard_{index:05d}.pt", folder / f"shard_{index:05d}.json"
    content = torch.load(data_path, weights_only=True)
    change(content)
    torch.save(content, data_path)
    digest = file_hexdigest(data_path)
    meta = json.loads(meta_path.read_text())
    manifest = json.loads((folder / "manifest.json").read_text())
    for entry in [meta, *[e for e in manifest["shards"] if e["file"] == data_path.name]]:
        entry["sha256"] = digest
    meta_path.write_text(json.dumps(meta))
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_load_inr_set_names_an_inr_with_non_finite_weights(tmp_path: Path) -> None:
    images, labels, splits = _synthetic_set(20)
    run_fit(images, labels, splits, _config(images, labels, copies=0, steps=1), tmp_path,
            progress=False)

    def poison(content: dict) -> None:
        content["params"]["net.2.weight"][3, 0, 0] = float("nan")

    _rewrite_shard(tmp_path, 1, poison)
    with pytest.raises(StoreError, match=r"INR 3 of shard .*shard_00001\.pt \(INR 11 of the "
                       r"set.*not finite.*net\.2\.weight"):
        load_inr_set(tmp_path)


def test_fit_parser_refuses_impossible_values(capsys: pytest.CaptureFixture[str]) -> None:
    parser = MNIST_INR_Fit.build_parser()
    base = ["--mnist-source", "test-split"]
    for flags, says in ((["--limit", "3"], "leaves split(s) val without an image"),
                        (["--limit", "20000"], "has 10000 images"),
                        (["--limit", "0"], "must be >= 1"),
                        (["--stop-psnr", "-1"], "must be > 0 and finite"),
                        (["--stop-psnr", "nan"], "must be > 0 and finite"),
                        (["--lr", "0"], "must be > 0 and finite"),
                        (["--steps", "-1"], "must be >= 0"),
                        (["--copies", "-1"], "must be >= 0"),
                        (["--batch-inrs", "0"], "must be >= 1"),
                        (["--shard-size", "0"], "must be >= 1"),
                        (["--check-every", "0"], "must be >= 1"),
                        (["--threads", "0"], "must be >= 1"),
                        (["--seed", "-2"], "must be >= 0"),
                        (["--device", "nonsense"], "--device")):
        with pytest.raises(SystemExit) as exit_info:
            MNIST_INR_Fit.parse_args(parser, base + flags)
        assert exit_info.value.code == 2, flags
        assert says in capsys.readouterr().err, flags
    smallest = MNIST_INR_Fit.smallest_limit(MNIST_INR_Fit.TEST_SPLIT_SIZES)
    assert smallest == 6
    args = MNIST_INR_Fit.parse_args(parser, base + ["--limit", str(smallest)])
    assert args.device == torch.device(MNIST_INR_Fit.default_device())
    with pytest.raises(SystemExit):
        MNIST_INR_Fit.parse_args(parser, base + ["--limit", str(smallest - 1)])
    assert "the smallest limit is 6" in capsys.readouterr().err
    train_smallest = MNIST_INR_Fit.smallest_limit(MNIST_INR_Fit.SOURCE_SPLIT_SIZES["train"])
    counts = inr_fit.limit_counts(MNIST_INR_Fit.SOURCE_SPLIT_SIZES["train"], train_smallest)
    assert min(counts.values()) == 1


def test_fit_help_gives_every_flag_a_text_and_its_default_once() -> None:
    text = MNIST_INR_Fit.build_parser().format_help()
    options = [action for action in MNIST_INR_Fit.build_parser()._actions
               if action.option_strings and action.dest != "help"]
    for action in options:
        assert action.help, action.dest
    flat = " ".join(text.split())
    for flag in ("--recipe", "--batch-inrs", "--dtype", "--device", "--stop-psnr", "--steps"):
        entry = flat.split(f" {flag} ", 1)[1].split(" --", 1)[0]
        assert entry.count("default") == 1, (flag, entry)
