"""The plan of a model zoo: its images, its configuration, and which networks train together.

:func:`load_data` gives the images a zoo trains and measures on (:class:`ZooData`);
:class:`ZooConfig` is everything that decides a zoo's contents; :func:`plan_zoo` draws
every network's hyper-parameters (and, for the ``wild`` family, its architecture; the
``vit`` family only a seed) and
puts them into groups that train as one stacked network; :func:`assign_groups` splits the
groups over ``torchrun`` ranks by estimated cost.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from neural_graphs.zoo_cnn import ACTIVATIONS
from neural_graphs.zoo_vit import (
    VIT_EPOCHS,
    VIT_SKELETON,
    VIT_SPACE,
    is_vit,
    vit_hparams,
    vit_macs,
    vit_skeleton,
)
from utils.images import grey, load_cifar10, load_cifar100, load_mnist

__all__ = [
    "DATASETS",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_EPOCHS",
    "DEFAULT_GROUP_SIZE",
    "FAMILIES",
    "FORMAT_VERSION",
    "HPARAM_SPACE",
    "SMALL_SPACE",
    "WILD_HPARAM_SPACE",
    "WILD_SPACE",
    "ZooConfig",
    "ZooData",
    "assign_groups",
    "hparam_space",
    "load_data",
    "plan_zoo",
]

FORMAT_VERSION = 1
FAMILIES = ("small", "wild", "vit")
DATASETS = ("mnist", "cifar10-gs", "cifar100-gs")


# The small family's sampled hyper-parameters (issue 19). Ranges log-uniform, dropout
# uniform; lr and init_scale per optimizer. Two pilots of 192 networks each (MNIST halves,
# wider ranges) counted the networks at chance (within 2 points of 10%) after 12 epochs:
# SGD (lr 3e-3..0.2) by init_scale: < 0.2 11/11, 0.2-0.5 21/34, 0.5-1 4/30, >= 1 0/58 (the
# signal fades through three layers and global pooling, and SGD's step does not rescale it
# as Adam's does); SGD (init >= 1) by lr: < 3e-3 2/9, 3e-3..0.2 0/58, > 0.2 1/3; Adam by
# lr: < 3e-5 15/17, 3e-5..1e-4 5/12, 1e-4..3e-2 5/144 (1/110 with init_scale >= 0.3),
# > 3e-2 6/25. A zoo of 256 networks from these ranges (default epochs): 1.2% at chance
# at epoch 12, p10 / median / p90 of test accuracy 34 / 64 / 87%.
SMALL_SPACE: dict[str, Any] = {
    "optimizer": ["adam", "sgd"],
    "lr": {"adam": [1e-4, 3e-2], "sgd": [3e-3, 2e-1]},
    "weight_decay": [1e-8, 1e-2],      # L2 added to the gradient
    "init_scale": {"adam": [0.3, 4.0], "sgd": [1.0, 4.0]},  # multiplier on torch's init
    "dropout": [0.0, 0.5],             # before the final linear layer
    "train_fraction": [0.1, 0.25, 0.5, 1.0],
    "activation": ["relu", "tanh"],
}
# The wild family's sampled hyper-parameters (2026-12-05), measured on a zoo of 1,000
# networks from a first version of them (as below, but SGD's multiplier 0.2..4 and sigmoid
# in every skeleton; 2,500 MNIST training images, epochs 1 / 2 / 4 / 8), near chance =
# within 2 points of it at epoch 8. Without BatchNorm: sigmoid 27/39 (Adam) and 23/29
# (SGD), SGD with a multiplier below 1 70/111 (1 or more: 18/101), Adam 15/195 with the
# other activations; with BatchNorm 12/552 in all. A pilot of 256 networks from
# HPARAM_SPACE before that: multipliers below 0.2 (12/45), SGD below lr 3e-3 (8/25) and
# train fraction 0.1 (22/96: 8 steps an epoch) collapse. So sigmoid only with BatchNorm
# (the Wild Park's six activations otherwise), SGD from a multiplier of 1 and its largest
# rate as the small family's.
WILD_HPARAM_SPACE: dict[str, Any] = {
    "optimizer": ["adam", "sgd"],
    "lr": {"adam": [1e-4, 3e-2], "sgd": [3e-3, 2e-1]},  # log-uniform, per optimizer
    "weight_decay": [1e-8, 1e-2],      # log-uniform, L2 added to the gradient
    "init_scale": {"adam": [0.2, 4.0], "sgd": [1.0, 4.0]},  # multiplier on torch's init
    "dropout": [0.0, 0.5],             # uniform, before the final linear layer
    "train_fraction": [0.25, 0.5, 1.0],
    "activation": {"batch_norm": list(ACTIVATIONS),  # by the skeleton's BatchNorm
                   "no_batch_norm": [a for a in ACTIVATIONS if a != "sigmoid"]},
}
# The hyper-parameters of wild zoos made before 2026-12-05 (and, before issue 19, of small
# ones): ranges in the spirit of Unterthiner et al. 2020, widened at the bad end.
HPARAM_SPACE: dict[str, Any] = {
    "optimizer": ["adam", "sgd"],
    "lr": {"adam": [1e-4, 3e-2], "sgd": [1e-3, 3e-1]},  # log-uniform, per optimizer
    "weight_decay": [1e-8, 1e-2],      # log-uniform, L2 added to the gradient
    "init_scale": [0.1, 4.0],          # log-uniform multiplier on torch's default init
    "dropout": [0.0, 0.5],             # uniform, before the final linear layer
    "train_fraction": [0.1, 0.25, 0.5, 1.0],
    "activation": {"small": ["relu", "tanh"], "wild": list(ACTIVATIONS)},
}
# Checkpoint epochs when none are given (0: the untrained network). small: the Small CNN
# Zoo's 0, 1, 2, 3, 20, 40, 60, 80, 86 of 86 epochs with the first four kept and the rest
# scaled to 12 epochs (20 -> 3, 40 -> 6, 60 -> 8, 80 -> 11, 86 -> 12).
# vit: the official ViT zoo's stop epochs.
DEFAULT_EPOCHS: dict[str, list[int]] = {"small": [0, 1, 2, 3, 6, 8, 11, 12],
                                        "wild": [1, 2, 4, 8], "vit": list(VIT_EPOCHS)}
#: Images per step and networks per group when none are given (vit: the official batch;
#: groups of 8 split 112 networks evenly over two processes).
DEFAULT_BATCH_SIZE: dict[str, int] = {"small": 32, "wild": 32, "vit": 128}
DEFAULT_GROUP_SIZE: dict[str, int] = {"small": 16, "wild": 16, "vit": 8}
WILD_SPACE: dict[str, Any] = {
    "depth": [2, 5],
    "channels": [4, 32],
    "kernel_size": [3, 5, 7],
    "residual": {"none": 0.5, "identity": 0.25, "projection": 0.25},
    "batch_norm": 0.5,                 # probability, per skeleton
    "stride2_when_small": 0.5,         # probability of stride 2 once the input is <= 7 wide
}



# --------------------------------------------------------------------------- data


@dataclass
class ZooData:
    """Images the zoo trains on (``train_*``) and measures on (``test_*``), normalised.

    ``*_x``: float32 ``[M, C, H, W]`` after ``(x / 255 - mean) / std`` with the mean and
    standard deviation of the training images; ``*_y``: int64 ``[M]``.
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    mean: float
    std: float
    digest: str

    @classmethod
    def from_uint8(cls, name: str, train_x: np.ndarray, train_y: np.ndarray,
                   test_x: np.ndarray, test_y: np.ndarray, num_classes: int) -> ZooData:
        """Normalise uint8 images ``[M, C, H, W]`` (or ``[M, H, W]``) and int labels."""
        arrays = []
        for x in (train_x, test_x):
            if x.dtype != np.uint8 or x.ndim not in (3, 4):
                raise ValueError(f"images must be uint8 [M, H, W] or [M, C, H, W], got "
                                 f"{x.dtype} {x.shape}")
            arrays.append(x[:, None] if x.ndim == 3 else x)
        if len(arrays[0]) != len(train_y) or len(arrays[1]) != len(test_y):
            raise ValueError(f"images and labels disagree: {len(arrays[0])} / {len(train_y)} "
                             f"train, {len(arrays[1])} / {len(test_y)} test")
        digest = hashlib.sha256()
        for a in (arrays[0], train_y, arrays[1], test_y):
            digest.update(np.ascontiguousarray(a).tobytes())
        train = arrays[0].astype(np.float64) / 255.0
        mean, std = float(train.mean()), float(train.std())
        if std == 0:
            raise ValueError("the training images are constant (standard deviation 0)")
        to_tensor = lambda x: torch.from_numpy(  # noqa: E731
            ((x.astype(np.float64) / 255.0 - mean) / std).astype(np.float32))
        return cls(name, to_tensor(arrays[0]), torch.as_tensor(train_y, dtype=torch.long),
                   to_tensor(arrays[1]), torch.as_tensor(test_y, dtype=torch.long),
                   int(num_classes), mean, std, digest.hexdigest())

    def to(self, device: torch.device | str) -> ZooData:
        return ZooData(self.name, self.train_x.to(device), self.train_y.to(device),
                       self.test_x.to(device), self.test_y.to(device), self.num_classes,
                       self.mean, self.std, self.digest)


