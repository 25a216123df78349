"""Model zoos of small CNNs trained on real images, many networks at once.

Two families (``python -m CNN_Zoo_Generate --family small|wild``):

- ``small``, the Small CNN Zoo of Unterthiner et al. (2020): three 3x3 convolutions of 16
  channels, stride 2, global average pooling, a linear layer to the classes;
- ``wild``, after the CNN Wild Park: 2-5 convolutions of 4-32 channels, kernels 3/5/7,
  optional residual connections (identity, or a 1x1 projection when the width or the
  resolution changes) and BatchNorm, any of six activations.

Every network draws its own hyper-parameters (optimizer Adam or SGD with momentum 0.9,
log-uniform learning rate and weight decay, a multiplier on torch's default
initialisation, dropout before the linear layer, activation, the fraction of the training
images it sees) and is recorded at several checkpoints along training, each checkpoint a
zoo member with its own accuracy on the images it trained on and on images it never saw.

Vectorisation. A *group* is a set of networks that share an architecture skeleton
(everything but activation and dropout) and a train fraction; a group trains as one
stacked network. Its parameters are the members' ``state_dict`` tensors with a leading
network dimension (``{"0.weight": [N, 16, 1, 3, 3], ...}``) and its activations carry the
networks side by side along the channel dimension, so a convolution is one grouped
convolution (``groups=N``), BatchNorm is one ``batch_norm`` over ``N * C`` channels (exactly
per network), and the linear layer one batched product. Each network sees its own
mini-batches of its own training subset; its loss is its own mean cross-entropy and the
losses are summed over networks, so every network gets exactly its own gradient, and the
optimizer (Adam and SGD side by side, selected per network) runs on the stacked tensors.
The stacked forward walks the very module tree :func:`build_cnn` builds, so a saved member
rebuilt from its ``arch`` and ``state_dict`` is the network that was trained (tests: equal
to 1e-10 in float64). The small family puts networks of one train fraction and one
activation into groups of at most ``group_size``; the wild family samples a skeleton and a
train fraction, then ``group_size`` hyper-parameter draws for it (networks of different
skeletons cannot share one grouped convolution).

Accuracy. Predictions are screened in float32 and every prediction whose top-two logits
lie within ``1e-4 * (1 + max |logit|)`` of each other (or whose logits are not finite) is
recomputed by the network's plain module in float64 (float32 logits of zoo networks were
measured within ``2e-6 * (1 + max |logit|)`` of float64 ones), so the recorded accuracies
are those of the saved float32 weights evaluated in float64:
``member.model(torch.float64)`` reproduces them exactly. A prediction with a non-finite
logit counts as wrong. A network whose parameters stop being
finite is marked diverged at that epoch and contributes no later members.

Files (``out/``): ``config.json`` (the generation configuration; a run with another
configuration refuses the folder), ``shard_XXXXX.pt`` (one group: every member's arch,
hyper-parameters, epoch, accuracies and ``state_dict``) written atomically with its
``shard_XXXXX.json`` (the same without weights, plus the shard's sha256), and
``manifest.json`` (configuration, every member's hyper-parameters and accuracies, every
shard's sha256; ``complete`` once every shard is done). A killed run keeps its finished
shards and continues with the others; ``torchrun`` ranks split the groups by estimated cost.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from utils.atomic import atomic_write, write_text_atomic
from utils.checksums import file_hexdigest

__all__ = [
    "ACTIVATIONS",
    "DATASETS",
    "FAMILIES",
    "ConfigMismatchError",
    "ResidualBlock",
    "StackedCNNs",
    "ZooConfig",
    "ZooData",
    "ZooMember",
    "build_cnn",
    "generate_zoo",
    "load_cifar10",
    "load_data",
    "load_zoo",
    "plan_zoo",
    "predictions",
    "train_group",
]

FORMAT_VERSION = 1
FAMILIES = ("small", "wild")
DATASETS = ("mnist", "cifar10-gs", "cifar100-gs")
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}
_ACTIVATION_TYPES = tuple(factory().__class__ for factory in ACTIVATIONS.values())
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 grey = 0.299 R + 0.587 G + 0.114 B
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
TIE_TOLERANCE = 1e-4  # float32 logits of zoo networks are within 2e-6 of float64
SGD_MOMENTUM = 0.9
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8

# The sampled hyper-parameters (ranges in the spirit of Unterthiner et al. 2020, widened at
# the bad end so the accuracies spread: tiny train fractions, learning rates too small for
# SGD and too large for Adam, initialisations far from the default).
HPARAM_SPACE: dict[str, Any] = {
    "optimizer": ["adam", "sgd"],
    "lr": {"adam": [1e-4, 3e-2], "sgd": [1e-3, 3e-1]},  # log-uniform, per optimizer
    "weight_decay": [1e-8, 1e-2],      # log-uniform, L2 added to the gradient
    "init_scale": [0.1, 4.0],          # log-uniform multiplier on torch's default init
    "dropout": [0.0, 0.5],             # uniform, before the final linear layer
    "train_fraction": [0.1, 0.25, 0.5, 1.0],
    "activation": {"small": ["relu", "tanh"], "wild": list(ACTIVATIONS)},
}
WILD_SPACE: dict[str, Any] = {
    "depth": [2, 5],
    "channels": [4, 32],
    "kernel_size": [3, 5, 7],
    "residual": {"none": 0.5, "identity": 0.25, "projection": 0.25},
    "batch_norm": 0.5,                 # probability, per skeleton
    "stride2_when_small": 0.5,         # probability of stride 2 once the input is <= 7 wide
}


class ConfigMismatchError(ValueError):
    """``--out`` holds a zoo generated with another configuration."""


# --------------------------------------------------------------------------- networks


class ResidualBlock(nn.Module):
    r"""A residual unit :math:`y = \sigma(\mathrm{body}(x) + \mathrm{shortcut}(x))`.

    Args:
        body (nn.Module): the convolution (and BatchNorm) of the unit.
        shortcut (nn.Module): ``nn.Sequential()`` (identity) or a 1x1 convolution (and
            BatchNorm) that matches width and resolution.
        activation (nn.Module): :math:`\sigma`.

    Shapes:
        - input: :math:`(B, C_{in}, H, W)`
        - output: :math:`(B, C_{out}, H', W')`
    """

    def __init__(self, body: nn.Module, shortcut: nn.Module, activation: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut
        self.act = activation

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.shortcut(x))


def _check_arch(arch: dict[str, Any]) -> None:
    required = ("in_channels", "num_classes", "layers", "activation", "dropout")
    missing = [key for key in required if key not in arch]
    if missing:
        raise ValueError(f"arch misses {missing}; expected keys {list(required)}, got "
                         f"{sorted(arch)}")
    if arch["activation"] not in ACTIVATIONS:
        raise ValueError(f"arch activation must be one of {list(ACTIVATIONS)}, got "
                         f"{arch['activation']!r}")
    if not 0.0 <= float(arch["dropout"]) < 1.0:
        raise ValueError(f"arch dropout must be in [0, 1), got {arch['dropout']}")
    if not arch["layers"]:
        raise ValueError("arch needs at least one convolution layer, got layers=[]")
    width = int(arch["in_channels"])
    for i, layer in enumerate(arch["layers"]):
        keys = ("out_channels", "kernel_size", "stride", "batch_norm", "residual")
        if any(key not in layer for key in keys):
            raise ValueError(f"arch layer {i} needs keys {list(keys)}, got {sorted(layer)}")
        if layer["kernel_size"] % 2 != 1:
            raise ValueError(f"arch layer {i}: kernel_size must be odd, got "
                             f"{layer['kernel_size']}")
        if layer["residual"] not in ("none", "identity", "projection"):
            raise ValueError(f"arch layer {i}: residual must be 'none', 'identity' or "
                             f"'projection', got {layer['residual']!r}")
        if layer["residual"] == "identity" and (layer["out_channels"] != width
                                                or layer["stride"] != 1):
            raise ValueError(
                f"arch layer {i}: an identity shortcut needs out_channels == in_channels "
                f"({width}) and stride 1, got out_channels={layer['out_channels']}, "
                f"stride={layer['stride']}")
        width = layer["out_channels"]


def build_cnn(arch: dict[str, Any]) -> nn.Sequential:
    """The plain torch network that ``arch`` describes (the form every zoo member is saved in).

    ``arch``: ``in_channels``, ``num_classes``, ``activation`` (a key of
    :data:`ACTIVATIONS`), ``dropout`` and ``layers``, a list of
    ``{"out_channels", "kernel_size", "stride", "batch_norm", "residual"}`` with
    ``residual`` one of ``"none"``, ``"identity"``, ``"projection"``. Layer ``i`` without a
    residual is ``Conv2d, [BatchNorm2d], activation`` (flat in the Sequential); with one it
    is a :class:`ResidualBlock`. Convolutions pad ``kernel_size // 2`` and have biases.
    The head is ``AdaptiveAvgPool2d(1), Flatten, Dropout, Linear``. Only ``nn.Conv2d``,
    ``nn.BatchNorm2d``, activation modules, ``nn.Dropout``, ``nn.AdaptiveAvgPool2d``,
    ``nn.Flatten``, ``nn.Linear``, ``nn.Sequential`` and :class:`ResidualBlock` appear, and
    ``torch.fx.symbolic_trace`` traces it.
    """
    _check_arch(arch)
    act = ACTIVATIONS[arch["activation"]]
    modules: list[nn.Module] = []
    width = int(arch["in_channels"])
    for layer in arch["layers"]:
        out, k, stride = int(layer["out_channels"]), int(layer["kernel_size"]), int(layer["stride"])
        body: list[nn.Module] = [nn.Conv2d(width, out, k, stride=stride, padding=k // 2)]
        if layer["batch_norm"]:
            body.append(nn.BatchNorm2d(out))
        if layer["residual"] == "none":
            modules += [*body, act()]
        else:
            shortcut = nn.Sequential()
            if layer["residual"] == "projection":
                shortcut.append(nn.Conv2d(width, out, 1, stride=stride))
                if layer["batch_norm"]:
                    shortcut.append(nn.BatchNorm2d(out))
            modules.append(ResidualBlock(nn.Sequential(*body), shortcut, act()))
        width = out
    modules += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(float(arch["dropout"])),
                nn.Linear(width, int(arch["num_classes"]))]
    return nn.Sequential(*modules)


def predictions(logits: Tensor) -> Tensor:
    """Class predictions ``argmax`` over the last dimension, ``-1`` where a logit is not finite."""
    pred = logits.argmax(-1)
    return torch.where(logits.isfinite().all(-1), pred, torch.full_like(pred, -1))


# --------------------------------------------------------------------------- stacked networks


class StackedCNNs:
    r"""``N`` networks of one skeleton run as one: stacked parameters, grouped convolutions.

    ``params`` / ``buffers`` map the members' ``state_dict`` names to tensors with a leading
    network dimension. Inside, a feature map holds the networks side by side along the
    channel dimension, :math:`(B, N \cdot C, H, W)`; a convolution is
    ``conv2d(x, W.reshape(N C_{out}, C_{in}, k, k), groups=N)``, BatchNorm is per channel
    and therefore per network, the linear layer is
    :math:`y_{bno} = \sum_c h_{bnc} W_{noc} + b_{no}`. Activations and dropout rates may
    differ between networks (networks of one activation should be contiguous).

    Args:
        archs (list[dict]): one arch per network, equal up to ``activation`` and ``dropout``.
        params (dict[str, Tensor]): stacked parameters ``[N, *shape]``.
        buffers (dict[str, Tensor]): stacked BatchNorm running statistics ``[N, C]``.

    Shapes:
        - input: :math:`(B, C_{in}, H, W)` shared by all networks, or
          :math:`(B, N \cdot C_{in}, H, W)` one input per network
        - output: :math:`(B, N, \text{classes})`
    """

    def __init__(self, archs: Sequence[dict[str, Any]], params: dict[str, Tensor],
                 buffers: dict[str, Tensor]) -> None:
        skeleton = _skeleton(archs[0])
        for arch in archs[1:]:
            if _skeleton(arch) != skeleton:
                raise ValueError("StackedCNNs needs networks of one skeleton (arch equal up "
                                 f"to activation and dropout); got {arch} and {archs[0]}")
        self.archs = [dict(arch) for arch in archs]
        self.n = len(archs)
        self.template = build_cnn({**skeleton, "activation": "relu", "dropout": 0.0})
        self.params = params
        self.buffers = buffers
        self.steps = 0
        names = [a["activation"] for a in archs]
        self.act_runs: list[tuple[int, int, nn.Module]] = []
        start = 0
        for i in range(1, self.n + 1):
            if i == self.n or names[i] != names[start]:
                self.act_runs.append((start, i, ACTIVATIONS[names[start]]()))
                start = i
        self.dropout = torch.tensor([float(a["dropout"]) for a in archs])
        self.act_kinds = sorted(set(names))
        expected = {k for k, v in self.template.state_dict().items()
                    if not k.endswith("num_batches_tracked")}
        if set(params) | set(buffers) != expected:
            raise ValueError(f"stacked tensors {sorted(set(params) | set(buffers))} do not "
                             f"match the state_dict of the skeleton {sorted(expected)}")

    @classmethod
    def initialise(cls, archs: Sequence[dict[str, Any]], seeds: Sequence[int],
                   init_scales: Sequence[float], device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32) -> StackedCNNs:
        """Torch's default initialisation (uniform :math:`\\pm 1/\\sqrt{\\text{fan\\_in}}` for
        convolution and linear weights and biases; BatchNorm weight 1, bias 0), drawn per
        network from ``torch.Generator().manual_seed(seed)`` and multiplied by its scale."""
        template = build_cnn({**_skeleton(archs[0]), "activation": "relu", "dropout": 0.0})
        per_net: dict[str, list[Tensor]] = {}
        for seed, scale in zip(seeds, init_scales):
            gen = torch.Generator().manual_seed(int(seed))
            for module_name, module in template.named_modules():
                prefix = f"{module_name}." if module_name else ""
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    fan_in = module.weight[0].numel()
                    bound = 1.0 / math.sqrt(fan_in)
                    for name in ("weight", "bias"):
                        shape = getattr(module, name).shape
                        value = (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1)
                        per_net.setdefault(prefix + name, []).append(value * bound * scale)
                elif isinstance(module, nn.BatchNorm2d):
                    c = module.num_features
                    for name, value in (("weight", torch.ones(c)), ("bias", torch.zeros(c)),
                                        ("running_mean", torch.zeros(c)),
                                        ("running_var", torch.ones(c))):
                        per_net.setdefault(prefix + name, []).append(value.double())
        buffer_names = {k for k, _ in template.named_buffers()}
        params, buffers = {}, {}
        for name, values in per_net.items():
            stacked = torch.stack(values).to(device=device, dtype=dtype)
            if name in buffer_names:
                buffers[name] = stacked
            else:
                params[name] = stacked.requires_grad_(True)
        return cls(archs, params, buffers)

    def to(self, dtype: torch.dtype) -> StackedCNNs:
        """A detached copy in another dtype (for float64 evaluation)."""
        other = StackedCNNs(self.archs, {k: v.detach().to(dtype) for k, v in self.params.items()},
                            {k: v.detach().to(dtype) for k, v in self.buffers.items()})
        other.steps = self.steps
        return other

    def state_dict(self, index: int) -> dict[str, Tensor]:
        """Network ``index``'s ``state_dict`` (CPU copies, the keys of :func:`build_cnn`)."""
        out = {}
        for key in self.template.state_dict():
            if key.endswith("num_batches_tracked"):
                out[key] = torch.tensor(self.steps, dtype=torch.long)
            else:
                source = self.params.get(key, self.buffers.get(key))
                out[key] = source[index].detach().cpu().clone()
        return out

    def module(self, index: int, dtype: torch.dtype = torch.float32) -> nn.Sequential:
        """Network ``index`` as a plain module (:func:`build_cnn`, eval mode, on CPU)."""
        net = build_cnn(self.archs[index]).to(dtype)
        net.load_state_dict(self.state_dict(index))
        return net.eval()

    def finite(self) -> Tensor:
        """``[N]`` bool: every parameter and buffer of the network is finite."""
        tensors = (*self.params.values(), *self.buffers.values())
        ok = torch.ones(self.n, dtype=torch.bool, device=tensors[0].device)
        for tensor in tensors:
            ok &= tensor.detach().flatten(1).isfinite().all(1)
        return ok

    def __call__(self, x: Tensor, training: bool = False,
                 generator: torch.Generator | None = None) -> Tensor:
        c = self.archs[0]["in_channels"]
        if x.dim() != 4 or x.shape[1] not in (c, self.n * c):
            raise ValueError(f"StackedCNNs of {self.n} networks with {c} input channels needs "
                             f"input [B, {c}, H, W] (shared) or [B, {self.n * c}, H, W] (one "
                             f"per network), got {list(x.shape)}")
        if x.shape[1] == c and self.n > 1:
            x = x.repeat(1, self.n, 1, 1)
        # channels_last: mkldnn's grouped convolutions are several times faster in it
        x = x.contiguous(memory_format=torch.channels_last)
        h = _Walk(self, training, generator).run(self.template, "", x)
        return h.view(x.shape[0], self.n, -1)


