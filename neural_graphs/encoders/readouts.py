"""Readouts: graph features from node features, and the output MLP."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.utils import scatter

from neural_graphs.encoders.batch import _OUTPUT, graph_ids, local_node_position

__all__ = ["NodeEmbeddings", "Readout", "head_mlp"]


class NodeEmbeddings(NamedTuple):
    """The final state of every neuron of a batch of neural graphs, as the graph encoders'
    ``node_embeddings`` return it: ``states`` ``[N, D]`` in the node order of ``batch``, the
    batch as the encoder read it (collated, kernels on its grid), whose ``node_layer``,
    ``node_type`` and ``batch`` vectors say which neuron and network each row is."""

    states: Tensor
    batch: Batch

    def layer(self, index: int) -> Tensor:
        """The states of the neurons of layer ``index`` (0: inputs), ``[N_l, D]`` in batch
        order; ``ValueError`` when no network of the batch has that layer."""
        chosen = self.batch.node_layer == index
        if not bool(chosen.any()):
            depths = sorted(set(self.batch.node_layer.tolist()))
            raise ValueError(f"no neuron of layer {index} in this batch; its layers are "
                             f"{depths}")
        return self.states[chosen]


def head_mlp(hidden: int, out_dim: int, layers: int = 2) -> nn.Sequential:
    """``LazyLinear(hidden) -> ReLU -> ... -> Linear(out_dim)`` with ``layers`` hidden
    layers (the input width is read on the first call)."""
    modules: list[nn.Module] = [nn.LazyLinear(hidden), nn.ReLU()]
    for _ in range(layers - 1):
        modules += [nn.Linear(hidden, hidden), nn.ReLU()]
    modules.append(nn.Linear(hidden, out_dim))
    return nn.Sequential(*modules)


class Readout(nn.Module):
    r"""Graph features from node features.

    * ``"cat"``: the output neurons' features concatenated in ``node_position`` order (every
      graph of the batch must have the same number of output neurons), as the reference.
    * ``"mean"``, ``"max"``, ``"mean_max"``: pooling over all nodes of each graph (any
      architectures).

    Shapes:
        - input: :math:`(N, D)`
        - output: :math:`(G, D)` (``mean``, ``max``), :math:`(G, 2D)` (``mean_max``),
          :math:`(G, n_\text{out} D)` (``cat``)
    """

    MODES = ("cat", "mean", "max", "mean_max")

    def __init__(self, mode: str = "cat") -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"readout must be one of {self.MODES}, got {mode!r}")
        self.mode = mode

    def forward(self, h: Tensor, batch: Batch) -> Tensor:
        graphs = graph_ids(batch)
        size = batch.num_graphs
        if self.mode == "mean":
            return scatter(h, graphs, 0, size, "mean")
        if self.mode == "max":
            return scatter(h, graphs, 0, size, "max")
        if self.mode == "mean_max":
            return torch.cat([scatter(h, graphs, 0, size, "mean"),
                              scatter(h, graphs, 0, size, "max")], -1)
        out = (batch.node_type == _OUTPUT).nonzero().squeeze(1)
        counts = torch.bincount(graphs[out], minlength=size)
        if counts.numel() and (counts != counts[0]).any():
            raise ValueError(f"readout 'cat' needs the same number of output neurons in "
                             f"every graph, got {sorted(set(counts.tolist()))}; use "
                             "readout='mean', 'max' or 'mean_max' for such batches")
        n_out = int(counts[0]) if counts.numel() else 0
        position = local_node_position(batch)[out]
        if not out.numel() or int(position.max()) >= n_out or int(position.min()) < 0:
            raise ValueError("readout 'cat': every graph needs output neurons with "
                             "node_position 0..n-1")
        dense = h.new_zeros(size, n_out, h.shape[-1])
        dense = dense.index_put((graphs[out], position), h[out])
        return dense.reshape(size, -1)
