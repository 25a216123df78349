"""Probe features: learned inputs run through every network of a batch at once, each
neuron's activations over them as its features: coordinates through Linear-chain networks
(MLPs, SIRENs), images through convolutional ones (a channel's feature is its feature
map's mean)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
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
from neural_graphs.kernels import graph_grids, kernel_columns
from neural_graphs.run import layer_output

__all__ = ["ProbeFeatures", "linear_chain_weights", "probe_activations", "stacked_group_weight"]


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
    ``edge_attr`` by each edge's (target, source) place (:func:`stacked_group_weight`), so
    relabelled graphs give consistently permuted weights."""
    device = batch.edge_index.device
    nodes0 = node_ptr(batch)[torch.as_tensor(list(graphs), device=device)]
    out = []
    for index, layer in enumerate(layers[1:], start=1):
        lo, hi = layer["nodes"]
        weight = stacked_group_weight(batch, graphs, layers, index, layer["groups"][0])
        bias = batch.x[nodes0[:, None] + torch.arange(lo, hi, device=device), 0]
        out.append((weight, bias))
    return out


#: Edge groups and pre-processing steps the batched convolutional runner reads.
_CONV_GROUPS = ("conv", "linear", "flatten", "residual")
_CONV_PRE = ("pool", "flatten")


def _convolutional(layers: Sequence[dict[str, Any]]) -> bool:
    """Whether a network (not a Linear chain) is one the batched runner reads: image
    input, conv / linear / flatten / residual edge groups, pooling and flattening before
    them, zero padding (CNNs, ResNets; not transformers)."""
    if len(layers) < 2 or layers[0].get("flatten_input") or layers[0].get("neurons_last"):
        return False
    for layer in layers[1:]:
        if layer["kind"] not in ("conv", "linear"):
            return False
        for group in layer["groups"]:
            if group["kind"] not in _CONV_GROUPS \
                    or any(step[0] not in _CONV_PRE for step in group["pre"]) \
                    or group["params"].get("padding_mode", "zeros") != "zeros":
                return False
    return True


def stacked_group_weight(batch: Batch, graphs: Sequence[int], layers: Sequence[dict],
                         index: int, group: dict[str, Any]) -> Tensor:
    """:func:`neural_graphs.graph.group_weight` of the graphs ``graphs`` of ``batch`` (one
    architecture ``layers``, one kernel grid) stacked: ``[G, *weight shape]``. Each edge
    lands at its (target, source) place, so relabelled graphs read consistently permuted
    weights."""
    device = batch.edge_index.device
    ids = torch.as_tensor(list(graphs), device=device)
    start, stop = group["edges"]
    edges = edge_ptr(batch)[ids][:, None] + torch.arange(start, stop, device=device)
    nodes0 = node_ptr(batch)[ids][:, None]
    layer, source = layers[index], layers[group["source"]]
    dst = batch.edge_index[1, edges] - nodes0 - layer["nodes"][0]
    src = batch.edge_index[0, edges] - nodes0 - source["nodes"][0]
    kind = group["kind"]
    shape = tuple(group["params"]["kernel_size"]) if kind == "conv" else \
        tuple(group["params"]["map_shape"]) if kind == "flatten" else (1,)
    values = kernel_columns(batch.edge_attr[edges.reshape(-1)], shape,
                            graph_grids(batch)[graphs[0]])
    n_out, per_group = layer["size"], source["size"]
    if kind == "conv":
        per_group //= group["params"]["groups"]
        src = src - dst // (n_out // group["params"]["groups"]) * per_group
    rows = torch.arange(len(graphs), device=device)[:, None] * (n_out * per_group)
    flat = (rows + dst * per_group + src).reshape(-1)
    out = values.new_zeros(len(graphs) * n_out * per_group, values.shape[1])
    out = out.index_copy(0, flat, values)
    if kind == "conv":
        return out.view(len(graphs), n_out, per_group, *shape)
    if kind == "linear":
        return out.view(len(graphs), n_out, per_group)
    return out.view(len(graphs), n_out, -1)


def _pre(state: Tensor, steps: Sequence) -> Tensor:
    """A group's pooling and flattening on stacked states ``[P, G, C, *S]``."""
    for step in steps:
        if step[0] == "pool":
            p, g = state.shape[:2]
            pooled = getattr(nn, step[1])(**step[2])(state.flatten(1, 2))
            state = pooled.view(p, g, -1, *pooled.shape[2:])
        else:
            state = state.flatten(2)
    return state