class _Walk:
    """One stacked forward pass: mirrors the module tree of :func:`build_cnn`."""

    def __init__(self, stack: StackedCNNs, training: bool,
                 generator: torch.Generator | None) -> None:
        self.stack = stack
        self.training = training
        self.generator = generator

    def run(self, module: nn.Module, prefix: str, h: Tensor) -> Tensor:
        s = self.stack
        if isinstance(module, nn.Sequential):
            for name, child in module.named_children():
                h = self.run(child, f"{prefix}{name}.", h)
            return h
        if isinstance(module, ResidualBlock):
            body = self.run(module.body, prefix + "body.", h)
            return self._activation(body + self.run(module.shortcut, prefix + "shortcut.", h))
        if isinstance(module, nn.Conv2d):
            w = s.params[prefix + "weight"]
            return F.conv2d(h, w.reshape(-1, *w.shape[2:]), s.params[prefix + "bias"].reshape(-1),
                            module.stride, module.padding, groups=s.n)
        if isinstance(module, nn.BatchNorm2d):
            return F.batch_norm(
                h, s.buffers[prefix + "running_mean"].view(-1),
                s.buffers[prefix + "running_var"].view(-1),
                s.params[prefix + "weight"].reshape(-1), s.params[prefix + "bias"].reshape(-1),
                self.training, module.momentum, module.eps)
        if isinstance(module, _ACTIVATION_TYPES):
            return self._activation(h)
        if isinstance(module, nn.AdaptiveAvgPool2d):
            return h.mean((2, 3), keepdim=True)
        if isinstance(module, nn.Flatten):
            return h.flatten(1)
        if isinstance(module, nn.Dropout):
            if not self.training or not bool((s.dropout > 0).any()):
                return h
            p = s.dropout.to(device=h.device, dtype=h.dtype)
            hv = h.view(h.shape[0], s.n, -1)
            keep = torch.rand(hv.shape, generator=self.generator, device=h.device,
                              dtype=h.dtype) >= p[None, :, None]
            return (hv * keep / (1 - p)[None, :, None]).view_as(h)
        if isinstance(module, nn.Linear):
            hv = h.view(h.shape[0], s.n, -1)
            out = torch.einsum("bnc,noc->bno", hv, s.params[prefix + "weight"])
            return (out + s.params[prefix + "bias"]).reshape(h.shape[0], -1)
        raise TypeError(f"StackedCNNs cannot run {type(module).__name__} (at {prefix!r})")

    def _activation(self, h: Tensor) -> Tensor:
        runs = self.stack.act_runs
        if len(runs) == 1:
            return runs[0][2](h)
        c = h.shape[1] // self.stack.n
        return torch.cat([act(h[:, start * c:stop * c]) for start, stop, act in runs], 1)


