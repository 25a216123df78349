"""Fitted INRs as a dataset of neural graphs, with the augmentations of the field.

Every SIREN of a set shares one architecture, so its graph structure (``edge_index``,
node and edge types, layer metadata) is built once with :func:`to_neural_graph` and each
INR only fills ``x`` (biases) and ``edge_attr`` (weights) from its stacked parameters.
That is the same graph ``to_neural_graph`` gives for the INR's SIREN (a test checks it).

Augmentations (training split only, drawn per item from a seeded generator):

* ``permute``: hidden neurons relabelled (:func:`~neural_graphs.permute.permute_graph`);
* ``rotate`` (degrees) and ``translate``: the image rotated and shifted, folded into the
  first layer: ``f(R c + t)`` has ``W1' = W1 R`` and ``b1' = b1 + W1 t``;
* ``rescale``: the first-layer weights scaled by ``U(1 - r, 1 + r)`` (a zoom);
* ``dropout``: each weight zeroed with probability ``p``;
* ``sign_flip``: each hidden neuron negated with probability ``p`` (its incoming weights,
  bias and outgoing weights): the same function, as the sine is odd
  (``sin(-z) = -sin(z)``), but other weights, which no encoder here is invariant to.
* ``dihedral``: with probability ``p`` the image mapped by one of the seven other
  symmetries of the square grid (rotations by multiples of 90 degrees, reflections),
  folded into the first layer like ``rotate``; exact on the pixel grid, so a per-INR
  target image (``targets``) is mapped with it (:func:`dihedral_image`).

:func:`load_inr_splits` reads a set written by ``python -m MNIST_INR_Fit`` once and gives
its three splits; :func:`check_inr_dir` says in one sentence why a folder is not such a set;
:func:`inr_set_images` reads the MNIST or Fashion-MNIST images the INRs were fitted to
(checked against the set's image digest); :func:`graph_features_to_stacked` inverts
:func:`stacked_to_graph_features` (an edited graph back to SIREN parameters).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torch_geometric.data import Data

from neural_graphs.graph import to_neural_graph
from neural_graphs.inr import SIREN
from neural_graphs.neuron_symmetry import keyed_generator, symmetric_neurons
from neural_graphs.permute import permute_graph
from utils.store import MANIFEST, StoreError, read_manifest

__all__ = [
    "AugmentDraw",
    "INRAugment",
    "INRGraphDataset",
    "InvalidINRSet",
    "check_inr_dir",
    "dihedral_image",
    "graph_features_to_stacked",
    "inr_set_images",
    "load_inr_splits",
    "load_split",
    "siren_graph_template",
    "siren_layer_stats",
    "stacked_to_graph_features",
]

SIREN_KEYS = ("net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias", "net.4.weight",
              "net.4.bias")


@dataclass(frozen=True)
class INRAugment:
    """Augmentation strengths; zeros switch each one off."""

    permute: bool = False
    rotate: float = 0.0
    translate: float = 0.0
    rescale: float = 0.0
    dropout: float = 0.0
    sign_flip: float = 0.0
    dihedral: float = 0.0

    def __post_init__(self) -> None:
        if self.rotate < 0 or self.translate < 0 or not 0 <= self.rescale < 1 \
                or not 0 <= self.dropout < 1 or not 0 <= self.sign_flip <= 1 \
                or not 0 <= self.dihedral <= 1:
            raise ValueError(f"augmentation strengths must be rotate >= 0, translate >= 0, "
                             f"0 <= rescale < 1, 0 <= dropout < 1, 0 <= sign_flip <= 1, "
                             f"0 <= dihedral <= 1; got {self}")

    @classmethod
    def default(cls) -> INRAugment:
        """The neural-graphs reference setting (``INRDataset`` of its
        ``experiments/data.py``): rotations up to 45 degrees, translations up to 0.25,
        rescale 0.2, weight dropout 0.01 (without permutations, which an invariant encoder
        does not need). Translations of 0.5 with 10% weight dropout, this project's first
        setting, stalled DNG's learning (validation 17% after 5 epochs against 85%)."""
        return cls(permute=False, rotate=45.0, translate=0.25, rescale=0.2, dropout=0.01)

    @property
    def active(self) -> bool:
        return bool(self.permute or self.rotate or self.translate or self.rescale
                    or self.dropout or self.sign_flip or self.dihedral)

    @property
    def off_grid(self) -> bool:
        """Whether the image moves off the pixel grid (``rotate``, ``translate``,
        ``rescale``), where no per-INR target image can follow it exactly."""
        return bool(self.rotate or self.translate or self.rescale)


