"""NG-T pads graphs of different sizes in chunks by size: the same function as each graph
alone (float64, outputs, node embeddings and gradients)."""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.data import Batch

from neural_graphs import to_neural_graph
from neural_graphs.encoders import NGTransformer


def _mlp(width: int, depth: int) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(3, width), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(width, 2)).double()


def test_chunks_by_size_equal_each_graph_alone() -> None:
    torch.manual_seed(0)
    nets = [_mlp(4, 1), _mlp(40, 2), _mlp(5, 1), _mlp(24, 3), _mlp(40, 2)]
    graphs = [to_neural_graph(net) for net in nets]
    encoder = NGTransformer(3, node_dim=8, edge_dim=4, num_layers=2, heads=2,
                            attn_dim=8).double()
    batch = Batch.from_data_list(graphs)
    sizes = torch.tensor([g.num_nodes for g in graphs])
    chunks = encoder.size_chunks(sizes)
    assert len(chunks) >= 3 and sorted(torch.cat(chunks).tolist()) == list(range(5))
    assert len(encoder.size_chunks(torch.full((4,), 67))) == 1
    together = encoder(batch)
    embeddings = encoder.node_embeddings(batch).states
    alone = torch.cat([encoder(Batch.from_data_list([g])) for g in graphs])
    assert (together - alone).abs().max().item() < 1e-12
    alone_states = torch.cat([encoder.node_embeddings(Batch.from_data_list([g])).states
                              for g in graphs])
    assert (embeddings - alone_states).abs().max().item() < 1e-12
    weights = torch.randn_like(together)
    grads = torch.autograd.grad((together * weights).sum(), list(encoder.parameters()))
    grads_alone = torch.autograd.grad((alone * weights).sum(), list(encoder.parameters()))
    for a, b in zip(grads, grads_alone):
        assert (a - b).abs().max().item() < 1e-12
