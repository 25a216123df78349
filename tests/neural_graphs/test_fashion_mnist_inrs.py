"""Fashion-MNIST INRs on local stand-ins: the md5-checked reader and its downloads
(utils.images.load_fashion_mnist), ``python -m MNIST_INR_Fit --dataset fashion-mnist``, the
set it writes (read by neural_graphs.inr_fit.load_inr_set) and its original images (read by
neural_graphs.inr_data.inr_set_images from FashionMNIST/raw, never MNIST/raw); an MNIST
configuration recorded before ``FitConfig.dataset`` existed still reads, resumes and loads
as MNIST."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

import MNIST_INR_Fit
from neural_graphs import inr_fit
from neural_graphs.inr_data import inr_set_images
from neural_graphs.inr_fit import ConfigMismatchError, FitConfig, fit_dataset, load_inr_set
from utils import images as image_files
from utils.DataLoader_GNN import load_fashion_mnist as reexported
from utils.images import IDX_DATASETS, load_fashion_mnist, load_idx_dataset, md5sum

TEST_IMAGES = 10000  # --mnist-source test-split needs the whole test set
TRAIN_IMAGES = 30


def write_idx_gz(path: Path, array: np.ndarray) -> Path:
    """``array`` (uint8) as a gzip IDX file, the real (Fashion-)MNIST format."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header + array.astype(np.uint8).tobytes())
    return path