def siren_graph_template(params: dict[str, Tensor]) -> Data:
    """The graph of a SIREN with the shapes of ``params`` (stacked, leading INR axis)."""
    weights = [params[k] for k in SIREN_KEYS[::2]]
    siren = SIREN(in_features=weights[0].shape[2], hidden_features=weights[0].shape[1],
                  hidden_layers=len(weights) - 1, out_features=weights[-1].shape[1])
    return to_neural_graph(siren)


def siren_layer_stats(params: dict[str, Tensor]) -> dict[str, list[float]]:
    """Per-layer statistics of stacked SIRENs (leading INR axis): the mean and standard
    deviation of every weight, and of every bias, of each layer over all the INRs, in the
    format of the neural-graphs reference's ``stats`` (``weights_mean``, ``weights_std``,
    ``biases_mean``, ``biases_std``, one number per layer), which its configurations
    standardise each layer's weights and biases by."""
    missing = [k for k in SIREN_KEYS if k not in params]
    if missing:
        raise ValueError(f"SIREN parameters lack {missing}; expected the keys "
                         f"{list(SIREN_KEYS)}")
    stats: dict[str, list[float]] = {}
    for kind, keys in (("weights", SIREN_KEYS[::2]), ("biases", SIREN_KEYS[1::2])):
        values = [params[key].double() for key in keys]
        stats[f"{kind}_mean"] = [v.mean().item() for v in values]
        stats[f"{kind}_std"] = [v.std().item() for v in values]
    return stats


def stacked_to_graph_features(params: dict[str, Tensor],
                              template: Data) -> tuple[Tensor, Tensor]:
    """``x`` ``[n, N, 1]`` and ``edge_attr`` ``[n, E, 1]`` of ``n`` stacked SIRENs, in the
    node and edge order of ``template`` (complete bipartite groups, target-major)."""
    n = params[SIREN_KEYS[0]].shape[0]
    first = template.layer_layout[0]
    x = torch.cat([params[SIREN_KEYS[0]].new_zeros(n, first)]
                  + [params[k] for k in SIREN_KEYS[1::2]], 1).unsqueeze(-1)
    attr = torch.cat([params[k].reshape(n, -1) for k in SIREN_KEYS[::2]], 1).unsqueeze(-1)
    if x.shape[1] != template.num_nodes or attr.shape[1] != template.edge_attr.shape[0]:
        raise ValueError(f"stacked SIREN parameters give {x.shape[1]} nodes and "
                         f"{attr.shape[1]} edges, the template has {template.num_nodes} and "
                         f"{template.edge_attr.shape[0]}")
    return x, attr


def graph_features_to_stacked(x: Tensor, edge_attr: Tensor,
                              layer_layout: Sequence[int]) -> dict[str, Tensor]:
    """Stacked SIREN parameters from graph features in the node and edge order of
    :func:`siren_graph_template` with neurons per layer ``layer_layout``: the inverse of
    :func:`stacked_to_graph_features` (input-node features are dropped). Differentiable, so
    an edited graph can be rendered and trained through.

    Shapes:
        - x: :math:`(n, N)` or :math:`(n, N, 1)`; edge_attr: :math:`(n, E)` or
          :math:`(n, E, 1)`
        - output: ``{"net.0.weight": [n, out, in], "net.0.bias": [n, out], ...}``
    """
    layout = [int(v) for v in layer_layout]
    x = x.reshape(x.shape[0], -1)
    edge_attr = edge_attr.reshape(edge_attr.shape[0], -1)
    edges = sum(a * b for a, b in zip(layout[:-1], layout[1:]))
    if x.shape[1] != sum(layout) or edge_attr.shape[1] != edges or x.shape[0] != \
            edge_attr.shape[0]:
        raise ValueError(f"graph features x {tuple(x.shape)} and edge_attr "
                         f"{tuple(edge_attr.shape)} do not fit a network of layout {layout} "
                         f"([n, {sum(layout)}] and [n, {edges}])")
    params: dict[str, Tensor] = {}
    node, edge = layout[0], 0
    for index, (fan_in, fan_out) in enumerate(zip(layout[:-1], layout[1:])):
        params[f"net.{2 * index}.weight"] = edge_attr[:, edge:edge + fan_in * fan_out].reshape(
            -1, fan_out, fan_in)
        params[f"net.{2 * index}.bias"] = x[:, node:node + fan_out]
        node, edge = node + fan_out, edge + fan_in * fan_out
    return params


