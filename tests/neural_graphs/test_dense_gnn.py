"""NGGNN's dense path (neural_graphs.encoders.dense) computes the general path's function:
outputs and every parameter's gradient within 1e-10 in float64, on random layouts."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch

from neural_graphs import SIREN, to_neural_graph
from neural_graphs.encoders import NGGNN, dense
from neural_graphs.encoders.dense import DenseLayout, LayoutCache
from neural_graphs.encoders.gnn import PNAEdgeConv
from neural_graphs.encoders.reference.ngnn import reference_nggnn_kwargs

TOL = 1e-10


def random_mlp(seed: int) -> tuple[int, ...]:
    """Random widths: 1-4 inputs, 1-4 hidden layers of 1-7 neurons, 1-3 outputs."""
    g = torch.Generator().manual_seed(seed)
    depth = int(torch.randint(1, 5, (1,), generator=g))
    return (int(torch.randint(1, 5, (1,), generator=g)),
            *torch.randint(1, 8, (depth,), generator=g).tolist(),
            int(torch.randint(1, 4, (1,), generator=g)))


def mlp(widths: tuple[int, ...]) -> nn.Module:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers += [nn.Linear(a, b), nn.Tanh() if i % 2 else nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class ResidualCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.conv = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(self.conv(x) + x)
        return self.fc(x.mean((2, 3)))


def plain_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 5), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))


NETWORKS = {**{f"mlp{seed}": (lambda seed=seed: mlp(random_mlp(seed))) for seed in range(4)},
            "siren": lambda: SIREN(hidden_features=6),
            "cnn": plain_cnn, "resnet": ResidualCNN}
LINEAR = [name for name in NETWORKS if name.startswith("mlp")] + ["siren"]


def batch_of(make: Callable[[], nn.Module], graphs: int = 3) -> Batch:
    """``graphs`` networks of one architecture (different weights), float64."""
    return Batch.from_data_list([to_neural_graph(make().double()) for _ in range(graphs)])


def run(model: NGGNN, batch: Batch, use_dense: bool) -> tuple[torch.Tensor, dict]:
    """Output and parameter gradients of one path (dropout drawn from the same seed)."""
    model.dense = use_dense
    model.zero_grad()
    torch.manual_seed(1)
    out = model(batch)
    assert model.last_path == ("dense" if use_dense else "general")
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                          if p.grad is not None}


def assert_paths_agree(model: NGGNN, batch: Batch) -> None:
    model(batch)  # lazy parameters and degree calibration
    general, dense_ = run(model, batch, False), run(model, batch, True)
    assert (general[0] - dense_[0]).abs().max().item() <= TOL
    assert general[1].keys() == dense_[1].keys() and general[1]
    for name, grad in general[1].items():
        assert (grad - dense_[1][name]).abs().max().item() <= TOL, name


@pytest.mark.parametrize("tile_rows", [4096, 7, 1])
@pytest.mark.parametrize("network", list(NETWORKS))
def test_dense_equals_general(network: str, tile_rows: int,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dense, "TILE_ROWS", tile_rows)  # tiles of whole graphs or targets
    model = NGGNN(3, hidden=8, num_layers=3, rff_dim=8, readout="mean_max").double()
    assert_paths_agree(model, batch_of(NETWORKS[network]))


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("network", LINEAR)
def test_dense_equals_general_in_the_reference_configuration(
        network: str, residual: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # Reversed edges, batch-wide LayerNorm, dropout (training mode), biased edge update.
    monkeypatch.setattr(dense, "TILE_ROWS", 11)
    graphs = batch_of(NETWORKS[network])
    kwargs = reference_nggnn_kwargs(tuple(graphs.layer_layout[0]), layer_stats=None,
                                    hidden=8, rff_dim=8)
    model = NGGNN(3, **{**kwargs, "residual": residual}).double().train()
    assert_paths_agree(model, graphs)


@pytest.mark.parametrize("network", ["mlp1", "siren", "cnn", "resnet"])
def test_dense_equals_general_with_reversed_edges(network: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dense, "TILE_ROWS", 11)
    model = NGGNN(3, hidden=8, num_layers=3, rff_dim=8, reverse_edges=True,
                  dropout=0.1).double().train()
    assert_paths_agree(model, batch_of(NETWORKS[network]))
    assert model.edge_direction.weight.grad is not None


@pytest.mark.parametrize("use_dense", [False, True])
def test_reversed_edges_carry_what_follows_a_neuron_back_to_it(use_dense: bool) -> None:
    # Without reversed edges a first-layer neuron's state cannot depend on the weights of
    # the layers after it; with them it does.
    torch.manual_seed(0)
    net = mlp((2, 3, 3, 1)).double()
    changed = mlp((2, 3, 3, 1)).double()
    changed.load_state_dict(net.state_dict())
    with torch.no_grad():
        changed[-1].weight.mul_(-2.0)
    graphs = [to_neural_graph(net), to_neural_graph(changed)]
    hidden = graphs[0].node_layer == 1
    for reverse in (False, True):
        model = NGGNN(1, hidden=8, num_layers=3, rff_dim=8, reverse_edges=reverse,
                      dense=use_dense).double()
        first, second = (model.node_embeddings(Batch.from_data_list([g])).states[hidden]
                         for g in graphs)
        assert torch.allclose(first, second, atol=1e-12) != reverse


def test_other_aggregators_scalers_and_no_edge_updates() -> None:
    model = NGGNN(2, hidden=6, num_layers=2, rff_dim=4, aggregators=("sum", "var", "max"),
                  scalers=("identity", "attenuation", "linear", "inverse_linear"),
                  update_edges=False, readout="mean").double()
    assert_paths_agree(model, batch_of(plain_cnn))
    unsupported = NGGNN(2, hidden=6, rff_dim=4, aggregators=("mean", "softmax")).double()
    unsupported(batch_of(plain_cnn))
    assert unsupported.last_path == "general"


def test_ties_share_the_gradient_as_in_pyg() -> None:
    # Two sources with equal features along equal edges: their messages tie at the min
    # and max of every channel.
    conv = PNAEdgeConv(4, 4).double()
    conv.aggr_module.avg_deg_log.fill_(1.3)
    batch = Batch.from_data_list([to_neural_graph(mlp((2, 3, 1)).double())] * 2)
    plan = LayoutCache()(batch)
    x = torch.randn(batch.num_nodes, 4, dtype=torch.float64)
    x[1::6] = x[0::6]  # input neurons 0 and 1 of each graph
    x.requires_grad_()
    e = torch.randn(batch.edge_index.shape[1], 4, dtype=torch.float64)
    e[1::2] = e[0::2].clone()
    e.requires_grad_()
    weight = torch.linspace(-1, 1, batch.num_nodes * 4, dtype=torch.float64).view(-1, 4)
    general = conv(x, batch.edge_index, e)
    blocks = [e.view(2, -1, 4).index_select(1, b.edges).view(2, b.count, b.degree, 4)
              for b in plan.layout.blocks]
    out, _ = dense.layer(conv, x, blocks, plan)
    assert (out - general).abs().max().item() <= TOL
    grads = [torch.autograd.grad((o * weight).sum(), [x, e, *conv.parameters()])
             for o in (general, out)]
    for a, b in zip(*grads):
        assert (a - b).abs().max().item() <= TOL


def test_mixed_batch_takes_the_general_path_and_agrees_per_graph() -> None:
    model = NGGNN(3, hidden=8, num_layers=2, rff_dim=8, readout="mean").double().eval()
    graphs = [to_neural_graph(mlp((3, 4, 2)).double()), to_neural_graph(mlp((3, 5, 2)).double()),
              to_neural_graph(mlp((3, 4, 2)).double())]
    with torch.no_grad():
        mixed = model(Batch.from_data_list(graphs))
        assert model.last_path == "general"
        for index, graph in enumerate(graphs):
            alone = model(Batch.from_data_list([graph]))
            assert model.last_path == "dense"
            assert (alone - mixed[index]).abs().max().item() <= TOL


def test_layouts_are_analysed_once_and_checked_per_batch() -> None:
    cache = LayoutCache()
    first, second = batch_of(NETWORKS["siren"], 4), batch_of(NETWORKS["siren"], 2)
    plan = cache(first)
    assert plan is not None and cache(first) is plan  # the same edge_index again
    other = cache(second)
    assert other is not None and other.layout is plan.layout and other.num_graphs == 2
    assert cache(Batch.from_data_list([*first.to_data_list(), *second.to_data_list()])) \
        .layout is plan.layout
    mixed = Batch.from_data_list([first.get_example(0), to_neural_graph(mlp((1, 2, 3)))])
    assert cache(mixed) is None
    assert LayoutCache(max_blocks=1)(first) is None  # too many blocks: general path


def test_blocks_of_linear_reversed_and_residual_layouts() -> None:
    graph = to_neural_graph(mlp((2, 3, 4, 1)))
    source, target = graph.edge_index
    layout = DenseLayout(source, target, graph.num_nodes)
    assert [(b.start, b.count, b.degree, b.source_start) for b in layout.blocks] == \
        [(2, 3, 2, 0), (5, 4, 3, 2), (9, 1, 4, 5)]
    both = DenseLayout(torch.cat([source, target]), torch.cat([target, source]),
                       graph.num_nodes)
    assert [(b.start, b.count, b.degree, b.shared) for b in both.blocks] == \
        [(0, 2, 3, True), (2, 3, 6, True), (5, 4, 4, True), (9, 1, 4, True)]
    assert both.blocks[1].sources.tolist() == [0, 1, 5, 6, 7, 8]
    resnet = to_neural_graph(ResidualCNN())
    layout = DenseLayout(*resnet.edge_index, resnet.num_nodes)
    assert any(not b.shared for b in layout.blocks)  # the residual identity edges
    assert sum(b.count * b.degree for b in layout.blocks) == resnet.edge_index.shape[1]