def _skeleton(arch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in arch.items() if k not in ("activation", "dropout")}


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


def load_cifar10(data_dir: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CIFAR-10 from an extracted ``data_dir/cifar-10-batches-py`` as
    ``(train_x, train_y, test_x, test_y)``, images uint8 ``[N, 3, 32, 32]``."""
    folder = Path(data_dir) / CIFAR10_FOLDER
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 needs {folder}/ with {', '.join(names)}; missing {', '.join(missing)}. "
            f"Download {CIFAR10_URL} and extract it into {Path(data_dir)}/.")
    xs, ys = [], []
    for name in names:
        # The pickles of the official CIFAR-10 tarball, placed there by the user.
        with open(folder / name, "rb") as f:
            entry = pickle.load(f, encoding="bytes")
        data = np.asarray(entry[b"data"], dtype=np.uint8)
        labels = np.asarray(entry[b"labels"], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
            raise ValueError(f"{folder / name}: unexpected CIFAR-10 arrays {data.shape}, "
                             f"{labels.shape}")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels)
    return (np.concatenate(xs[:5]), np.concatenate(ys[:5]), xs[5], ys[5])


def _grey(images: np.ndarray) -> np.ndarray:
    """uint8 RGB ``[N, 3, H, W]`` -> uint8 grey ``[N, H, W]`` with the BT.601 luma weights."""
    luma = np.asarray(LUMA).reshape(1, 3, 1, 1)
    return np.clip(np.rint((images.astype(np.float64) * luma).sum(1)), 0, 255).astype(np.uint8)


def load_data(dataset: str, data_dir: str | Path, train_images: int | None = None,
              test_images: int | None = None, download: bool = False) -> ZooData:
    """The zoo's images: ``mnist`` trains on the first half of the MNIST test set (5,000
    images) and measures on the second half; ``cifar10-gs`` / ``cifar100-gs`` train on the
    CIFAR training set and measure on its test set, in grey. ``train_images`` /
    ``test_images`` keep the first so many of each (default all)."""
    from utils.DataLoader_GNN import load_cifar100, load_mnist

    if dataset == "mnist":
        images, labels = load_mnist(data_dir, "t10k", download=download,
                                    hint="The zoo uses the MNIST test set (t10k) only.")
        half = len(images) // 2
        pools = (images[:half], labels[:half], images[half:], labels[half:])
        classes = 10
    elif dataset == "cifar10-gs":
        tx, ty, vx, vy = load_cifar10(data_dir)
        pools, classes = (_grey(tx), ty, _grey(vx), vy), 10
    elif dataset == "cifar100-gs":
        tx, ty, vx, vy = load_cifar100(data_dir, download=download)
        pools, classes = (_grey(tx), ty, _grey(vx), vy), 100
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
    epochs: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    batch_size: int = 32
    group_size: int | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {list(FAMILIES)}, got {self.family!r}")
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {list(DATASETS)}, got {self.dataset!r}")
        for name in ("num", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.group_size is None:
            self.group_size = 16
        if self.group_size < 1:
            raise ValueError(f"group_size must be at least 1, got {self.group_size}")
        if self.seed < 0:
            raise ValueError(f"seed must be non-negative, got {self.seed}")
        epochs = sorted(set(int(e) for e in self.epochs))
        if not epochs or epochs[0] < 0:
            raise ValueError(f"epochs must be non-negative checkpoint epochs, got {self.epochs}")
        self.epochs = epochs

    def to_dict(self, data: ZooData) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, "family": self.family, "num": self.num,
                "seed": self.seed, "dataset": self.dataset,
                "train_images": len(data.train_x), "test_images": len(data.test_x),
                "image_shape": list(data.train_x.shape[1:]), "num_classes": data.num_classes,
                "input_mean": data.mean, "input_std": data.std, "data_sha256": data.digest,
                "epochs": self.epochs, "batch_size": self.batch_size,
                "group_size": self.group_size, "hparam_space": HPARAM_SPACE,
                "wild_space": WILD_SPACE if self.family == "wild" else None}


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _sample_hparams(rng: np.random.Generator, family: str) -> dict[str, Any]:
    space = HPARAM_SPACE
    seed = int(rng.integers(2**31 - 1))
    optimizer = str(rng.choice(space["optimizer"]))
    return {
        "seed": seed,
        "optimizer": optimizer,
        "lr": _log_uniform(rng, *space["lr"][optimizer]),
        "weight_decay": _log_uniform(rng, *space["weight_decay"]),
        "init_scale": _log_uniform(rng, *space["init_scale"]),
        "dropout": float(rng.uniform(*space["dropout"])),
        "activation": str(rng.choice(space["activation"][family])),
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
    fractions = HPARAM_SPACE["train_fraction"]
    nets: list[dict[str, Any]] = []
    batches: list[list[int]] = []
    if config.family == "small":
        skeleton = _small_skeleton(in_channels, num_classes)
        buckets: dict[tuple[float, str], list[int]] = {}
        for i in range(config.num):
            hp = _sample_hparams(rng, "small")
            hp["train_fraction"] = float(rng.choice(fractions))
            nets.append({"network": i, "hparams": hp, "skeleton": skeleton})
            buckets.setdefault((hp["train_fraction"], hp["activation"]), []).append(i)
        for _, members in sorted(buckets.items()):
            if members:
                parts = math.ceil(len(members) / config.group_size)
                batches += [list(part) for part in np.array_split(members, parts)]
    else:
        while len(nets) < config.num:
            skeleton = _wild_skeleton(rng, in_channels, num_classes, image_size)
            fraction = float(rng.choice(fractions))
            group = []
            for _ in range(min(config.group_size, config.num - len(nets))):
                hp = _sample_hparams(rng, "wild")
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


# --------------------------------------------------------------------------- training


class _StackedOptimizer:
    """Adam and SGD with momentum over stacked parameters, chosen per network.

    With :math:`g = \\nabla + \\lambda p` (L2 added to the gradient, as ``weight_decay`` in
    ``torch.optim``), Adam: :math:`m \\leftarrow \\beta_1 m + (1-\\beta_1) g`,
    :math:`v \\leftarrow \\beta_2 v + (1-\\beta_2) g^2`,
    :math:`p \\leftarrow p - \\eta \\hat m / (\\sqrt{\\hat v} + \\epsilon)`; SGD:
    :math:`b \\leftarrow \\mu b + g`, :math:`p \\leftarrow p - \\eta b`, as ``torch.optim``
    computes them for a single network.
    """

    def __init__(self, params: dict[str, Tensor], hparams: Sequence[dict[str, Any]]) -> None:
        device = next(iter(params.values())).device
        dtype = next(iter(params.values())).dtype
        self.params = params
        self.lr = torch.tensor([h["lr"] for h in hparams], device=device, dtype=dtype)
        self.wd = torch.tensor([h["weight_decay"] for h in hparams], device=device, dtype=dtype)
        self.adam = torch.tensor([h["optimizer"] == "adam" for h in hparams], device=device)
        self.m = {k: torch.zeros_like(p) for k, p in params.items()}
        self.v = {k: torch.zeros_like(p) for k, p in params.items()}
        self.buf = {k: torch.zeros_like(p) for k, p in params.items()}
        self.t = 0

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = ADAM_BETAS
        bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t
        for k, p in self.params.items():
            shape = (-1,) + (1,) * (p.dim() - 1)
            lr, wd, adam = self.lr.view(shape), self.wd.view(shape), self.adam.view(shape)
            g = p.grad + wd * p
            m, v, buf = self.m[k], self.v[k], self.buf[k]
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            buf.mul_(SGD_MOMENTUM).add_(g)
            adam_step = (m / bc1) / ((v / bc2).sqrt() + ADAM_EPS)
            p.sub_(lr * torch.where(adam, adam_step, buf))

    @torch.no_grad()
    def reset(self, networks: Tensor) -> None:
        """Zero the parameters and state of ``networks`` (bool ``[N]``) and stop them."""
        self.lr[networks] = 0
        for k, p in self.params.items():
            for t in (p, self.m[k], self.v[k], self.buf[k]):
                t[networks] = 0


def _chunk_size(stack: StackedCNNs, image_shape: Sequence[int], budget: int = 1 << 22) -> int:
    """Images per evaluation chunk: the first feature map stays under ``budget`` elements
    (large feature maps cost more per image on CPU: allocation and cache misses)."""
    first = stack.archs[0]["layers"][0]
    size = (image_shape[-1] - 1) // first["stride"] + 1
    per_image = stack.n * max(first["out_channels"] * size * size,
                              image_shape[0] * image_shape[1] * image_shape[2])
    return max(1, budget // per_image)


def _gather(images: Tensor, index: Tensor) -> Tensor:
    """Per-network inputs: ``index [N, b]`` -> ``[b, N * C, H, W]``."""
    x = images[index]  # [N, b, C, H, W]
    return x.transpose(0, 1).reshape(index.shape[1], -1, *images.shape[2:])


@torch.no_grad()
def _predict(stack: StackedCNNs, images: Tensor, index: Tensor | None) -> Tensor:
    """Predictions ``[N, M]`` of every network: on all ``images`` (``index`` None) or on
    ``images[index[n]]`` for network ``n``. Screened in the stack's dtype; where the top two
    logits lie within ``TIE_TOLERANCE * (1 + max |logit|)`` or a logit is not finite, the
    network's plain module (:func:`build_cnn`) recomputes the prediction in float64."""
    m = len(images) if index is None else index.shape[1]
    chunk = _chunk_size(stack, images.shape[1:])
    out = torch.empty(stack.n, m, dtype=torch.long, device=images.device)
    recheck = stack.params[next(iter(stack.params))].dtype != torch.float64
    near_pairs: list[Tensor] = []
    for start in range(0, m, chunk):
        stop = min(m, start + chunk)
        if index is None:
            logits = stack(images[start:stop])
        else:
            logits = stack(_gather(images, index[:, start:stop]))
        out[:, start:stop] = predictions(logits).T
        if recheck:
            top = logits.topk(2, dim=-1).values
            scale = logits.abs().amax(-1).nan_to_num(nan=math.inf)
            near = ~((top[..., 0] - top[..., 1]) > TIE_TOLERANCE * (1 + scale))  # [b, N]
            pairs = near.T.nonzero()
            pairs[:, 1] += start
            near_pairs.append(pairs)
    if near_pairs:
        pairs = torch.cat(near_pairs)
        for n in pairs[:, 0].unique().tolist():
            positions = pairs[pairs[:, 0] == n, 1]
            image_index = positions if index is None else index[n, positions]
            model = stack.module(n, torch.float64).to(images.device)
            out[n, positions] = predictions(model(images[image_index].double()))
    return out


