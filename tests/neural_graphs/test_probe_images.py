"""Probe images through convolutional networks: every channel's probe activation equals
the mean of its feature map as the per-network runner (``run_neural_graph``, itself
tested equal to the networks) computes it, for many architectures batched together,
folded and unfolded BatchNorm, relabelled graphs, 1-d and 2-d convolutions; gradients
reach the probe images; networks the runner cannot read get no probes."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch

import neural_graphs.run as run_module
from neural_graphs import SIREN, run_neural_graph, to_neural_graph
from neural_graphs.encoders import NGGNN, DNGEncoder, NGTransformer, probe_activations
from neural_graphs.encoders.probes import ProbeFeatures
from neural_graphs.permute import permute_graph

KERNEL = (3, 3)


class Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.bn(self.conv(x)) + x)


def plain_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 3, stride=2),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))


def mixed_cnn() -> nn.Module:
    """Strides, padding, a grouped convolution, BatchNorm, max pooling, a residual block
    and a Linear that reads a 2x2 map."""
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), nn.Sigmoid(),
                         Block(6), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(24, 3))


def with_statistics(model: nn.Module) -> nn.Module:
    """BatchNorm statistics away from the identity, so folding them matters."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.3, 0.3)
    return model.eval()


def recorded_states(graph, images: torch.Tensor, monkeypatch) -> list[torch.Tensor]:
    """Each layer's states as ``run_neural_graph`` computes them for one graph."""
    states = [images]
    update = run_module._update

    def recording(graph_, index, layer, states_):
        out = update(graph_, index, layer, states_)
        states.append(out)
        return out

    with monkeypatch.context() as patch:
        patch.setattr(run_module, "_update", recording)
        run_neural_graph(graph, images)
    return states


def checked_activations(graphs, images: torch.Tensor, monkeypatch) -> torch.Tensor:
    """The probe activations of ``graphs`` batched, each convolutional graph's checked
    against its own run, layer by layer."""
    coords = torch.rand(images.shape[0], 2, dtype=images.dtype) * 2 - 1
    acts, probed = probe_activations(Batch.from_data_list(graphs), coords, images)
    assert probed.all()
    start = 0
    for graph in graphs:
        rows = slice(start, start + graph.num_nodes)
        start += graph.num_nodes
        if graph.layers[1]["kind"] == "linear":
            continue  # the SIREN: test_encoders checks the Linear chains
        states = recorded_states(graph, images, monkeypatch)
        assert len(states) == len(graph.layers)
        for layer, state in zip(graph.layers, states):
            lo, hi = layer["nodes"]
            expected = state.flatten(2).mean(-1) if state.dim() > 2 else state
            torch.testing.assert_close(acts[rows][lo:hi].t(), expected, rtol=0, atol=1e-12)
    return acts


def test_probe_images_match_each_network_in_a_mixed_batch(monkeypatch) -> None:
    torch.manual_seed(0)
    nets = [n.double() for n in (plain_cnn(), with_statistics(mixed_cnn()), plain_cnn(),
                                 with_statistics(mixed_cnn()))]
    images = torch.randn(5, 1, 9, 9, dtype=torch.float64)
    folded = [to_neural_graph(nets[0], kernel_shape=KERNEL),
              to_neural_graph(nets[1], kernel_shape=KERNEL),
              to_neural_graph(SIREN(hidden_features=5).double(), kernel_shape=KERNEL),
              permute_graph(to_neural_graph(nets[2], kernel_shape=KERNEL),
                            torch.Generator().manual_seed(1)),
              to_neural_graph(nets[3], kernel_shape=KERNEL)]
    acts = checked_activations(folded, images, monkeypatch)
    unfolded = [to_neural_graph(net, kernel_shape=KERNEL, batchnorm="nodes")
                for net in (nets[3], nets[1])]
    acts_unfolded = checked_activations(unfolded, images, monkeypatch)
    # The folded and the unfolded graph of one network agree on every neuron.
    n = folded[0].num_nodes
    torch.testing.assert_close(acts[n:n + folded[1].num_nodes],
                               acts_unfolded[unfolded[0].num_nodes:], rtol=0, atol=1e-12)


def test_probe_images_through_1d_convolutions(monkeypatch) -> None:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv1d(2, 3, 5, padding=2), nn.SiLU(), nn.Conv1d(3, 4, 3, stride=2),
                        nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                        nn.Linear(4, 2)).double()
    graph = to_neural_graph(net, kernel_shape=(5,))
    images = torch.randn(4, 2, 16, dtype=torch.float64)
    acts, probed = probe_activations(Batch.from_data_list([graph, graph]),
                                     torch.zeros(4, 1, dtype=torch.float64), images)
    assert probed.all()
    states = recorded_states(graph, images, monkeypatch)
    torch.testing.assert_close(states[-1], net(images))
    for layer, state in zip(graph.layers, states):
        lo, hi = layer["nodes"]
        expected = state.flatten(2).mean(-1) if state.dim() > 2 else state
        torch.testing.assert_close(acts[lo:hi].t(), expected, rtol=0, atol=1e-12)
        torch.testing.assert_close(acts[graph.num_nodes + lo:graph.num_nodes + hi].t(),
                                   expected, rtol=0, atol=1e-12)


