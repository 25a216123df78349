"""NG-T pads graphs of different sizes in chunks by size, and runs its layers over chunks of
graphs within a byte budget on CPU: the same function as each graph alone, or as all at
once (float64, outputs, node embeddings and gradients)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch

from neural_graphs import to_neural_graph
from neural_graphs.encoders import NGTransformer
from neural_graphs.encoders import transformer as transformer_module
from utils.memory import graphs_per_chunk


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


def _siren_batch(count: int) -> Batch:
    torch.manual_seed(1)
    nets = [nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(),
                          nn.Linear(16, 1)).double() for _ in range(count)]
    return Batch.from_data_list([to_neural_graph(net) for net in nets])


def _run(encoder: NGTransformer, batch: Batch) -> tuple[torch.Tensor, ...]:
    out = encoder(batch)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    grads = torch.autograd.grad((out * weights).sum(), list(encoder.parameters()))
    return (out, encoder.node_embeddings(batch).states, *grads)


def test_graph_chunks_within_the_byte_budget_compute_the_same_function() -> None:
    """7 SIREN-like graphs in chunks of 3, 3 and 1 graphs: outputs, node embeddings and
    every gradient equal one run over all 7 (float64)."""
    batch = _siren_batch(7)
    encoder = NGTransformer(3, node_dim=8, edge_dim=4, num_layers=3, heads=2,
                            attn_dim=8).double()
    # the widest: the edge update's hidden layer (64) over q, k and value modulation (3 x 8)
    assert encoder.layers[0].pair_width == 64
    whole = _run(encoder, batch)
    n = batch.num_nodes // 7
    encoder.CHUNK_BYTES = 3 * n * n * encoder.layers[0].pair_width * 8 + 1
    chunked = _run(encoder, batch)
    for a, b in zip(whole, chunked):
        assert (a - b).abs().max().item() < 1e-12


def _count_chunks(monkeypatch) -> list[int]:
    """The graphs of each call of the relational layers, as the calls happen."""
    seen: list[int] = []
    original = transformer_module.relational_stack

    def counting(layers, h, e, mask, rows=None):
        seen.append(h.shape[0])
        return original(layers, h, e, mask, rows)
    monkeypatch.setattr(transformer_module, "relational_stack", counting)
    return seen


def test_grad_checkpointing_recomputes_each_chunk_to_the_same_gradients(monkeypatch
                                                                       ) -> None:
    """With set_grad_checkpointing each chunk's layers run again in the backward pass
    (counted) and give the same outputs, node embeddings and gradients (float64)."""
    batch = _siren_batch(7)
    encoder = NGTransformer(3, node_dim=8, edge_dim=4, num_layers=2, heads=2,
                            attn_dim=8).double()
    n = batch.num_nodes // 7
    encoder.CHUNK_BYTES = 3 * n * n * encoder.layers[0].pair_width * 8 + 1
    kept = _run(encoder, batch)
    calls = _count_chunks(monkeypatch)
    encoder.set_grad_checkpointing()
    out = encoder(batch)
    assert calls == [3, 3, 1]
    out.sum().backward()
    assert sorted(calls) == sorted([3, 3, 1] * 2)  # each chunk once more, backward
    encoder.zero_grad()
    recomputed = _run(encoder, batch)
    for a, b in zip(kept, recomputed):
        assert (a - b).abs().max().item() < 1e-12


def test_graph_chunks_split_as_the_budget_says(monkeypatch) -> None:
    batch = _siren_batch(7)
    encoder = NGTransformer(3, node_dim=8, edge_dim=4, num_layers=1, heads=2, attn_dim=8,
                            edge_hidden=8).double()
    assert encoder.layers[0].pair_width == 3 * 8  # q, k and the value modulation per pair
    n = batch.num_nodes // 7
    encoder.pair_activation_bytes(torch.float64)  # its one probe forward, not counted below
    seen = _count_chunks(monkeypatch)
    encoder.CHUNK_BYTES = 3 * n * n * encoder.layers[0].pair_width * 8 + 1
    encoder(batch)
    assert seen == [3, 3, 1]
    seen.clear()
    encoder.CHUNK_BYTES = 1  # below one graph: one graph a chunk
    encoder(batch)
    assert seen == [1] * 7
    seen.clear()
    encoder.CHUNK_BYTES = NGTransformer.CHUNK_BYTES  # these small graphs: one chunk
    encoder(batch)
    assert seen == [7]


def test_each_chunk_builds_its_own_dense_edges(monkeypatch) -> None:
    """The [graphs, n, n, D] edge tensor is built per chunk of graphs, never for the whole
    size chunk: no tensor of the step is wider than the budget allows."""
    batch = _siren_batch(7)
    encoder = NGTransformer(3, node_dim=8, edge_dim=4, num_layers=1, heads=2, attn_dim=8,
                            edge_hidden=8).double()
    n = batch.num_nodes // 7
    encoder.CHUNK_BYTES = 3 * n * n * encoder.layers[0].pair_width * 8 + 1
    built: list[tuple[int, ...]] = []
    original = NGTransformer.dense_edges

    def spying(self, e, graph, src, dst, graphs, size):
        out = original(self, e, graph, src, dst, graphs, size)
        built.append(tuple(out.shape[:3]))
        return out
    monkeypatch.setattr(NGTransformer, "dense_edges", spying)
    encoder(batch)
    assert built == [(3, n, n), (3, n, n), (1, n, n)]


def test_chunks_are_a_cpu_matter() -> None:
    assert graphs_per_chunk(10, 128, "cpu", budget=40) == 4
    assert graphs_per_chunk(100, 128, "cpu", budget=40) == 1
    assert graphs_per_chunk(1, 128, "cpu", budget=1 << 20) == 128
    assert graphs_per_chunk(100, 128, "cuda", budget=40) == 128


def test_chunk_members_are_each_chunks_nodes_and_edges_in_batch_order() -> None:
    """The one-sort bookkeeping equals scanning the batch for each chunk's graphs, for
    chunks in any order (size buckets come largest first)."""
    generator = torch.Generator().manual_seed(0)
    sizes = torch.randint(1, 6, (11,), generator=generator)
    graph_of_node = torch.repeat_interleave(torch.arange(11), sizes)
    graph_of_edge = torch.sort(torch.randint(0, 11, (60,), generator=generator)).values
    chunks = list(torch.randperm(11, generator=generator).split(3))
    chunks = [chunk.sort().values for chunk in chunks]
    local, node_order, nodes_of, edges_of = transformer_module._chunk_members(
        chunks, graph_of_node, graph_of_edge)
    for chunk, nodes, edges in zip(chunks, nodes_of, edges_of, strict=True):
        inside = torch.isin(torch.arange(11), chunk)
        assert torch.equal(nodes, inside[graph_of_node].nonzero().squeeze(1))
        assert torch.equal(edges, inside[graph_of_edge].nonzero().squeeze(1))
        assert torch.equal(local[chunk], torch.arange(len(chunk)))
    assert torch.equal(node_order, torch.cat(list(nodes_of)))


def _budget_encoder(batch: Batch) -> tuple[NGTransformer, int]:
    """An encoder whose chunks of this batch are 3, 3 and 1 graphs, and their neurons."""
    encoder = NGTransformer(3, node_dim=8, edge_dim=4, num_layers=2, heads=2, attn_dim=8,
                            activation_budget=None).double()
    n = batch.num_nodes // 7
    encoder.CHUNK_BYTES = 3 * n * n * encoder.layers[0].pair_width * 8 + 1
    return encoder, n


def test_activation_budget_recomputes_the_chunks_beyond_it(monkeypatch) -> None:
    """With room for four graphs' activations the first chunk (3) is kept, the second (3
    more) would pass the budget and is recomputed in the backward pass, the third (1) fits
    beside the first: counted calls, and the same outputs and gradients (float64)."""
    batch = _siren_batch(7)
    encoder, n = _budget_encoder(batch)
    kept = _run(encoder, batch)
    per_pair = encoder.pair_activation_bytes(torch.float64)
    calls = _count_chunks(monkeypatch)
    encoder.activation_budget = int(4 * n * n * per_pair) + 1
    out = encoder(batch)
    assert calls == [3, 3, 1]
    out.sum().backward()
    assert calls == [3, 3, 1, 3]
    encoder.zero_grad()
    within_budget = _run(encoder, batch)
    for a, b in zip(kept, within_budget):
        assert (a - b).abs().max().item() < 1e-12


def test_activation_budget_none_keeps_all_zero_recomputes_all_and_eval_ignores_it(
        monkeypatch) -> None:
    batch = _siren_batch(7)
    encoder, _ = _budget_encoder(batch)
    calls = _count_chunks(monkeypatch)
    encoder(batch).sum().backward()
    assert calls == [3, 3, 1]
    calls.clear()
    encoder.activation_budget = 0
    encoder(batch).sum().backward()
    assert calls[0] == 1  # the probe of pair_activation_bytes, once: a graph of 32 neurons
    assert sorted(calls[1:]) == sorted([3, 3, 1] * 2)
    calls.clear()
    encoder(batch).sum().backward()
    assert sorted(calls) == sorted([3, 3, 1] * 2)
    calls.clear()
    with torch.no_grad():
        encoder(batch)
    assert calls == [3, 3, 1]
    assert NGTransformer(3).activation_budget == NGTransformer.ACTIVATION_BUDGET == 3 << 30


def test_pair_activation_bytes_bounds_what_a_larger_graph_keeps() -> None:
    """The estimate per pair, measured on PROBE_NEURONS neurons, times the pairs of a larger
    padded chunk is at least what that chunk's layers keep for the backward pass (every
    saved storage but the parameters, counted here independently), and within 10% of it;
    float64 keeps twice the bytes of float32."""
    encoder = NGTransformer(3, node_dim=8, edge_dim=4, num_layers=2, heads=2, attn_dim=8)
    per_pair32 = encoder.pair_activation_bytes(torch.float32)
    parameters = {p.untyped_storage().data_ptr() for p in encoder.layers.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.untyped_storage().data_ptr() not in parameters:
            saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor
    graphs, n = 3, 2 * NGTransformer.PROBE_NEURONS
    h = torch.randn(graphs, n, 8, requires_grad=True)
    e = torch.randn(graphs, n, n, 4, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = transformer_module.relational_stack(encoder.layers, h, e,
                                                  torch.ones(graphs, n, dtype=torch.bool))
    kept = sum(saved.values())
    assert out.shape == (graphs, n, 8)
    assert 0.9 * graphs * n * n * per_pair32 <= kept <= graphs * n * n * per_pair32
    per_pair64 = encoder.double().pair_activation_bytes(torch.float64)
    assert 1.9 * per_pair32 < per_pair64 <= 2 * per_pair32


def test_activation_budget_must_be_none_or_nonnegative() -> None:
    with pytest.raises(ValueError, match="activation_budget must be None or at least 0"):
        NGTransformer(3, activation_budget=-1)


@pytest.mark.parametrize("modulate_v", [True, False])
@pytest.mark.parametrize("update_edges", [True, False])
def test_layer_in_row_blocks_equals_the_whole(modulate_v: bool, update_edges: bool) -> None:
    """A relational layer over its pair tensors in blocks of 3 rows (the last block short)
    equals it over all of them: node and edge outputs and the gradients of its inputs and
    parameters, two padded graphs, float64."""
    torch.manual_seed(2)
    layer = transformer_module.RelationalLayer(8, 4, 8, 16, 12, 2, update_edges,
                                               modulate_v).double()
    h = torch.randn(2, 10, 8, dtype=torch.float64, requires_grad=True)
    e = torch.randn(2, 10, 10, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 7:] = False

    def run(rows: int | None) -> list[torch.Tensor]:
        h_out, e_out = layer(h, e, mask, rows)
        loss = (h_out * torch.linspace(-1, 1, h_out.numel()).view_as(h_out)).sum() \
            + (e_out * torch.linspace(1, -2, e_out.numel()).view_as(e_out)).sum()
        return [h_out, e_out, *torch.autograd.grad(loss, [h, e, *layer.parameters()])]

    for a, b in zip(run(None), run(3)):
        assert (a - b).abs().max().item() < 1e-12


def test_graph_too_large_for_a_chunk_runs_in_row_blocks(monkeypatch) -> None:
    """Past CHUNK_BYTES for one graph the layers run in row blocks (counted), with the same
    outputs, node embeddings and gradients as without (float64); off the CPU, or where a
    chunk fits, never."""
    batch = _siren_batch(3)
    encoder = NGTransformer(3, node_dim=8, edge_dim=4, num_layers=3, heads=2,
                            attn_dim=8).double()
    whole = _run(encoder, batch)
    n, width = batch.num_nodes // 3, encoder.layers[0].pair_width
    encoder.CHUNK_BYTES = 5 * n * width * 8  # five rows of one graph's widest tensor
    rows: list[int] = []
    original = transformer_module.relational_stack

    def recording(layers, h, e, mask, block_rows=None):
        rows.append(block_rows)
        return original(layers, h, e, mask, block_rows)
    monkeypatch.setattr(transformer_module, "relational_stack", recording)
    blocked = _run(encoder, batch)
    assert rows and set(rows) == {5}
    for a, b in zip(whole, blocked):
        assert (a - b).abs().max().item() < 1e-12
    cpu = torch.device("cpu")
    assert encoder.pair_rows(1, n, torch.float64, cpu) == 5
    assert encoder.pair_rows(1, n, torch.float32, cpu) == 10
    assert encoder.pair_rows(1, 4, torch.float64, cpu) == 4  # all rows: one block
    assert encoder.pair_rows(1, n, torch.float64, torch.device("meta")) == n
    assert encoder.pair_rows(1000, n, torch.float64, cpu) == 1
