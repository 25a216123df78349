"""Image readers and downloads: MNIST and Fashion-MNIST (IDX), CIFAR-10, CIFAR-100, grey.

Every reader returns uint8 images and int64 labels as numpy arrays; the loaders of
:mod:`utils.DataLoader_GNN` and the zoo's data (:mod:`neural_graphs.zoo_plan`) build on them.

Layout under a data directory (default ``data``)::

    DIR/MNIST/raw/*-ubyte.gz            MNIST IDX files (gzip)
    DIR/FashionMNIST/raw/*-ubyte.gz     Fashion-MNIST IDX files (same names, torchvision layout)
    DIR/cifar-10-python.tar.gz          CIFAR-10 python version (may be deleted after use)
    DIR/cifar-10-batches-py/            its extracted pickles
    DIR/cifar-100-python.tar.gz         CIFAR-100 python version (may be deleted after use)
    DIR/cifar-100-python/{train,test}   extracted pickles

Downloads are md5-checked against :data:`MNIST_MD5` / :data:`FASHION_MNIST_MD5` /
:data:`CIFAR10_MD5` / :data:`CIFAR100_MD5` and replace their destination only once
complete; a read-only data directory is never written to.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import tarfile
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from utils.atomic import atomic_write
from utils.checksums import file_hexdigest

__all__ = [
    "CIFAR100_MD5",
    "CIFAR100_URL",
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "FASHION_MNIST_MD5",
    "FASHION_MNIST_MIRRORS",
    "IDX_DATASETS",
    "LUMA",
    "MNIST_MD5",
    "MNIST_MIRRORS",
    "download_file",
    "grey",
    "is_writable",
    "load_cifar10",
    "load_cifar100",
    "load_fashion_mnist",
    "load_idx_dataset",
    "load_mnist",
    "md5sum",
    "read_idx",
]

MNIST_MIRRORS: tuple[str, ...] = ("https://ossci-datasets.s3.amazonaws.com/mnist/",)
MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
# Fashion-MNIST: the files and sums of torchvision's FashionMNIST.resources
FASHION_MNIST_MIRRORS: tuple[str, ...] = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
FASHION_MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
#: the IDX image sets by the name jobs record: (name in messages, folder under the data
#: directory holding ``raw/*-ubyte.gz``)
IDX_DATASETS: dict[str, tuple[str, str]] = {
    "mnist": ("MNIST", "MNIST"),
    "fashion-mnist": ("Fashion-MNIST", "FashionMNIST"),
}

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


CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"  # torchvision's CIFAR10.tgz_md5
CIFAR10_TARBALL = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 grey = 0.299 R + 0.587 G + 0.114 B

# --------------------------------------------------------------------------- downloads


def md5sum(path: str | Path) -> str:
    """Hex md5 digest of a file."""
    return file_hexdigest(path, "md5")


def is_writable(folder: Path) -> bool:
    """Whether files can be created in ``folder`` (or, while it does not exist, in its
    nearest existing ancestor), by permissions and by mode bits."""
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
    if not is_writable(dest.parent):
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


# --------------------------------------------------------------------------- MNIST, Fashion-MNIST


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


def _idx_sources(dataset: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """The md5 sums and default mirrors of ``dataset``, read when called (tests replace
    :data:`MNIST_MD5` and :data:`FASHION_MNIST_MD5` to accept stand-in files)."""
    return {"mnist": (MNIST_MD5, MNIST_MIRRORS),
            "fashion-mnist": (FASHION_MNIST_MD5, FASHION_MNIST_MIRRORS)}[dataset]


def load_idx_dataset(
    dataset: str,
    data_dir: str | Path = "data",
    split: str = "train",
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    hint: str = "",
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split (``"train"`` or ``"t10k"``) of an IDX image set of
    :data:`IDX_DATASETS` (``"mnist"``, ``"fashion-mnist"``) as uint8 images [N, 28, 28] and
    int64 labels.

    Files live in ``data_dir/FOLDER/raw`` (``MNIST``, ``FashionMNIST``: torchvision's
    layout) and are md5-checked against the set's sums (:data:`MNIST_MD5`,
    :data:`FASHION_MNIST_MD5`); absent files are downloaded from ``mirrors`` (default: the
    set's, :data:`MNIST_MIRRORS`, :data:`FASHION_MNIST_MIRRORS`) when ``download``.
    ``hint`` ends the message of a missing or damaged file.
    """
    if dataset not in IDX_DATASETS:
        raise ValueError(f"unknown IDX image set {dataset!r}; expected one of "
                         f"{', '.join(IDX_DATASETS)}")
    title, folder = IDX_DATASETS[dataset]
    if split not in ("train", "t10k"):
        raise ValueError(f"{title} split must be 'train' or 't10k', got {split!r}")
    md5s, default_mirrors = _idx_sources(dataset)
    raw_dir = Path(data_dir) / folder / "raw"
    bases = default_mirrors if mirrors is None else tuple(mirrors)
    arrays = []
    for kind in ("images-idx3", "labels-idx1"):
        name = f"{split}-{kind}-ubyte.gz"
        urls = [base.rstrip("/") + "/" + name for base in bases]
        arrays.append(read_idx(_fetch(raw_dir / name, md5s[name], urls, download, hint)))
    images, labels = arrays
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{title} {split} files in {raw_dir} disagree: images {images.shape}, "
            f"labels {labels.shape}"
        )
    return images.astype(np.uint8, copy=False), labels.astype(np.int64)


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
    return load_idx_dataset("mnist", data_dir, split, download, mirrors, hint)


