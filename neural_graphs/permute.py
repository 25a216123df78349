"""Hidden-neuron permutations: the symmetry every weight-space encoder must respect.

Permuting the neurons of a hidden layer (conv channels, Linear units), with the rows of
its weights, its bias and the columns of the next layers' weights, leaves the network's
function unchanged. Layers tied by identity edges (residual additions, LayerNorm's
diagonal) share one permutation; neurons of grouped convolutions move only inside their
group; input and output neurons stay put.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from neural_graphs.graph import DIAGONAL_EDGE_TYPES, from_neural_graph, to_neural_graph

__all__ = ["hidden_permutation", "permute_graph", "permute_hidden"]


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def hidden_permutation(graph: Data, generator: torch.Generator | None = None) -> Tensor:
    """A random node relabelling ``new_id[old_id]`` that permutes hidden neurons only,
    respecting ties (residual and LayerNorm edges) and convolution groups."""
    layers = graph.layers
    parent = list(range(len(layers)))
    blocks = [1] * len(layers)
    for index, layer in enumerate(layers):
        for group in layer["groups"]:
            src = group["source"]
            if group["kind"] in DIAGONAL_EDGE_TYPES:
                # Attention: q, k, v and the heads share one permutation inside each head.
                parent[_find(parent, index)] = _find(parent, src)
                if group["kind"] == "attention":
                    heads = group["params"]["num_heads"]
                    blocks[index] = math.lcm(blocks[index], heads)
                    blocks[src] = math.lcm(blocks[src], heads)
            elif group["kind"] == "conv" and group["params"]["groups"] > 1:
                g = group["params"]["groups"]
                blocks[index] = math.lcm(blocks[index], g)
                blocks[src] = math.lcm(blocks[src], g)
    fixed = {_find(parent, 0), _find(parent, len(layers) - 1)}
    tie_blocks: dict[int, int] = {}
    for index in range(len(layers)):
        root = _find(parent, index)
        tie_blocks[root] = math.lcm(tie_blocks.get(root, 1), blocks[index])
    new_id = torch.arange(graph.num_nodes)
    drawn: dict[int, Tensor] = {}
    for index, layer in enumerate(layers):
        root = _find(parent, index)
        if root in fixed:
            continue
        n = layer["size"]
        if root not in drawn:
            k = tie_blocks[root]
            size = n // k
            perm = torch.stack([torch.randperm(size, generator=generator) + b * size
                                for b in range(k)]).reshape(-1) if size else torch.arange(0)
            drawn[root] = perm
        lo = layer["nodes"][0]
        new_id[lo + drawn[root]] = lo + torch.arange(n)
    return new_id


def permute_graph(graph: Data, generator: torch.Generator | None = None) -> Data:
    """``graph`` with its hidden neurons relabelled by :func:`hidden_permutation`: node
    features move with their neurons and edges keep their weights."""
    new_id = hidden_permutation(graph, generator).to(graph.edge_index.device)
    out = graph.clone()
    x = torch.empty_like(graph.x)
    x[new_id] = graph.x
    out.x = x
    out.edge_index = new_id[graph.edge_index]
    # Parameters kept per layer (class token, position embedding) move with the neurons.
    out.layers = copy.deepcopy(graph.layers)
    for layer in out.layers:
        lo, hi = layer["nodes"]
        local = (new_id[lo:hi] - lo).cpu()
        for role, (key, value) in layer["tokens"].items():
            moved = torch.empty_like(value)
            moved[..., local] = value
            layer["tokens"][role] = (key, moved)
    return out


def permute_hidden(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """A copy of ``model`` computing the same function with every hidden layer's neurons
    randomly permuted (BatchNorm statistics move with their channels)."""
    graph = to_neural_graph(model, batchnorm="nodes")
    return from_neural_graph(permute_graph(graph, generator), model)