def test_convolutional_networks_get_no_probes_without_images_or_a_runner() -> None:
    torch.manual_seed(2)
    layer = nn.Sequential(nn.TransformerEncoderLayer(4, 2, 6, dropout=0.0, batch_first=True))
    graphs = [to_neural_graph(plain_cnn(), kernel_shape=KERNEL),
              to_neural_graph(layer.eval(), kernel_shape=KERNEL)]
    batch = Batch.from_data_list(graphs)
    acts, probed = probe_activations(batch, torch.rand(3, 4))
    assert not probed.any() and acts.abs().sum() == 0
    acts, probed = probe_activations(batch, torch.rand(3, 4), torch.randn(3, 1, 8, 8))
    n = graphs[0].num_nodes
    assert probed[:n].all() and not probed[n:].any()
    with pytest.raises(ValueError, match="same number of probes"):
        probe_activations(batch, torch.rand(3, 4), torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match="3 channels, a network has 1 input"):
        probe_activations(batch, torch.rand(3, 4), torch.randn(3, 3, 8, 8))


def test_probe_images_learn_float32_like_float64() -> None:
    """ProbeFeatures' images get gradients, and float32 follows float64."""
    torch.manual_seed(3)
    graphs = [to_neural_graph(with_statistics(mixed_cnn()), kernel_shape=KERNEL)
              for _ in range(3)]
    features = ProbeFeatures(4, 6, max_layers=8, image_shape=(1, 10, 10)).double()
    batch = Batch.from_data_list(graphs)
    out64 = features(batch.to("cpu"))
    weights = torch.randn_like(out64)
    (grad64,) = torch.autograd.grad((out64 * weights).sum(), features.images)
    assert grad64.abs().sum() > 0
    features32 = ProbeFeatures(4, 6, max_layers=8, image_shape=(1, 10, 10))
    batch32 = Batch.from_data_list(graphs)
    batch32.x, batch32.edge_attr = batch32.x.float(), batch32.edge_attr.float()
    features32.load_state_dict({k: v.float() for k, v in features.state_dict().items()})
    out32 = features32(batch32)
    (grad32,) = torch.autograd.grad((out32 * weights.float()).sum(), features32.images)
    torch.testing.assert_close(out32.double(), out64, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grad32.double(), grad64, rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="image_shape must be"):
        ProbeFeatures(4, 6, max_layers=8, image_shape=(10,))


def test_image_probes_take_no_coordinates_and_train_every_parameter() -> None:
    """With image_shape the probes are images only: Linear chains get none, and on a batch
    with a CNN every parameter gets a gradient (DDP needs no unused parameters)."""
    torch.manual_seed(5)
    features = ProbeFeatures(3, 4, max_layers=8, image_shape=(1, 8, 8))
    assert features.inputs is None
    graphs = [to_neural_graph(SIREN(hidden_features=4), kernel_shape=KERNEL),
              to_neural_graph(plain_cnn(), kernel_shape=KERNEL)]
    out = features(Batch.from_data_list(graphs))
    assert out[:graphs[0].num_nodes].abs().sum() == 0
    assert out[graphs[0].num_nodes:].abs().sum() > 0
    weights = torch.randn_like(out)
    grads = torch.autograd.grad((out * weights).sum(), list(features.parameters()))
    assert len(grads) == len(list(features.parameters())) == 5
    assert all(g.abs().sum() > 0 for g in grads)
    with pytest.raises(ValueError, match="needs probe inputs, probe images or both"):
        probe_activations(Batch.from_data_list(graphs), None)


@pytest.mark.parametrize("encoder", [
    lambda: NGGNN(1, hidden=8, num_layers=2, rff_dim=4, num_probes=3,
                  probe_shape=(1, 10, 10)),
    lambda: NGTransformer(1, node_dim=8, edge_dim=4, num_layers=1, heads=2, attn_dim=8,
                          node_hidden=8, edge_hidden=8, head_hidden=8, rff_dim=4,
                          num_probes=3, probe_shape=(1, 10, 10)),
    lambda: DNGEncoder(1, hidden=8, rff_dim=4, num_probes=3, probe_shape=(1, 10, 10)),
])
def test_graph_encoders_read_probe_images(encoder) -> None:
    """Each graph encoder's output depends on its probe images, which learn."""
    torch.manual_seed(4)
    model = encoder().double()
    batch = Batch.from_data_list([to_neural_graph(plain_cnn().double(), kernel_shape=KERNEL)
                                  for _ in range(2)])
    out = model(batch)
    images = model.embed.probes.images
    (grad,) = torch.autograd.grad(out.sum(), images)
    assert grad.abs().sum() > 0
    with torch.no_grad():
        images.add_(1.0)
    assert not torch.allclose(model(batch), out)