def _message(state: Tensor, weight: Tensor, group: dict[str, Any]) -> Tensor:
    """One edge group's messages to G networks at once: ``[P, G, C_in, *S]`` (G may be 1,
    the shared input) and ``[G, C_out, ...]`` weights to ``[P, G, C_out, *S']``."""
    p, g = state.shape[0], weight.shape[0]
    kind = group["kind"]
    if kind == "conv":
        params = group["params"]
        conv = F.conv1d if len(params["kernel_size"]) == 1 else F.conv2d
        groups = params["groups"]
        stacked = weight.flatten(0, 1)
        if state.shape[1] == 1 and groups == 1:  # one input read by every network
            out = conv(state[:, 0], stacked, None, params["stride"], params["padding"],
                       params["dilation"])
        else:
            out = conv(state.expand(p, g, *state.shape[2:]).flatten(1, 2), stacked, None,
                       params["stride"], params["padding"], params["dilation"], g * groups)
        return out.view(p, g, -1, *out.shape[2:])
    if kind == "flatten":
        state = state.flatten(2)
    state = state.expand(p, g, *state.shape[2:])
    return torch.einsum("pgi...,goi->pgo...", state, weight)


def _side_by_side(state: Tensor, graphs: int) -> Tensor:
    """Stacked states ``[P, G, C, *S]`` (G may be 1, the shared input) as one network's
    ``[P, G * C, *S]``: every network's neurons side by side."""
    return state.expand(state.shape[0], graphs, *state.shape[2:]).flatten(1, 2)


def _run_convolutional(batch: Batch, graphs: Sequence[int], layers: Sequence[dict],
                       images: Tensor) -> list[Tensor]:
    """Every layer's states ``[P, G, C, *S]`` of the graphs ``graphs`` (one architecture)
    on ``images`` ``[P, C_0, *S_0]``: the summed messages of each layer through
    :func:`neural_graphs.run.layer_output` with the neurons of all G networks side by
    side, as :func:`neural_graphs.run.run_neural_graph` computes one network."""
    ids = torch.as_tensor(list(graphs), device=images.device)
    nodes0 = node_ptr(batch)[ids][:, None]
    states = [images.unsqueeze(1)]
    for index, layer in enumerate(layers[1:], start=1):
        z, residuals = None, []
        for group in layer["groups"]:
            h = _pre(states[group["source"]], group["pre"])
            if group["kind"] == "residual":
                residuals.append(_side_by_side(h, len(graphs)))
                continue
            weight = stacked_group_weight(batch, graphs, layers, index, group)
            msg = _side_by_side(_message(h, weight.to(h.dtype), group), len(graphs))
            z = msg if z is None else z + msg
        if z is None:
            z = residuals.pop(0)
        lo, hi = layer["nodes"]
        x = batch.x[(nodes0 + torch.arange(lo, hi, device=images.device)).reshape(-1)]
        out = layer_output(z, layer, x.to(z.dtype), residuals)
        states.append(out.unflatten(1, (len(graphs), -1)))
    return states


def probe_activations(batch: Batch, inputs: Tensor | None, images: Tensor | None = None
                      ) -> tuple[Tensor, Tensor]:
    r"""Every neuron's activation on ``P`` probe inputs, for all the networks of the batch
    at once: graphs are grouped by architecture and each group runs as one batched
    operation per layer. Linear chains (MLPs, SIRENs) read ``inputs``,
    :math:`h_l = \phi_l(W_l h_{l-1} + b_l + o_l)` (:math:`o_l` the layer's constant
    offset); a network with ``n`` inputs reads the first ``n`` columns. Convolutional
    networks (CNNs, ResNets) read ``images`` when given, through grouped convolutions of
    the stacked kernels, and a channel's activation is its feature map's mean.

    Args:
        batch (Batch): graphs from :func:`~neural_graphs.to_neural_graph`.
        inputs (Tensor, optional): ``[P, n]`` probe coordinates for the Linear chains
            (None: they get no probes).
        images (Tensor, optional): ``[P, C, *S]`` probe images for convolutional networks
            (None: they get no probes).

    Returns:
        ``(activations [N, P], probed [N] bool)``: zeros and False for the neurons of
        graphs that get no probes (transformers; Linear chains without ``inputs``, CNNs
        without ``images``).
    """
    if inputs is None and images is None:
        raise ValueError("probe_activations needs probe inputs, probe images or both")
    if inputs is not None and images is not None and images.shape[0] != inputs.shape[0]:
        raise ValueError(f"inputs and images must hold the same number of probes, got "
                         f"{inputs.shape[0]} and {images.shape[0]}")
    probes = inputs if inputs is not None else images
    all_layers = _graph_list(batch, "layers")
    grids = graph_grids(batch)
    chains: dict[tuple, list[int]] = {}
    convolutional: dict[tuple, list[int]] = {}
    for index, layers in enumerate(all_layers):
        if inputs is not None and _linear_chain(layers):
            chains.setdefault(graph_structure(layers), []).append(index)
        elif images is not None and _convolutional(layers):
            key = (graph_structure(layers), grids[index])
            convolutional.setdefault(key, []).append(index)
    acts = probes.new_zeros(batch.num_nodes, probes.shape[0])
    probed = torch.zeros(batch.num_nodes, dtype=torch.bool, device=acts.device)
    starts = node_ptr(batch)

    def put(members: list[int], layers: Sequence[dict], states: list[Tensor]) -> None:
        """Write each layer's states ``[G, C, P]`` (or ``[1, C, P]``, shared) in place."""
        nonlocal acts
        ids = torch.as_tensor(members, device=acts.device)
        for layer, h in zip(layers, states):
            lo, hi = layer["nodes"]
            rows = (starts[ids][:, None] + torch.arange(lo, hi, device=acts.device)).reshape(-1)
            h = h.expand(len(members), *h.shape[1:])
            acts = acts.index_put((rows,), h.reshape(-1, h.shape[-1]))
            probed[rows] = True

    for members in chains.values():
        layers = all_layers[members[0]]
        n_in = layers[0]["size"]
        if n_in > inputs.shape[1]:
            raise ValueError(f"the probe inputs have {inputs.shape[1]} coordinates, a "
                             f"network has {n_in} inputs")
        h = inputs[:, :n_in].t().unsqueeze(0).expand(len(members), -1, -1)  # [G, in, P]
        states = [h]
        for layer, (weight, bias) in zip(layers[1:], linear_chain_weights(batch, members,
                                                                           layers)):
            z = torch.baddbmm(bias.unsqueeze(-1) + layer["offset"], weight, h)
            h = activate(z, layer["activation"], layer["activation_param"])
            states.append(h)
        put(members, layers, states)
    for members in convolutional.values():
        layers = all_layers[members[0]]
        if images.shape[1] != layers[0]["size"]:
            raise ValueError(f"the probe images have {images.shape[1]} channels, a network "
                             f"has {layers[0]['size']} input channels")
        states = _run_convolutional(batch, members, layers, images.to(acts.dtype))
        put(members, layers, [s.flatten(3).mean(-1).permute(1, 2, 0) if s.dim() > 3
                              else s.permute(1, 2, 0) for s in states])
    return acts, probed