def _accuracy(pred: Tensor, labels: Tensor) -> list[float]:
    return (pred == labels).double().mean(1).tolist()


def train_group(group: dict[str, Any], data: ZooData, config: ZooConfig,
                on_epoch: Callable[[int], None] | None = None,
                dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """Train one group together; return its members (records and ``state_dict`` s).

    Each network draws its training subset (``round(train_fraction * M)`` of the ``M``
    training images, at least one batch's worth of one image) and its per-epoch order
    from ``numpy.random.default_rng(seed)``; an epoch is one pass over its subset in
    batches of ``config.batch_size``. At every epoch of ``config.epochs`` (0: the
    initialisation) each finite network becomes a member with its accuracy on its own
    training subset and on all measurement images. ``dtype``: of the training (the data
    are cast to it); float64 for tests.
    """
    nets = group["networks"]
    device = data.train_x.device
    hps = [n["hparams"] for n in nets]
    stack = StackedCNNs.initialise([n["arch"] for n in nets], [h["seed"] for h in hps],
                                   [h["init_scale"] for h in hps], device=device, dtype=dtype)
    train_x, test_x = data.train_x.to(dtype), data.test_x.to(dtype)
    optimizer = _StackedOptimizer(stack.params, hps)
    m_train = len(data.train_x)
    size = max(1, round(group["train_fraction"] * m_train))
    rngs = [np.random.default_rng(h["seed"]) for h in hps]
    subsets = np.stack([rng.choice(m_train, size, replace=False) for rng in rngs])
    subset_t = torch.as_tensor(subsets, device=device)
    gen = torch.Generator(device=device).manual_seed(int(hps[0]["seed"]) ^ 0x5EED)
    diverged: list[float | None] = [None] * stack.n
    alive = torch.ones(stack.n, dtype=torch.bool, device=device)
    members: list[dict[str, Any]] = []
    def checkpoint(epoch: int) -> None:
        train_acc = _accuracy(_predict(stack, train_x, subset_t), data.train_y[subset_t])
        test_acc = _accuracy(_predict(stack, test_x, None),
                             data.test_y.expand(stack.n, -1))
        for i, net in enumerate(nets):
            if diverged[i] is None:
                members.append({"network": net["network"], "epoch": epoch,
                                "train_acc": train_acc[i], "test_acc": test_acc[i],
                                "state_dict": stack.state_dict(i)})

    steps = math.ceil(size / config.batch_size)
    last = max(config.epochs)
    if 0 in config.epochs:
        checkpoint(0)
    for epoch in range(1, last + 1):
        order = np.stack([rng.permutation(size) for rng in rngs])
        order_t = torch.as_tensor(np.take_along_axis(subsets, order, 1), device=device)
        for step in range(steps):
            index = order_t[:, step * config.batch_size:(step + 1) * config.batch_size]
            x, y = _gather(train_x, index), data.train_y[index].T
            logits = stack(x, training=True, generator=gen)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                   reduction="none").view(y.shape)
            for p in stack.params.values():
                p.grad = None
            loss.masked_fill(~alive, 0).mean(0).sum().backward()
            optimizer.step()
            stack.steps += 1
            bad = alive & ~stack.finite()
            if bool(bad.any()):
                for i in bad.nonzero().flatten().tolist():
                    diverged[i] = round(epoch - 1 + (step + 1) / steps, 6)
                alive &= ~bad
                optimizer.reset(bad)
                with torch.no_grad():
                    for name, b in stack.buffers.items():
                        b[bad] = 1.0 if name.endswith("running_var") else 0.0
        if epoch in config.epochs:
            checkpoint(epoch)
        if on_epoch is not None:
            on_epoch(epoch)
    networks = [{"network": n["network"], "arch": n["arch"], "hparams": n["hparams"],
                 "diverged_epoch": diverged[i]} for i, n in enumerate(nets)]
    return {"group": group["group"], "train_fraction": group["train_fraction"],
            "networks": networks, "members": members}


