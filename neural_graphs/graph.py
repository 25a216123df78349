"""Networks as neural graphs: one node per neuron, one edge per weight (or kernel).

``to_neural_graph(model)`` traces the model with ``torch.fx`` (no per-model code), reads
the dataflow between its layers and returns a :class:`torch_geometric.data.Data`:

Nodes (``N`` = every neuron of every layer, layers in topological order, input first):

* ``x`` ``[N, 1]``: the neuron's bias (0 for input neurons and bias-free layers). With
  ``batchnorm="nodes"`` ``[N, 5]``: bias, then the BatchNorm ``weight``, ``bias``,
  ``running_mean`` and ``running_var`` of the neuron's channel (1, 0, 0, 1 where there is
  no BatchNorm).
* ``node_layer`` ``[N]``: the layer index (0 = input layer).
* ``node_position`` ``[N]``: the neuron's index inside its layer (channel, feature).
* ``node_type`` ``[N]``: 0 input, 1 hidden, 2 output (``NODE_TYPES``).
* ``node_activation`` ``[N]``: index into ``ACTIVATIONS`` of the activation applied to
  the neuron (``identity`` for input neurons and linear outputs).

Edges (``E``; edge ``j -> i`` goes from a neuron of an earlier layer to one of a later):

* ``edge_index`` ``[2, E]``.
* ``edge_attr`` ``[E, K]`` with ``K = prod(kernel_shape)``: the weight, as a kernel
  zero-padded and centred to ``kernel_shape`` (the largest kernel of the network, or the
  ``kernel_shape`` argument) and flattened. A Linear weight is a 1x1 kernel (the centre
  entry); a Linear after a flatten of a feature map of size ``S`` sees each input channel
  as a kernel of the map's shape (``flatten`` edges: exactly a convolution with a kernel
  covering the whole map); a residual addition is an identity edge (1 at the centre)
  between same-index channels; a LayerNorm is a diagonal layer whose edges carry its
  ``weight``.
* ``edge_mask`` ``[E, K]`` (bool): the entries of ``edge_attr`` that hold a weight.
* ``edge_type`` ``[E]``: index into ``EDGE_TYPES``.
* ``edge_layer`` ``[E]``: the layer of the target neuron, the step of the dynamic neural
  graph this edge belongs to (see ``layer_snapshots``).

Graph attributes (plain Python, collated into lists by ``Batch``):

* ``layer_layout``: neurons per layer.
* ``kernel_shape``: the kernel grid of ``edge_attr`` (``(1,)`` for networks of Linear
  layers only).
* ``layers``: one dict per layer with what running the graph needs and nothing it can
  read from the tensors above: its module path, kind, activation parameter, BatchNorm
  ``eps``, constant output offset, and its incoming edge groups (source layer, operator:
  ``linear``, ``conv`` with stride / padding / dilation / groups / padding mode,
  ``flatten`` with the map shape, ``residual``, ``layernorm``; the pooling and flatten
  steps applied to the source neurons before the weights, and the edge range).

Supported: Linear, Conv1d/Conv2d (every argument) and their message-passing twins,
BatchNorm1d/2d in eval mode (folded into the preceding layer, or kept as node features),
LayerNorm over the neurons, the activations of ``ACTIVATIONS`` (modules, functions or
tensor methods; ``neural_graphs.activations``), max/average/adaptive pooling (modules,
functions, and global pooling written ``x.mean((2, 3))`` / ``x.amax(...)``), flatten
(``nn.Flatten``, ``torch.flatten(x, 1)``, ``x.view(x.size(0), -1)``), Dropout and Identity
(ignored), residual additions and constant offsets, self-attention and Transformer
encoder layers, the ViT class token and position embedding (parameters, or buffers like
SimpleViT's fixed sin-cos embedding; kept with their layer in ``layers``, as ``tokens``),
and the mean over the tokens (``x.mean(1)`` of token-major ``[B, T, C]`` states, as in
SimpleViT: an average pooling of the tokens); containers and your own modules are traced
through. Anything else raises ``TypeError`` naming the operation, its place in the model
and what is supported.

Graphs of networks with different largest kernels batch with :func:`collate_graphs`
(``neural_graphs.kernels``), which pads every kernel to the batch's largest grid.

The reader of the network lives in ``neural_graphs.tracing`` (with ``trace_functions``,
``trace_tokens`` and ``trace_state``); this file assembles the graph's tensors and reads
them back.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from modules.base import parameter_edges
from neural_graphs.activations import ACTIVATIONS, activation_id
from neural_graphs.kernels import (
    collate_graphs,
    kernel_columns,
    kernel_placement,
    pad_kernels,
)
from neural_graphs.trace_state import _Group, _Layer, _model_tensor, _Rows
from neural_graphs.tracing import read_network

__all__ = [
    "ACTIVATIONS",
    "GRAPH_FORMAT",
    "EDGE_TYPES",
    "NODE_TYPES",
    "WEIGHT_EDGE_TYPES",
    "DIAGONAL_EDGE_TYPES",
    "collate_graphs",
    "fold_batchnorm",
    "from_neural_graph",
    "group_weight",
    "layer_snapshots",
    "pad_kernels",
    "to_neural_graph",
]

#: Version of the graph fields; caches of converted graphs are keyed on it.
GRAPH_FORMAT = 2
#: The edge types that carry entries of a weight matrix or kernel.
WEIGHT_EDGE_TYPES = ("linear", "conv", "flatten")
#: The edge types with one edge per neuron, neuron i of the source to neuron i of the
#: target: residual identities, attention structure and LayerNorm scales.
DIAGONAL_EDGE_TYPES = ("residual", "layernorm", "attention")
EDGE_TYPES = WEIGHT_EDGE_TYPES + DIAGONAL_EDGE_TYPES
NODE_TYPES = ("input", "hidden", "output")
NORM_NEUTRAL = (1.0, 0.0, 0.0, 1.0)  # BatchNorm weight, bias, mean, var of "no BatchNorm"


# --------------------------------------------------------------------------- building


def _bn_scale(bn: nn.Module) -> tuple[Tensor, Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def _layer_weight(layer: _Layer, group: _Group, fold: bool) -> Tensor:
    m = group.module
    weight = m.weight.detach()
    if fold and layer.batchnorm is not None:
        scale, _ = _bn_scale(layer.batchnorm)
        weight = weight * scale.detach().view(-1, *[1] * (weight.dim() - 1))
    return weight


def _layer_bias(layer: _Layer, fold: bool) -> Tensor | None:
    m = layer.module
    bias = None if m is None or getattr(m, "bias", None) is None else m.bias.detach()
    if layer.kind == "layernorm":
        return bias
    if fold and layer.batchnorm is not None:
        scale, shift = (t.detach() for t in _bn_scale(layer.batchnorm))
        bias = shift if bias is None else bias * scale + shift
    return bias


def _kernel_shape(layers: list[_Layer], requested: Iterable[int] | None) -> tuple[int, ...]:
    shapes = [g.params.get("kernel_size") or g.params.get("map_shape")
              for layer in layers for g in layer.groups
              if g.kind in ("conv", "flatten")]
    dims = {len(s) for s in shapes}
    if len(dims) > 1:
        raise TypeError("to_neural_graph: networks mixing 1-d and 2-d kernels are not "
                        "supported")
    grid = tuple(max(s[d] for s in shapes) for d in range(dims.pop())) if shapes else (1,)
    if requested is not None:
        requested = tuple(requested)
        if len(requested) != len(grid) and grid != (1,) or any(
                r < g for r, g in zip(requested, grid)):
            raise ValueError(f"kernel_shape {requested} cannot hold the network's kernels "
                             f"{grid}")
        grid = requested
    return grid


def to_neural_graph(model: nn.Module, *, batchnorm: str = "fold",
                    kernel_shape: Iterable[int] | None = None) -> Data:
    """The neural graph of ``model`` (see the module docstring for every field).

    Args:
        model (nn.Module): a network built from supported modules (in eval mode when it has
            BatchNorm: its running statistics are what the graph holds).
        batchnorm (str): ``"fold"`` (default) folds each BatchNorm exactly into the weights
            and bias of the layer before it; ``"nodes"`` keeps its parameters as node
            features (``x`` gets 5 columns).
        kernel_shape (tuple, optional): pad kernels to this grid instead of the network's
            largest kernel, so graphs of different networks share one ``edge_attr`` width.
    """
    if batchnorm not in ("fold", "nodes"):
        raise ValueError(f"batchnorm must be 'fold' or 'nodes', got {batchnorm!r}")
    traced, output = read_network(model)
    layers = _reachable(traced, output)
    fold = batchnorm == "fold"
    grid = _kernel_shape(layers, kernel_shape)
    width = math.prod(grid)
    ref = next((p for p in model.parameters()), torch.empty(0))
    factory = {"dtype": ref.dtype if ref.is_floating_point() else torch.float32,
               "device": ref.device}

    renumber = {layer.index: i for i, layer in enumerate(layers)}
    offsets, total = [], 0
    for layer in layers:
        offsets.append(total)
        total += layer.size
    x = torch.zeros(total, 1 if fold else 5, **factory)
    if not fold:
        x[:, 1:] = torch.tensor(NORM_NEUTRAL, **factory)
    node_layer = torch.repeat_interleave(torch.arange(len(layers)),
                                         torch.tensor([lay.size for lay in layers]))
    node_position = torch.cat([torch.arange(lay.size) for lay in layers])
    node_type = torch.ones(total, dtype=torch.long)
    node_type[: layers[0].size] = 0
    node_type[offsets[-1]:] = 2
    node_activation = torch.zeros(total, dtype=torch.long)

    # Edge counts first, then every edge array allocated once and filled in place.
    counts = [[_group_size(layer, group, layers[renumber[group.source]]) for group in
               layer.groups] for layer in layers]
    n_total = sum(map(sum, counts))
    device = factory["device"]
    edge_index = torch.empty(2, n_total, dtype=torch.long, device=device)
    edge_attr = torch.zeros(n_total, width, **factory)
    edge_mask = torch.zeros(n_total, width, dtype=torch.bool, device=device)
    edge_type = torch.empty(n_total, dtype=torch.long, device=device)
    edge_layer = torch.empty(n_total, dtype=torch.long, device=device)
    meta, n_edges = [], 0
    for index, layer in enumerate(layers):
        lo, hi = offsets[index], offsets[index] + layer.size
        node_activation[lo:hi] = activation_id(layer.activation)
        bias = _layer_bias(layer, fold)
        if bias is not None:
            x[lo:hi, 0] = bias.to(**factory)
        if not fold and layer.batchnorm is not None:
            bn = layer.batchnorm
            x[lo:hi, 1:] = torch.stack([bn.weight.detach(), bn.bias.detach(),
                                        bn.running_mean, bn.running_var], 1).to(**factory)
        groups_meta = []
        for group, count in zip(layer.groups, counts[index]):
            src = renumber[group.source]
            start, n_edges = n_edges, n_edges + count
            _fill_group(layer, group, layers[src], fold, grid, edge_index[:, start:n_edges],
                        edge_attr[start:n_edges], edge_mask[start:n_edges])
            edge_index[0, start:n_edges] += offsets[src]
            edge_index[1, start:n_edges] += lo
            edge_type[start:n_edges] = EDGE_TYPES.index(group.kind)
            edge_layer[start:n_edges] = index
            rows = isinstance(group.module, _Rows)
            groups_meta.append({
                "source": src, "kind": group.kind, "pre": list(group.pre),
                "params": dict(group.params), "edges": (start, n_edges),
                "weight": _param_path(group.path, "in_proj_weight" if rows else "weight")
                if group.module is not None and group.kind != "layernorm" else None,
                "rows": group.module.rows if rows else None,
            })
        meta.append({
            "path": layer.path, "kind": layer.kind, "size": layer.size,
            "spatial_dims": layer.spatial_dims or 0, "activation": layer.activation,
            "activation_param": layer.activation_param, "offset": layer.offset,
            "flatten_input": layer.flatten_input, "nodes": (lo, hi),
            "bias": _param_path(layer.path, "in_proj_bias" if isinstance(
                layer.module, _Rows) else "bias")
            if layer.module is not None and getattr(layer.module, "bias", None) is not None
            else None,
            "rows": layer.weight_rows, "num_heads": layer.num_heads,
            "neurons_last": bool(layer.tokens.get("neurons_last")),
            "tokens": {role: (key, _model_tensor(model, key).detach().clone())
                       for role, key in layer.tokens.items() if role != "neurons_last"},
            "batchnorm": None if layer.batchnorm is None else {
                "path": layer.batchnorm_path, "eps": layer.batchnorm.eps, "folded": fold},
            "groups": groups_meta,
        })
    return Data(
        x=x, edge_index=edge_index, edge_attr=edge_attr, edge_mask=edge_mask,
        edge_type=edge_type, edge_layer=edge_layer, node_layer=node_layer.to(device),
        node_position=node_position.to(device), node_type=node_type.to(device),
        node_activation=node_activation.to(device),
        layer_layout=[lay.size for lay in layers], kernel_shape=grid, layers=meta,
        num_nodes=total,
    )


def _param_path(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _reachable(layers: list[_Layer], output: int) -> list[_Layer]:
    """The layers the output depends on, in topological order, renumbered."""
    needed, stack = {output}, [output]
    while stack:
        for group in layers[stack.pop()].groups:
            if group.source not in needed:
                needed.add(group.source)
                stack.append(group.source)
    if 0 not in needed:
        raise TypeError("to_neural_graph: the output does not depend on the input")
    return [layer for layer in layers if layer.index in needed]


def _group_size(layer: _Layer, group: _Group, src: _Layer) -> int:
    if group.kind in DIAGONAL_EDGE_TYPES:
        return layer.size
    return layer.size * (group.module.weight.shape[1] if group.kind == "conv" else src.size)


def _fill_group(layer: _Layer, group: _Group, src: _Layer, fold: bool, grid: tuple[int, ...],
                edge_index: Tensor, edge_attr: Tensor, edge_mask: Tensor) -> None:
    """Write a group's edges (local target and source neuron indices) and kernels."""
    n_out, n_in = layer.size, src.size
    device = edge_index.device
    if group.kind in DIAGONAL_EDGE_TYPES:
        edge_index[:] = torch.arange(n_out, device=device)
        kernel = (group.module.weight.detach().view(n_out, 1) if group.kind == "layernorm"
                  else torch.ones(n_out, 1))
        shape: tuple[int, ...] = (1,)
    else:
        weight = _layer_weight(layer, group, fold)
        if group.kind == "flatten":
            shape = group.params["map_shape"]
            weight = weight.reshape(n_out, n_in, *shape)
        elif group.kind == "linear":
            shape = (1,)
        else:
            shape = group.params["kernel_size"]
        groups = group.params.get("groups", 1)
        local, kernel = parameter_edges(weight, groups)
        edge_index[:] = local
        kernel = kernel.reshape(local.shape[1], -1)
    place = kernel_placement(shape, grid)
    if place.numel() == 1:
        edge_attr[:, int(place)] = kernel[:, 0]
        edge_mask[:, int(place)] = True
    else:
        edge_attr[:, place] = kernel.to(edge_attr.dtype)
        edge_mask[:, place] = True


