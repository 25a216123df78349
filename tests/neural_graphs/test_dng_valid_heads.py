"""DNG's general path sends messages from the valid (edge, kernel element) entries only:
the same sums as every head of the grid with the padding masked out (its definition)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch
from torch_geometric.utils import scatter

from neural_graphs import layer_snapshots, to_neural_graph
from neural_graphs.encoders import DNGEncoder
from neural_graphs.zoo_vit import build_vit, vit_skeleton


def _mixed_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(2, 3, 5, padding=2), nn.ReLU(), nn.Conv2d(3, 4, 3),
                         nn.Tanh(), nn.Conv2d(4, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 3))


def gap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference relative to the largest magnitude (float64 sums reordered)."""
    return ((a - b).abs().max() / (1 + b.abs().max())).item()


NETWORKS = {"vit": lambda: build_vit(vit_skeleton(1, 3, 8)),
            "mixed-kernel cnn": _mixed_cnn}


@pytest.mark.parametrize("network", list(NETWORKS))
@pytest.mark.parametrize("per_layer", [False, True])
def test_valid_heads_equal_every_head_masked(network: str, per_layer: bool) -> None:
    torch.manual_seed(0)
    graphs = [to_neural_graph(NETWORKS[network]().double().eval(),
                              kernel_shape=(5, 5)) for _ in range(2)]
    batch = Batch.from_data_list(graphs)
    assert not bool(batch.edge_mask.all())  # padded entries to skip
    depth = int(batch.node_layer.max())
    torch.manual_seed(1)
    encoder = DNGEncoder(3, hidden=6, rff_dim=4, num_layers=depth if per_layer else None,
                         dense=False).double()
    batch = encoder.kernels(encoder.kernels.collate(batch))
    state = torch.randn(batch.num_nodes, 6, dtype=torch.float64, requires_grad=True)
    for snapshot in layer_snapshots(batch):
        layer = snapshot.step - 1
        targets = snapshot.target.nonzero().squeeze(1)
        projected = encoder._at(encoder.source_proj, layer)(state)
        ours = encoder._group_sums(*encoder._valid_entries(snapshot, targets), projected,
                                   len(targets), snapshot.edge_mask.shape[1], layer)
        heads = encoder.edge_heads(snapshot, layer)  # [E, K, d], zero at padding
        src, dst = snapshot.edge_index
        sources = projected[src]
        expected = scatter(heads * sources.unsqueeze(1), dst, 0, batch.num_nodes,
                           "sum")[targets]
        assert gap(ours, expected) < 1e-12
        (grad_ours,) = torch.autograd.grad(ours.square().sum(), state, retain_graph=True)
        (grad_expected,) = torch.autograd.grad(expected.square().sum(), state)
        assert gap(grad_ours, grad_expected) < 1e-12


@pytest.mark.parametrize("network", list(NETWORKS))
@pytest.mark.parametrize("recompute", [False, True])
def test_groups_of_targets_give_the_same_function_and_gradients(network: str,
                                                                recompute: bool) -> None:
    """The general path on CPU sums each step's messages in groups of targets bounded by
    ``CHUNK_BYTES`` (optionally recomputed in the backward pass): the same outputs and
    parameter gradients as one group, float64."""
    torch.manual_seed(0)
    batch = Batch.from_data_list([to_neural_graph(NETWORKS[network]().double().eval(),
                                                  kernel_shape=(5, 5)) for _ in range(3)])
    torch.manual_seed(1)
    whole = DNGEncoder(3, hidden=6, rff_dim=4, readout="mean", dense=False).double()
    whole(batch)  # lazy parts
    grouped = copy.deepcopy(whole)
    grouped.CHUNK_BYTES = 6 * 8 * 8  # a few entries and one target a group
    grouped.set_grad_checkpointing(recompute)
    snapshot = next(iter(layer_snapshots(grouped.kernels(grouped.kernels.collate(batch)))))
    targets = snapshot.target.nonzero().squeeze(1)
    slots = grouped._valid_entries(snapshot, targets)[-1]
    groups = grouped._target_groups(slots, len(targets), snapshot.edge_mask.shape[1],
                                    torch.zeros((), dtype=torch.float64))
    assert len(groups) == len(targets) > 1  # the budget really splits the step
    calls = []
    group_memory = grouped._group_memory

    def counting(*args):
        calls.append(1)
        return group_memory(*args)
    grouped._group_memory = counting
    outputs = []
    for encoder in (whole, grouped):
        out = encoder(batch)
        forward_calls = len(calls)
        out.square().sum().backward()
        outputs.append(out)
    assert len(calls) == forward_calls * (2 if recompute else 1)  # recomputed backward
    assert gap(outputs[1], outputs[0]) < 1e-12
    for (name, a), b in zip(whole.named_parameters(), grouped.parameters()):
        assert a.grad is not None, name
        assert gap(b.grad, a.grad) < 1e-12, name
    grouped.zero_grad()
    with torch.no_grad():
        assert gap(grouped(batch), outputs[0]) < 1e-12