class ProbeFeatures(nn.Module):
    r"""Probe features: ``num_probes`` learned inputs run through every network of the
    batch; each neuron's activations over the probes, through a per-layer-slot Linear and
    LayerNorm, are its probe features (zero for neurons of networks that get no probes).

    Without ``image_shape`` Linear chains read learned coordinates (initialised uniform in
    :math:`[-1, 1]`, the INRs' domain). With it convolutional networks read learned images
    instead (initialised standard normal, the statistics of normalised images), a
    channel's activation being its feature map's mean (:func:`probe_activations`); every
    parameter then takes part in a batch that holds a CNN, as DDP requires.

    Args:
        num_probes (int): learned probe inputs.
        out_dim (int): feature size.
        max_layers (int): layer slots (see :func:`layer_slot`).
        image_shape (tuple, optional): ``(C, *S)`` of the probe images (None: coordinates
            for Linear chains, no probes for convolutional networks).

    Shapes:
        - output: :math:`(N, \text{out\_dim})`
    """

    def __init__(self, num_probes: int, out_dim: int, max_layers: int,
                 image_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        self.num_probes = num_probes
        self.max_layers = max_layers
        self.proj = nn.Parameter(torch.empty(max_layers, num_probes, out_dim))
        self.proj_bias = nn.Parameter(torch.zeros(max_layers, out_dim))
        self.norm = nn.LayerNorm(out_dim)
        bound = 1 / math.sqrt(num_probes)
        nn.init.uniform_(self.proj, -bound, bound)
        if image_shape is None:
            self.inputs = UninitializedParameter()
            self.images = None
        else:
            self.inputs = None
            image_shape = tuple(int(n) for n in image_shape)
            if len(image_shape) not in (2, 3) or min(image_shape) < 1:
                raise ValueError(f"image_shape must be (C, L) or (C, H, W) of positive sizes, "
                                 f"got {image_shape}")
            self.images = nn.Parameter(torch.randn(num_probes, *image_shape))

    def forward(self, batch: Batch) -> Tensor:
        if isinstance(self.inputs, UninitializedParameter):
            n_in = max((layers[0]["size"] for layers in _graph_list(batch, "layers")),
                       default=1)
            with torch.no_grad():
                self.inputs.materialize((self.num_probes, n_in), device=batch.x.device,
                                        dtype=self.proj.dtype)
                self.inputs.uniform_(-1.0, 1.0)
        acts, probed = probe_activations(batch, self.inputs, self.images)
        slot = layer_slot(batch.node_layer, batch.node_type, self.max_layers)
        # One product per layer slot in use, not a copy of the slot's [P, out_dim] matrix
        # for every neuron (128 SIRENs at 64 probes and 128 features: 268 MiB a step).
        feats = self.proj_bias[slot]
        for used in slot.unique().tolist():
            rows = (slot == used).nonzero().squeeze(1)
            feats = feats.index_add(0, rows, acts[rows] @ self.proj[used])
        return self.norm(feats) * probed.unsqueeze(-1).to(feats.dtype)

    def extra_repr(self) -> str:
        images = "" if self.images is None else f", image_shape={tuple(self.images.shape[1:])}"
        return f"num_probes={self.num_probes}, max_layers={self.max_layers}{images}"
