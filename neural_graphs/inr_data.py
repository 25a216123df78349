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
* ``dropout``: each weight zeroed with probability ``p``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torch_geometric.data import Data

from neural_graphs.graph import to_neural_graph
from neural_graphs.inr import SIREN
from neural_graphs.permute import permute_graph

__all__ = ["INRAugment", "INRGraphDataset", "siren_graph_template", "stacked_to_graph_features"]

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

    @classmethod
    def default(cls) -> INRAugment:
        """The DWSNets / neural-graphs setting: rotations up to 45 degrees, translations
        of 0.5, rescale 0.2, weight dropout 0.1 (without permutations, which an invariant
        encoder does not need)."""
        return cls(permute=False, rotate=45.0, translate=0.5, rescale=0.2, dropout=0.1)

    @property
    def active(self) -> bool:
        return bool(self.permute or self.rotate or self.translate or self.rescale
                    or self.dropout)


def siren_graph_template(params: dict[str, Tensor]) -> Data:
    """The graph of a SIREN with the shapes of ``params`` (stacked, leading INR axis)."""
    weights = [params[k] for k in SIREN_KEYS[::2]]
    siren = SIREN(in_features=weights[0].shape[2], hidden_features=weights[0].shape[1],
                  hidden_layers=len(weights) - 1, out_features=weights[-1].shape[1])
    return to_neural_graph(siren)


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
        self.labels = labels.long()
        self.targets = targets
        self.template = siren_graph_template(self.params)
        self.x, self.edge_attr = stacked_to_graph_features(self.params, self.template)
        self.augment = augment or INRAugment()
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.labels.shape[0]

    def _generator(self, index: int) -> torch.Generator:
        gen = torch.Generator()
        gen.manual_seed(hash((self.seed, self.epoch, index)) % (2**63))
        return gen

    def _augmented(self, index: int) -> tuple[Tensor, Tensor]:
        x, attr = self.x[index].clone(), self.edge_attr[index].clone()
        aug, gen = self.augment, self._generator(index)
        w1_shape = self.params[SIREN_KEYS[0]].shape[1:]
        n_w1 = math.prod(w1_shape)
        first = self.template.layer_layout[0]
        w1 = attr[:n_w1, 0].view(w1_shape)
        b1 = x[first:first + w1_shape[0], 0]
        if w1_shape[1] == 2 and (aug.rotate or aug.translate):
            angle = math.radians(aug.rotate) * (2 * torch.rand((), generator=gen) - 1)
            cos, sin = torch.cos(angle), torch.sin(angle)
            rot = torch.stack([torch.stack([cos, -sin]), torch.stack([sin, cos])])
            shift = aug.translate * (2 * torch.rand(2, generator=gen) - 1)
            b1 += w1 @ shift
            w1.copy_(w1 @ rot)
        if aug.rescale:
            w1.mul_(1 + aug.rescale * (2 * torch.rand((), generator=gen) - 1))
        if aug.dropout:
            attr.mul_((torch.rand(attr.shape, generator=gen) >= aug.dropout).to(attr.dtype))
        return x, attr

    def __getitem__(self, index: int) -> Data:
        if self.augment.active:
            x, attr = self._augmented(index)
        else:
            x, attr = self.x[index], self.edge_attr[index]
        # Structure tensors are shared with the template (read-only), not copied.
        graph = Data(**dict(self.template))
        graph.x, graph.edge_attr = x, attr
        graph.y = self.labels[index].view(1)
        if self.targets is not None:
            graph.target = self.targets[index].unsqueeze(0)
        if self.augment.permute:
            graph = permute_graph(graph, self._generator(index))
        return graph


def load_split(inr_dir: str | Path, split: str, augment: INRAugment | None = None,
               seed: int = 0) -> INRGraphDataset:
    """The ``split`` (``train`` / ``val`` / ``test``) of a set written by MNIST_INR_Fit."""
    from neural_graphs.inr_fit import load_inr_set

    params, labels, splits, _ = load_inr_set(inr_dir)
    chosen = torch.tensor([s == split for s in splits])
    if not bool(chosen.any()):
        raise ValueError(f"{inr_dir} holds no INR of split {split!r}; splits present: "
                         f"{sorted(set(splits))}")
    return INRGraphDataset({k: v[chosen] for k, v in params.items()}, labels[chosen],
                           augment if split == "train" else None, seed)
