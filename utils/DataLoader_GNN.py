"""Data loaders for MNIST, CIFAR-100 and CWRU, without torchvision.

Every ``get_dataloaders_*`` function returns ``(train_loader, val_loader)``; both yield
``(float32 tensor, int64 label tensor)`` batches.

Layout under a data directory (default ``data``)::

    DIR/MNIST/raw/*-ubyte.gz            MNIST IDX files (gzip)
    DIR/cifar-100-python.tar.gz         CIFAR-100 python version (may be deleted after use)
    DIR/cifar-100-python/{train,test}   extracted pickles
    DIR/CWRU/raw/*.mat                  the ten CWRU recordings
    DIR/CWRU/CWRU_48k_DE_windows.npz    windows (see utils.CWRU_Data_Preprocessing)

A read-only data directory (e.g. ``../shared/data``) keeps its CWRU windows elsewhere: in
the folder named by the environment variable ``CWRU_WINDOWS_CACHE`` when it is set (the
test suite points it into its temporary folder), else in this repository's ``data/CWRU/``.

Reproducibility: the order of a training epoch is a pure function of ``(seed, epoch)`` and
the CIFAR-100 augmentation of a sample a pure function of ``(seed, epoch, sample index)``,
whatever ``num_workers`` is. Call :func:`set_epoch` before every epoch; a run resumed from
an epoch-end checkpoint then sees exactly the batches it would have seen uninterrupted.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import random
import tarfile
import tempfile
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from utils.atomic import atomic_write
from utils.checksums import file_hexdigest
from utils.CWRU_Data_Preprocessing import (
    ARRAY_FILE_NAME,
    WINDOW,
    default_array_file,
    preprocess_cwru,
)

__all__ = [
    "CIFAR100_MD5",
    "CIFAR100_URL",
    "CWRU_WINDOWS_CACHE_ENV",
    "MNIST_MD5",
    "MNIST_MIRRORS",
    "EpochSampler",
    "ImageDataset",
    "SignalDataset",
    "cwru_split_indices",
    "download_file",
    "get_dataloaders_CIFAR100",
    "get_dataloaders_CWRU",
    "get_dataloaders_MNIST",
    "load_cifar100",
    "load_cwru_arrays",
    "load_mnist",
    "md5sum",
    "random_resized_crop_params",
    "read_idx",
    "set_epoch",
]

MNIST_MIRRORS: tuple[str, ...] = ("https://ossci-datasets.s3.amazonaws.com/mnist/",)
MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_TEST_SPLIT_TRAIN = 8000  # source="test-split": first 8,000 t10k images train, rest val

CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
CIFAR100_TARBALL = "cifar-100-python.tar.gz"
CIFAR100_FOLDER = "cifar-100-python"

# IDX type codes -> big-endian numpy dtypes.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


# --------------------------------------------------------------------------- downloads


def md5sum(path: str | Path) -> str:
    """Hex md5 digest of a file."""
    return file_hexdigest(path, "md5")


def _writable(folder: Path) -> bool:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    # Mode bits too: root passes os.access even on folders meant to be read-only.
    return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)


def download_file(
    url: str,
    dest: str | Path,
    md5: str | None = None,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` (http(s):// or file://) to ``dest`` with a progress bar.

    The data goes to a temporary file beside ``dest`` that replaces ``dest`` only once it
    is complete and its md5 matches; on any failure the temporary file is deleted and
    ``dest`` is left as it was. A checksum mismatch raises RuntimeError.
    """
    dest = Path(dest)
    digest = hashlib.md5()
    with atomic_write(dest) as f, urllib.request.urlopen(url, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                  disable=not progress) as bar:
            while chunk := response.read(1 << 20):
                f.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
        if md5 is not None and digest.hexdigest() != md5.lower():
            raise RuntimeError(
                f"checksum mismatch for {url}: md5 {digest.hexdigest()}, expected {md5}; "
                "the download was deleted"
            )
    return dest


