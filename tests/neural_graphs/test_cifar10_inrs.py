"""CIFAR-10 INRs on local stand-ins: the md5-checked reader, its download and extraction
(utils.images.load_cifar10); colour SIRENs fitted exactly as torch's Adam fits each alone
(neural_graphs.siren_fit.fit_sirens on ``[n, H, W, 3]``) and rendered channels last;
``python -m MNIST_INR_Fit --dataset cifar10`` end to end; the INR classifier, the CNN
ceiling and INR2JLS / INR-INR (three-channel targets and decoders) read the set it writes,
and the dilation job, which compares with grey images, refuses it."""

from __future__ import annotations

import io
import json
import pickle
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import MNIST_INR2JLS_Train
import MNIST_INR_Classification_Train as classify
import MNIST_INR_CNN_Ceiling as ceiling
import MNIST_INR_Dilation_Train as dilation
import MNIST_INR_Fit
from neural_graphs.inr import make_coordinates, render, siren_from_params
from neural_graphs.inr_fit import FitConfig, fit_image_shape, load_inr_set
from neural_graphs.siren_fit import fit_sirens, init_siren_params
from utils import images as image_files
from utils.images import CIFAR10_BATCHES, load_cifar10, md5sum
from utils.Train_Test import build_parser

TRAIN_PER_BATCH = 6
TEST_IMAGES = 10000  # --mnist-source test-split needs the whole test set