_AUGMENT_STREAM, _PERMUTE_STREAM = 0, 1

#: The symmetries of the square as signed permutation matrices ``D`` (the image sampled at
#: ``D c``), the identity first: rotations by 0, 90, 180, 270 degrees, then the reflections
#: in the two axes and the two diagonals.
DIHEDRAL = torch.tensor([[[1, 0], [0, 1]], [[0, -1], [1, 0]], [[-1, 0], [0, -1]],
                         [[0, 1], [-1, 0]], [[1, 0], [0, -1]], [[-1, 0], [0, 1]],
                         [[0, 1], [1, 0]], [[0, -1], [-1, 0]]], dtype=torch.float32)


def dihedral_image(image: Tensor, matrix: Tensor) -> Tensor:
    """The image that an INR draws after ``W1' = W1 @ matrix`` (``matrix`` one of
    :data:`DIHEDRAL`): pixel ``(r, c)`` of the result is the pixel of ``image`` at the
    grid point ``matrix @ (x_c, y_r)`` (the grid of :func:`neural_graphs.inr.make_coordinates`,
    symmetric about 0, so every grid point maps onto one).

    Shapes:
        - image: :math:`(*, S, S)`
        - output: :math:`(*, S, S)`
    """
    if image.ndim < 2 or image.shape[-1] != image.shape[-2]:
        raise ValueError(f"a symmetry of the square needs square images [..., S, S], got "
                         f"{tuple(image.shape)}")
    size = image.shape[-1]
    centred = 2 * torch.arange(size) - (size - 1)  # 2 (size - 1) / 2 * linspace(-1, 1)
    x, y = centred.expand(size, size), centred.view(-1, 1).expand(size, size)
    d = matrix.round().long().tolist()
    x_src, y_src = d[0][0] * x + d[0][1] * y, d[1][0] * x + d[1][1] * y
    return image[..., (y_src + size - 1) // 2, (x_src + size - 1) // 2]


@dataclass(frozen=True)
class AugmentDraw:
    """One item's augmentation: the image is sampled at ``scale * rotation @ c + shift``
    (the first layer becomes ``W1' = scale * W1 @ rotation``, ``b1' = b1 + W1 @ shift``),
    then the weights where ``keep`` is False (``[E, 1]``, or None: all kept) are zeroed,
    and every neuron ``i`` is multiplied by ``signs[i]`` (``[N]`` of +-1, -1 for hidden
    neurons only; None: no flip): its bias by ``signs[i]``, the weight of an edge
    ``j -> i`` by ``signs[j] * signs[i]``. ``dihedral`` (one of :data:`DIHEDRAL`, or None)
    is the grid symmetry already included in ``rotation``, which a target image follows."""

    rotation: Tensor
    shift: Tensor
    scale: float
    keep: Tensor | None
    signs: Tensor | None = None
    dihedral: Tensor | None = None


class INRGraphDataset(Dataset):
    """One split of a fitted INR set as neural graphs; ``graph.y`` is the image's label.

    Args:
        params (dict): stacked SIREN parameters ``{key: [n, ...]}`` (SIREN state_dict keys).
        labels (Tensor): ``[n]`` class labels.
        augment (INRAugment, optional): augmentations applied on every access.
        seed (int): seed of the augmentation stream (combined with epoch and index, so a
            resumed run sees the same augmentations).
        targets (Tensor, optional): ``[n, ...]`` per-INR targets stored as ``graph.target``
            (e.g. dilated images for the editing task).
    """

    def __init__(self, params: dict[str, Tensor], labels: Tensor,
                 augment: INRAugment | None = None, seed: int = 0,
                 targets: Tensor | None = None) -> None:
        missing = [k for k in SIREN_KEYS if k not in params]
        if missing:
            raise ValueError(f"INR parameters lack {missing}; expected the SIREN keys "
                             f"{list(SIREN_KEYS)}")
        self.params = {k: params[k].float() for k in SIREN_KEYS}
        count = self.params[SIREN_KEYS[0]].shape[0]
        if labels.shape != (count,) or (targets is not None and targets.shape[0] != count):
            raise ValueError(f"{count} INRs need labels [{count}] and targets [{count}, ...], "
                             f"got {tuple(labels.shape)} and "
                             f"{None if targets is None else tuple(targets.shape)}")
        self.labels = labels.long()
        self.targets = targets
        self.template = siren_graph_template(self.params)
        self.x, self.edge_attr = stacked_to_graph_features(self.params, self.template)
        self.flippable = symmetric_neurons(self.template)[0]
        self.augment = augment or INRAugment()
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.labels.shape[0]

    def _generator(self, index: int, stream: int) -> torch.Generator:
        return keyed_generator(self.seed, self.epoch, index, stream)

    def draw(self, index: int) -> AugmentDraw:
        """The augmentation of item ``index`` in the current epoch (a pure function of
        seed, epoch and index): the first layer then computes ``W1 (s R c + t) + b1``."""
        aug, gen = self.augment, self._generator(index, _AUGMENT_STREAM)
        rotation, shift, scale, keep = torch.eye(2), torch.zeros(2), 1.0, None
        in_features = self.params[SIREN_KEYS[0]].shape[2]
        if in_features == 2 and (aug.rotate or aug.translate):
            angle = math.radians(aug.rotate) * (2 * torch.rand((), generator=gen) - 1)
            cos, sin = torch.cos(angle), torch.sin(angle)
            rotation = torch.stack([torch.stack([cos, -sin]), torch.stack([sin, cos])])
            shift = aug.translate * (2 * torch.rand(2, generator=gen) - 1)
        if aug.rescale:
            scale = float(1 + aug.rescale * (2 * torch.rand((), generator=gen) - 1))
        if aug.dropout:
            keep = torch.rand(self.edge_attr.shape[1:], generator=gen) >= aug.dropout
        signs = None
        if aug.sign_flip:
            flip = torch.rand(self.template.num_nodes, generator=gen) < aug.sign_flip
            flip &= self.flippable  # hidden neurons only
            signs = 1.0 - 2.0 * flip.to(self.x.dtype)
        dihedral = None
        # Drawn last, so the other augmentations' streams stay as they were without it.
        if in_features == 2 and aug.dihedral and \
                torch.rand((), generator=gen) < aug.dihedral:
            dihedral = DIHEDRAL[int(torch.randint(1, len(DIHEDRAL), (), generator=gen))]
            rotation = rotation @ dihedral
        return AugmentDraw(rotation, shift, scale, keep, signs, dihedral)

    def _augmented(self, index: int, draw: AugmentDraw) -> tuple[Tensor, Tensor]:
        x, attr = self.x[index].clone(), self.edge_attr[index].clone()
        w1_shape = self.params[SIREN_KEYS[0]].shape[1:]
        first = self.template.layer_layout[0]
        w1 = attr[:math.prod(w1_shape), 0].view(w1_shape)  # views into attr and x
        b1 = x[first:first + w1_shape[0], 0]
        if w1_shape[1] == 2:
            b1 += w1 @ draw.shift.to(w1.dtype)
            w1.copy_(w1 @ draw.rotation.to(w1.dtype))
        w1.mul_(draw.scale)
        if draw.keep is not None:
            attr.mul_(draw.keep.to(attr.dtype))
        if draw.signs is not None:
            source, target = self.template.edge_index
            x.mul_(draw.signs.unsqueeze(-1))
            attr.mul_((draw.signs[source] * draw.signs[target]).unsqueeze(-1))
        return x, attr

    def __getitem__(self, index: int) -> Data:
        draw = None
        if self.augment.active:
            if self.targets is not None and self.augment.off_grid:
                raise ValueError(f"per-INR targets cannot follow rotate, translate or "
                                 f"rescale off the pixel grid; got {self.augment}")
            draw = self.draw(index)
            x, attr = self._augmented(index, draw)
        else:
            x, attr = self.x[index], self.edge_attr[index]
        # Structure tensors are shared with the template (read-only), not copied.
        graph = Data(**dict(self.template))
        graph.x, graph.edge_attr = x, attr
        graph.y = self.labels[index].view(1)
        if self.targets is not None:
            target = self.targets[index]
            if draw is not None and draw.dihedral is not None:
                target = dihedral_image(target, draw.dihedral)
            graph.target = target.unsqueeze(0)
        if self.augment.permute:
            graph = permute_graph(graph, self._generator(index, _PERMUTE_STREAM))
        return graph


class InvalidINRSet(StoreError):
    """A folder that is not a finished INR set of ``python -m MNIST_INR_Fit`` (a
    :class:`~utils.store.StoreError`)."""


def check_inr_dir(inr_dir: str | Path) -> dict[str, Any]:
    """The manifest of the finished INR set in ``inr_dir``; :class:`InvalidINRSet` saying
    what is wrong otherwise (no such folder, no manifest: fit unfinished, another kind of
    set such as a CNN zoo, shards missing)."""
    path = Path(inr_dir)
    if not path.is_dir():
        raise InvalidINRSet(f"{path} is not a folder; expected the --out folder of "
                            "python -m MNIST_INR_Fit")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        shards = len(list(path.glob("shard_*.json")))
        raise InvalidINRSet(f"{path} has no manifest.json ({shards} finished shard(s)): not a "
                            "finished INR set; run python -m MNIST_INR_Fit with the same --out "
                            "to finish it")
    try:
        manifest = read_manifest(path, "inr-set")
    except StoreError as err:
        raise InvalidINRSet(str(err)) from None
    try:
        missing = [s["file"] for s in manifest["shards"] if not (path / s["file"]).is_file()]
        splits = manifest["inrs"]["split"]
    except (ValueError, KeyError, TypeError) as err:
        raise InvalidINRSet(f"{manifest_path} is not an INR set manifest: {err!r}") from None
    if missing:
        raise InvalidINRSet(f"{path}: the manifest lists shard files that are absent: "
                            f"{missing[:3]}{' ...' if len(missing) > 3 else ''}")
    absent = [name for name in ("train", "val", "test") if name not in splits]
    if absent:
        raise InvalidINRSet(f"{path} holds no INR of split(s) {absent}; splits present: "
                            f"{sorted(set(splits))}")
    return manifest


def load_inr_splits(inr_dir: str | Path, augment: INRAugment | None = None, seed: int = 0,
                    targets: Tensor | None = None, manifest: dict[str, Any] | None = None
                    ) -> dict[str, INRGraphDataset]:
    """The ``train``, ``val`` and ``test`` splits of a set written by ``MNIST_INR_Fit``, in
    the set's order within each split (the set is read, and its shards checked, once).

    Raises:
        InvalidINRSet: the folder is not a finished INR set (:func:`check_inr_dir`).
        StoreError: a damaged shard or an INR with non-finite weights
            (:func:`~neural_graphs.inr_fit.load_inr_set`).

    Args:
        inr_dir: the set's folder.
        augment: augmentations of the training split (the others get none).
        seed: seed of the augmentation stream.
        targets: ``[n, ...]`` per-INR targets in the set's order (``graph.target``).
        manifest: what :func:`check_inr_dir` returned, when the caller has checked the
            folder already.
    """
    from neural_graphs.inr_fit import load_inr_set

    if manifest is None:
        manifest = check_inr_dir(inr_dir)
    params, labels, splits, _ = load_inr_set(inr_dir, manifest)
    if targets is not None and targets.shape[0] != labels.shape[0]:
        raise ValueError(f"targets has {targets.shape[0]} rows, the set {labels.shape[0]} INRs")
    out = {}
    for name in ("train", "val", "test"):
        chosen = torch.tensor([s == name for s in splits])
        out[name] = INRGraphDataset({k: v[chosen] for k, v in params.items()}, labels[chosen],
                                    augment if name == "train" else None, seed,
                                    None if targets is None else targets[chosen])
    return out


def load_split(inr_dir: str | Path, split: str, augment: INRAugment | None = None,
               seed: int = 0) -> INRGraphDataset:
    """The ``split`` (``train`` / ``val`` / ``test``) of a set written by MNIST_INR_Fit."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    return load_inr_splits(inr_dir, augment, seed)[split]


def inr_set_images(manifest: dict[str, Any], data_dir: str | Path | None = None) -> np.ndarray:
    """The image each INR of a set was fitted to, in the set's order: uint8 ``[n, H, W]``
    for grey images, ``[n, H, W, 3]`` (channels last, as the fit reads them) for colour,
    read from ``data_dir`` (default: the ``data_dir`` the fit recorded) and checked against
    the digest of the fit's images (``images_sha256``). The images are those of the set's
    recorded ``dataset`` (:func:`~neural_graphs.inr_fit.fit_dataset`): MNIST from
    ``data_dir/MNIST/raw`` (also a set that records none), Fashion-MNIST from
    ``data_dir/FashionMNIST/raw``, CIFAR-10 from ``data_dir/cifar-10-batches-py``.

    Raises:
        InvalidINRSet: the manifest lacks image indices or a known source or image set, or
            the images read differ from those the set was fitted to.
        FileNotFoundError: an image file is absent (the message names the folder expected).
        RuntimeError: an image file fails its md5 check.
    """
    from neural_graphs.inr_fit import fit_dataset, images_digest
    from utils.images import CIFAR10_FOLDER, IDX_DATASETS, load_cifar10, load_idx_dataset

    config = manifest.get("config", {})
    source = config.get("source")
    dataset = fit_dataset(config)
    folder = Path(data_dir if data_dir is not None else manifest.get("data_dir", "data"))
    if source not in ("test-split", "train"):
        raise InvalidINRSet(f"the manifest's config has image source {source!r}; expected "
                            "'test-split' or 'train'")
    if dataset == "cifar10":
        title, where = "CIFAR-10", folder / CIFAR10_FOLDER
        train_x, train_y, test_x, test_y = load_cifar10(folder)
        train = train_x.transpose(0, 2, 3, 1), train_y
        test = test_x.transpose(0, 2, 3, 1), test_y
    elif dataset in IDX_DATASETS:
        title, subfolder = IDX_DATASETS[dataset]
        where = folder / subfolder / "raw"
        hint = (f"the INR set was fitted to {title} images (source {source!r}) from {folder}; "
                f"they are read from {where}.")
        test = load_idx_dataset(dataset, folder, "t10k", download=False, hint=hint)
        if source == "train":
            train = load_idx_dataset(dataset, folder, "train", download=False, hint=hint)
    else:
        known = ", ".join(repr(name) for name in (*IDX_DATASETS, "cifar10"))
        raise InvalidINRSet(f"the manifest's config has image set {dataset!r}; expected one of "
                            f"{known}")
    if source == "test-split":
        images, labels = test
    else:
        images, labels = np.concatenate([train[0], test[0]]), np.concatenate([train[1], test[1]])
    try:
        index = np.asarray(manifest["inrs"]["image_index"], dtype=np.int64)
    except KeyError:
        raise InvalidINRSet("the manifest has no inrs.image_index list") from None
    selected = np.unique(index)
    if selected.size and (selected[0] < 0 or selected[-1] >= len(images)):
        raise InvalidINRSet(f"image indices {selected[0]}..{selected[-1]} are out of range for "
                            f"{len(images)} images in {where}")
    digest = images_digest(images[selected], labels[selected])
    if digest != config.get("images_sha256"):
        raise InvalidINRSet(f"the {title} images in {where} are not those "
                            f"the set was fitted to (sha256 {digest[:12]}..., the set records "
                            f"{str(config.get('images_sha256'))[:12]}...)")
    return images[index]