def stand_in_arrays(count: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images, each a label-dependent bar plus a per-image grey corner, and
    their labels (0-9 in turn)."""
    labels = (np.arange(count) % 10).astype(np.uint8)
    images = np.zeros((count, 28, 28), np.uint8)
    images[np.arange(count), labels * 2 + 4, 4:24] = 255
    images[:, 0, 0] = (np.arange(count) + offset) % 251
    return images, labels


def write_set(raw: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Stand-in train and t10k files in ``raw``; returns their arrays by split."""
    arrays = {"train": stand_in_arrays(TRAIN_IMAGES, 7), "t10k": stand_in_arrays(TEST_IMAGES, 0)}
    for split, (images, labels) in arrays.items():
        write_idx_gz(raw / f"{split}-images-idx3-ubyte.gz", images)
        write_idx_gz(raw / f"{split}-labels-idx1-ubyte.gz", labels)
    return arrays


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A data folder with Fashion-MNIST stand-ins in FashionMNIST/raw, another with the
    same files in MNIST/raw only, and the files' md5 sums."""
    root = tmp_path_factory.mktemp("fashion")
    arrays = write_set(root / "data" / "FashionMNIST" / "raw")
    shutil.copytree(root / "data" / "FashionMNIST", root / "as_mnist" / "MNIST")
    sums = {p.name: md5sum(p) for p in (root / "data" / "FashionMNIST" / "raw").iterdir()}
    return {"root": root, "data": root / "data", "as_mnist": root / "as_mnist",
            "arrays": arrays, "md5": sums}


@pytest.fixture
def fashion(stand_ins: dict, monkeypatch: pytest.MonkeyPatch) -> dict:
    """:func:`stand_ins`, with both md5 tables patched to accept the stand-in files."""
    monkeypatch.setattr(image_files, "FASHION_MNIST_MD5", dict(stand_ins["md5"]))
    monkeypatch.setattr(image_files, "MNIST_MD5", dict(stand_ins["md5"]))
    return stand_ins


# --------------------------------------------------------------------------- the reader


def test_reader_returns_the_arrays_of_fashionmnist_raw(fashion: dict) -> None:
    assert IDX_DATASETS["fashion-mnist"] == ("Fashion-MNIST", "FashionMNIST")
    assert reexported is load_fashion_mnist
    for split in ("train", "t10k"):
        images, labels = load_fashion_mnist(fashion["data"], split, download=False)
        assert images.dtype == np.uint8 and labels.dtype == np.int64
        assert np.array_equal(images, fashion["arrays"][split][0])
        assert np.array_equal(labels, fashion["arrays"][split][1])
        same = load_idx_dataset("fashion-mnist", fashion["data"], split, download=False)
        assert all(np.array_equal(a, b) for a, b in zip(same, (images, labels)))
    # the MNIST reader looks in MNIST/raw only
    with pytest.raises(FileNotFoundError, match=r"/MNIST/raw/t10k-images-idx3-ubyte.gz is "):
        image_files.load_mnist(fashion["data"], "t10k", download=False)
    with pytest.raises(ValueError, match="Fashion-MNIST split must be"):
        load_fashion_mnist(fashion["data"], "test", download=False)
    with pytest.raises(ValueError, match="unknown IDX image set 'kmnist'"):
        load_idx_dataset("kmnist", fashion["data"], "t10k", download=False)


def test_official_sums_refuse_stand_ins_and_a_wrong_file_is_named(stand_ins: dict) -> None:
    assert image_files.FASHION_MNIST_MD5["t10k-images-idx3-ubyte.gz"] == \
        "bef4ecab320f06d8554ea6380940ec79"
    name = "t10k-images-idx3-ubyte.gz"
    with pytest.raises(RuntimeError, match=f"FashionMNIST/raw/{name} exists but its md5 is "
                                           f"{stand_ins['md5'][name]}, expected "
                                           "bef4ecab320f06d8554ea6380940ec79"):
        load_fashion_mnist(stand_ins["data"], "t10k", download=False, hint="HINT")


def test_downloads_are_md5_checked_like_mnist(stand_ins: dict, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = stand_ins["data"] / "FashionMNIST" / "raw"
    monkeypatch.setattr(image_files, "FASHION_MNIST_MD5", dict(stand_ins["md5"]))
    images, labels = load_fashion_mnist(tmp_path / "fresh", "train",
                                        mirrors=[mirror.as_uri() + "/"])
    assert np.array_equal(images, stand_ins["arrays"]["train"][0])
    assert sorted(p.name for p in (tmp_path / "fresh" / "FashionMNIST" / "raw").iterdir()) == [
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    wrong = dict(stand_ins["md5"], **{"train-labels-idx1-ubyte.gz": "0" * 32})
    monkeypatch.setattr(image_files, "FASHION_MNIST_MD5", wrong)
    with pytest.raises(RuntimeError, match="checksum mismatch"):
        load_fashion_mnist(tmp_path / "bad", "train", mirrors=[mirror.as_uri() + "/"])
    raw = tmp_path / "bad" / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == ["train-images-idx3-ubyte.gz"]


# --------------------------------------------------------------------------- the fit


def test_fit_writes_a_fashion_mnist_set_the_inr_jobs_read(
        fashion: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # the default --out lands in tmp_path/data
    argv = ["--dataset", "fashion-mnist", "--recipe", "fast", "--mnist-source", "test-split",
            "--data-dir", str(fashion["data"]), "--limit", "10", "--steps", "2",
            "--batch-inrs", "10", "--threads", "1"]
    assert MNIST_INR_Fit.main(argv) == 0
    assert "Fashion-MNIST INRs, recipe fast" in capsys.readouterr().out
    out = tmp_path / "data" / "fashion_mnist_inrs_fast"
    assert json.loads((out / "fit_config.json").read_text())["dataset"] == "fashion-mnist"
    params, labels, splits, manifest = load_inr_set(out)
    assert manifest["config"]["dataset"] == "fashion-mnist"
    assert fit_dataset(manifest["config"]) == "fashion-mnist"
    assert FitConfig(**manifest["config"]).dataset == "fashion-mnist"
    assert len(splits) == 10 and params["net.0.weight"].shape == (10, 32, 2)
    index = np.asarray(manifest["inrs"]["image_index"])
    test_images, test_labels = fashion["arrays"]["t10k"]
    assert np.array_equal(labels.numpy(), test_labels[index])
    # the originals come from FashionMNIST/raw of the recorded --data-dir ...
    assert np.array_equal(inr_set_images(manifest), test_images[index])
    # ... and never from MNIST/raw, even holding the very same files
    with pytest.raises(FileNotFoundError, match=r"FashionMNIST/raw") as caught:
        inr_set_images(manifest, fashion["as_mnist"])
    assert "fitted to Fashion-MNIST images" in str(caught.value)
    # the same command continues the finished set; an MNIST fit is another configuration
    assert MNIST_INR_Fit.main(argv) == 0
    assert "1 of 1 shards already fitted" in capsys.readouterr().out
    mnist = [*argv[2:], "--data-dir", str(fashion["as_mnist"]), "--out", str(out)]
    assert MNIST_INR_Fit.main(mnist) == 2
    assert "dataset: saved 'fashion-mnist', now None" in capsys.readouterr().err


def test_fit_without_fashion_mnist_files_names_the_folder(
        stand_ins: dict, capsys: pytest.CaptureFixture[str]) -> None:
    folder = stand_ins["as_mnist"]  # MNIST/raw only; read-only, so nothing is downloaded
    folder.chmod(0o555)
    try:
        code = MNIST_INR_Fit.main(["--dataset", "fashion-mnist", "--mnist-source",
                                   "test-split", "--data-dir", str(folder), "--limit", "10",
                                   "--out", str(stand_ins["root"] / "never")])
    finally:
        folder.chmod(0o755)
    err = capsys.readouterr().err
    assert code == 2 and f"{folder}/FashionMNIST/raw/t10k-images-idx3-ubyte.gz" in err, err
    assert "--dataset fashion-mnist --mnist-source test-split reads Fashion-MNIST" in err
    assert not (stand_ins["root"] / "never").exists()


# --------------------------------------------------------------------------- old configs


OLD_CONFIG = {  # a fit_config.json written before FitConfig.dataset existed
    "recipe": "fast", "first_layer_init": "siren", "steps": 2, "lr": 0.001, "seed": 0,
    "source": "test-split", "limit": 10, "copies": 0, "batch_inrs": 10, "shard_size": 512,
    "stop_psnr": None, "check_every": 25, "dtype": "float32", "images_sha256": "0" * 64,
    "omega_0": 30.0, "out_offset": 0.5, "hidden_features": 32, "hidden_layers": 2}


def test_a_config_without_dataset_reads_resumes_and_loads_as_mnist(
        fashion: dict, tmp_path: Path) -> None:
    config = FitConfig(**OLD_CONFIG)
    assert config.dataset == "mnist" == fit_dataset(OLD_CONFIG)
    # an MNIST configuration is recorded, and hashed, as before the field: the shards of an
    # old set keep their config_sha256, so the set resumes
    assert config.to_dict() == OLD_CONFIG
    assert config.digest() == hashlib.sha256(
        json.dumps(OLD_CONFIG, sort_keys=True).encode()).hexdigest()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "fit_config.json").write_text(json.dumps(OLD_CONFIG))
    inr_fit.check_config(tmp_path / "old", config)  # the same configuration: no error
    other = FitConfig(**{**OLD_CONFIG, "dataset": "fashion-mnist"})
    assert other.to_dict()["dataset"] == "fashion-mnist" and other.digest() != config.digest()
    with pytest.raises(ConfigMismatchError, match="dataset: saved None, now 'fashion-mnist'"):
        inr_fit.check_config(tmp_path / "old", other)
    # an old manifest's images are read from MNIST/raw
    images, labels = fashion["arrays"]["t10k"]
    index = [3, 1, 4, 1]
    manifest = {"config": {**OLD_CONFIG, "images_sha256": inr_fit.images_digest(
        images[[1, 3, 4]], labels[[1, 3, 4]])}, "data_dir": str(fashion["as_mnist"]),
        "inrs": {"image_index": index}}
    assert np.array_equal(inr_set_images(manifest), images[index])
    with pytest.raises(FileNotFoundError, match=r"/MNIST/raw/t10k-images-idx3-ubyte.gz"):
        inr_set_images(manifest, fashion["data"])