def load_fashion_mnist(
    data_dir: str | Path = "data",
    split: str = "train",
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    hint: str = "",
) -> tuple[np.ndarray, np.ndarray]:
    """Load one Fashion-MNIST split (``"train"``: 60,000 images, ``"t10k"``: 10,000) as
    uint8 images [N, 28, 28], int64 labels (the ten clothing classes, 0-9).

    Files live in ``data_dir/FashionMNIST/raw`` (the MNIST file names and IDX format) and
    are md5-checked against ``FASHION_MNIST_MD5``; absent files are downloaded from
    ``mirrors`` (default ``FASHION_MNIST_MIRRORS``) when ``download``.
    """
    return load_idx_dataset("fashion-mnist", data_dir, split, download, mirrors, hint)


# --------------------------------------------------------------------------- CIFAR-100


def _extract_cifar(tarball: Path, data_dir: Path, folder: str, names: Sequence[str]) -> None:
    """Extract ``folder/name`` of the tarball for each of ``names`` (plain files only) into
    ``data_dir/folder``, each file replacing its destination only once complete."""
    target = data_dir / folder
    target.mkdir(parents=True, exist_ok=True)
    wanted = {f"{folder}/{name}" for name in names}
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=f".{folder}-extract.") as tmp:
        with tarfile.open(tarball, "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name in wanted]
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, members=members, filter="data")
            else:  # Python < 3.10.12: members were restricted to plain files above
                tar.extractall(tmp, members=members)
        for name in names:
            src = Path(tmp) / folder / name
            if not src.is_file():
                raise RuntimeError(f"{tarball} has no {folder}/{name}")
            os.replace(src, target / name)


def _extracted_cifar(data_dir: Path, folder: str, needed: Sequence[str],
                     extract: Sequence[str], tarball: str, md5: str,
                     url: str | Sequence[str], download: bool, hint: str) -> Path:
    """``data_dir/folder`` once it holds the files ``needed``: when some are absent, the
    files ``extract`` of ``data_dir/tarball`` (md5-checked, downloaded from ``url`` when
    absent and ``download``: :func:`_fetch`) are extracted there first. ``hint`` ends the
    message of a missing or damaged tarball."""
    target = data_dir / folder
    missing = [name for name in needed if not (target / name).is_file()]
    if missing:
        urls = [url] if isinstance(url, str) else list(url)
        path = _fetch(data_dir / tarball, md5, urls, download, hint)
        if not is_writable(data_dir):
            raise FileNotFoundError(f"{target}/{' and '.join(missing)} are absent and "
                                    f"{data_dir} is read-only, so {path.name} is not "
                                    f"extracted there. {hint}")
        _extract_cifar(path, data_dir, folder, extract)
    return target


def _read_cifar_pickle(path: Path, label_key: bytes = b"fine_labels",
                       classes: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 3, 32, 32]`` and labels of one pickle of the CIFAR python version
    (CIFAR-100: ``fine_labels``; CIFAR-10: ``labels``, ``classes=10``)."""
    # The pickles come from the official tarballs (md5-checked when this module extracts
    # them, or placed by the user), so unpickling them is trusted.
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="bytes")
    data = np.asarray(entry[b"data"], dtype=np.uint8)
    labels = np.asarray(entry[label_key], dtype=np.int64)
    name = f"CIFAR-{classes}"
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.shape[0]:
        raise ValueError(f"{path}: unexpected {name} arrays {data.shape}, {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"{path}: {label_key.decode().replace('_', ' ')} outside "
                         f"0-{classes - 1}")
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
    hint = (f"Alternatively place the extracted {CIFAR100_FOLDER}/train and "
            f"{CIFAR100_FOLDER}/test in {data_dir}/.")
    folder = _extracted_cifar(data_dir, CIFAR100_FOLDER, ("train", "test"),
                              ("meta", "test", "train"), CIFAR100_TARBALL, CIFAR100_MD5,
                              CIFAR100_URL if url is None else url, download, hint)
    train_x, train_y = _read_cifar_pickle(folder / "train")
    test_x, test_y = _read_cifar_pickle(folder / "test")
    return train_x, train_y, test_x, test_y


# --------------------------------------------------------------------------- CIFAR-10


def load_cifar10(
    data_dir: str | Path = "data",
    download: bool = False,
    url: str | Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load CIFAR-10 as ``(train_x, train_y, test_x, test_y)``; images uint8 [N, 3, 32, 32]
    (50,000 and 10,000), labels 0-9.

    Uses ``data_dir/cifar-10-batches-py/{data_batch_1..5,test_batch}`` when present,
    otherwise extracts ``data_dir/cifar-10-python.tar.gz``, md5-checked against
    :data:`CIFAR10_MD5` (downloaded from ``url``, default :data:`CIFAR10_URL`, when absent
    and ``download``).
    """
    data_dir = Path(data_dir)
    hint = (f"Alternatively place the extracted {CIFAR10_FOLDER}/ "
            f"({', '.join(CIFAR10_BATCHES)}) in {data_dir}/.")
    folder = _extracted_cifar(data_dir, CIFAR10_FOLDER, CIFAR10_BATCHES, CIFAR10_BATCHES,
                              CIFAR10_TARBALL, CIFAR10_MD5, CIFAR10_URL if url is None else url,
                              download, hint)
    xs, ys = zip(*(_read_cifar_pickle(folder / name, b"labels", 10)
                   for name in CIFAR10_BATCHES))
    return (np.concatenate(xs[:5]), np.concatenate(ys[:5]), xs[5], ys[5])


def grey(images: np.ndarray) -> np.ndarray:
    """uint8 RGB ``[N, 3, H, W]`` -> uint8 grey ``[N, H, W]`` with the BT.601 luma weights."""
    luma = np.asarray(LUMA).reshape(1, 3, 1, 1)
    return np.clip(np.rint((images.astype(np.float64) * luma).sum(1)), 0, 255).astype(np.uint8)


