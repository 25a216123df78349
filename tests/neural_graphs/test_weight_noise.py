"""Noise and dropout on a neural graph's parameters (neural_graphs.weight_noise): each
layer's noise is scaled by that layer's own standard deviation, dropout zeroes and rescales
as ``torch.nn.functional.dropout``, and padding, fixed edges and input neurons are never
touched; draws are pure functions of the generator and leave the graph given unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neural_graphs import EDGE_TYPES, NODE_TYPES, to_neural_graph
from neural_graphs.neuron_symmetry import NeuronSymmetryAugment, keyed_generator
from neural_graphs.weight_noise import PARAMETER_EDGE_TYPES, WeightNoiseAugment, layer_std
from neural_graphs.zoo_data import AugmentedGraphs
from neural_graphs.zoo_vit import SimpleViT


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 64, 3), nn.ReLU(), nn.Conv2d(64, 48, 5), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(48, 10)).double()


def _parameter_values(graph) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's valid kernel entries and its biases, in layer order."""
    out = []
    for layer in sorted(set(graph.edge_layer.tolist())):
        edges = graph.edge_layer == layer
        out.append((graph.edge_attr[edges][graph.edge_mask[edges]],
                    graph.x[graph.node_layer == layer, 0]))
    return out


def test_layer_std_is_each_layers_unbiased_std_of_its_valid_entries() -> None:
    torch.manual_seed(1)
    values = torch.randn(30, 4, dtype=torch.float64)
    mask = torch.rand(30, 4) < 0.7
    layer = torch.randint(0, 3, (30,))
    layer[0] = 3  # a layer with a single row
    mask[0] = torch.tensor([True, False, False, False])
    std = layer_std(values, mask, layer)
    for k in range(3):
        rows = layer == k
        expected = values[rows][mask[rows]].std()
        torch.testing.assert_close(std[rows, 0], expected.expand(int(rows.sum())),
                                   rtol=1e-12, atol=0)
    assert std[0, 0] == 0  # one valid entry: no spread to scale by


def test_noise_is_scaled_by_each_layers_std() -> None:
    graph = to_neural_graph(_cnn())
    noisy = WeightNoiseAugment(noise=0.1)(graph, keyed_generator(0))
    for (w, b), (w2, b2) in zip(_parameter_values(graph), _parameter_values(noisy)):
        ratio = (w2 - w) / (0.1 * w.std())
        assert ratio.numel() > 400 and abs(ratio.std().item() - 1) < 0.1
        assert abs(ratio.mean().item()) < 0.15
        assert ((b2 - b) / (0.1 * b.std())).abs().max() < 6
        assert not torch.equal(b, b2)
    assert torch.equal(noisy.edge_attr[~graph.edge_mask], graph.edge_attr[~graph.edge_mask])
    inputs = graph.node_type == NODE_TYPES.index("input")
    assert torch.equal(noisy.x[inputs], graph.x[inputs])


def test_dropout_zeroes_at_its_rate_and_rescales_the_rest() -> None:
    graph = to_neural_graph(_cnn())
    dropped = WeightNoiseAugment(dropout=0.2)(graph, keyed_generator(1))
    valid = graph.edge_mask
    before, after = graph.edge_attr[valid], dropped.edge_attr[valid]
    zeroed = (after == 0) & (before != 0)
    assert abs(zeroed.float().mean().item() - 0.2) < 0.02
    torch.testing.assert_close(after[~zeroed], before[~zeroed] / 0.8, rtol=1e-14, atol=0)
    assert torch.equal(dropped.edge_attr[~valid], graph.edge_attr[~valid])