def _fetch(dest: Path, md5: str, urls: Sequence[str], download: bool, hint: str) -> Path:
    """Return ``dest`` after checking its md5, downloading it from ``urls`` if needed.

    Raises FileNotFoundError when the file is absent and cannot be downloaded, RuntimeError
    when only a file with the wrong checksum can be had. ``hint`` ends the message.
    """
    place = f"Place {dest.name} (md5 {md5}) in {dest.parent}/."
    corrupt = None
    if dest.is_file():
        got = md5sum(dest)
        if got == md5:
            return dest
        corrupt = f"{dest} exists but its md5 is {got}, expected {md5}."
        if not download:
            raise RuntimeError(f"{corrupt} Replace it with a good copy. {place} {hint}".strip())
    elif not download:
        raise FileNotFoundError(f"{dest} is missing and download=False. {place} {hint}".strip())
    if not _writable(dest.parent):
        # Root passes os.access on read-only folders: without this a download would create
        # (and on failure delete) a temporary file in, e.g., the shared data folder.
        state = corrupt or f"{dest} is missing."
        raise (RuntimeError if corrupt else FileNotFoundError)(
            f"{state} {dest.parent} is read-only, so nothing is downloaded into it. "
            f"{place} Or pass a writable data directory. {hint}".strip())

    errors, mismatch = [], False
    for url in urls:
        try:
            return download_file(url, dest, md5)
        except RuntimeError as err:
            mismatch = True
            errors.append(f"{url}: {err}")
        except (OSError, ValueError) as err:  # URLError and HTTPError are OSErrors
            errors.append(f"{url}: {err}")
    tried = "; ".join(errors) if errors else "no download URL given"
    state = corrupt or f"{dest} is missing."
    msg = f"{state} Download failed ({tried}). {place} {hint}"
    if mismatch or corrupt:
        raise RuntimeError(msg.strip())
    raise FileNotFoundError(msg.strip())


# --------------------------------------------------------------------------- MNIST


def read_idx(path: str | Path) -> np.ndarray:
    """Parse a gzip-compressed IDX file into a native-endian numpy array."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4]!r})")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: IDX header truncated")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: IDX payload has {len(raw) - header} bytes, header says {expected}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def load_mnist(
    data_dir: str | Path = "data",
    split: str = "train",
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    hint: str = "",
) -> tuple[np.ndarray, np.ndarray]:
    """Load one MNIST split (``"train"`` or ``"t10k"``) as uint8 images [N, 28, 28], int64 labels.

    Files live in ``data_dir/MNIST/raw`` and are md5-checked against ``MNIST_MD5``; absent
    files are downloaded from ``mirrors`` (default ``MNIST_MIRRORS``) when ``download``.
    """
    if split not in ("train", "t10k"):
        raise ValueError(f"MNIST split must be 'train' or 't10k', got {split!r}")
    raw_dir = Path(data_dir) / "MNIST" / "raw"
    bases = MNIST_MIRRORS if mirrors is None else tuple(mirrors)
    arrays = []
    for kind in ("images-idx3", "labels-idx1"):
        name = f"{split}-{kind}-ubyte.gz"
        urls = [base.rstrip("/") + "/" + name for base in bases]
        arrays.append(read_idx(_fetch(raw_dir / name, MNIST_MD5[name], urls, download, hint)))
    images, labels = arrays
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"MNIST {split} files in {raw_dir} disagree: images {images.shape}, "
            f"labels {labels.shape}"
        )
    return images.astype(np.uint8, copy=False), labels.astype(np.int64)


# --------------------------------------------------------------------------- CIFAR-100


def _extract_cifar100(tarball: Path, data_dir: Path) -> None:
    """Extract train/test/meta of the tarball into data_dir/cifar-100-python, file by file."""
    target = data_dir / CIFAR100_FOLDER
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".cifar-100-extract.") as tmp:
        with tarfile.open(tarball, "r:gz") as tar:
            members = [
                m for m in tar.getmembers()
                if m.isfile() and m.name in {f"{CIFAR100_FOLDER}/{n}" for n in
                                             ("train", "test", "meta")}
            ]
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, members=members, filter="data")
            else:  # Python < 3.10.12: members were restricted to three plain files above
                tar.extractall(tmp, members=members)
        for name in ("meta", "test", "train"):
            src = Path(tmp) / CIFAR100_FOLDER / name
            if not src.is_file():
                raise RuntimeError(f"{tarball} has no {CIFAR100_FOLDER}/{name}")
            os.replace(src, target / name)


def _read_cifar_pickle(path: Path) -> tuple[np.ndarray, np.ndarray]:
    # The pickles come from the md5-checked tarball, so unpickling them is trusted.
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="bytes")
    data = np.asarray(entry[b"data"], dtype=np.uint8)
    labels = np.asarray(entry[b"fine_labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.shape[0]:
        raise ValueError(f"{path}: unexpected CIFAR-100 arrays {data.shape}, {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 99):
        raise ValueError(f"{path}: fine labels outside 0-99")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar100(
    data_dir: str | Path = "data",
    download: bool = True,
    url: str | Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load CIFAR-100 as ``(train_x, train_y, test_x, test_y)``; images uint8 [N, 3, 32, 32].

    Uses ``data_dir/cifar-100-python/{train,test}`` when present, otherwise extracts
    ``data_dir/cifar-100-python.tar.gz`` (md5-checked, downloaded from ``url``, default
    ``CIFAR100_URL``, when absent and ``download``).
    """
    data_dir = Path(data_dir)
    folder = data_dir / CIFAR100_FOLDER
    if not ((folder / "train").is_file() and (folder / "test").is_file()):
        urls = [CIFAR100_URL] if url is None else [url] if isinstance(url, str) else list(url)
        hint = (
            f"Alternatively place the extracted {CIFAR100_FOLDER}/train and "
            f"{CIFAR100_FOLDER}/test in {data_dir}/."
        )
        tarball = _fetch(data_dir / CIFAR100_TARBALL, CIFAR100_MD5, urls, download, hint)
        if not _writable(data_dir):
            raise FileNotFoundError(f"{folder}/train and test are absent and {data_dir} is "
                                    f"read-only, so {tarball.name} is not extracted there. "
                                    f"{hint}")
        _extract_cifar100(tarball, data_dir)
    train_x, train_y = _read_cifar_pickle(folder / "train")
    test_x, test_y = _read_cifar_pickle(folder / "test")
    return train_x, train_y, test_x, test_y