def load_data(dataset: str, data_dir: str | Path, train_images: int | None = None,
              test_images: int | None = None, download: bool = False) -> ZooData:
    """The zoo's images: ``mnist`` trains on the first half of the MNIST test set (5,000
    images) and measures on the second half; ``cifar10-gs`` / ``cifar100-gs`` train on the
    CIFAR training set and measure on its test set, in grey. ``train_images`` /
    ``test_images`` keep the first so many of each (default all)."""
    if dataset == "mnist":
        images, labels = load_mnist(data_dir, "t10k", download=download,
                                    hint="The zoo uses the MNIST test set (t10k) only.")
        half = len(images) // 2
        pools = (images[:half], labels[:half], images[half:], labels[half:])
        classes = 10
    elif dataset == "cifar10-gs":
        tx, ty, vx, vy = load_cifar10(data_dir)
        pools, classes = (grey(tx), ty, grey(vx), vy), 10
    elif dataset == "cifar100-gs":
        tx, ty, vx, vy = load_cifar100(data_dir, download=download)
        pools, classes = (grey(tx), ty, grey(vx), vy), 100
    else:
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {dataset!r}")
    cut = []
    for want, (x, y), what in ((train_images, pools[:2], "train"),
                               (test_images, pools[2:], "test")):
        if want is not None and not 1 <= want <= len(x):
            raise ValueError(f"--{what}-images must be between 1 and {len(x)} for {dataset}, "
                             f"got {want}")
        n = len(x) if want is None else want
        cut += [x[:n], y[:n]]
    return ZooData.from_uint8(dataset, *cut, num_classes=classes)


