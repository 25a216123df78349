"""A graph encoder whose output head also reads StatNN's per-layer statistics."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from neural_graphs.encoders.baselines import LayerStatistics
from neural_graphs.encoders.batch import as_batch
from neural_graphs.encoders.readouts import head_mlp

__all__ = ["WithStatistics"]


class WithStatistics(nn.Module):
    r"""A graph encoder and StatNN's statistics read by one MLP: the encoder's graph
    embedding concatenated with the scaled per-layer statistics
    (:class:`~neural_graphs.encoders.baselines.LayerStatistics`), as the NFN reference's
    ``append_stats`` appends them to its invariant features:

    .. math::
        y = \operatorname{MLP}\big([\,f_\theta(G)\,;\ \phi(s(G))\,]\big)

    The statistics are invariant to permutations of neurons inside a layer, so the
    wrapper keeps the invariance of the encoder it wraps.

    Args:
        encoder (nn.Module): a graph encoder mapping a batch of neural graphs to
            ``[G, D]`` (built with ``out_dim=D``).
        out_dim (int): output size.
        hidden (int): MLP width (StatNN's default).
        num_layers (int): MLP hidden layers.
        max_layers (int): layer slots of the statistics.
        feature_scale (str): ``"signed_log"`` or ``"raw"`` (the statistics' scaling).

    Shapes:
        - input: a :class:`~torch_geometric.data.Batch` of graphs
        - output: :math:`(G, \text{out\_dim})`
    """

    def __init__(self, encoder: nn.Module, out_dim: int, hidden: int = 256,
                 num_layers: int = 2, max_layers: int = 32,
                 feature_scale: str = "signed_log") -> None:
        super().__init__()
        self.encoder = encoder
        self.statistics = LayerStatistics(max_layers, feature_scale)
        self.mlp = head_mlp(hidden, out_dim, num_layers)

    def attach_features(self, graphs: list[Data], batch_size: int = 256) -> None:
        """Store each graph's statistics in it
        (:meth:`~neural_graphs.encoders.baselines.LayerStatistics.attach_features`)."""
        self.statistics.attach_features(graphs, batch_size)

    def forward(self, graphs: Batch | Data) -> Tensor:
        batch = as_batch(graphs)
        statistics = self.statistics(batch)
        embedding = self.encoder(batch)
        if embedding.dim() != 2 or embedding.shape[0] != batch.num_graphs:
            raise ValueError(f"the wrapped encoder must return [G, D] for {batch.num_graphs} "
                             f"graphs, got {tuple(embedding.shape)}")
        return self.mlp(torch.cat([embedding, statistics], dim=1))
