"""Noise and dropout on a neural graph's parameters: the model-zoo augmentation of the
neural-graphs reference (``NFNZooDataset._augment`` in its
``experiments/data_generalization.py``: noise scale 0.1, drop rate 0.01 on its CNN zoos).

Unlike :mod:`neural_graphs.neuron_symmetry`, these draws change the network's function a
little; a predictor trained on them learns that nearby weights have nearby accuracies.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor
from torch_geometric.data import Data

from neural_graphs.encoders.baselines import segment_mean_var
from neural_graphs.graph import EDGE_TYPES, NODE_TYPES, WEIGHT_EDGE_TYPES

__all__ = ["NoisePlan", "WeightNoiseAugment", "layer_std"]

#: Ids of the edge types that hold weight-matrix and kernel entries
#: (:data:`~neural_graphs.graph.WEIGHT_EDGE_TYPES`), the only edges perturbed.
PARAMETER_EDGE_TYPES = tuple(EDGE_TYPES.index(kind) for kind in WEIGHT_EDGE_TYPES)
_INPUT = NODE_TYPES.index("input")


def _layer_stds(values: Tensor, mask: Tensor, layer: Tensor) -> Tensor:
    """:func:`layer_std` once per layer, ``[max(layer) + 1]``."""
    size = int(layer.max()) + 1 if layer.numel() else 0
    segment = torch.repeat_interleave(layer, mask.sum(1))  # a row's valid entries, in order
    _, _, var = segment_mean_var(values[mask], segment, size)
    return var.sqrt()


def layer_std(values: Tensor, mask: Tensor, layer: Tensor) -> Tensor:
    """The standard deviation (unbiased, as ``Tensor.std``) of the masked ``values`` of each
    layer, broadcast back to every row: ``values`` and ``mask`` ``[M, K]``, ``layer``
    ``[M]``; rows of a layer with fewer than two valid entries get 0.

    Shapes:
        - output: :math:`(M, 1)`
    """
    return _layer_stds(values, mask, layer)[layer, None]


@dataclass(frozen=True)
class NoisePlan:
    """What :class:`WeightNoiseAugment` needs of one graph that no draw changes, made once
    per graph (:meth:`WeightNoiseAugment.plan`; ``AugmentedGraphs`` keeps it): the rows a
    draw changes (``edge_rows``: the edges that hold parameters; ``node_rows``: all neurons
    but the inputs) and the standard deviation of each row's layer there, 0 on the other
    rows (``edge_row_std``, ``node_row_std``: weights, biases); all four ``[M, 1, ...]`` /
    ``[N, 1, ...]``, to broadcast over a row of ``edge_attr`` and ``x``."""

    edge_rows: Tensor
    node_rows: Tensor
    edge_row_std: Tensor
    node_row_std: Tensor


@dataclass(frozen=True)
class WeightNoiseAugment:
    r"""Gaussian noise and dropout on each layer's weights and biases.

    Each parameter value :math:`v` of layer :math:`l` becomes
    :math:`\text{dropout}_p(v + \sigma\,\text{std}_l\,\varepsilon)`,
    :math:`\varepsilon \sim \mathcal N(0, 1)`, where :math:`\text{std}_l` is the standard
    deviation of the layer's weights (of its biases, for a bias) and the dropout zeroes a
    value with probability :math:`p` and divides the others by :math:`1 - p`
    (``torch.nn.functional.dropout``). Padding entries of kernels, edges that are not
    weight-matrix or kernel entries (residual identities, attention structure, LayerNorm
    scales) and input neurons are left as they are.

    Args:
        noise (float): :math:`\sigma`, the noise relative to each layer's std (the
            reference's ``noise_scale``, 0.1).
        dropout (float): :math:`p` (the reference's ``drop_rate``, 0.01).
    """

    noise: float = 0.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if not self.noise >= 0 or not 0 <= self.dropout < 1:
            raise ValueError(f"expected noise >= 0 and 0 <= dropout < 1; got {self}")

    @property
    def active(self) -> bool:
        return bool(self.noise or self.dropout)

    def _perturb(self, values: Tensor, row_std: Tensor, rows: Tensor,
                 entries: Tensor | None, generator: torch.Generator) -> Tensor:
        """One draw on ``values``: noise scaled by ``row_std`` (0 on the rows left alone)
        and dropout, on the entries of ``entries`` (None: all) in the rows of ``rows``
        (``row_std`` and ``rows`` broadcast over a row)."""
        out = values
        if self.noise:
            eps = torch.randn(values.shape, generator=generator, dtype=values.dtype)
            if entries is not None:
                eps.mul_(entries)
            # Not addcmul: its fused rounding would change the draws of earlier versions.
            out = values + eps.mul_(self.noise * row_std)
        if self.dropout:
            drop = torch.rand(values.shape, generator=generator) < self.dropout
            changed = (out / (1 - self.dropout)).masked_fill_(drop, 0.0)
            out = torch.where(rows if entries is None else entries & rows, changed, out)
        return out

    def plan(self, graph: Data) -> NoisePlan:
        """The :class:`NoisePlan` of ``graph``: its draws then skip the layer statistics."""
        edge_rows = torch.isin(graph.edge_type, torch.tensor(PARAMETER_EDGE_TYPES))
        node_rows = graph.node_type != _INPUT
        attr = graph.edge_attr.reshape(graph.edge_attr.shape[0], -1)
        mask = graph.edge_mask.reshape(attr.shape) if "edge_mask" in graph \
            else torch.ones_like(attr, dtype=torch.bool)
        x = graph.x.reshape(graph.num_nodes, -1)
        edge_std = _layer_stds(attr, mask & edge_rows[:, None], graph.edge_layer)
        node_std = _layer_stds(x, node_rows[:, None].expand_as(x), graph.node_layer)

        def per_row(rows: Tensor, std: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
            shape = (-1, *(1,) * (like.dim() - 1))
            return rows.view(shape), (std * rows).view(shape)

        edge_rows, edge_row_std = per_row(edge_rows, edge_std[graph.edge_layer],
                                          graph.edge_attr)
        node_rows, node_row_std = per_row(node_rows, node_std[graph.node_layer], graph.x)
        return NoisePlan(edge_rows, node_rows, edge_row_std, node_row_std)

    def __call__(self, graph: Data, generator: torch.Generator,
                 plan: NoisePlan | None = None) -> Data:
        """``graph`` with one draw applied (a copy; ``graph`` is not changed), a pure
        function of the generator's state; ``plan``: :meth:`plan` of this graph, made
        here when not given (the same draw either way)."""
        plan = self.plan(graph) if plan is None else plan
        if len(plan.edge_rows) != graph.edge_attr.shape[0]:
            raise ValueError(f"the plan covers {len(plan.edge_rows)} edges, the graph has "
                             f"{graph.edge_attr.shape[0]}: pass the plan of this graph")
        entries = graph.edge_mask.view_as(graph.edge_attr) if "edge_mask" in graph else None
        out = copy.copy(graph)
        out.edge_attr = self._perturb(graph.edge_attr, plan.edge_row_std, plan.edge_rows,
                                      entries, generator)
        out.x = self._perturb(graph.x, plan.node_row_std, plan.node_rows, None, generator)
        return out