# --------------------------------------------------------------------------- the plan


@dataclass
class ZooConfig:
    """Everything that decides a zoo's contents (paths and devices excluded)."""

    family: str = "small"
    num: int = 1000
    seed: int = 0
    dataset: str = "mnist"
    train_images: int | None = None
    test_images: int | None = None
    epochs: list[int] | None = None  # None: DEFAULT_EPOCHS of the family
    batch_size: int | None = None  # None: DEFAULT_BATCH_SIZE of the family
    group_size: int | None = None  # None: DEFAULT_GROUP_SIZE of the family

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {list(FAMILIES)}, got {self.family!r}")
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {list(DATASETS)}, got {self.dataset!r}")
        if self.batch_size is None:
            self.batch_size = DEFAULT_BATCH_SIZE[self.family]
        if self.group_size is None:
            self.group_size = DEFAULT_GROUP_SIZE[self.family]
        for name in ("num", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.group_size < 1:
            raise ValueError(f"group_size must be at least 1, got {self.group_size}")
        if self.seed < 0:
            raise ValueError(f"seed must be non-negative, got {self.seed}")
        if self.epochs is None:
            self.epochs = list(DEFAULT_EPOCHS[self.family])
        epochs = sorted(set(int(e) for e in self.epochs))
        if not epochs or epochs[0] < 0:
            raise ValueError(f"epochs must be non-negative checkpoint epochs, got {self.epochs}")
        self.epochs = epochs

    def to_dict(self, data: ZooData) -> dict[str, Any]:
        # Only a ViT zoo records its skeleton: the configurations of other zoos stay as
        # they were written (a resumed zoo must find its own configuration unchanged).
        extra = {"vit_skeleton": VIT_SKELETON} if self.family == "vit" else {}
        return {**extra, "format": FORMAT_VERSION, "family": self.family, "num": self.num,
                "seed": self.seed, "dataset": self.dataset,
                "train_images": len(data.train_x), "test_images": len(data.test_x),
                "image_shape": list(data.train_x.shape[1:]), "num_classes": data.num_classes,
                "input_mean": data.mean, "input_std": data.std, "data_sha256": data.digest,
                "epochs": self.epochs, "batch_size": self.batch_size,
                "group_size": self.group_size, "hparam_space": hparam_space(self.family),
                "wild_space": WILD_SPACE if self.family == "wild" else None}


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def hparam_space(family: str) -> dict[str, Any]:
    """The hyper-parameter ranges the ``family`` samples from (recorded in the config;
    ``vit``: the one recipe every network shares)."""
    spaces = {"small": SMALL_SPACE, "wild": WILD_HPARAM_SPACE, "vit": VIT_SPACE}
    if family not in spaces:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    return spaces[family]


def _sample_hparams(rng: np.random.Generator, family: str,
                    activations: Sequence[str]) -> dict[str, Any]:
    space = hparam_space(family)
    seed = int(rng.integers(2**31 - 1))
    optimizer = str(rng.choice(space["optimizer"]))
    return {
        "seed": seed,
        "optimizer": optimizer,
        "lr": _log_uniform(rng, *space["lr"][optimizer]),
        "weight_decay": _log_uniform(rng, *space["weight_decay"]),
        "init_scale": _log_uniform(rng, *space["init_scale"][optimizer]),
        "dropout": float(rng.uniform(*space["dropout"])),
        "activation": str(rng.choice(list(activations))),
    }


def _small_skeleton(in_channels: int, num_classes: int) -> dict[str, Any]:
    layer = {"out_channels": 16, "kernel_size": 3, "stride": 2, "batch_norm": False,
             "residual": "none"}
    return {"in_channels": in_channels, "num_classes": num_classes,
            "layers": [dict(layer) for _ in range(3)]}


def _wild_skeleton(rng: np.random.Generator, in_channels: int, num_classes: int,
                   size: int) -> dict[str, Any]:
    space = WILD_SPACE
    depth = int(rng.integers(space["depth"][0], space["depth"][1] + 1))
    batch_norm = bool(rng.random() < space["batch_norm"])
    kinds, probs = list(space["residual"]), list(space["residual"].values())
    layers, width = [], in_channels
    for _ in range(depth):
        residual = str(rng.choice(kinds, p=probs))
        out = int(rng.integers(space["channels"][0], space["channels"][1] + 1))
        k = int(rng.choice(space["kernel_size"]))
        if size > 7:
            stride = 2
        else:
            stride = 2 if size > 1 and rng.random() < space["stride2_when_small"] else 1
        if residual == "identity":
            if stride == 1 and width >= space["channels"][0]:
                out = width
            else:
                residual = "projection"
        layers.append({"out_channels": out, "kernel_size": k, "stride": stride,
                       "batch_norm": batch_norm, "residual": residual})
        width, size = out, (size - 1) // stride + 1
    return {"in_channels": in_channels, "num_classes": num_classes, "layers": layers}


def plan_zoo(config: ZooConfig, in_channels: int, num_classes: int,
             image_size: int) -> list[dict[str, Any]]:
    """The zoo's groups: ``{"group", "train_fraction", "networks": [{"network", "arch",
    "hparams"}]}``, deterministic in ``config``. Networks are numbered 0..num-1; within a
    group they are ordered by activation (contiguous runs for :class:`StackedCNNs`)."""
    rng = np.random.default_rng(config.seed)
    fractions = hparam_space(config.family)["train_fraction"]
    nets: list[dict[str, Any]] = []
    batches: list[list[int]] = []
    if config.family == "small":
        skeleton = _small_skeleton(in_channels, num_classes)
        buckets: dict[tuple[float, str], list[int]] = {}
        for i in range(config.num):
            hp = _sample_hparams(rng, "small", SMALL_SPACE["activation"])
            hp["train_fraction"] = float(rng.choice(fractions))
            nets.append({"network": i, "hparams": hp, "skeleton": skeleton})
            buckets.setdefault((hp["train_fraction"], hp["activation"]), []).append(i)
        for _, members in sorted(buckets.items()):
            if members:
                parts = math.ceil(len(members) / config.group_size)
                batches += [list(part) for part in np.array_split(members, parts)]
    elif config.family == "vit":
        skeleton = vit_skeleton(in_channels, num_classes, image_size)
        for i in range(config.num):
            hp = vit_hparams(int(rng.integers(2**31 - 1)))
            nets.append({"network": i, "hparams": hp, "skeleton": skeleton})
        batches = [list(range(start, min(config.num, start + config.group_size)))
                   for start in range(0, config.num, config.group_size)]
    else:
        while len(nets) < config.num:
            skeleton = _wild_skeleton(rng, in_channels, num_classes, image_size)
            fraction = float(rng.choice(fractions))
            activations = WILD_HPARAM_SPACE["activation"][
                "batch_norm" if skeleton["layers"][0]["batch_norm"] else "no_batch_norm"]
            group = []
            for _ in range(min(config.group_size, config.num - len(nets))):
                hp = _sample_hparams(rng, "wild", activations)
                hp["train_fraction"] = fraction
                group.append(len(nets))
                nets.append({"network": len(nets), "hparams": hp, "skeleton": skeleton})
            batches.append(group)
    groups = []
    for g, members in enumerate(batches):
        members = sorted((int(i) for i in members),
                         key=lambda i: (nets[i]["hparams"]["activation"], i))
        entries = []
        for i in members:
            hp = nets[i]["hparams"]
            arch = {**nets[i]["skeleton"], "activation": hp["activation"],
                    "dropout": hp["dropout"]}
            entries.append({"network": i, "arch": arch, "hparams": hp})
        groups.append({"group": g, "train_fraction": nets[members[0]]["hparams"]["train_fraction"],
                       "networks": entries})
    return groups


def _macs(arch: dict[str, Any], size: int) -> int:
    """Multiply-accumulates of one forward pass on a ``size x size`` image."""
    if is_vit(arch):
        return vit_macs(arch)
    total, width = 0, arch["in_channels"]
    for layer in arch["layers"]:
        out, k, s = layer["out_channels"], layer["kernel_size"], layer["stride"]
        size = (size - 1) // s + 1
        total += size * size * out * width * k * k
        if layer["residual"] == "projection":
            total += size * size * out * width
        width = out
    return total + width * arch["num_classes"]


def _group_cost(group: dict[str, Any], config: ZooConfig, train_images: int, size: int) -> float:
    macs = _macs(group["networks"][0]["arch"], size)
    seen = group["train_fraction"] * train_images * max(config.epochs)
    return len(group["networks"]) * macs * (3 * seen + train_images * len(config.epochs))


def assign_groups(costs: Sequence[float], world_size: int) -> list[list[int]]:
    """Split groups over ranks: largest first onto the least loaded rank (deterministic)."""
    load = [0.0] * world_size
    out: list[list[int]] = [[] for _ in range(world_size)]
    for g in sorted(range(len(costs)), key=lambda g: (-costs[g], g)):
        r = min(range(world_size), key=lambda r: (load[r], r))
        out[r].append(g)
        load[r] += costs[g]
    return [sorted(part) for part in out]


