"""MNIST_INR2JLS_Train end to end on a few dozen INRs: both stages of each --model and each
encoder, final records and pictures, the frozen stage, exact resume of each stage, extra
fits per image, and clear errors for a missing or mismatched image source."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import MNIST_INR2JLS_Train as jls
from neural_graphs.inr_fit import FitConfig, images_digest, run_fit, stratified_split
from tests.test_mnist_inr_jobs import synthetic_set  # noqa: F401 -- a fixture
from tests.test_training import write_idx_gz
from utils.images import MNIST_MD5, md5sum
from utils.Train_Test import build_parser

#: Tiny sizes: the pipeline, not the learning, is under test.
TINY = ["--hidden", "8", "--layers", "1", "--probes", "4", "--latent-dim", "4",
        "--latent-size", "49", "--latent-hidden", "16", "--decoder-hidden", "8",
        "--classifier-hidden", "8", "--batch-size", "16", "--seeds", "0",
        "--warmup-steps", "2"]
IMAGES = 40  # 24 train (each fitted twice: --copies 1), 8 val, 8 test


def _splits(inr_dir: Path) -> dict:
    """The job's splits of ``inr_dir`` with its default (original-image) targets."""
    args = build_parser(jls.JOB).parse_args(["--inr-dir", str(inr_dir)])
    return jls._splits(args, 0)


def _records(log_dir: Path, run: str) -> list[dict]:
    return [json.loads(line) for line in (log_dir / f"{run}.jsonl").read_text().splitlines()]


def _dirs(tmp_path: Path, name: str) -> list[str]:
    return ["--log-dir", str(tmp_path / name / "log"), "--checkpoint-dir",
            str(tmp_path / name / "ckpt")]


def _fake_mnist(folder: Path, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``IMAGES`` test-split images in the real IDX format (a class-dependent stroke on
    noise) in ``folder/MNIST/raw``; returns them."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(IMAGES) % 10).astype(np.uint8)
    images = rng.integers(0, 40, size=(IMAGES, 28, 28)).astype(np.uint8)
    images[np.arange(IMAGES), labels * 2 + 4, 4:24] = 255
    raw = folder / "MNIST" / "raw"
    write_idx_gz(raw / "t10k-images-idx3-ubyte.gz", images)
    write_idx_gz(raw / "t10k-labels-idx1-ubyte.gz", labels)
    return images, labels.astype(np.int64)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | dict[str, str]]:
    """A set fitted (3 steps) to fake MNIST test images with one extra fit per training
    image, the set's MNIST folder, a folder with other images under the same names, and
    the md5 sums of both folders' files."""
    root = tmp_path_factory.mktemp("jls_mnist")
    images, labels = _fake_mnist(root / "data", seed=0)
    _fake_mnist(root / "other", seed=1)
    splits = stratified_split(labels, {"train": 24, "val": 8, "test": 8}, seed=0)
    selected = np.sort(np.concatenate(list(splits.values())))
    config = FitConfig(recipe="fast", first_layer_init="siren", steps=3, lr=1e-3, seed=0,
                       source="test-split", limit=None, copies=1, batch_inrs=64,
                       shard_size=64, stop_psnr=None, check_every=3, dtype="float32",
                       images_sha256=images_digest(images[selected], labels[selected]))
    run_fit(images, labels, splits, config, root / "inrs",
            extra={"data_dir": str(root / "data")}, progress=False)
    md5 = {name: {p.name: md5sum(p) for p in (root / name / "MNIST" / "raw").iterdir()}
           for name in ("data", "other")}
    return {"inrs": root / "inrs", "data": root / "data", "other": root / "other",
            "md5": md5}


@pytest.fixture
def mnist_inrs(fitted, monkeypatch: pytest.MonkeyPatch) -> dict:
    """:func:`fitted`, with the MNIST checksums patched to accept its fake images."""
    monkeypatch.setattr("utils.images.MNIST_MD5", {**MNIST_MD5, **fitted["md5"]["data"]})
    return fitted


def test_copies_are_training_inrs_sharing_label_and_image(mnist_inrs) -> None:
    splits = _splits(mnist_inrs["inrs"])
    train = splits["train"]
    assert len(train) == 48 and len(splits["val"]) == 8 and len(splits["test"]) == 8
    # the copies of an image sit side by side: same label and target, other weights
    assert torch.equal(train.labels[0::2], train.labels[1::2])
    assert torch.equal(train.targets[0::2], train.targets[1::2])
    assert not torch.equal(train.edge_attr[0::2], train.edge_attr[1::2])
    assert float(train.targets.max()) == 1.0 and float(train.targets.min()) >= 0


