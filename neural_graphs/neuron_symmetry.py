"""Scalings of hidden neurons that leave a network's function unchanged, as augmentations.

A hidden neuron ``i`` with activation :math:`\\sigma` and :math:`\\sigma(s z) = s\\,\\sigma(z)`
can be rescaled: its bias and incoming weights multiplied by ``s``, its outgoing weights
divided by ``s``. The network computes the same function with other weights, which no
encoder here is invariant to (they are invariant to permutations only). That holds

* for any ``s > 0`` where :math:`\\sigma` is positively homogeneous (``relu``,
  ``leaky_relu``, ``identity``), and
* for ``s = -1`` where :math:`\\sigma` is odd (``tanh``, ``sine``, ``identity``),

provided whatever stands between the neuron and its readers is linear per neuron (average
pooling, flattening, token selection; max pooling commutes with positive scales only) and
the neuron neither sends nor receives a fixed-weight path (residual, LayerNorm,
attention), whose weights are not parameters that could absorb the scale. Input and output
neurons keep theirs. :func:`symmetric_neurons` finds the neurons of a graph that qualify;
:func:`scale_neurons` applies a scale per neuron; :class:`NeuronSymmetryAugment` draws one;
:func:`keyed_generator` seeds a draw by (seed, epoch, item), so a resumed run repeats it.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from neural_graphs.activations import ACTIVATIONS
from neural_graphs.graph import WEIGHT_EDGE_TYPES

__all__ = ["NeuronSymmetryAugment", "keyed_generator", "scale_neurons", "symmetric_neurons"]

POSITIVE_HOMOGENEOUS = ("identity", "relu", "leaky_relu")
ODD = ("identity", "tanh", "sine")
_LINEAR_STEPS = ("flatten", "flatten_spatial", "select_token")


def keyed_generator(*key: int) -> torch.Generator:
    """A generator seeded by a pure function of the integers ``key``."""
    seed = np.random.SeedSequence([int(k) for k in key]).generate_state(2)
    return torch.Generator().manual_seed(int(seed[0]) << 32 | int(seed[1]))


def _step_allows(step: tuple, sign: bool) -> bool:
    """Whether a pre-processing step between a neuron and its readers commutes with a
    positive scale (``sign`` False) or a sign flip (``sign`` True) of the neuron."""
    if step[0] in _LINEAR_STEPS:
        return True
    if step[0] == "pool":
        return "Avg" in step[1] or ("Max" in step[1] and not sign)
    return False


def symmetric_neurons(graph: Data) -> tuple[Tensor, Tensor]:
    """``(flippable, scalable)``: ``[N]`` booleans, the neurons of ``graph`` that may be
    negated, and those that may be scaled by any positive factor, without changing the
    function the graph computes (the conditions in the module docstring)."""
    layers = graph.layers
    flippable = torch.zeros(graph.num_nodes, dtype=torch.bool)
    scalable = torch.zeros(graph.num_nodes, dtype=torch.bool)
    readers: dict[int, list[dict]] = {}
    for layer in layers:
        for group in layer["groups"]:
            readers.setdefault(group["source"], []).append(group)
    last = len(layers) - 1
    for index, layer in enumerate(layers[1:last], start=1):
        outgoing = readers.get(index, [])
        if layer["offset"] or not outgoing or not layer["groups"] or any(
                g["kind"] not in WEIGHT_EDGE_TYPES for g in layer["groups"] + outgoing):
            continue
        lo, hi = layer["nodes"]
        if layer["activation"] in ODD and all(
                _step_allows(s, True) for g in outgoing for s in g["pre"]):
            flippable[lo:hi] = True
        if layer["activation"] in POSITIVE_HOMOGENEOUS and all(
                _step_allows(s, False) for g in outgoing for s in g["pre"]):
            scalable[lo:hi] = True
    # A layer's activation is also recorded per neuron: both must agree.
    names = [ACTIVATIONS[int(a)] for a in graph.node_activation]
    flippable &= torch.tensor([n in ODD for n in names], dtype=torch.bool)
    scalable &= torch.tensor([n in POSITIVE_HOMOGENEOUS for n in names], dtype=torch.bool)
    return flippable, scalable


def scale_neurons(graph: Data, scale: Tensor) -> Data:
    """A shallow copy of ``graph`` with neuron ``i`` scaled by ``scale[i]``: its bias
    (``x``) times ``scale[i]``, each edge ``j -> i`` (``edge_attr``, every kernel element)
    times ``scale[i] / scale[j]``. Only the scales :func:`symmetric_neurons` allows keep
    the function; the rest of the graph (structure, labels) is shared, not copied.

    Shapes:
        - scale: :math:`(N,)`, no zeros
    """
    if scale.shape != (graph.num_nodes,):
        raise ValueError(f"expected one scale per neuron, [{graph.num_nodes}], got "
                         f"{tuple(scale.shape)}")
    scale = scale.to(graph.x.dtype)
    source, target = graph.edge_index
    out = copy.copy(graph)
    out.x = graph.x * scale.view(-1, *[1] * (graph.x.dim() - 1))
    ratio = scale[target] / scale[source]
    out.edge_attr = graph.edge_attr * ratio.view(-1, *[1] * (graph.edge_attr.dim() - 1))
    return out


@dataclass(frozen=True)
class NeuronSymmetryAugment:
    """Random function-preserving rescalings of hidden neurons.

    Args:
        sign_flip (float): probability that a neuron with an odd activation is negated.
        max_scale (float): a neuron with a positively homogeneous activation is scaled by a
            factor log-uniform in ``[1 / max_scale, max_scale]`` (1: never).
    """

    sign_flip: float = 0.0
    max_scale: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.sign_flip <= 1 or not 1 <= self.max_scale <= 1e3:
            raise ValueError(f"expected 0 <= sign_flip <= 1 and 1 <= max_scale <= 1000; "
                             f"got {self}")

    @property
    def active(self) -> bool:
        return bool(self.sign_flip or self.max_scale != 1)

    def draw(self, graph: Data, generator: torch.Generator) -> Tensor:
        """One scale per neuron of ``graph`` (``[N]``, float32; 1 where no symmetry
        applies), a pure function of the generator's state."""
        flippable, scalable = symmetric_neurons(graph)
        n = graph.num_nodes
        scale = torch.ones(n)
        if self.max_scale != 1:
            u = (2 * torch.rand(n, generator=generator) - 1) * math.log(self.max_scale)
            scale = torch.where(scalable, u.exp(), scale)
        if self.sign_flip:
            flip = (torch.rand(n, generator=generator) < self.sign_flip) & flippable
            scale = torch.where(flip, -scale, scale)
        return scale

    def __call__(self, graph: Data, generator: torch.Generator) -> Data:
        """``graph`` with one draw of the rescalings applied (:func:`scale_neurons`)."""
        return scale_neurons(graph, self.draw(graph, generator))
