"""Initial features of neural graphs: random Fourier features of scalars, index and
position embeddings, activation- and edge-type embeddings (:class:`GraphEmbedding`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter
from torch_geometric.data import Batch

from neural_graphs.activations import ACTIVATIONS
from neural_graphs.encoders.batch import _INPUT, _OUTPUT, layer_slot, local_node_position
from neural_graphs.encoders.probes import ProbeFeatures
from neural_graphs.graph import EDGE_TYPES

__all__ = ["FourierFeatures", "GraphEmbedding", "IndexEmbedding"]


class FourierFeatures(LazyModuleMixin, nn.Module):
    r"""Gaussian random Fourier features of a vector of scalars (a bias, a kernel).

    .. math::
        \gamma(v) = [\cos(2\pi v B), \sin(2\pi v B)], \quad B_{kj} \sim
        \mathcal{N}(0, \sigma^2)

    ``B`` (``[in_features, num_frequencies]``) is a fixed buffer drawn when the width of
    ``v`` is first seen (or at construction when ``in_features`` is given). A scalar
    (``in_features = 1``) gets the features of the reference; zero-padded kernel entries
    add nothing to :math:`vB`.

    Args:
        num_frequencies (int): frequencies (output width ``2 * num_frequencies``).
        sigma (float): standard deviation of the frequencies.
        in_features (int, optional): width of ``v``; inferred on the first call if None.

    Shapes:
        - input: :math:`(*, \text{in\_features})`
        - output: :math:`(*, 2\,\text{num\_frequencies})`
    """

    frequencies: Tensor

    def __init__(self, num_frequencies: int = 128, sigma: float = 1.0,
                 in_features: int | None = None) -> None:
        super().__init__()
        self.num_frequencies = num_frequencies
        self.sigma = float(sigma)
        if in_features is None:
            self.register_buffer("frequencies", UninitializedBuffer())
        else:
            self.register_buffer("frequencies",
                                 torch.randn(in_features, num_frequencies) * self.sigma)

    def initialize_parameters(self, v: Tensor) -> None:  # type: ignore[override]
        if self.has_uninitialized_params():
            with torch.no_grad():
                self.frequencies.materialize((v.shape[-1], self.num_frequencies))
                self.frequencies.normal_(0.0, self.sigma)

    def forward(self, v: Tensor) -> Tensor:
        if v.shape[-1] != self.frequencies.shape[0]:
            raise ValueError(f"FourierFeatures was built for {self.frequencies.shape[0]} "
                             f"input columns (edge_attr width K or x width), got "
                             f"{v.shape[-1]}; build graphs with one kernel_shape=")
        proj = (2 * math.pi) * (v @ self.frequencies.to(v.dtype))
        return torch.cat([proj.cos(), proj.sin()], dim=-1)

    @property
    def out_features(self) -> int:
        return 2 * self.num_frequencies


class IndexEmbedding(LazyModuleMixin, nn.Module):
    r"""A learned vector per index (input neuron ``k``, output neuron ``k``), the table
    sized on the first call by the largest index seen.

    A later index beyond the table raises ``ValueError`` (the encoder was built for
    networks with fewer input or output neurons).

    Args:
        embedding_dim (int): vector size.
        what (str): what the indices are, for error messages.

    Shapes:
        - input: :math:`(M,)` long
        - output: :math:`(M, \text{embedding\_dim})`
    """

    weight: Tensor

    def __init__(self, embedding_dim: int, what: str = "index") -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.what = what
        self.weight = UninitializedParameter()

    def initialize_parameters(self, index: Tensor) -> None:  # type: ignore[override]
        if self.has_uninitialized_params():
            rows = int(index.max()) + 1 if index.numel() else 1
            with torch.no_grad():
                self.weight.materialize((rows, self.embedding_dim))
                nn.init.normal_(self.weight)

    def forward(self, index: Tensor) -> Tensor:
        if index.numel() and int(index.max()) >= self.weight.shape[0]:
            raise ValueError(f"this encoder was built (on its first batch) for at most "
                             f"{self.weight.shape[0]} {self.what}s; a graph has "
                             f"{int(index.max()) + 1}")
        return F.embedding(index, self.weight)



class GraphEmbedding(nn.Module):
    r"""Initial node and edge features of a neural graph.

    .. math::
        h_i &= W_b\,\gamma_b(x_i) + P(i) + A[\text{act}_i] + \text{probe}_i \\
        e_{ij} &= W_e\,\gamma_e(\text{edge\_attr}_{ij}) + T[\text{type}_{ij}]

    :math:`\gamma` random Fourier features (:class:`FourierFeatures`), :math:`P(i)` the
    position embedding (its own vector per input and per output neuron index, one vector
    per hidden layer slot, :func:`layer_slot`), :math:`A` activation-type and :math:`T`
    edge-type embeddings.

    Args:
        node_dim (int): node feature size.
        edge_dim (int): edge feature size (0: no edge features).
        rff_dim (int): Fourier frequencies (features ``2 * rff_dim``).
        rff_sigma (float): frequency standard deviation.
        max_layers (int): layer slots of the hidden-layer embedding (and probes).
        num_probes (int): probe inputs (0: no probe features).
        position (bool): add position embeddings.
    """

    def __init__(self, node_dim: int, edge_dim: int, rff_dim: int = 128,
                 rff_sigma: float = 3.0, max_layers: int = 32, num_probes: int = 0,
                 position: bool = True) -> None:
        super().__init__()
        if max_layers < 3:
            raise ValueError(f"max_layers must be at least 3 (input, hidden, output), got "
                             f"{max_layers}")
        self.max_layers = max_layers
        self.node_rff = FourierFeatures(rff_dim, rff_sigma)
        self.node_proj = nn.Linear(2 * rff_dim, node_dim)
        self.activation = nn.Embedding(len(ACTIVATIONS), node_dim)
        self.position = position
        if position:
            self.input_position = IndexEmbedding(node_dim, "input neuron")
            self.output_position = IndexEmbedding(node_dim, "output neuron")
            self.layer_position = nn.Embedding(max_layers, node_dim)
        self.probes = ProbeFeatures(num_probes, node_dim, max_layers) if num_probes else None
        self.edge_dim = edge_dim
        if edge_dim:
            self.edge_rff = FourierFeatures(rff_dim, rff_sigma)
            self.edge_proj = nn.Linear(2 * rff_dim, edge_dim)
            self.edge_type = nn.Embedding(len(EDGE_TYPES), edge_dim)

    def nodes(self, batch: Batch) -> Tensor:
        h = self.node_proj(self.node_rff(batch.x)) + self.activation(batch.node_activation)
        if self.position:
            h = h + self.position_embedding(batch)
        if self.probes is not None:
            h = h + self.probes(batch)
        return h

    def position_embedding(self, batch: Batch) -> Tensor:
        node_type, node_position = batch.node_type, local_node_position(batch)
        pos = self.layer_position(layer_slot(batch.node_layer, node_type, self.max_layers))
        for kind, table in ((_INPUT, self.input_position), (_OUTPUT, self.output_position)):
            where = (node_type == kind).nonzero().squeeze(1)
            pos = pos.index_copy(0, where, table(node_position[where]).to(pos.dtype))
        return pos

    def edges(self, batch: Batch) -> Tensor:
        return self.edge_proj(self.edge_rff(batch.edge_attr)) + self.edge_type(batch.edge_type)

