"""Tests of utils.DataLoader_GNN: IDX/CIFAR parsing, downloads, augmentation, determinism."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import pickle
import struct
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from utils import DataLoader_GNN as dl
from utils import images as image_files

IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C,
             np.float32: 0x0D, np.float64: 0x0E}


# --------------------------------------------------------------------------- helpers


def write_idx_gz(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` as a gzip IDX file (big-endian, the real MNIST format)."""
    header = bytes([0, 0, IDX_CODES[array.dtype.type], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(array.dtype.newbyteorder(">")).tobytes())
    return path


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def make_mnist(raw: Path, n_train: int = 70, n_test: int = 30) -> dict[str, str]:
    """Tiny MNIST files in ``raw``; returns their md5s keyed by file name."""
    rng = np.random.default_rng(0)
    sums = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            path = write_idx_gz(raw / f"{split}-{kind}-ubyte.gz", arr)
            sums[path.name] = md5(path)
    return sums


def make_cifar_tarball(path: Path, n_train: int = 24, n_test: int = 10) -> dict[str, tuple]:
    """A CIFAR-100 python-version tarball in the real layout; returns the arrays."""
    rng = np.random.default_rng(1)
    arrays = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, n in (("train", n_train), ("test", n_test)):
            data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
            labels = [int(v) for v in rng.integers(0, 100, size=n)]
            arrays[name] = (data, np.array(labels))
            entry = {b"filenames": [b"x.png"] * n, b"batch_label": name.encode(),
                     b"fine_labels": labels, b"coarse_labels": [lab // 5 for lab in labels],
                     b"data": data}
            _add_bytes(tar, f"cifar-100-python/{name}", pickle.dumps(entry, protocol=2))
        meta = {b"fine_label_names": [f"c{i}".encode() for i in range(100)]}
        _add_bytes(tar, "cifar-100-python/meta", pickle.dumps(meta, protocol=2))
        _add_bytes(tar, "cifar-100-python/file.txt~", b"")
    return arrays


def _add_bytes(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def same_batches(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b)
    )


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture
def http_root(tmp_path):
    """Serve a folder over HTTP on 127.0.0.1 from a thread; yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def mnist_dir(tmp_path, monkeypatch):
    """data_dir with tiny MNIST files whose md5s replace the real ones."""
    sums = make_mnist(tmp_path / "data" / "MNIST" / "raw")
    monkeypatch.setattr(image_files, "MNIST_MD5", sums)
    return tmp_path / "data"


# --------------------------------------------------------------------------- IDX / MNIST


@pytest.mark.parametrize("dtype,shape", [(np.uint8, (5, 28, 28)), (np.int32, (3, 4)),
                                         (np.float32, (7,)), (np.int16, (2, 3, 2))])
def test_read_idx_roundtrip(tmp_path, dtype, shape):
    arr = (np.arange(np.prod(shape)) - 3).astype(dtype).reshape(shape)
    if dtype == np.uint8:
        arr = np.arange(np.prod(shape), dtype=np.uint8).reshape(shape)
    out = dl.read_idx(write_idx_gz(tmp_path / "a.gz", arr))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_read_idx_rejects_bad_files(tmp_path):
    bad_magic = tmp_path / "bad.gz"
    with gzip.open(bad_magic, "wb") as f:
        f.write(b"\x01\x02\x08\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(ValueError, match="magic"):
        dl.read_idx(bad_magic)
    truncated = tmp_path / "short.gz"
    with gzip.open(truncated, "wb") as f:
        f.write(b"\x00\x00\x08\x02" + struct.pack(">II", 2, 3) + b"\x00" * 5)
    with pytest.raises(ValueError, match="payload"):
        dl.read_idx(truncated)


def test_mnist_train_source(mnist_dir):
    train, val = dl.get_dataloaders_MNIST(mnist_dir, batch_size=16, download=False)
    assert len(train.dataset) == 70 and len(val.dataset) == 30
    x, y = next(iter(train))
    assert x.shape == (16, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0.0 <= x.min() and x.max() <= 1.0
    images = dl.read_idx(mnist_dir / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz")
    vx, vy = next(iter(val))  # val is not shuffled
    expected = torch.from_numpy(images[:16]).float().div(255).unsqueeze(1)
    assert torch.equal(vx, expected)
    assert torch.equal(vy, torch.arange(16) % 10)


def test_mnist_test_split_fixture(tmp_path, monkeypatch):
    n = 8010
    raw = tmp_path / "MNIST" / "raw"
    images = (np.arange(n) % 251).astype(np.uint8)[:, None, None] * np.ones((1, 28, 28), np.uint8)
    sums = {}
    for name, arr in (("t10k-images-idx3-ubyte.gz", images),
                      ("t10k-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))):
        sums[name] = md5(write_idx_gz(raw / name, arr))
    monkeypatch.setattr(image_files, "MNIST_MD5", sums)
    train, val = dl.get_dataloaders_MNIST(tmp_path, batch_size=5, download=False,
                                          source="test-split")
    assert len(train.dataset) == 8000 and len(val.dataset) == 10
    vx, vy = next(iter(val))
    expected = torch.tensor([(8000 + i) % 251 for i in range(5)], dtype=torch.float32) / 255
    assert torch.equal(vx[:, 0, 0, 0], expected)
    assert torch.equal(vy, torch.arange(5))
    with pytest.raises(ValueError, match="source"):
        dl.get_dataloaders_MNIST(tmp_path, source="bogus", download=False)


def test_mnist_missing_training_images_points_to_test_split(tmp_path, monkeypatch):
    sums = make_mnist(tmp_path / "MNIST" / "raw")
    monkeypatch.setattr(image_files, "MNIST_MD5", sums)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (tmp_path / "MNIST" / "raw" / name).unlink()
    with pytest.raises(FileNotFoundError, match="training images are missing") as info:
        dl.get_dataloaders_MNIST(tmp_path, download=False)
    assert "test-split" in str(info.value) and "--mnist-source" in str(info.value)
    empty_mirror = tmp_path / "mirror"
    empty_mirror.mkdir()
    with pytest.raises(FileNotFoundError, match="test-split") as info:
        dl.get_dataloaders_MNIST(tmp_path, mirrors=[empty_mirror.as_uri() + "/"])
    assert "train-images-idx3-ubyte.gz" in str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in str(info.value)
    assert leftovers(tmp_path / "MNIST" / "raw") == []


def test_mnist_existing_file_with_wrong_md5(tmp_path):
    make_mnist(tmp_path / "MNIST" / "raw")  # real md5s from SPEC are kept
    with pytest.raises(RuntimeError, match="md5"):
        dl.get_dataloaders_MNIST(tmp_path, download=False, source="test-split")


# --------------------------------------------------------------------------- downloads


def test_download_file_url(tmp_path):
    src = tmp_path / "src" / "blob.bin"
    src.parent.mkdir()
    src.write_bytes(b"abc" * 1000)
    dest = tmp_path / "out" / "blob.bin"
    dl.download_file(src.as_uri(), dest, md5=md5(src), progress=False)
    assert dest.read_bytes() == src.read_bytes()
    assert leftovers(dest.parent) == []


def test_download_http_server(http_root, tmp_path):
    root, base = http_root
    (root / "blob.bin").write_bytes(bytes(range(256)) * 64)
    good = md5(root / "blob.bin")
    dest = tmp_path / "dl" / "blob.bin"
    dl.download_file(base + "blob.bin", dest, md5=good, timeout=10, progress=False)
    assert md5(dest) == good
    dest.unlink()
    with pytest.raises(RuntimeError, match="checksum mismatch"):
        dl.download_file(base + "blob.bin", dest, md5="0" * 32, timeout=10, progress=False)
    assert not dest.exists() and leftovers(dest.parent) == []
    with pytest.raises(OSError):  # HTTP 404
        dl.download_file(base + "absent.bin", dest, timeout=10, progress=False)
    assert not dest.exists() and leftovers(dest.parent) == []


def test_mnist_download_from_local_http_mirror(http_root, tmp_path, monkeypatch):
    root, base = http_root
    sums = make_mnist(root)
    data = tmp_path / "data"
    # The real md5s reject the stand-in files: error, and nothing left behind.
    with pytest.raises(RuntimeError, match="checksum mismatch"):
        dl.get_dataloaders_MNIST(data, mirrors=[base], source="test-split")
    assert not any((data / "MNIST" / "raw").iterdir())
    monkeypatch.setattr(image_files, "MNIST_MD5", sums)
    bad_first = [tmp_path.joinpath("nowhere").as_uri() + "/", base]  # falls through to base
    train, val = dl.get_dataloaders_MNIST(data, batch_size=8, mirrors=bad_first)
    assert len(train.dataset) == 70 and len(val.dataset) == 30
    assert sorted(p.name for p in (data / "MNIST" / "raw").iterdir()) == sorted(sums)


def test_nothing_is_downloaded_into_a_read_only_folder(tmp_path, monkeypatch):
    """A read-only data folder (like ../shared/data) is left untouched, even by root: no
    temporary download file appears in it, and the error says why."""
    mirror = tmp_path / "mirror"
    sums = make_mnist(mirror)
    monkeypatch.setattr(image_files, "MNIST_MD5", sums)
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (raw / name).write_bytes((mirror / name).read_bytes())
    raw.chmod(0o555)
    before = raw.stat().st_mtime_ns
    try:
        with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte.gz is missing\. "
                           r".*raw is read-only, so nothing is downloaded into it"):
            dl.load_mnist(tmp_path / "data", "train", mirrors=[mirror.as_uri() + "/"])
        images, _ = dl.load_mnist(tmp_path / "data", "t10k", download=False)
    finally:
        raw.chmod(0o755)
    assert raw.stat().st_mtime_ns == before
    assert sorted(p.name for p in raw.iterdir()) == ["t10k-images-idx3-ubyte.gz",
                                                     "t10k-labels-idx1-ubyte.gz"]
    assert images.shape[1:] == (28, 28)


def test_cifar_tarball_is_not_extracted_into_a_read_only_folder(tmp_path, monkeypatch):
    data = tmp_path / "data"
    make_cifar_tarball(data / "cifar-100-python.tar.gz")
    monkeypatch.setattr(image_files, "CIFAR100_MD5", md5(data / "cifar-100-python.tar.gz"))
    data.chmod(0o555)
    try:
        with pytest.raises(FileNotFoundError, match="read-only, so cifar-100-python.tar.gz "
                                                    "is not extracted there"):
            dl.load_cifar100(data, download=False)
    finally:
        data.chmod(0o755)
    assert sorted(p.name for p in data.iterdir()) == ["cifar-100-python.tar.gz"]


# --------------------------------------------------------------------------- CIFAR-100


@pytest.fixture
def cifar_dir(tmp_path, monkeypatch):
    tarball = tmp_path / "mirror" / "cifar-100-python.tar.gz"
    arrays = make_cifar_tarball(tarball)
    monkeypatch.setattr(image_files, "CIFAR100_MD5", md5(tarball))
    data = tmp_path / "data"
    dl.load_cifar100(data, url=tarball.as_uri())
    return data, arrays


def test_cifar_parse_and_extract(cifar_dir, tmp_path):
    data, arrays = cifar_dir
    assert (data / "cifar-100-python.tar.gz").is_file()
    assert sorted(p.name for p in (data / "cifar-100-python").iterdir()) == [
        "meta", "test", "train"]
    (data / "cifar-100-python.tar.gz").unlink()  # extracted files suffice from now on
    train_x, train_y, test_x, test_y = dl.load_cifar100(data, download=False)
    assert train_x.shape == (24, 3, 32, 32) and test_x.shape == (10, 3, 32, 32)
    np.testing.assert_array_equal(train_x.reshape(24, -1), arrays["train"][0])
    np.testing.assert_array_equal(test_y, arrays["test"][1])
    assert leftovers(data) == []


def test_cifar_wrong_checksum_and_missing(tmp_path, http_root):
    root, base = http_root
    make_cifar_tarball(root / "cifar-100-python.tar.gz")
    data = tmp_path / "data"
    with pytest.raises(RuntimeError, match="checksum mismatch"):
        dl.get_dataloaders_CIFAR100(data, url=base + "cifar-100-python.tar.gz")
    assert not (data / "cifar-100-python.tar.gz").exists() and leftovers(data) == []
    with pytest.raises(FileNotFoundError, match="cifar-100-python.tar.gz") as info:
        dl.get_dataloaders_CIFAR100(tmp_path / "other", download=False)
    assert str(tmp_path / "other") in str(info.value)


def test_cifar_loaders_shapes_and_normalization(cifar_dir):
    data, arrays = cifar_dir
    train, val = dl.get_dataloaders_CIFAR100(data, batch_size=8, download=False)
    x, y = next(iter(train))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert -1.0 <= x.min() and x.max() <= 1.0
    vx, vy = next(iter(val))
    raw = torch.from_numpy(arrays["test"][0][:8].reshape(8, 3, 32, 32)).float() / 255
    assert torch.allclose(vx, (raw - 0.5) / 0.5, atol=0, rtol=0)
    assert torch.equal(vy, torch.from_numpy(arrays["test"][1][:8]))


def test_cifar_augmentation_determinism(cifar_dir):
    data, _ = cifar_dir
    train_x, train_y, _, _ = dl.load_cifar100(data, download=False)

    def samples(seed, epoch):
        ds = dl.ImageDataset(train_x, train_y, mean=0.5, std=0.5, augment=True, seed=seed)
        ds.set_epoch(epoch)
        return torch.stack([ds[i][0] for i in range(len(ds))])

    a = samples(0, 3)
    assert torch.equal(a, samples(0, 3))
    assert not torch.equal(a, samples(0, 4))
    assert not torch.equal(a, samples(1, 3))
    plain = dl.ImageDataset(train_x, train_y, mean=0.5, std=0.5)
    assert not torch.equal(a, torch.stack([plain[i][0] for i in range(len(plain))]))


def test_cifar_augmentation_independent_of_workers(cifar_dir):
    data, _ = cifar_dir
    runs = []
    for workers in (0, 2):
        train, _ = dl.get_dataloaders_CIFAR100(data, batch_size=8, seed=5, num_workers=workers,
                                               download=False)
        if workers:
            # Workers forked from a pytest-xdist process (which runs threads) can deadlock
            # on a lock held at fork time; spawned workers start clean.
            train.multiprocessing_context = "spawn"
        dl.set_epoch(train, 2)
        runs.append(batches(train))
    assert same_batches(runs[0], runs[1])


def test_random_resized_crop_params():
    rng = np.random.default_rng(0)
    for _ in range(500):
        top, left, h, w = dl.random_resized_crop_params(rng, 32, 32)
        assert 0 < h <= 32 and 0 < w <= 32 and top + h <= 32 and left + w <= 32
        assert 0.05 * 1024 * 0.8 <= h * w <= 1024
    # No draw can succeed: torchvision's central-crop fallback, clamped to the ratio range.
    assert dl.random_resized_crop_params(rng, 32, 32, scale=(2.0, 3.0)) == (0, 0, 32, 32)
    assert dl.random_resized_crop_params(rng, 10, 40, scale=(5.0, 6.0)) == (0, 13, 10, 13)
    assert dl.random_resized_crop_params(rng, 40, 10, scale=(5.0, 6.0)) == (13, 0, 13, 10)


# --------------------------------------------------------------------------- determinism


def test_loader_order_is_a_function_of_seed_and_epoch(mnist_dir):
    def run(seed, epoch):
        train, _ = dl.get_dataloaders_MNIST(mnist_dir, batch_size=16, seed=seed, download=False)
        dl.set_epoch(train, epoch)
        return batches(train)

    first = run(0, 0)
    assert same_batches(first, run(0, 0))
    assert not same_batches(first, run(0, 1))
    assert not same_batches(first, run(1, 0))
    # Resuming at epoch 3 equals running epochs 0..3 in one go.
    train, _ = dl.get_dataloaders_MNIST(mnist_dir, batch_size=16, seed=0, download=False)
    for epoch in range(4):
        dl.set_epoch(train, epoch)
        last = batches(train)
    assert same_batches(last, run(0, 3))
    ys = torch.cat([y for _, y in first])
    assert sorted(ys.tolist()) == sorted((np.arange(70) % 10).tolist())


def test_loader_leaves_global_rng_alone(mnist_dir):
    train, _ = dl.get_dataloaders_MNIST(mnist_dir, batch_size=16, download=False)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    batches(train)
    assert torch.equal(torch.rand(3), expected)


def test_distributed_samplers(mnist_dir, tmp_path):
    dist = torch.distributed
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build")
    dist.init_process_group("gloo", init_method=(tmp_path / "store").as_uri(), rank=0,
                            world_size=1)
    try:
        train, val = dl.get_dataloaders_MNIST(mnist_dir, batch_size=16, seed=4, download=False,
                                              distributed=True)
        assert isinstance(train.sampler, torch.utils.data.distributed.DistributedSampler)
        assert train.sampler.shuffle and not val.sampler.shuffle
        dl.set_epoch(train, 1)
        one = batches(train)
        dl.set_epoch(train, 2)
        assert not same_batches(one, batches(train))
        dl.set_epoch(train, 1)
        assert same_batches(one, batches(train))
    finally:
        dist.destroy_process_group()


# --------------------------------------------------------------------------- real data


@pytest.fixture
def real_mnist(shared_data) -> Path:
    """The real data folder, when it holds the MNIST test set (read only)."""
    if not (shared_data / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"{shared_data}/MNIST/raw lacks the real MNIST test set")
    return shared_data


def test_real_mnist_test_set(real_mnist):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert dl.md5sum(real_mnist / "MNIST" / "raw" / name) == dl.MNIST_MD5[name]
    images, labels = dl.load_mnist(real_mnist, "t10k", download=False)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and set(labels.tolist()) == set(range(10))
    train, val = dl.get_dataloaders_MNIST(real_mnist, batch_size=500, download=False,
                                          source="test-split")
    assert len(train.dataset) == 8000 and len(val.dataset) == 2000
    vx, vy = next(iter(val))
    assert vx.shape == (500, 1, 28, 28)
    assert torch.equal(vx[:, 0], torch.from_numpy(images[8000:8500]).float() / 255)
    assert torch.equal(vy, torch.from_numpy(labels[8000:8500]))