def stand_in_arrays(count: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` CIFAR-layout images ``[N, 3072]`` (R, G, B planes), each a label-coloured
    bar on grey with a per-image corner, and their labels (0-9 in turn); compressible."""
    labels = np.arange(count) % 10
    images = np.full((count, 3, 32, 32), 60, np.uint8)
    rows = labels * 2 + 6
    images[np.arange(count), labels % 3, rows, 4:28] = 250
    images[:, 1, 0, 0] = (np.arange(count) + offset) % 251
    return images.reshape(count, -1), labels


def write_tarball(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A stand-in ``cifar-10-python.tar.gz`` (the python version's layout); returns the
    arrays by batch name."""
    arrays = {name: stand_in_arrays(TRAIN_PER_BATCH, 11 * i)
              for i, name in enumerate(CIFAR10_BATCHES[:-1])}
    arrays["test_batch"] = stand_in_arrays(TEST_IMAGES, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, (data, labels) in arrays.items():
            payload = pickle.dumps({b"data": data, b"labels": labels.tolist()}, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return arrays


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("cifar10_mirror")
    tarball = root / "cifar-10-python.tar.gz"
    arrays = write_tarball(tarball)
    return {"tarball": tarball, "arrays": arrays, "md5": md5sum(tarball)}


@pytest.fixture
def cifar(mirror: dict, monkeypatch: pytest.MonkeyPatch) -> dict:
    """:func:`mirror`, with :data:`utils.images.CIFAR10_MD5` accepting the stand-in."""
    monkeypatch.setattr(image_files, "CIFAR10_MD5", mirror["md5"])
    return mirror


# --------------------------------------------------------------------------- the reader


def test_download_checks_extracts_and_reads(cifar: dict, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        load_cifar10(data)  # no download by default
    train_x, train_y, test_x, test_y = load_cifar10(data, download=True,
                                                    url=cifar["tarball"].as_uri())
    assert train_x.shape == (5 * TRAIN_PER_BATCH, 3, 32, 32) and train_x.dtype == np.uint8
    assert test_x.shape == (TEST_IMAGES, 3, 32, 32) and test_y.dtype == np.int64
    first, labels = cifar["arrays"]["data_batch_1"]
    assert np.array_equal(train_x[:TRAIN_PER_BATCH].reshape(TRAIN_PER_BATCH, -1), first)
    assert np.array_equal(train_y[:TRAIN_PER_BATCH], labels)
    assert sorted(p.name for p in (data / "cifar-10-batches-py").iterdir()) == \
        sorted(CIFAR10_BATCHES)
    (data / "cifar-10-python.tar.gz").unlink()  # the extracted batches suffice from now on
    assert np.array_equal(load_cifar10(data)[2], test_x)


def test_a_damaged_download_is_refused_and_removed(mirror: dict, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_files, "CIFAR10_MD5", "0" * 32)
    data = tmp_path / "data"
    with pytest.raises(RuntimeError, match="checksum mismatch"):
        load_cifar10(data, download=True, url=mirror["tarball"].as_uri())
    assert not (data / "cifar-10-python.tar.gz").exists()
    assert not (data / "cifar-10-batches-py").exists()


# --------------------------------------------------------------------------- colour SIRENs


def test_colour_fit_equals_torch_adam_on_each_siren() -> None:
    """Stacked 3-output SIRENs on a 5x6 (not square) grid take exactly the Adam steps of
    each SIREN alone on the MSE over pixels and channels (float64)."""
    torch.manual_seed(0)
    images = torch.rand(2, 5, 6, 3, dtype=torch.float64)
    params = init_siren_params([3, 4], "siren", torch.float64, hidden_features=8,
                               out_features=3)
    result = fit_sirens(params, images, steps=6, lr=1e-3)
    coords = make_coordinates(5, 6, dtype=torch.float64)
    for index in range(2):
        siren = siren_from_params(params, index)
        optimizer = torch.optim.Adam(siren.parameters(), lr=1e-3)
        for _ in range(6):
            optimizer.zero_grad()
            loss = ((siren(coords) - images[index].reshape(-1, 3)) ** 2).mean()
            loss.backward()
            optimizer.step()
        for key, value in siren.state_dict().items():
            torch.testing.assert_close(result.params[key][index], value, rtol=0, atol=1e-10)
        final = ((siren(coords) - images[index].reshape(-1, 3)) ** 2).mean().detach()
        assert float(result.mse[index]) == pytest.approx(float(final), rel=1e-9)
    drawn = render(result.params, (5, 6))
    assert drawn.shape == (2, 5, 6, 3)
    for index in range(2):
        siren = siren_from_params(result.params, index)
        torch.testing.assert_close(drawn[index], siren(coords).reshape(5, 6, 3).detach(),
                                   rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"images must be \[2, H, W, 3\]"):
        fit_sirens(params, images[..., 0], steps=1)


def test_grey_configurations_keep_their_digest() -> None:
    """The new fields are recorded only away from MNIST's values, so a grey 28x28 set
    written before them still resumes and loads."""
    grey = FitConfig("fast", "siren", 3, 1e-3, 0, "test-split", None, 0, 4, 8, None, 3,
                     "float32", "x")
    assert not {"out_features", "image_height", "image_width", "dataset"} & set(grey.to_dict())
    assert fit_image_shape(grey.to_dict()) == (28, 28, 1)
    colour = FitConfig("fast", "siren", 3, 1e-3, 0, "test-split", None, 0, 4, 8, None, 3,
                       "float32", "x", dataset="cifar10", out_features=3, image_height=32,
                       image_width=32)
    assert fit_image_shape(colour.to_dict()) == (32, 32, 3)
    assert colour.digest() != grey.digest()


# --------------------------------------------------------------------------- the fit job


@pytest.fixture(scope="module")
def cifar_set(mirror: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 colour SIRENs fitted for 5 steps by ``python -m MNIST_INR_Fit --dataset cifar10``
    from the stand-in tarball placed in a data folder."""
    root = tmp_path_factory.mktemp("cifar10_inrs")
    data = root / "data"
    data.mkdir()
    (data / "cifar-10-python.tar.gz").write_bytes(mirror["tarball"].read_bytes())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(image_files, "CIFAR10_MD5", mirror["md5"])
        assert MNIST_INR_Fit.main(["--dataset", "cifar10", "--mnist-source", "test-split",
                                   "--limit", "40", "--steps", "5", "--recipe", "fast",
                                   "--data-dir", str(data), "--out", str(root / "set"),
                                   "--threads", "1"]) == 0
    return root / "set"


def test_fit_job_writes_a_colour_set(cifar_set: Path, mirror: dict) -> None:
    params, labels, splits, manifest = load_inr_set(cifar_set)
    config = manifest["config"]
    assert config["dataset"] == "cifar10" and fit_image_shape(config) == (32, 32, 3)
    assert params["net.0.weight"].shape == (40, 32, 2)
    assert params["net.4.weight"].shape == (40, 3, 32) and params["net.4.bias"].shape == (40, 3)
    assert manifest["split_sizes"] == {"train": 28, "val": 4, "test": 8}
    assert "make_coordinates(32, 32)" in manifest["coordinates"]
    # The PSNR the manifest records is that of the render against the RGB image.
    data, _ = mirror["arrays"]["test_batch"]
    index = np.asarray(manifest["inrs"]["image_index"])
    target = torch.from_numpy(data[index].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
                              .astype(np.float64) / 255)
    mse = ((render({k: v.double() for k, v in params.items()}, (32, 32)) - target) ** 2)
    psnr = -10 * torch.log10(mse.mean(dim=(1, 2, 3)))
    np.testing.assert_allclose(psnr.numpy(), manifest["inrs"]["psnr"], atol=2e-3)
    picture = cv2.imread(str(cifar_set / "renders.png"), cv2.IMREAD_UNCHANGED)
    assert picture.ndim == 3 and picture.shape[2] == 3
    assert np.abs(picture[..., 0].astype(int) - picture[..., 2]).max() > 100  # in colour
    assert np.array_equal(labels.numpy(), index % 10)  # the stand-ins' labels


def test_fit_job_names_the_missing_files(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    read_only = tmp_path / "empty"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        code = MNIST_INR_Fit.main(["--dataset", "cifar10", "--data-dir", str(read_only),
                                   "--out", str(tmp_path / "out"), "--limit", "40"])
    finally:
        read_only.chmod(0o755)
    assert code == 2 and "cifar-10-batches-py" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- the INR jobs


TINY = ["--hidden", "8", "--layers", "1", "--batch-size", "16", "--seeds", "0", "--epochs",
        "1", "--warmup-steps", "1"]


@pytest.mark.parametrize("encoder", ["flatmlp", "ngnn", "ngt", "dng"])
def test_the_classifier_reads_the_colour_set(cifar_set: Path, tmp_path: Path,
                                             encoder: str) -> None:
    probes = [] if encoder == "flatmlp" else ["--probes", "4"]
    assert classify.main(["--inr-dir", str(cifar_set), "--encoder", encoder, *probes, *TINY,
                          "--log-dir", str(tmp_path / "log"), "--checkpoint-dir",
                          str(tmp_path / "ckpt")]) == 0
    log = tmp_path / "log" / f"MNIST_INR_Classification_Train_{encoder}_seed0.jsonl"
    last = json.loads(log.read_text().splitlines()[-1])
    assert last["final"] and 0 <= last["test_acc"] <= 100


def test_the_ceiling_renders_colour(cifar_set: Path, tmp_path: Path) -> None:
    renders = ceiling.rendered_splits(str(cifar_set))
    assert renders["train"].tensors[0].shape == (28, 3, 32, 32)
    params, _, splits, _ = load_inr_set(cifar_set)
    first = splits.index("train")
    expected = siren_from_params({k: v.float() for k, v in params.items()}, first)(
        make_coordinates(32, 32)).detach().reshape(32, 32, 3).permute(2, 0, 1)
    torch.testing.assert_close(renders["train"].tensors[0][0], expected, rtol=0, atol=1e-5)
    assert ceiling.main(["--inr-dir", str(cifar_set), "--channels", "4", *TINY[4:],
                         "--log-dir", str(tmp_path / "log"), "--checkpoint-dir",
                         str(tmp_path / "ckpt")]) == 0


def test_dilation_refuses_the_colour_set(cifar_set: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert dilation.main(["--inr-dir", str(cifar_set), "--log-dir", str(tmp_path / "log"),
                          "--checkpoint-dir", str(tmp_path / "ckpt")]) == 2
    err = capsys.readouterr().err
    assert "--inr-dir" in err and "grey images" in err and "32x32 pixels and 3 channels" in err


JLS_TINY = ["--encoder", "dng", "--hidden", "8", "--probes", "4", "--latent-dim", "4",
            "--latent-hidden", "16", "--decoder-hidden", "8", "--classifier-hidden", "8",
            *TINY[4:]]


def test_inr2jls_targets_are_the_colour_originals(cifar_set: Path, mirror: dict) -> None:
    """``--target original`` reads the CIFAR-10 images the set was fitted to (checked
    against its digest), channels last as rendered, in the set's order."""
    args = build_parser(MNIST_INR2JLS_Train.JOB).parse_args(["--inr-dir", str(cifar_set)])
    splits = MNIST_INR2JLS_Train._splits(args, 0)
    _, _, split_of, manifest = load_inr_set(cifar_set)
    data, _ = mirror["arrays"]["test_batch"]
    index = np.asarray(manifest["inrs"]["image_index"])
    images = torch.from_numpy(data[index].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
                              .astype(np.float32) / 255)
    for name in ("train", "val", "test"):
        chosen = [i for i, split in enumerate(split_of) if split == name]
        assert torch.equal(splits[name].targets, images[chosen]), name


@pytest.mark.parametrize("model", ["jls", "inr2inr"])
def test_inr2jls_and_inr_inr_learn_colour_images(model: str, cifar_set: Path,
                                                  tmp_path: Path) -> None:
    """Both stages on colour INRs: INR2JLS's latent maps are 8x8 (64 positions, the
    paper's size for 32x32 images) and its decoder draws three channels; INR-INR renders
    a three-output SIREN; each autoencoder run draws its picture in colour."""
    log, ckpt = tmp_path / "log", tmp_path / "ckpt"
    assert MNIST_INR2JLS_Train.main(["--inr-dir", str(cifar_set), "--model", model, *JLS_TINY,
                                     "--log-dir", str(log), "--checkpoint-dir",
                                     str(ckpt)]) == 0
    kind = "autoencoder" if model == "jls" else "inr2inr-autoencoder"
    run = f"MNIST_INR2JLS_Train_dng-{kind}_seed0"
    auto = json.loads((log / f"{run}.jsonl").read_text().splitlines()[-1])
    saved = torch.load(ckpt / f"{run}_best.pt", weights_only=False)
    if model == "jls":
        assert auto["final"] and 0 < auto["test_mse"] < 4 and auto["baseline_mse"] > 0
        assert saved["config"]["latent_size"] == 64
        assert saved["model"]["decoder.net.2.weight"].shape[1] == 3  # ConvTranspose2d(h, 3)
    else:
        assert auto["final"] and np.isfinite(auto["test_psnr"])
    classifier = json.loads((log / run.replace("autoencoder", "classifier")
                             ).with_suffix(".jsonl").read_text().splitlines()[-1])
    assert classifier["final"] and 0 <= classifier["test_acc"] <= 100
    picture = cv2.imread(str(log / f"{run}.png"), cv2.IMREAD_UNCHANGED)
    assert picture.ndim == 3 and picture.shape[2] == 3
    assert np.abs(picture[..., 0].astype(int) - picture[..., 2]).max() > 100  # in colour
