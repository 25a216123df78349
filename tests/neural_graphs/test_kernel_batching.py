"""Graphs of networks with different largest kernels batch together (issue 17): kernels
re-padded and centred to the batch's largest grid, and every graph encoder gives each
graph the same output batched as alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch

from neural_graphs import collate_graphs, run_neural_graph, to_neural_graph
from neural_graphs.encoders import NGGNN, DNGEncoder, FlatMLP, KernelGrid, NGTransformer, StatNN
from neural_graphs.kernels import largest_grid, pad_kernels


@pytest.fixture(autouse=True)
def _float64() -> None:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def cnn5() -> nn.Module:
    """A CNN whose largest kernel is 5x5."""
    return nn.Sequential(nn.Conv2d(3, 4, 5, padding=2), nn.ReLU(), nn.Conv2d(4, 3, 3),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))


def cnn3() -> nn.Module:
    """A CNN with 3x3 convolutions only."""
    return nn.Sequential(nn.Conv2d(3, 5, 3), nn.Tanh(), nn.Conv2d(5, 4, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def cnn2() -> nn.Module:
    """A CNN with an even (2x2) kernel: its grid is re-centred kernel by kernel."""
    return nn.Sequential(nn.Conv2d(3, 4, 2), nn.ReLU(), nn.Conv2d(4, 3, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2))


def graphs_of(*builders) -> tuple[list[nn.Module], list]:
    torch.manual_seed(0)
    nets = [build().eval() for build in builders]
    return nets, [to_neural_graph(net) for net in nets]


def test_plain_batch_of_mixed_kernels_fails_and_collate_graphs_pads() -> None:
    nets, graphs = graphs_of(cnn5, cnn3, cnn2, mlp)
    assert [tuple(g.kernel_shape) for g in graphs] == [(5, 5), (3, 3), (2, 2), (1,)]
    with pytest.raises(RuntimeError, match="Sizes of tensors must match"):
        Batch.from_data_list(graphs[:2])
    batch = collate_graphs(graphs)
    assert batch.edge_attr.shape[1] == 25
    assert largest_grid([(3, 3), (1,), (5, 2)]) == (5, 3)
    x = torch.randn(2, 3, 8, 8)
    for i, net in enumerate(nets):
        example = batch.get_example(i)
        # Exactly the graph to_neural_graph makes with the batch's grid.
        expected = to_neural_graph(net, kernel_shape=(5, 5))
        assert torch.equal(example.edge_attr, expected.edge_attr)
        assert torch.equal(example.edge_mask, expected.edge_mask)
        assert tuple(example.kernel_shape) == (5, 5)
        inputs = torch.randn(2, 3) if i == 3 else x
        with torch.no_grad():
            assert (run_neural_graph(example, inputs) - net(inputs)).abs().max() <= 1e-10
    # The input graphs are left as they were.
    assert graphs[1].edge_attr.shape[1] == 9


def test_pad_kernels_of_a_batch_and_its_errors() -> None:
    nets, graphs = graphs_of(cnn3, cnn3, cnn2)
    batch = Batch.from_data_list(graphs[:2])
    padded = pad_kernels(batch, (7, 7))
    for i, net in enumerate(nets[:2]):
        assert torch.equal(padded.get_example(i).edge_attr,
                           to_neural_graph(net, kernel_shape=(7, 7)).edge_attr)
    assert pad_kernels(batch, (3, 3)) is batch
    even = pad_kernels(Batch.from_data_list([graphs[2]]), (3, 3))  # 2x2 into 3x3
    assert torch.equal(even.edge_attr, to_neural_graph(nets[2], kernel_shape=(3, 3)).edge_attr)
    with pytest.raises(ValueError, match=r"\(3, 3\) does not fit"):
        pad_kernels(graphs[0], (1, 5))
    with pytest.raises(ValueError, match="1-d and 2-d"):
        collate_graphs([graphs[0], to_neural_graph(nn.Sequential(nn.Conv1d(1, 2, 3),
                                                                 nn.Flatten(),
                                                                 nn.Linear(8, 1)))])


ENCODERS = {
    "NGGNN": lambda: NGGNN(3, hidden=8, num_layers=2, rff_dim=8),
    "NGTransformer": lambda: NGTransformer(3, node_dim=8, edge_dim=4, num_layers=2, heads=2,
                                           attn_dim=8, node_hidden=8, edge_hidden=8,
                                           head_hidden=8, rff_dim=8, readout="mean"),
    "DNGEncoder": lambda: DNGEncoder(3, hidden=8, rff_dim=8),
    "StatNN": lambda: StatNN(3, hidden=8, max_layers=8),
}


@pytest.mark.parametrize("name", list(ENCODERS))
def test_encoders_read_mixed_kernels_batched_as_alone(name: str) -> None:
    _, graphs = graphs_of(cnn5, cnn3, mlp, cnn2)
    torch.manual_seed(1)
    enc = ENCODERS[name]().double()
    with torch.no_grad():
        batched = enc(collate_graphs(graphs))
        as_list = enc(graphs)  # a list of graphs is collated the same way
        alone = [enc(Batch.from_data_list([g])) for g in graphs]
    assert batched.shape == (4, 3)
    for i, out in enumerate(alone):
        torch.testing.assert_close(batched[i], out[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(as_list, batched, rtol=0, atol=0)


def test_flat_mlp_reads_one_architecture_at_any_grid() -> None:
    nets, graphs = graphs_of(cnn3, cnn3)
    wide = to_neural_graph(nets[1], kernel_shape=(5, 5))
    enc = FlatMLP(3, hidden=8).double()
    with torch.no_grad():
        batched = enc(collate_graphs([graphs[0], wide]))
        alone = enc(Batch.from_data_list([graphs[1]]))
    torch.testing.assert_close(batched[1], alone[0], rtol=0, atol=1e-12)


def test_kernel_grid_is_kept_in_the_state_dict_and_refuses_larger_kernels() -> None:
    _, graphs = graphs_of(cnn3, cnn5)
    enc = NGGNN(3, hidden=8, num_layers=1, rff_dim=8).double()
    enc(graphs[0])
    assert enc.kernels.grid.tolist() == [3, 3]
    with pytest.raises(ValueError, match=r"grid \(3, 3\).*kernel_shape="):
        enc(graphs[1])
    other = NGGNN(3, hidden=8, num_layers=1, rff_dim=8).double()
    other(graphs[0])
    other.load_state_dict(enc.state_dict())
    fixed = KernelGrid((7, 7))
    assert tuple(fixed(Batch.from_data_list([graphs[1]])).kernel_shape[0]) == (7, 7)
    with torch.no_grad():
        torch.testing.assert_close(other(graphs[0]), enc(graphs[0]), rtol=0, atol=0)
