"""Probe features: learned inputs run through every Linear-chain network (MLP, SIREN) of a
batch at once, each neuron's activations over them as its features."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parameter import UninitializedParameter
from torch_geometric.data import Batch

from neural_graphs.activations import activate
from neural_graphs.encoders.batch import (
    _graph_list,
    edge_ptr,
    graph_structure,
    layer_slot,
    node_ptr,
)

__all__ = ["ProbeFeatures", "linear_chain_weights", "probe_activations"]


def _linear_chain(layers: Sequence[dict[str, Any]]) -> bool:
    """Whether a network is a chain of Linear layers (an MLP, a SIREN)."""
    for index, layer in enumerate(layers[1:], start=1):
        groups = layer["groups"]
        if layer["kind"] != "linear" or len(groups) != 1 or groups[0]["kind"] != "linear" \
                or groups[0]["source"] != index - 1 or groups[0]["pre"] \
                or (layer.get("batchnorm") and not layer["batchnorm"].get("folded", True)):
            return False
    return len(layers) > 1 and not layers[0].get("flatten_input", False)


def linear_chain_weights(batch: Batch, graphs: Sequence[int], layers: Sequence[dict]
                         ) -> list[tuple[Tensor, Tensor]]:
    """Dense ``(weight [G, out, in], bias [G, out])`` of each layer of the graphs
    ``graphs`` (one architecture ``layers``, a chain of Linear layers), gathered from
    ``edge_attr`` by each edge's (target, source) place, so relabelled graphs give
    consistently permuted weights."""
    device = batch.edge_index.device
    ids = torch.as_tensor(list(graphs), device=device)
    nodes0 = node_ptr(batch)[ids]
    edges0 = edge_ptr(batch)[ids]
    value = (batch.edge_attr * batch.edge_mask).sum(-1)  # the one weight of a Linear edge
    rows = torch.arange(len(graphs), device=device)[:, None]
    out = []
    for layer in layers[1:]:
        group = layer["groups"][0]
        start, stop = group["edges"]
        lo, hi = layer["nodes"]
        src_lo, src_hi = layers[group["source"]]["nodes"]
        edges = edges0[:, None] + torch.arange(start, stop, device=device)  # [G, n]
        dst = batch.edge_index[1, edges] - nodes0[:, None] - lo
        src = batch.edge_index[0, edges] - nodes0[:, None] - src_lo
        weight = value.new_zeros(len(graphs), hi - lo, src_hi - src_lo)
        weight = weight.index_put((rows.expand_as(dst), dst, src), value[edges])
        bias = batch.x[nodes0[:, None] + torch.arange(lo, hi, device=device), 0]
        out.append((weight, bias))
    return out



def probe_activations(batch: Batch, inputs: Tensor) -> tuple[Tensor, Tensor]:
    r"""Every neuron's activation on ``P`` probe inputs, for all Linear-chain networks
    (MLPs, SIRENs) of the batch at once: graphs are grouped by architecture and each
    group runs as one batched matrix product per layer,
    :math:`h_l = \phi_l(W_l h_{l-1} + b_l + o_l)` (:math:`o_l` the layer's constant
    offset). A network with ``n`` inputs reads the first ``n`` columns of ``inputs``.

    Returns:
        ``(activations [N, P], probed [N] bool)``: zeros and False for the neurons of
        graphs that are not Linear chains (convolutional networks get no probes).
    """
    all_layers = _graph_list(batch, "layers")
    groups: dict[tuple, list[int]] = {}
    for index, layers in enumerate(all_layers):
        if _linear_chain(layers):
            groups.setdefault(graph_structure(layers), []).append(index)
    acts = inputs.new_zeros(batch.num_nodes, inputs.shape[0])
    probed = torch.zeros(batch.num_nodes, dtype=torch.bool, device=acts.device)
    starts = node_ptr(batch)
    for members in groups.values():
        layers = all_layers[members[0]]
        n_in = layers[0]["size"]
        if n_in > inputs.shape[1]:
            raise ValueError(f"the probe inputs have {inputs.shape[1]} coordinates, a "
                             f"network has {n_in} inputs")
        ids = torch.as_tensor(members, device=acts.device)
        h = inputs[:, :n_in].t().unsqueeze(0).expand(len(members), -1, -1)  # [G, in, P]
        states = [h]
        for layer, (weight, bias) in zip(layers[1:], linear_chain_weights(batch, members,
                                                                           layers)):
            z = torch.baddbmm(bias.unsqueeze(-1) + layer["offset"], weight, h)
            h = activate(z, layer["activation"], layer["activation_param"])
            states.append(h)
        for layer, h in zip(layers, states):
            lo, hi = layer["nodes"]
            rows = (starts[ids][:, None] + torch.arange(lo, hi, device=acts.device)).reshape(-1)
            acts = acts.index_put((rows,), h.reshape(-1, h.shape[-1]))
            probed[rows] = True
    return acts, probed


class ProbeFeatures(nn.Module):
    r"""Probe features: ``num_probes`` learned inputs (initialised uniform in
    :math:`[-1, 1]`) run through every Linear-chain network of the batch; each neuron's
    activations over the probes, through a per-layer-slot Linear and LayerNorm, are its
    probe features (zero for neurons of other networks, e.g. CNNs).

    Args:
        num_probes (int): learned probe inputs.
        out_dim (int): feature size.
        max_layers (int): layer slots (see :func:`layer_slot`).

    Shapes:
        - output: :math:`(N, \text{out\_dim})`
    """

    def __init__(self, num_probes: int, out_dim: int, max_layers: int) -> None:
        super().__init__()
        self.num_probes = num_probes
        self.max_layers = max_layers
        self.inputs = UninitializedParameter()
        self.proj = nn.Parameter(torch.empty(max_layers, num_probes, out_dim))
        self.proj_bias = nn.Parameter(torch.zeros(max_layers, out_dim))
        self.norm = nn.LayerNorm(out_dim)
        bound = 1 / math.sqrt(num_probes)
        nn.init.uniform_(self.proj, -bound, bound)

    def forward(self, batch: Batch) -> Tensor:
        if isinstance(self.inputs, UninitializedParameter):
            n_in = max((layers[0]["size"] for layers in _graph_list(batch, "layers")),
                       default=1)
            with torch.no_grad():
                self.inputs.materialize((self.num_probes, n_in), device=batch.x.device,
                                        dtype=self.proj.dtype)
                self.inputs.uniform_(-1.0, 1.0)
        acts, probed = probe_activations(batch, self.inputs)
        slot = layer_slot(batch.node_layer, batch.node_type, self.max_layers)
        # One product per layer slot in use, not a copy of the slot's [P, out_dim] matrix
        # for every neuron (128 SIRENs at 64 probes and 128 features: 268 MiB a step).
        feats = self.proj_bias[slot]
        for used in slot.unique().tolist():
            rows = (slot == used).nonzero().squeeze(1)
            feats = feats.index_add(0, rows, acts[rows] @ self.proj[used])
        return self.norm(feats) * probed.unsqueeze(-1).to(feats.dtype)