def test_fixed_edges_and_a_draw_of_nothing_are_left_alone() -> None:
    torch.manual_seed(2)
    vit = SimpleViT(image_size=8, patch_size=4, num_classes=3, dim=8, depth=1, heads=2,
                    mlp_dim=8).double().eval()
    graph = to_neural_graph(vit)
    out = WeightNoiseAugment(noise=0.5, dropout=0.3)(graph, keyed_generator(2))
    fixed = ~torch.isin(graph.edge_type, torch.tensor(PARAMETER_EDGE_TYPES))
    assert {EDGE_TYPES[t] for t in graph.edge_type[fixed].tolist()} >= {"residual"}
    assert torch.equal(out.edge_attr[fixed], graph.edge_attr[fixed])
    assert not torch.equal(out.edge_attr[~fixed], graph.edge_attr[~fixed])
    same = WeightNoiseAugment()(graph, keyed_generator(2))
    assert not WeightNoiseAugment().active
    assert torch.equal(same.edge_attr, graph.edge_attr) and torch.equal(same.x, graph.x)


def test_draws_are_pure_and_compose_in_augmented_graphs() -> None:
    graph = to_neural_graph(_cnn())
    before = graph.edge_attr.clone()
    augment = WeightNoiseAugment(noise=0.1, dropout=0.01)
    a = augment(graph, keyed_generator(5))
    b = augment(graph, keyed_generator(5))
    assert torch.equal(a.edge_attr, b.edge_attr) and torch.equal(a.x, b.x)
    assert torch.equal(graph.edge_attr, before)
    both = AugmentedGraphs([graph], [NeuronSymmetryAugment(max_scale=2.0), augment], seed=1)
    again = AugmentedGraphs([graph], [NeuronSymmetryAugment(max_scale=2.0), augment], seed=1)
    assert torch.equal(both[0].edge_attr, again[0].edge_attr)
    noise_only = AugmentedGraphs([graph], augment, seed=1)[0]
    assert not torch.equal(both[0].edge_attr, noise_only.edge_attr)


def test_bad_strengths_are_refused() -> None:
    with pytest.raises(ValueError, match="noise >= 0"):
        WeightNoiseAugment(noise=-0.1)
    with pytest.raises(ValueError, match="dropout < 1"):
        WeightNoiseAugment(dropout=1.0)


def test_a_kept_plan_gives_the_same_draws_as_a_fresh_one() -> None:
    """AugmentedGraphs keeps each graph's NoisePlan (masks and layer stds) across epochs:
    the items equal the augmentation applied afresh, bit for bit, epoch after epoch."""
    graphs = [to_neural_graph(_cnn()), to_neural_graph(SimpleViT(depth=1).double())]
    augment = WeightNoiseAugment(noise=0.1, dropout=0.05)
    data = AugmentedGraphs(graphs, augment, seed=5)
    plan = augment.plan(graphs[0])
    for graph in graphs:  # the ViT's residual edges and every input neuron: std 0 on their rows
        graph_plan = augment.plan(graph)
        edge_rows, node_rows = graph_plan.edge_rows.flatten(), graph_plan.node_rows.flatten()
        attr = graph.edge_attr.reshape(len(edge_rows), -1)
        edge_std = layer_std(attr, graph.edge_mask.reshape(attr.shape) & edge_rows[:, None],
                             graph.edge_layer)[:, 0]
        x = graph.x.reshape(len(node_rows), -1)
        node_std = layer_std(x, node_rows[:, None].expand_as(x), graph.node_layer)[:, 0]
        assert torch.equal(graph_plan.edge_row_std.flatten(), torch.where(edge_rows, edge_std, 0.0))
        assert torch.equal(graph_plan.node_row_std.flatten(), torch.where(node_rows, node_std, 0.0))
        assert not node_rows.all()
    assert not graph_plan.edge_rows.all()
    for epoch in range(3):
        data.set_epoch(epoch)
        for index, graph in enumerate(graphs):
            fresh = augment(graph, keyed_generator(5, epoch, index))
            item = data[index]
            assert torch.equal(item.edge_attr, fresh.edge_attr)
            assert torch.equal(item.x, fresh.x)
    assert set(data._plans) == {0, 1}
    with pytest.raises(ValueError, match="plan of this graph"):
        augment(graphs[1], keyed_generator(0), plan)
    # a later augmentation reads changed weights, so it makes its plan every time
    both = AugmentedGraphs(graphs, [NeuronSymmetryAugment(max_scale=2.0), augment], seed=5)
    both[0]
    assert both._plans == {}
