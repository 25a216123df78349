"""Run a network's forward pass as message passing over its neural graph.

A node's state is its neuron's activation: one value per sample for a Linear neuron, a
feature map per sample for a conv channel. Layers run in topological order; for each, the
message along edge ``j -> i`` is the edge's weight applied to ``j``'s state (a scalar
product, a kernel through the window gather of the conv twins in ``modules/``, or a
whole-map kernel for a flatten edge), messages are summed, and the update adds the bias,
applies the node's BatchNorm (``batchnorm="nodes"`` graphs), adds the residual messages
and applies the node's activation. Every weight is read from the graph, none from a model.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch_geometric.data import Data

from modules import Conv1dAsGNN, Conv2dAsGNN
from modules.convert import TWINS
from neural_graphs.activations import activate
from neural_graphs.graph import group_weight

__all__ = ["layer_output", "run_neural_graph"]


@lru_cache(maxsize=256)
def _conv_twin(dims: int, in_channels: int, out_channels: int, params: tuple) -> nn.Module:
    kwargs = dict(params)
    cls = Conv1dAsGNN if dims == 1 else Conv2dAsGNN
    with torch.random.fork_rng(devices=[]):
        return cls(in_channels, out_channels, bias=False, device="meta", **kwargs)


@lru_cache(maxsize=256)
def _pool_twin(native: str, params: tuple) -> nn.Module:
    return TWINS[getattr(nn, native)](**dict(params))


def _frozen(params: dict[str, Any]) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                        for k, v in params.items()))


def _apply_pre(state: Tensor, pre: list) -> Tensor:
    for step in pre:
        if step[0] == "pool":
            state = _pool_twin(step[1], _frozen(step[2]))(state)
        elif step[0] == "flatten":
            state = state.flatten(1)
        elif step[0] == "flatten_spatial":
            state = state.flatten(2)
        elif step[0] == "select_token":
            state = state[:, :, step[1]]
        else:
            raise ValueError(f"unknown pre-processing step {step[0]!r}")
    return state


def _channels(v: Tensor, state: Tensor) -> Tensor:
    """A per-neuron vector broadcast over a state's spatial dimensions."""
    return v.view(1, -1, *[1] * (state.dim() - 2))


# Dense weights read from a graph, per edge_attr tensor, reused while neither the weights
# nor the edges change (tensor versions) and no gradient flows to them.
_WEIGHTS: dict[int, tuple[weakref.ref, dict]] = {}


def _weight(graph: Data, index: int, group: dict[str, Any]) -> Tensor:
    attr, edges = graph.edge_attr, graph.edge_index
    if torch.is_grad_enabled() and attr.requires_grad:
        return group_weight(graph, index, group)
    key = (index, group["edges"], id(edges), edges._version, attr._version)
    entry = _WEIGHTS.get(id(attr))
    if entry is None or entry[0]() is not attr:
        entry = _WEIGHTS[id(attr)] = (weakref.ref(attr), {})
        weakref.finalize(attr, _WEIGHTS.pop, id(attr), None)
    cache = entry[1]
    weight = cache.get(key)
    if weight is None:
        if len(cache) > 4 * len(graph.layers):
            cache.clear()
        weight = cache[key] = group_weight(graph, index, group)
    return weight


def _message(graph: Data, index: int, group: dict[str, Any], h: Tensor) -> Tensor:
    weight = _weight(graph, index, group)
    kind = group["kind"]
    if kind == "linear":
        if h.dim() == 2:
            return h @ weight.t()
        return (h.movedim(1, -1) @ weight.t()).movedim(-1, 1)
    if kind == "flatten":
        return h.flatten(1) @ weight.reshape(weight.shape[0], -1).t()
    if kind == "conv":
        params = group["params"]
        dims = len(params["kernel_size"])
        twin = _conv_twin(dims, h.shape[1], weight.shape[0], _frozen(params))
        return functional_call(twin, {"weight": weight}, (h,))
    raise ValueError(f"unknown edge group kind {kind!r}")