def test_jls_both_stages_records_picture_and_a_frozen_encoder(mnist_inrs, tmp_path) -> None:
    argv = ["--inr-dir", str(mnist_inrs["inrs"]), "--epochs", "1", *TINY,
            *_dirs(tmp_path, "jls")]
    assert jls.main(argv) == 0
    log, ckpt = tmp_path / "jls" / "log", tmp_path / "jls" / "ckpt"
    auto = _records(log, "MNIST_INR2JLS_Train_dng-autoencoder_seed0")[-1]
    assert auto["final"] and set(auto["final_metrics"]) == {"test_mse", "baseline_mse"}
    splits = _splits(mnist_inrs["inrs"])
    mean = 2 * splits["train"].targets.mean(0) - 1
    baseline = ((2 * splits["test"].targets - 1 - mean) ** 2).mean()
    assert auto["baseline_mse"] == pytest.approx(float(baseline), rel=1e-5)
    assert 0 < auto["test_mse"] < 4
    classifier = _records(log, "MNIST_INR2JLS_Train_dng-classifier_seed0")[-1]
    assert classifier["final"] and 0 <= classifier["test_acc"] <= 100
    for view in jls.VIEW_NAMES:
        assert 0 <= classifier[f"test_acc_{view}"] <= 100
    assert (log / "MNIST_INR2JLS_Train_dng-autoencoder_seed0.png").stat().st_size > 1000
    first = torch.load(ckpt / "MNIST_INR2JLS_Train_dng-autoencoder_seed0_best.pt",
                       weights_only=False)["model"]
    second = torch.load(ckpt / "MNIST_INR2JLS_Train_dng-classifier_seed0_last.pt",
                        weights_only=False)["model"]
    frozen = [k for k in second if k.startswith(("encoder.", "latent."))]
    assert frozen and any(k.startswith("head.") for k in second)
    for key in frozen:
        assert torch.equal(second[key], first[key]), key


def test_the_classifier_reads_the_autoencoders_moving_average(mnist_inrs, tmp_path) -> None:
    argv = ["--inr-dir", str(mnist_inrs["inrs"]), "--epochs", "2", "--ema-decay", "0.9",
            *TINY, *_dirs(tmp_path, "ema")]
    assert jls.main(argv) == 0
    ckpt = tmp_path / "ema" / "ckpt"
    auto = torch.load(ckpt / "MNIST_INR2JLS_Train_dng-autoencoder_seed0_best.pt",
                      weights_only=False)
    classifier = torch.load(ckpt / "MNIST_INR2JLS_Train_dng-classifier_seed0_last.pt",
                            weights_only=False)["model"]
    frozen = [k for k in classifier if k.startswith(("encoder.", "latent."))]
    assert frozen
    moved = 0
    for key in frozen:
        assert torch.equal(classifier[key], auto["averaged"][f"module.{key}"]), key
        moved += not torch.equal(classifier[key], auto["model"][key])
    assert moved  # the average is not the weights themselves


def test_each_stage_resumes_exactly(mnist_inrs, tmp_path) -> None:
    base = ["--inr-dir", str(mnist_inrs["inrs"]), *TINY]
    for stage, run in (("autoencoder", "dng-autoencoder"), ("classifier", "dng-classifier")):
        extra = ["--stage", stage]
        if stage == "classifier":
            extra += ["--autoencoder-checkpoint", str(
                tmp_path / "whole" / "ckpt" / "MNIST_INR2JLS_Train_dng-autoencoder_seed0_best.pt")]
        name = f"MNIST_INR2JLS_Train_{run}_seed0"
        assert jls.main([*base, *extra, "--epochs", "2", *_dirs(tmp_path, "whole")]) == 0
        assert jls.main([*base, *extra, "--epochs", "1", *_dirs(tmp_path, "cut")]) == 0
        assert jls.main([*base, *extra, "--epochs", "2", "--resume",
                         *_dirs(tmp_path, "cut")]) == 0
        whole = _records(tmp_path / "whole" / "log", name)
        cut = _records(tmp_path / "cut" / "log", name)
        assert [r["epoch"] for r in cut] == [1, 2, 2] and cut[-1]["final"]
        for a, b in zip(whole, cut):
            for key in ("train_loss", "val_loss", "test_loss"):
                assert a.get(key) == b.get(key), (stage, key)
        a = torch.load(tmp_path / "whole" / "ckpt" / f"{name}_last.pt", weights_only=False)
        b = torch.load(tmp_path / "cut" / "ckpt" / f"{name}_last.pt", weights_only=False)
        for key, value in a["model"].items():
            assert torch.equal(value, b["model"][key]), (stage, key)