# --------------------------------------------------------------------------- files


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _shard_paths(out: Path, group: int) -> tuple[Path, Path]:
    return out / f"shard_{group:05d}.pt", out / f"shard_{group:05d}.json"


def _shard_done(out: Path, group: int) -> dict[str, Any] | None:
    """The shard's metadata when it is finished and intact, else None."""
    pt, meta = _shard_paths(out, group)
    if not (pt.is_file() and meta.is_file()):
        return None
    record = json.loads(meta.read_text())
    if record.get("sha256") != file_hexdigest(pt):
        tqdm.write(f"{pt.name}: sha256 differs from {meta.name}; training the group again")
        return None
    return record


def _write_shard(out: Path, result: dict[str, Any]) -> dict[str, Any]:
    pt, meta = _shard_paths(out, result["group"])
    buffer = io.BytesIO()
    torch.save({"format": FORMAT_VERSION, **result}, buffer)
    payload = buffer.getvalue()
    with atomic_write(pt) as f:
        f.write(payload)
    record = {"file": pt.name, "sha256": _sha256(payload), "group": result["group"],
              "train_fraction": result["train_fraction"], "networks": result["networks"],
              "members": [{k: v for k, v in m.items() if k != "state_dict"}
                          for m in result["members"]]}
    write_text_atomic(meta, json.dumps(record, indent=1))
    return record