def run_neural_graph(graph: Data, x: Tensor) -> Tensor:
    """The network's output for input ``x``, computed only from ``graph``.

    Args:
        graph (Data): a graph from :func:`~neural_graphs.to_neural_graph`.
        x (Tensor): a batch of inputs shaped as the network expects them.

    Shapes:
        - input: :math:`(B, *)`, the network's input
        - output: :math:`(B, n_L, *)`, the output layer's states (the network's output)
    """
    layers = graph.layers
    if not layers or layers[0]["kind"] != "input":
        raise ValueError("run_neural_graph: graph has no layer metadata (made by "
                         "to_neural_graph?)")
    if layers[0]["flatten_input"]:
        x = x.flatten(1)
    if layers[0]["neurons_last"]:
        x = x.movedim(-1, 1)
    if x.dim() < 2 or x.shape[1] != layers[0]["size"]:
        raise ValueError(f"run_neural_graph: the input layer has {layers[0]['size']} neurons, "
                         f"the input has shape {tuple(x.shape)}")
    # Free each state after its last reader.
    last_use = {}
    for index, layer in enumerate(layers):
        for group in layer["groups"]:
            last_use[group["source"]] = index
    states: dict[int, Tensor] = {0: x}
    for index, layer in enumerate(layers[1:], start=1):
        if layer["kind"] == "attention":
            states[index] = _attention(layer, states)
        else:
            states[index] = _update(graph, index, layer, states)
        for source in [s for s, last in last_use.items() if last == index]:
            states.pop(source, None)
    out = states[len(layers) - 1]
    return out.movedim(1, -1) if layers[-1]["neurons_last"] else out


def _update(graph: Data, index: int, layer: dict[str, Any],
            states: dict[int, Tensor]) -> Tensor:
    """One layer: sum the weighted messages, add the bias, normalise, add the residual
    messages, activate."""
    lo, hi = layer["nodes"]
    z = None
    residuals = []
    for group in layer["groups"]:
        h = _apply_pre(states[group["source"]], group["pre"])
        if group["kind"] == "residual":
            residuals.append(h)
            continue
        if group["kind"] == "layernorm":
            eps = group["params"]["eps"]
            h = F.layer_norm(h.movedim(1, -1), (h.shape[1],), eps=eps).movedim(-1, 1)
            msg = h * _channels(_weight(graph, index, group), h)
        else:
            msg = _message(graph, index, group, h)
        z = msg if z is None else z + msg
    if z is None:
        z = residuals.pop(0)
    if layer["kind"] == "tokens":
        z = _tokens(layer, z)
    return layer_output(z, layer, graph.x[lo:hi], residuals)


def layer_output(z: Tensor, layer: dict[str, Any], x: Tensor,
                 residuals: Sequence[Tensor] = ()) -> Tensor:
    """A layer's states from its summed messages ``z`` ``[B, n, *S]`` and its neurons'
    node features ``x`` ``[n, F]``: add the bias, apply the BatchNorm of unfolded graphs,
    add the layer's offset and the residual messages, activate. (The probes of
    :mod:`neural_graphs.encoders.probes` call it with the neurons of several networks side
    by side.)"""
    z = z + _channels(x[:, 0], z)
    bn = layer["batchnorm"]
    if bn is not None and not bn["folded"]:
        w, b, mean, var = x[:, 1:5].unbind(1)
        z = (z - _channels(mean, z)) / torch.sqrt(_channels(var, z) + bn["eps"])
        z = z * _channels(w, z) + _channels(b, z)
    if layer["offset"]:  # a constant added after the BatchNorm (see _Builder.add)
        z = z + layer["offset"]
    for r in residuals:
        z = z + r
    return activate(z, layer["activation"], layer["activation_param"])


def _attention(layer: dict[str, Any], states: dict[int, Tensor]) -> Tensor:
    """Scaled dot-product attention of the query, key and value neurons, per head; the
    layer's neurons are the value neurons (their edges from q, k, v carry no weight)."""
    parts = {g["params"]["role"]: states[g["source"]] for g in layer["groups"]}
    q, k, v = parts["query"], parts["key"], parts["value"]  # (B, E, T)
    b, e, t = q.shape
    h = layer["num_heads"]
    q, k, v = (p.reshape(b, h, e // h, -1) for p in (q, k, v))
    scores = torch.einsum("bhdt,bhds->bhts", q, k) / (e // h) ** 0.5
    out = torch.einsum("bhts,bhds->bhdt", scores.softmax(-1), v)
    return out.reshape(b, e, t)


def _tokens(layer: dict[str, Any], z: Tensor) -> Tensor:
    """Prepend the class token and add the position embedding (token-major states)."""
    tokens = layer["tokens"]
    if "prepend" in tokens:
        cls = tokens["prepend"][1].reshape(1, -1, 1).to(z.dtype).expand(z.shape[0], -1, 1)
        z = torch.cat([cls, z], 2)
    if "position" in tokens:
        z = z + tokens["position"][1][0].t().to(z.dtype)
    return z
