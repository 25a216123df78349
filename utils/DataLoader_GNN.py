"""Data loaders for MNIST, CIFAR-100 and CWRU, without torchvision.

The image files are read (and downloaded) by :mod:`utils.images`, the loaders built by the
one loader factory :func:`utils.job_data.split_loaders`; their public names are importable
from here as well.

Every ``get_dataloaders_*`` function returns ``(train_loader, val_loader)``; both yield
``(float32 tensor, int64 label tensor)`` batches.

Layout under a data directory (default ``data``)::

    DIR/MNIST/raw/*-ubyte.gz            MNIST IDX files (gzip)
    DIR/FashionMNIST/raw/*-ubyte.gz     Fashion-MNIST IDX files (read by load_fashion_mnist)
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

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from utils.CWRU_Data_Preprocessing import (
    ARRAY_FILE_NAME,
    WINDOW,
    default_array_file,
    preprocess_cwru,
)
from utils.images import (
    CIFAR100_FOLDER,
    CIFAR100_MD5,
    CIFAR100_TARBALL,
    CIFAR100_URL,
    FASHION_MNIST_MD5,
    FASHION_MNIST_MIRRORS,
    IDX_DATASETS,
    MNIST_MD5,
    MNIST_MIRRORS,
    download_file,
    is_writable,
    load_cifar100,
    load_fashion_mnist,
    load_idx_dataset,
    load_mnist,
    md5sum,
    read_idx,
)
from utils.job_data import EpochSampler, set_epoch, split_loaders

__all__ = [
    "CIFAR100_FOLDER",
    "CIFAR100_MD5",
    "CIFAR100_TARBALL",
    "CIFAR100_URL",
    "CWRU_WINDOWS_CACHE_ENV",
    "FASHION_MNIST_MD5",
    "FASHION_MNIST_MIRRORS",
    "IDX_DATASETS",
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
    "load_fashion_mnist",
    "load_idx_dataset",
    "load_mnist",
    "md5sum",
    "random_resized_crop_params",
    "read_idx",
    "set_epoch",
]


MNIST_TEST_SPLIT_TRAIN = 8000  # source="test-split": first 8,000 t10k images train, rest val


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



def _make_loaders(train_set: Dataset, val_set: Dataset, batch_size: int, seed: int,
                  num_workers: int, pin_memory: bool,
                  distributed: bool) -> tuple[DataLoader, DataLoader]:
    train, val = split_loaders((train_set, val_set), batch_size, seed, distributed,
                               num_workers, pin_memory, graphs=False)
    return train, val


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
    if not is_writable(path.parent):
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