@pytest.mark.parametrize("model", ["jls", "inr2inr"])
@pytest.mark.parametrize("encoder", ["dng", "ngnn", "ngt"])
def test_each_model_and_encoder_runs_the_pipeline(model, encoder, mnist_inrs, tmp_path) -> None:
    argv = ["--inr-dir", str(mnist_inrs["inrs"]), "--model", model, "--encoder", encoder,
            "--epochs", "1", "--max-train-batches", "2", *TINY, *_dirs(tmp_path, "run")]
    if model == "inr2inr":
        argv = [*argv, "--latent-size", "1", "--weight-loss", "0.5"]
    assert jls.main(argv) == 0
    side = encoder if model == "jls" else f"{encoder}-inr2inr"
    log = tmp_path / "run" / "log"
    auto = _records(log, f"MNIST_INR2JLS_Train_{side}-autoencoder_seed0")[-1]
    classifier = _records(log, f"MNIST_INR2JLS_Train_{side}-classifier_seed0")[-1]
    assert auto["final"] and classifier["final"] and 0 <= classifier["test_acc"] <= 100
    if model == "inr2inr":
        assert auto["test_psnr"] > 0 and auto["test_input_psnr"] > 0
        assert auto["test_weight_mse"] >= 0 and "test_acc_original" not in classifier
    else:
        assert auto["test_mse"] > 0 and "test_acc_rot180" in classifier
    assert (log / f"MNIST_INR2JLS_Train_{side}-autoencoder_seed0.png").is_file()


def test_render_targets_need_no_originals(synthetic_set, tmp_path) -> None:  # noqa: F811
    argv = ["--inr-dir", str(synthetic_set), "--target", "render", "--stage", "autoencoder",
            "--epochs", "1", *TINY, *_dirs(tmp_path, "render")]
    assert jls.main(argv) == 0
    name = "MNIST_INR2JLS_Train_dng-autoencoder_seed0"
    assert _records(tmp_path / "render" / "log", name)[-1]["final"]
    saved = torch.load(tmp_path / "render" / "ckpt" / f"{name}_last.pt", weights_only=False)
    assert saved["config"]["target"] == "render"


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert jls.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_missing_or_mismatched_image_source_is_refused_clearly(
        mnist_inrs, synthetic_set, tmp_path, capsys, monkeypatch) -> None:  # noqa: F811
    base = ["--epochs", "1", *TINY, *_dirs(tmp_path, "x")]
    err = _refused(["--inr-dir", str(synthetic_set), *base], capsys)
    assert "--target original" in err and "image source 'synthetic'" in err
    assert "--target render" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    err = _refused(["--inr-dir", str(mnist_inrs["inrs"]), "--data-dir", str(empty), *base],
                   capsys)
    assert "--target original" in err and "t10k-images-idx3-ubyte.gz is missing" in err
    monkeypatch.setattr("utils.images.MNIST_MD5", {**MNIST_MD5, **mnist_inrs["md5"]["other"]})
    err = _refused(["--inr-dir", str(mnist_inrs["inrs"]), "--mnist-dir",
                    str(mnist_inrs["other"]), *base], capsys)
    assert "are not those the set was fitted to" in err
    assert not (tmp_path / "x").exists()


def test_the_classifier_needs_its_own_autoencoder_and_sizes_must_fit(mnist_inrs, tmp_path,
                                                                     capsys) -> None:
    base = ["--inr-dir", str(mnist_inrs["inrs"]), "--epochs", "1", *TINY]
    err = _refused([*base, "--stage", "classifier", *_dirs(tmp_path, "none")], capsys)
    assert "--autoencoder-checkpoint" in err and "does not exist" in err
    assert jls.main([*base, "--stage", "autoencoder", *_dirs(tmp_path, "a")]) == 0
    capsys.readouterr()
    err = _refused([*base, "--stage", "classifier", "--latent-dim", "6",
                    *_dirs(tmp_path, "a")], capsys)
    assert "was trained with --latent-dim 4, this command gives 6" in err
    err = _refused([*base, "--encoder", "ngnn", "--dng-config", "official",
                    *_dirs(tmp_path, "a")], capsys)
    assert "--dng-config official" in err
    err = _refused([*base, "--latent-size", "16", *_dirs(tmp_path, "a")], capsys)
    assert "the targets are 28x28 (--latent-size 49 fits them)" in err


def test_help_lists_the_stages_and_the_sizes(capsys) -> None:
    assert jls.main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--model {jls,inr2inr}", "--stage {autoencoder,classifier,both}",
                 "--target {original,render}", "--data-dir", "--latent-dim", "--latent-size",
                 "--classifier-epochs", "--autoencoder-checkpoint", "--dng-config"):
        assert flag in text, flag
    assert "default per model: jls 32, inr2inr 256" in text