# --------------------------------------------------------------------------- reading back


def group_weight(graph: Data, layer: int, group: dict[str, Any]) -> Tensor:
    """The dense weight of an edge group, in torch's layout, read from ``edge_attr``.

    Works whatever the order of the group's edges: each edge lands at its (target,
    source) place, so a relabelled graph reads back a consistently permuted weight.
    """
    layers = graph.layers
    start, stop = group["edges"]
    src_layer = layers[group["source"]]
    n_out = layers[layer]["size"]
    src_lo = src_layer["nodes"][0]
    dst = graph.edge_index[1, start:stop] - layers[layer]["nodes"][0]
    srcs = graph.edge_index[0, start:stop] - src_lo
    kind = group["kind"]
    grid = tuple(graph.kernel_shape)
    if kind == "conv":
        shape = tuple(group["params"]["kernel_size"])
    elif kind == "flatten":
        shape = tuple(group["params"]["map_shape"])
    else:
        shape = (1,)
    values = kernel_columns(graph.edge_attr[start:stop], shape, grid)
    if kind in DIAGONAL_EDGE_TYPES:
        return values.new_zeros(n_out).index_copy(0, dst, values[:, 0])
    k = math.prod(shape)
    if kind == "conv":
        per_group = src_layer["size"] // group["params"]["groups"]
        out_per_group = n_out // group["params"]["groups"]
        srcs = srcs - dst // out_per_group * per_group
    else:
        per_group = src_layer["size"]
    flat = dst * per_group + srcs
    out = values.new_empty(n_out * per_group, k)
    if flat.numel() != out.shape[0]:
        out.zero_()
    out = out.index_copy(0, flat, values)
    if kind == "conv":
        return out.view(n_out, per_group, *shape)
    if kind == "linear":
        return out.view(n_out, per_group)
    return out.view(n_out, -1)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every BatchNorm (eval statistics) folded into the Linear or
    Conv before it: that layer gets the folded weight and a bias, the BatchNorm becomes
    ``nn.Identity``. Same function in eval mode; what ``batchnorm="fold"`` graphs hold."""
    folded = copy.deepcopy(model)
    graph = to_neural_graph(folded, batchnorm="nodes")
    modules = dict(folded.named_modules())
    for layer in graph.layers:
        bn = layer["batchnorm"]
        if bn is None:
            continue
        m = modules[layer["path"]]
        norm = modules[bn["path"]]
        scale, shift = _bn_scale(norm)
        with torch.no_grad():
            weight = m.weight * scale.view(-1, *[1] * (m.weight.dim() - 1))
            bias = shift if m.bias is None else m.bias * scale + shift
            m.weight.copy_(weight)
            if m.bias is None:
                m.bias = nn.Parameter(bias.detach().clone())
            else:
                m.bias.copy_(bias)
        _set_module(folded, bn["path"], nn.Identity())
    return folded


def _set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)


def _structure(graph: Data) -> list[tuple]:
    return [(layer["path"], layer["kind"], layer["size"],
             tuple((g["source"], g["kind"]) for g in layer["groups"]))
            for layer in graph.layers]


def from_neural_graph(graph: Data, template: nn.Module) -> nn.Module:
    """A copy of ``template`` with every parameter read from ``graph``.

    A graph made with ``batchnorm="fold"`` gives the folded network (see
    :func:`fold_batchnorm`); with ``batchnorm="nodes"`` the BatchNorm parameters and
    statistics are read back from the node features. Raises ``ValueError`` naming the first
    layer whose shape differs when the graph is of another architecture.
    """
    fold = graph.x.shape[1] == 1
    has_bn = any(layer["batchnorm"] is not None for layer in graph.layers)
    model = fold_batchnorm(template) if fold and has_bn else copy.deepcopy(template)
    expected = _structure(to_neural_graph(model, batchnorm="fold" if fold else "nodes"))
    for want, got in zip(expected, _structure(graph)):
        if want != got:
            raise ValueError(f"from_neural_graph: layer '{want[0] or 'input'}' differs: the "
                             f"template has {want[1:3]} with inputs {list(want[3])}, the graph "
                             f"{got[1:3]} with inputs {list(got[3])}")
    if len(expected) != len(graph.layers):
        raise ValueError(f"from_neural_graph: the template has {len(expected)} layers, the "
                         f"graph {len(graph.layers)}")
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        for index, layer in enumerate(graph.layers):
            lo, hi = layer["nodes"]
            if layer["bias"] is not None or (fold and layer["batchnorm"] is not None):
                key = layer["bias"] or _param_path(layer["path"], "bias")
                _rows(params[key], layer["rows"]).copy_(graph.x[lo:hi, 0])
            for key, value in layer["tokens"].values():
                _model_tensor(model, key).copy_(value)
            if layer["batchnorm"] is not None and not fold:
                path = layer["batchnorm"]["path"]
                for col, name in enumerate(("weight", "bias")):
                    params[_param_path(path, name)].copy_(graph.x[lo:hi, 1 + col])
                for col, name in enumerate(("running_mean", "running_var")):
                    buffers[_param_path(path, name)].copy_(graph.x[lo:hi, 3 + col])
            for group in layer["groups"]:
                if group["weight"] is not None:
                    p = _rows(params[group["weight"]], group["rows"])
                    p.copy_(group_weight(graph, index, group).reshape(p.shape))
                elif group["kind"] == "layernorm":
                    params[_param_path(layer["path"], "weight")].copy_(
                        group_weight(graph, index, group))
    return model


def _rows(param: Tensor, rows: tuple[int, int] | None) -> Tensor:
    return param if rows is None else param[rows[0]:rows[1]]


def layer_snapshots(graph: Data) -> Iterable[Data]:
    """The dynamic neural graph: one bipartite snapshot per layer, in order.

    Step ``t`` holds the edges whose target neurons are in layer ``t`` (``edge_layer ==
    t``): ``edge_index``, ``edge_attr``, ``edge_mask`` and ``edge_type`` of those edges, and
    ``target`` (bool ``[N]``), the neurons updated at this step. Works on one graph or on a
    ``Batch``; sources of residual edges may lie several layers back.
    """
    steps = int(graph.node_layer.max()) if graph.node_layer.numel() else 0
    for t in range(1, steps + 1):
        keep = graph.edge_layer == t
        yield Data(edge_index=graph.edge_index[:, keep], edge_attr=graph.edge_attr[keep],
                   edge_mask=graph.edge_mask[keep], edge_type=graph.edge_type[keep],
                   target=graph.node_layer == t, step=t, num_nodes=graph.num_nodes)
