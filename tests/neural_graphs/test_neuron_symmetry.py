"""Function-preserving rescalings of hidden neurons (neural_graphs.neuron_symmetry): every
draw keeps the network's function (float64, against the network itself), the neurons
that qualify are exactly those the symmetry covers, and the zoo's augmented training split
is a pure function of (seed, epoch, index)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neural_graphs import run_neural_graph, to_neural_graph
from neural_graphs.inr import SIREN
from neural_graphs.neuron_symmetry import (
    NeuronSymmetryAugment,
    keyed_generator,
    scale_neurons,
    symmetric_neurons,
)
from neural_graphs.zoo_cnn import build_cnn
from neural_graphs.zoo_data import AugmentedGraphs
from neural_graphs.zoo_vit import SimpleViT


def _layer(channels: int, kernel: int, stride: int, batch_norm: bool, residual: str) -> dict:
    return {"out_channels": channels, "kernel_size": kernel, "stride": stride,
            "batch_norm": batch_norm, "residual": residual}


def _cnn(activation: str, residual: bool = False) -> nn.Module:
    layers = [_layer(8, 3, 2, True, "none"), _layer(8, 3, 1, False, "identity"),
              _layer(6, 5, 2, True, "projection"), _layer(5, 3, 2, False, "none")]
    if not residual:
        layers = [_layer(6, 3, 2, False, "none"), _layer(7, 3, 2, True, "none"),
                  _layer(5, 3, 2, False, "none")]
    net = build_cnn({"in_channels": 1, "num_classes": 4, "activation": activation,
                     "dropout": 0.0, "layers": layers}).double().eval()
    torch.manual_seed(0)
    for module in net.modules():  # non-trivial BatchNorm statistics to fold
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.normal_()
            module.bias.data.normal_()
    return net


def _pooled(activation: type[nn.Module], pool: nn.Module) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 5, 3, padding=1), activation(), pool,
                         nn.Conv2d(5, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 3)).double().eval()


def _hidden(graph) -> torch.Tensor:
    layers = graph.layers
    mask = torch.zeros(graph.num_nodes, dtype=torch.bool)
    mask[layers[1]["nodes"][0]:layers[-1]["nodes"][0]] = True
    return mask


def _images(size: int = 12) -> torch.Tensor:
    return torch.randn(3, 1, size, size, dtype=torch.float64)


def _points() -> torch.Tensor:
    return torch.rand(5, 2, dtype=torch.float64) * 2 - 1


# name: (network, the symmetries it has, its inputs)
NETWORKS = {
    "relu cnn": (lambda: _cnn("relu"), {"scale"}, _images),
    "tanh cnn": (lambda: _cnn("tanh"), {"flip"}, _images),
    "leaky_relu residual cnn": (lambda: _cnn("leaky_relu", residual=True), {"scale"},
                                _images),
    "tanh residual cnn": (lambda: _cnn("tanh", residual=True), {"flip"}, _images),
    # The second convolution is a relu layer: scalable in all three.
    "tanh max-pool": (lambda: _pooled(nn.Tanh, nn.MaxPool2d(2)), {"scale"}, _images),
    "relu max-pool": (lambda: _pooled(nn.ReLU, nn.MaxPool2d(2)), {"scale"}, _images),
    "tanh avg-pool": (lambda: _pooled(nn.Tanh, nn.AvgPool2d(2)), {"flip", "scale"},
                      _images),
    "siren": (lambda: SIREN().double(), {"flip"}, _points),
    "gelu cnn": (lambda: _cnn("gelu"), set(), _images),
    # Attention, LayerNorm and residual paths everywhere: no neuron qualifies.
    "simplevit": (lambda: SimpleViT().double().eval(), set(), lambda: _images(28)),
}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_every_draw_keeps_the_function(name: str) -> None:
    build, symmetry, make_inputs = NETWORKS[name]
    net = build()
    graph = to_neural_graph(net, batchnorm="fold")
    inputs = make_inputs()
    expected = net(inputs)
    flippable, scalable = symmetric_neurons(graph)
    assert not bool(((flippable | scalable) & ~_hidden(graph)).any())
    augment = NeuronSymmetryAugment(sign_flip=0.5, max_scale=4.0)
    changed = 0
    for draw in range(4):
        scale = augment.draw(graph, keyed_generator(draw))
        assert bool((scale[~(flippable | scalable)] == 1).all())
        assert bool((scale[~scalable].abs() == 1).all())
        moved = scale_neurons(graph, scale)
        changed += int(not torch.equal(moved.edge_attr, graph.edge_attr))
        assert torch.allclose(run_neural_graph(moved, inputs), expected, rtol=0, atol=1e-10)
    # Each symmetry the network has is used; a network without one is left alone.
    assert bool(flippable.any()) == ("flip" in symmetry)
    assert bool(scalable.any()) == ("scale" in symmetry)
    assert (changed > 0) == bool(symmetry)


def test_the_neurons_that_qualify() -> None:
    relu = to_neural_graph(_cnn("relu"), batchnorm="fold")
    flippable, scalable = symmetric_neurons(relu)
    assert torch.equal(scalable, _hidden(relu)) and not bool(flippable.any())
    # Residual paths have fixed weights: the neurons they join keep their scale.
    residual = to_neural_graph(_cnn("relu", residual=True), batchnorm="fold")
    _, scalable = symmetric_neurons(residual)
    joined = {g["source"] for layer in residual.layers for g in layer["groups"]
              if g["kind"] == "residual"}
    joined |= {i for i, layer in enumerate(residual.layers)
               if any(g["kind"] == "residual" for g in layer["groups"])}
    for index, layer in enumerate(residual.layers):
        lo, hi = layer["nodes"]
        assert bool(scalable[lo:hi].any()) == (index not in joined and 0 < index
                                               < len(residual.layers) - 1), layer["path"]
    # Max pooling commutes with positive scales, not with a sign flip.
    flippable, _ = symmetric_neurons(to_neural_graph(_pooled(nn.Tanh, nn.MaxPool2d(2))))
    assert not bool(flippable.any())


def test_scaling_a_neuron_the_symmetry_does_not_cover_changes_the_function() -> None:
    for net, kind in ((_cnn("gelu"), "scale"), (_cnn("relu"), "flip")):
        graph = to_neural_graph(net, batchnorm="fold")
        scale = torch.ones(graph.num_nodes, dtype=torch.float64)
        scale[_hidden(graph)] = 2.0 if kind == "scale" else -1.0
        inputs = torch.randn(3, 1, 12, 12, dtype=torch.float64)
        assert not torch.allclose(run_neural_graph(scale_neurons(graph, scale), inputs),
                                  net(inputs), atol=1e-4)
    with pytest.raises(ValueError, match="one scale per neuron"):
        scale_neurons(graph, scale[1:])
    with pytest.raises(ValueError, match="max_scale"):
        NeuronSymmetryAugment(max_scale=0.5)


def test_augmented_graphs_are_a_pure_function_of_seed_epoch_and_index() -> None:
    graphs = [to_neural_graph(_cnn(a), batchnorm="fold") for a in ("relu", "tanh")]
    for graph in graphs:
        graph.statnn_features = torch.zeros(1, 3)
    before = [g.edge_attr.clone() for g in graphs]
    augment = NeuronSymmetryAugment(sign_flip=0.5, max_scale=2.0)
    data, again = AugmentedGraphs(graphs, augment, seed=3), AugmentedGraphs(graphs, augment, 3)
    first = [data[i].edge_attr for i in range(2)]
    assert all(torch.equal(a, again[i].edge_attr) for i, a in enumerate(first))
    assert all(not torch.equal(a, b) for a, b in zip(first, before))
    assert "statnn_features" not in data[0] and "statnn_features" in graphs[0]
    assert all(torch.equal(g.edge_attr, b) for g, b in zip(graphs, before))
    data.set_epoch(1)
    assert not torch.equal(data[0].edge_attr, first[0])
    assert not torch.equal(AugmentedGraphs(graphs, augment, seed=4)[0].edge_attr, first[0])