def check_config(out: Path, config_dict: dict[str, Any]) -> None:
    """Write ``out/config.json``, or check that the one there is ``config_dict``."""
    path = out / "config.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved != json.loads(json.dumps(config_dict)):
            keys = sorted(k for k in set(saved) | set(config_dict)
                          if saved.get(k) != json.loads(json.dumps(config_dict.get(k))))
            detail = "; ".join(f"{k}: saved {saved.get(k)!r}, now {config_dict.get(k)!r}"
                               for k in keys)
            raise ConfigMismatchError(
                f"{out} holds a zoo of another configuration ({detail}). Use another --out, "
                "or the same flags and data to resume.")
        return
    if out.is_dir() and any(p.name.startswith("shard_") for p in out.iterdir()):
        raise ConfigMismatchError(f"{out} holds shard files but no config.json; use an empty "
                                  "or new --out")
    write_text_atomic(path, json.dumps(config_dict, indent=1))


def _percentiles(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    q = np.percentile(np.asarray(values), [10, 50, 90])
    return {"p10": float(q[0]), "median": float(q[1]), "p90": float(q[2]),
            "p90_minus_p10": float(q[2] - q[0])}


def _write_manifest(out: Path, config_dict: dict[str, Any], groups: int) -> dict[str, Any]:
    shards = []
    for g in range(groups):
        meta = _shard_paths(out, g)[1]
        if meta.is_file():
            shards.append(json.loads(meta.read_text()))
    members = [m for s in shards for m in s["members"]]
    last = max(config_dict["epochs"])
    final = [m["test_acc"] for m in members if m["epoch"] == last]
    networks = [n for s in shards for n in s["networks"]]
    manifest = {
        "config": config_dict, "complete": len(shards) == groups, "groups": groups,
        "shards_done": len(shards), "networks": len(networks), "members": len(members),
        "diverged": sum(n["diverged_epoch"] is not None for n in networks),
        "test_acc_all_members": _percentiles([m["test_acc"] for m in members]),
        "test_acc_final_epoch": _percentiles(final),
        "shards": shards,
    }
    write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=1))
    return manifest


