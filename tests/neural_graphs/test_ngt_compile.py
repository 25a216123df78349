"""NG-T with ``compile_layers=True`` (its relational layers through ``torch.compile``)
computes the eager function: outputs, node embeddings and every gradient, in float64
tightly on graphs of several sizes (size chunks of different shapes, default
configuration) and in float32 in the reference configuration, in row blocks. Compilation
takes most of these tests' time (on a cold cache, inductor's code generation and a g++
run per C++ kernel), so they compile the fewest configurations that cover these cases."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters
from torch_geometric.data import Batch

from neural_graphs import to_neural_graph
from neural_graphs.encoders import NGTransformer
from neural_graphs.encoders.transformer import compiled_relational_stack

pytestmark = pytest.mark.skipif(not hasattr(torch, "compile"), reason="torch.compile missing")


def _mlp(width: int, depth: int, dtype: torch.dtype) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(2, width), nn.Tanh()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(width, 1)).to(dtype)


def _pair(dtype: torch.dtype, batch: Batch, **kwargs) -> tuple[NGTransformer, NGTransformer]:
    """An eager NG-T, its lazy parts built on ``batch``, and a compiled copy."""
    torch.manual_seed(0)
    eager = NGTransformer(3, node_dim=8, edge_dim=4, num_layers=2, heads=2, attn_dim=8,
                          node_hidden=8, edge_hidden=8, head_hidden=8, rff_dim=8,
                          **kwargs).to(dtype)
    with torch.no_grad():
        eager(batch)
    compiled = copy.deepcopy(eager)
    compiled.compile_layers = True
    return eager, compiled


def _compare(eager: NGTransformer, compiled: NGTransformer, batch: Batch, tol: float) -> None:
    out = eager(batch)
    out_c = compiled(batch)
    assert (out - out_c).abs().max().item() <= tol * (1 + out.abs().max().item())
    states = eager.node_embeddings(batch).states
    states_c = compiled.node_embeddings(batch).states
    assert (states - states_c).abs().max().item() <= tol * (1 + states.abs().max().item())
    weights = torch.randn_like(out)
    grads = torch.autograd.grad((out * weights).sum(), list(eager.parameters()))
    grads_c = torch.autograd.grad((out_c * weights).sum(), list(compiled.parameters()))
    for name_param, a, b in zip(eager.named_parameters(), grads, grads_c):
        assert (a - b).abs().max().item() <= tol * (1 + a.abs().max().item()), name_param[0]


def test_compiled_layers_equal_eager_on_graphs_of_several_sizes() -> None:
    """Chunks of three sizes (two graphs each), compiled once with symbolic sizes: the
    eager function, float64, also with the chunks recomputed in the backward pass."""
    torch.manual_seed(1)
    mixed = Batch.from_data_list([to_neural_graph(_mlp(w, d, torch.float64))
                                  for w, d in ((3, 1), (12, 2), (6, 2)) for _ in range(2)])
    eager, compiled = _pair(torch.float64, mixed)
    sizes = torch.bincount(mixed.batch)
    chunks = compiled.graph_chunks(sizes, torch.float64, torch.device("cpu"))
    assert [(len(chunk), int(sizes[chunk].max())) for chunk in chunks] == [(2, 27), (2, 15),
                                                                            (2, 6)]
    graphs = counters["stats"]["unique_graphs"]
    _compare(eager, compiled, mixed, 1e-10)
    # past the activation budget the compiled chunks run again in the backward pass
    # (torch.utils.checkpoint around the compiled stack): the same function
    compiled.activation_budget = 0
    _compare(eager, compiled, mixed, 1e-10)
    assert counters["stats"]["unique_graphs"] - graphs == 1


def test_compiled_reference_configuration_in_row_blocks_equals_eager_in_float32() -> None:
    """The reference configuration in float32, its pair tensors in row blocks (8 and 7 of
    each graph's 15 neurons, as a graph too large for a chunk runs), compiled through the
    same stack: the eager function. One test for both, since each distinct configuration
    costs a compilation of its own (30 C++ kernels, over a minute of CPU on a cold cache)."""
    torch.manual_seed(2)
    batch = Batch.from_data_list([to_neural_graph(_mlp(6, 2, torch.float32))
                                  for _ in range(2)])
    eager, compiled = _pair(torch.float32, batch, embedding="reference", max_layers=4,
                            attn_scale="total", edge_node_bias=True)
    n, width = batch.num_nodes // 2, compiled.layers[0].pair_width
    compiled.CHUNK_BYTES = 8 * 2 * n * width * 4
    assert (n, compiled.pair_rows(2, n, torch.float32, torch.device("cpu"))) == (15, 8)
    _compare(eager, compiled, batch, 1e-5)


def test_compiled_stack_is_built_once() -> None:
    assert compiled_relational_stack() is compiled_relational_stack()
    graph = to_neural_graph(_mlp(3, 1, torch.float64))
    eager, compiled = _pair(torch.float64, Batch.from_data_list([graph]))
    assert not eager.compile_layers and compiled.compile_layers
    assert eager.state_dict().keys() == compiled.state_dict().keys()