def random_resized_crop_params(
    rng: np.random.Generator,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.05, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """Crop ``(top, left, h, w)`` drawn as torchvision's RandomResizedCrop.get_params does.

    Ten tries at a random area and log-uniform aspect ratio, then a central crop clamped to
    the ratio range.
    """
    area = height * width
    log_ratio = (np.log(ratio[0]), np.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = float(np.exp(rng.uniform(log_ratio[0], log_ratio[1])))
        w = int(round(np.sqrt(target_area * aspect)))
        h = int(round(np.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


# --------------------------------------------------------------------------- datasets


class ImageDataset(Dataset):
    """uint8 images [N, C, H, W] served as float32 in [0, 1] (ToTensor), optionally normalized.

    With ``augment=True`` each sample gets RandomResizedCrop (bilinear, back to H x W) and a
    horizontal flip with probability 0.5, drawn from ``np.random.default_rng([seed, epoch,
    index])`` so the result depends on nothing else.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        augment: bool = False,
        seed: int = 0,
        scale: tuple[float, float] = (0.05, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ) -> None:
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(
                f"images must be uint8 [N, C, H, W], got {images.dtype} {images.shape}"
            )
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        images = np.ascontiguousarray(images)
        # torch.from_numpy warns on read-only buffers (e.g. np.frombuffer views).
        self.images = images if images.flags.writeable else images.copy()
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        channels = images.shape[1]
        self.mean = None if mean is None else _channel_tensor(mean, channels)
        self.std = None if std is None else _channel_tensor(std, channels)
        self.augment = augment
        self.seed = seed
        self.scale = scale
        self.ratio = ratio
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation of this epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.images)

    def _augmented(self, index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        img = self.images[index]
        _, height, width = img.shape
        top, left, h, w = random_resized_crop_params(rng, height, width, self.scale, self.ratio)
        crop = img[:, top:top + h, left:left + w]
        if (h, w) != (height, width):
            hwc = np.ascontiguousarray(crop.transpose(1, 2, 0))
            resized = cv2.resize(hwc, (width, height), interpolation=cv2.INTER_LINEAR)
            crop = resized.reshape(height, width, -1).transpose(2, 0, 1)
        if rng.random() < 0.5:
            crop = crop[:, :, ::-1]
        return np.ascontiguousarray(crop)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = int(index)
        img = self._augmented(index) if self.augment else self.images[index]
        x = torch.from_numpy(img).to(torch.float32).div_(255)
        if self.mean is not None:
            x.sub_(self.mean).div_(self.std)
        return x, self.labels[index]


def _channel_tensor(value: float | Sequence[float], channels: int) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float32).reshape(-1)
    if t.numel() == 1:
        t = t.expand(channels)
    if t.numel() != channels:
        raise ValueError(f"expected {channels} per-channel values, got {t.numel()}")
    return t.reshape(channels, 1, 1).clone()


class SignalDataset(Dataset):
    """Rows ``x[indices]`` of a float32 [N, L] array served as [1, L] tensors."""

    def __init__(self, x: np.ndarray, y: np.ndarray, indices: np.ndarray | None = None) -> None:
        self.x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        self.y = torch.as_tensor(np.asarray(y, dtype=np.int64))
        n = len(self.x)
        self.indices = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Kept for a uniform interface; the samples do not depend on the epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = int(self.indices[index])
        return self.x[row].unsqueeze(0), self.y[row]


# --------------------------------------------------------------------------- sampling


class EpochSampler(Sampler[int]):
    """Single-process sampler whose order is a pure function of ``(seed, epoch)``."""

    def __init__(self, num_samples: int, seed: int = 0, shuffle: bool = True) -> None:
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the order of this epoch."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.num_samples))
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        return iter(order.tolist())

    def __len__(self) -> int:
        return self.num_samples


class _WorkerInit:
    """Seeds Python, NumPy and torch in each worker from (seed, epoch, rank, worker id)."""

    def __init__(self, seed: int, rank: int) -> None:
        self.seed = seed
        self.rank = rank

    def __call__(self, worker_id: int) -> None:
        info = torch.utils.data.get_worker_info()
        epoch = getattr(info.dataset, "epoch", 0) if info is not None else 0
        state = np.random.SeedSequence([self.seed, epoch, self.rank, worker_id]).generate_state(2)
        random.seed(int(state[0]))
        np.random.seed(int(state[0]))
        torch.manual_seed(int(state[0]) << 32 | int(state[1]))
        # OpenCV's own thread pool gains nothing on 32x32 images and can stall forked workers.
        cv2.setNumThreads(1)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Prepare ``loader`` for ``epoch``: sets the epoch on its sampler and its dataset.

    Call it before iterating over each epoch (train and val alike). Workers are created
    anew at every epoch (``persistent_workers`` is off), so they see the new epoch.
    """
    for obj in (loader.sampler, loader.dataset):
        if hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)


def _make_loaders(
    train_set: Dataset,
    val_set: Dataset,
    batch_size: int,
    seed: int,
    num_workers: int,
    pin_memory: bool,
    distributed: bool,
) -> tuple[DataLoader, DataLoader]:
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    rank = 0
    if distributed:
        # Validation is padded by DistributedSampler to a multiple of the world size.
        train_sampler: Sampler = DistributedSampler(train_set, shuffle=True, seed=seed)
        val_sampler: Sampler = DistributedSampler(val_set, shuffle=False, seed=seed)
        rank = train_sampler.rank
    else:
        train_sampler = EpochSampler(len(train_set), seed=seed, shuffle=True)
        val_sampler = SequentialSampler(val_set)
    loaders = []
    for dataset, sampler in ((train_set, train_sampler), (val_set, val_sampler)):
        loaders.append(
            DataLoader(
                dataset,
                batch_size=batch_size,
                sampler=sampler,
                num_workers=num_workers,
                pin_memory=pin_memory and torch.cuda.is_available(),
                worker_init_fn=_WorkerInit(seed, rank),
                # Own generator: the loader's worker base seed must not consume the global
                # torch RNG, which the model's initialisation and dropout use.
                generator=torch.Generator().manual_seed(seed),
            )
        )
    return loaders[0], loaders[1]


# --------------------------------------------------------------------------- public loaders


def get_dataloaders_MNIST(
    data_dir: str | Path = "data",
    batch_size: int = 128,
    seed: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
    distributed: bool = False,
    download: bool = True,
    source: str = "train",
    mirrors: Sequence[str] | None = None,
) -> tuple[DataLoader, DataLoader]:
    """MNIST loaders; images float32 [1, 28, 28] in [0, 1] (ToTensor), labels int64.

    ``source="train"``: train on the 60,000 training images, validate on the 10,000 t10k
    images (downloaded from ``mirrors`` when absent and ``download``).
    ``source="test-split"``: use only the t10k files, training on the first 8,000 images and
    validating on the last 2,000. This is the option for machines that hold only the test
    set, such as ``../shared/data`` (``--mnist-source test-split`` in the scripts).
    """
    if source == "train":
        hint = (
            "The MNIST training images are missing: train-images-idx3-ubyte.gz and "
            f"train-labels-idx1-ubyte.gz belong in {Path(data_dir) / 'MNIST' / 'raw'}/. "
            "If only the test set is available (e.g. ../shared/data), use "
            "source='test-split' (flag --mnist-source test-split), which trains on the first "
            f"{MNIST_TEST_SPLIT_TRAIN} t10k images and validates on the rest."
        )
        train_x, train_y = load_mnist(data_dir, "train", download, mirrors, hint)
        val_x, val_y = load_mnist(data_dir, "t10k", download, mirrors)
    elif source == "test-split":
        x, y = load_mnist(data_dir, "t10k", download, mirrors)
        train_x, train_y = x[:MNIST_TEST_SPLIT_TRAIN], y[:MNIST_TEST_SPLIT_TRAIN]
        val_x, val_y = x[MNIST_TEST_SPLIT_TRAIN:], y[MNIST_TEST_SPLIT_TRAIN:]
    else:
        raise ValueError(f"source must be 'train' or 'test-split', got {source!r}")
    train_set = ImageDataset(train_x[:, None], train_y)
    val_set = ImageDataset(val_x[:, None], val_y)
    return _make_loaders(train_set, val_set, batch_size, seed, num_workers, pin_memory,
                         distributed)


def get_dataloaders_CIFAR100(
    data_dir: str | Path = "data",
    batch_size: int = 128,
    seed: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
    distributed: bool = False,
    download: bool = True,
    url: str | Sequence[str] | None = None,
) -> tuple[DataLoader, DataLoader]:
    """CIFAR-100 loaders; images float32 [3, 32, 32] normalized with mean 0.5, std 0.5.

    Train: RandomResizedCrop(32, scale=(0.05, 1), ratio=(3/4, 4/3)), horizontal flip p=0.5,
    ToTensor, normalize; the augmentation of a sample depends only on (seed, epoch, index).
    Val (the test set): ToTensor, normalize (resizing 32 x 32 images to 32 is a no-op).
    The tarball is downloaded from ``url`` (default ``CIFAR100_URL``) when absent.
    """
    train_x, train_y, test_x, test_y = load_cifar100(data_dir, download, url)
    train_set = ImageDataset(train_x, train_y, mean=0.5, std=0.5, augment=True, seed=seed)
    val_set = ImageDataset(test_x, test_y, mean=0.5, std=0.5)
    return _make_loaders(train_set, val_set, batch_size, seed, num_workers, pin_memory,
                         distributed)


def cwru_split_indices(
    recording: np.ndarray,
    start: np.ndarray,
    split: str = "random",
    val_fraction: float = 0.2,
    seed: int = 0,
    window: int = WINDOW,
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and val window indices.

    ``"random"``: a seeded random split of all windows, ``int(N * (1 - val_fraction))`` for
    training (windows overlap, so neighbours of a val window sit in train: it leaks).
    ``"time"``: within each recording the first ``1 - val_fraction`` of the windowed span
    gives train windows and the rest val windows; windows crossing the boundary are dropped,
    so no train and val window share a sample.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    recording = np.asarray(recording)
    start = np.asarray(start)
    if split == "random":
        n = len(recording)
        order = np.random.default_rng(seed).permutation(n)
        n_train = int(n * (1.0 - val_fraction))
        return np.sort(order[:n_train]), np.sort(order[n_train:])
    if split == "time":
        train, val = [], []
        for rec in np.unique(recording):
            idx = np.flatnonzero(recording == rec)
            s = start[idx]
            lo, hi = int(s.min()), int(s.max()) + window
            boundary = lo + int(np.floor((1.0 - val_fraction) * (hi - lo)))
            train.append(idx[s + window <= boundary])
            val.append(idx[s >= boundary])
        return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
    raise ValueError(f"split must be 'random' or 'time', got {split!r}")


CWRU_WINDOWS_CACHE_ENV = "CWRU_WINDOWS_CACHE"


def _fallback_array_file(data_dir: Path) -> Path:
    """Where the windows of a read-only ``data_dir`` go: ``$CWRU_WINDOWS_CACHE`` if set,
    else this repository's ``data/CWRU``; one file per data directory."""
    tag = hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:8]
    cache = os.environ.get(CWRU_WINDOWS_CACHE_ENV)
    folder = Path(cache) if cache else Path(__file__).resolve().parents[1] / "data" / "CWRU"
    return folder / f"{Path(ARRAY_FILE_NAME).stem}-{tag}.npz"


def _resolve_array_file(data_dir: Path, array_file: str | Path | None) -> Path:
    if array_file is not None:
        path = Path(array_file)
        if not path.is_file():
            preprocess_cwru(data_dir, path)
        return path
    path = default_array_file(data_dir)
    if path.is_file():
        return path
    if not _writable(path.parent):
        # A read-only data folder (e.g. ../shared/data) keeps its windows in this repo.
        path = _fallback_array_file(data_dir)
        if path.is_file():
            return path
    return preprocess_cwru(data_dir, path)


def load_cwru_arrays(
    data_dir: str | Path = "data", array_file: str | Path | None = None
) -> dict[str, np.ndarray]:
    """Load the CWRU window file, running the preprocessing first when it is missing.

    ``array_file`` defaults to ``data_dir/CWRU/CWRU_48k_DE_windows.npz``; when that folder is
    read-only the file goes to ``$CWRU_WINDOWS_CACHE`` if set, else to this repository's
    ``data/CWRU/``.
    """
    path = _resolve_array_file(Path(data_dir), array_file)
    with np.load(path) as f:
        missing = {"x", "y", "recording", "start"} - set(f.files)
        if missing:
            raise ValueError(f"{path} lacks {sorted(missing)}: delete it to rebuild it")
        arrays = {k: f[k] for k in ("x", "y", "recording", "start")}
    n = len(arrays["y"])
    if arrays["x"].shape != (n, WINDOW) or any(len(arrays[k]) != n for k in arrays):
        raise ValueError(f"{path} has inconsistent arrays: delete it to rebuild it")
    return arrays


def get_dataloaders_CWRU(
    data_dir: str | Path = "data",
    batch_size: int = 128,
    seed: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
    distributed: bool = False,
    split: str = "random",
    val_fraction: float = 0.2,
    array_file: str | Path | None = None,
) -> tuple[DataLoader, DataLoader]:
    """CWRU loaders; samples float32 [1, 2048], labels int64 0-9.

    ``split="random"`` is the original seeded 80/20 split over all windows (leaky: windows
    overlap); ``split="time"`` splits each recording in time (see :func:`cwru_split_indices`).
    The window file is built from ``data_dir/CWRU/raw`` when missing.
    """
    arrays = load_cwru_arrays(data_dir, array_file)
    train_idx, val_idx = cwru_split_indices(
        arrays["recording"], arrays["start"], split, val_fraction, seed
    )
    train_set = SignalDataset(arrays["x"], arrays["y"], train_idx)
    val_set = SignalDataset(arrays["x"], arrays["y"], val_idx)  # shares train_set's memory
    return _make_loaders(train_set, val_set, batch_size, seed, num_workers, pin_memory,
                         distributed)