def _dist_place() -> tuple[int, int, int]:
    return (int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")))


def generate_zoo(config: ZooConfig, data: ZooData, out: str | Path,
                 device: torch.device | str | None = None, progress: bool | None = None,
                 log: Callable[[str], None] | None = None,
                 max_groups: int | None = None) -> dict[str, Any]:
    """Train the zoo ``config`` describes into ``out`` (resumable; torchrun ranks split it).

    Returns the manifest as written (the last process to finish writes the complete one).
    ``max_groups`` stops this process after so many newly trained groups (an interruption).
    """
    out = Path(out)
    rank, world, local_rank = _dist_place()
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    config_dict = config.to_dict(data)
    out.mkdir(parents=True, exist_ok=True)
    check_config(out, config_dict)
    c, h, w = data.train_x.shape[1:]
    if h != w:
        raise ValueError(f"zoo images must be square, got {h}x{w}")
    groups = plan_zoo(config, c, data.num_classes, h)
    costs = [_group_cost(g, config, len(data.train_x), h) for g in groups]
    mine = assign_groups(costs, world)[rank]
    todo = [g for g in mine if _shard_done(out, g) is None]
    data_dev = data.to(device)
    show = (sys.stderr.isatty() if progress is None else progress) and rank == 0
    say = log or tqdm.write
    total = sum(len(groups[g]["networks"]) for g in todo)
    say(f"rank {rank}/{world}: {len(mine) - len(todo)} of {len(mine)} groups done, "
        f"{len(todo)} to train ({total} networks) on {device}")
    start, cpu_start = time.perf_counter(), time.process_time()
    trained = 0
    with tqdm(total=total, unit="net", desc=f"zoo {config.family}", disable=not show,
              dynamic_ncols=True) as bar:
        for done_now, g in enumerate(todo):
            if max_groups is not None and done_now >= max_groups:
                break
            group = groups[g]
            t0, cpu0 = time.perf_counter(), time.process_time()

            def on_epoch(epoch: int, group: dict[str, Any] = group) -> None:
                bar.set_postfix(group=group["group"], epoch=epoch)

            result = train_group(group, data_dev, config, on_epoch)
            record = _write_shard(out, result)
            n = len(group["networks"])
            trained += n
            bar.update(n)
            final = [m["test_acc"] for m in record["members"] if m["epoch"] == max(config.epochs)]
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            say(f"group {g} ({n} nets, {len(group['networks'][0]['arch']['layers'])} conv, "
                f"fraction {group['train_fraction']}): {elapsed:.1f} s ({cpu:.1f} s CPU), "
                f"{60 * n / elapsed:.1f} nets/min, final test acc median "
                f"{np.median(final) if final else float('nan'):.3f}, "
                f"{sum(x['diverged_epoch'] is not None for x in record['networks'])} diverged")
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    if trained:
        say(f"rank {rank}: {trained} networks in {elapsed:.1f} s ({cpu:.1f} s CPU) = "
            f"{60 * trained / elapsed:.1f} networks/min")
    all_done = all(_shard_paths(out, g)[1].is_file() for g in range(len(groups)))
    if all_done or world == 1:
        return _write_manifest(out, config_dict, len(groups))
    return {"config": config_dict, "complete": False, "groups": len(groups)}


# --------------------------------------------------------------------------- reading


@dataclass
class ZooMember:
    """One checkpoint of one network of a zoo.

    ``test_acc`` / ``train_acc`` are those of ``model(torch.float64)`` on the measurement
    images / the network's own training subset (see :func:`load_data`).
    """

    network: int
    epoch: int
    arch: dict[str, Any]
    hparams: dict[str, Any]
    train_acc: float
    test_acc: float
    state_dict: dict[str, Tensor]

    def model(self, dtype: torch.dtype = torch.float32) -> nn.Sequential:
        """The network as a plain torch module (:func:`build_cnn`), in eval mode."""
        net = build_cnn(self.arch).to(dtype)
        net.load_state_dict(self.state_dict)
        return net.eval()


def load_zoo(out_dir: str | Path, verify: bool = True) -> list[ZooMember]:
    """Every member of the zoo in ``out_dir`` (shards checked against their sha256),
    ordered by network and epoch. Raises when the manifest is missing or incomplete."""
    out = Path(out_dir)
    path = out / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {out} a zoo written by "
                                "python -m CNN_Zoo_Generate (and finished)?")
    manifest = json.loads(path.read_text())
    if not manifest.get("complete"):
        raise RuntimeError(f"{out} is incomplete ({manifest.get('shards_done')} of "
                           f"{manifest.get('groups')} shards); run the generator again to "
                           "finish it")
    members = []
    for shard in manifest["shards"]:
        data = (out / shard["file"]).read_bytes()
        if verify and _sha256(data) != shard["sha256"]:
            raise RuntimeError(f"{out / shard['file']}: sha256 {_sha256(data)} differs from "
                               f"the manifest's {shard['sha256']}")
        content = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        nets = {n["network"]: n for n in content["networks"]}
        for m in content["members"]:
            net = nets[m["network"]]
            members.append(ZooMember(m["network"], m["epoch"], net["arch"], net["hparams"],
                                     m["train_acc"], m["test_acc"], m["state_dict"]))
    return sorted(members, key=lambda m: (m.network, m.epoch))
