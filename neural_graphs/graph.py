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

Supported modules: Linear, Conv1d/Conv2d (every argument) and their message-passing twins,
BatchNorm1d/2d in eval mode (folded into the preceding layer, or kept as node features),
LayerNorm over the neurons, the activations of ``ACTIVATIONS`` (modules or functions),
max/average/adaptive pooling and their twins, flatten, Dropout and Identity (ignored),
residual additions and constant offsets. Anything else raises ``TypeError`` naming the
module type and its path.
"""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch_geometric.data import Data

from modules import Conv1dAsGNN, Conv2dAsGNN, LinearAsGNN
from modules.base import parameter_edges
from modules.convert import TWINS
from neural_graphs.inr import Sine

__all__ = [
    "ACTIVATIONS",
    "GRAPH_FORMAT",
    "EDGE_TYPES",
    "NODE_TYPES",
    "fold_batchnorm",
    "from_neural_graph",
    "layer_snapshots",
    "to_neural_graph",
]

#: Version of the graph fields; caches of converted graphs are keyed on it.
GRAPH_FORMAT = 2
ACTIVATIONS = ("identity", "relu", "leaky_relu", "gelu", "silu", "tanh", "sigmoid", "sine")
EDGE_TYPES = ("linear", "conv", "flatten", "residual", "layernorm", "attention")
NODE_TYPES = ("input", "hidden", "output")
NORM_NEUTRAL = (1.0, 0.0, 0.0, 1.0)  # BatchNorm weight, bias, mean, var of "no BatchNorm"

_ACTIVATION_MODULES: dict[type[nn.Module], str] = {
    nn.Identity: "identity", nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu", nn.GELU: "gelu",
    nn.SiLU: "silu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", Sine: "sine",
}
_ACTIVATION_FUNCTIONS: dict[Callable, str] = {
    torch.relu: "relu", F.relu: "relu", F.leaky_relu: "leaky_relu", F.gelu: "gelu",
    F.silu: "silu", torch.tanh: "tanh", F.tanh: "tanh", torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid",
}
_ACTIVATION_METHODS = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid"}
_LINEAR = (nn.Linear, LinearAsGNN)
_CONV = (nn.Conv1d, nn.Conv2d, Conv1dAsGNN, Conv2dAsGNN)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)
_PASS_THROUGH = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)
_POOL_NATIVE = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
                nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)  # those with a twin in modules/
_POOL_TWINS = {twin: native for native, twin in TWINS.items() if native in _POOL_NATIVE}
_ADD = (operator.add, operator.iadd, torch.add)
_FLATTEN_METHODS = ("flatten", "view", "reshape")


# --------------------------------------------------------------------------- tracing


class _Tracer(fx.Tracer):
    """Stops at every module this builder reads as a whole; traces through the rest."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            return False
        return (type(m).__module__.startswith(("torch.nn", "modules."))
                or isinstance(m, Sine) or super().is_leaf_module(m, module_qualified_name))


def _trace(model: nn.Module) -> fx.Graph:
    from models.common import check_input

    tracer = _Tracer(autowrap_functions=(check_input,))
    try:
        return tracer.trace(model)
    except Exception as err:  # fx raises many types for untraceable Python
        raise TypeError(f"to_neural_graph: cannot trace {type(model).__name__} with "
                        f"torch.fx ({type(err).__name__}: {err}); the forward pass must "
                        "not branch on tensor values or shapes") from err


@dataclass
class _Group:
    """Incoming edges of one layer from one source layer."""

    source: int
    kind: str  # linear | conv | flatten | residual | layernorm
    pre: tuple = ()  # steps applied to the source neurons' states before the weights
    module: nn.Module | None = None
    path: str = ""
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Layer:
    index: int
    kind: str
    size: int
    path: str = ""
    module: nn.Module | None = None
    spatial_dims: int | None = None  # 0 vectors, 1 sequences, 2 images; None unknown
    groups: list[_Group] = field(default_factory=list)
    activation: str = "identity"
    activation_param: float | None = None
    batchnorm: nn.Module | None = None
    batchnorm_path: str = ""
    offset: float = 0.0
    open: bool = True  # still accepts BatchNorm, residual additions, an activation
    flatten_input: bool = False
    weight_rows: tuple[int, int] | None = None  # rows of a shared parameter (in_proj)
    tokens: dict[str, Any] = field(default_factory=dict)  # class token, position embedding
    num_heads: int = 0


@dataclass
class _Rows:
    """Rows of a module's weight and bias, seen as a Linear layer (q/k/v of in_proj)."""

    weight: Tensor
    bias: Tensor | None
    rows: tuple[int, int]


@dataclass(frozen=True)
class _Value:
    """A traced tensor: the states of a layer's neurons, with pending pooling/flatten."""

    layer: int
    pre: tuple = ()
    tokens: bool = False  # token-major (B, T, neurons) in the traced network


@dataclass(frozen=True)
class _Attr:
    """A module attribute read in forward (a parameter, or the module itself)."""

    target: str


class _Builder:
    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modules = dict(model.named_modules())
        self.layers: list[_Layer] = [_Layer(0, "input", -1, open=False)]

    # -- layer bookkeeping ---------------------------------------------------------
    def close(self, value: _Value) -> _Value:
        self.layers[value.layer].open = False
        return value

    def is_open(self, value: _Value) -> bool:
        return not value.pre and self.layers[value.layer].open

    def new_layer(self, kind: str, size: int, path: str, module: nn.Module | None,
                  spatial_dims: int | None) -> _Layer:
        layer = _Layer(len(self.layers), kind, size, path, module, spatial_dims)
        self.layers.append(layer)
        return layer

    def source(self, value: _Value, size: int, spatial_dims: int, path: str,
               flatten_size: bool = False) -> tuple[int, tuple]:
        """Close ``value``'s layer and check it feeds ``size`` neurons (or features)."""
        self.close(value)
        layer, pre = self.layers[value.layer], value.pre
        if layer.kind == "input" and layer.size < 0:
            layer.size = size
            layer.spatial_dims = spatial_dims
            layer.tokens["neurons_last"] = spatial_dims == 0
            if pre == (("flatten",),):
                layer.flatten_input, layer.spatial_dims, pre = True, 0, ()
            elif pre:
                raise TypeError(f"to_neural_graph: pooling the network input before "
                                f"'{path}' is not supported")
        if layer.size != size and not flatten_size:
            raise TypeError(f"to_neural_graph: '{path}' expects {size} input neurons, its "
                            f"source layer '{layer.path or 'input'}' has {layer.size}")
        return value.layer, pre

    # -- modules -------------------------------------------------------------------
    def linear(self, m: nn.Module, path: str, value: _Value) -> _Value:
        flatten = bool(value.pre) and value.pre[-1] == ("flatten",)
        src, pre = self.source(value, m.in_features, 0, path, flatten_size=flatten)
        src_layer = self.layers[src]
        group = _Group(src, "linear", pre, m, path)
        if flatten:
            if m.in_features % src_layer.size:
                raise TypeError(f"to_neural_graph: '{path}' has {m.in_features} inputs, "
                                f"not a multiple of the {src_layer.size} flattened channels")
            area = m.in_features // src_layer.size
            group.pre = pre[:-1]
            if area > 1 or src_layer.spatial_dims:
                group.kind = "flatten"
                group.params["map_shape"] = _map_shape(area, src_layer.spatial_dims, path)
        elif _dims(src_layer, pre) and not value.tokens:
            raise TypeError(f"to_neural_graph: '{path}' applies a Linear layer along a "
                            "spatial axis, not the neurons (flatten or pool first)")
        spatial = _dims(src_layer, pre) if value.tokens else 0
        layer = self.new_layer("linear", m.out_features, path, m, spatial)
        layer.groups.append(group)
        return _Value(layer.index, tokens=value.tokens)

    def rows_linear(self, m: nn.Module, path: str, value: _Value, rows: tuple[int, int],
                    kind: str) -> _Value:
        """q, k or v: rows of ``in_proj_weight``, a Linear layer of their own."""
        weight = m.in_proj_weight[rows[0]:rows[1]]
        bias = None if m.in_proj_bias is None else m.in_proj_bias[rows[0]:rows[1]]
        src, pre = self.source(value, m.embed_dim, 0, path)
        layer = self.new_layer(kind, rows[1] - rows[0], path, _Rows(weight, bias, rows),
                               self.layers[src].spatial_dims)
        layer.weight_rows = rows
        layer.groups.append(_Group(src, "linear", pre, layer.module, path))
        return _Value(layer.index, tokens=value.tokens)

    def attention(self, m: nn.Module, path: str, value: _Value) -> _Value:
        """Self-attention: q, k, v layers, the attention layer (one neuron per value
        neuron, its state the heads' outputs) and the output projection, left open."""
        if not getattr(m, "_qkv_same_embed_dim", True) or m.in_proj_weight is None \
                or m.bias_k is not None or m.add_zero_attn or not m.batch_first:
            raise TypeError(f"to_neural_graph: MultiheadAttention at '{path}' must be "
                            "batch_first self-attention with one in_proj_weight, no "
                            "bias_k/bias_v and no add_zero_attn")
        if not (value.tokens or not self.layers[value.layer].spatial_dims):
            raise TypeError(f"to_neural_graph: attention at '{path}' needs token-major "
                            "inputs")
        e = m.embed_dim
        q, k, v = (self.rows_linear(m, path, value, (i * e, (i + 1) * e), kind)
                   for i, kind in enumerate(("query", "key", "value")))
        heads = self.new_layer("attention", e, path, None, self.layers[q.layer].spatial_dims)
        heads.num_heads = m.num_heads
        for role, part in zip(("query", "key", "value"), (q, k, v)):
            self.close(part)
            heads.groups.append(_Group(part.layer, "attention", (), None, path,
                                       {"role": role, "num_heads": m.num_heads}))
        self.close(_Value(heads.index))
        return self.linear(m.out_proj, f"{path}.out_proj", _Value(heads.index, tokens=True))

    def encoder_layer(self, m: nn.Module, path: str, value: _Value) -> _Value:
        act = m.activation
        name = (_ACTIVATION_FUNCTIONS.get(act) if not isinstance(act, nn.Module)
                else _ACTIVATION_MODULES.get(type(act)))
        if name not in ("relu", "gelu") or not m.self_attn.batch_first:
            raise TypeError(f"to_neural_graph: TransformerEncoderLayer at '{path}' must be "
                            "batch_first with a ReLU or GELU activation")
        sub = {n: f"{path}.{n}" for n in ("self_attn", "linear1", "linear2", "norm1", "norm2")}

        def feed_forward(h: _Value) -> _Value:
            hidden = self.activation(name, None, self.linear(m.linear1, sub["linear1"], h))
            return self.linear(m.linear2, sub["linear2"], hidden)

        if m.norm_first:
            attn = self.attention(m.self_attn, sub["self_attn"],
                                  self.layernorm(m.norm1, sub["norm1"], value))
            h = self.add(attn, value, path)
            out = self.add(feed_forward(self.layernorm(m.norm2, sub["norm2"], h)), h, path)
            return self.close(out)
        h = self.add(self.attention(m.self_attn, sub["self_attn"], value), value, path)
        h = self.layernorm(m.norm1, sub["norm1"], h)
        h = self.layernorm(m.norm2, sub["norm2"], self.add(feed_forward(h), h, path))
        return h

    def encoder(self, m: nn.Module, path: str, value: _Value) -> _Value:
        for i, layer in enumerate(m.layers):
            value = self.encoder_layer(layer, f"{path}.layers.{i}", value)
        if m.norm is not None:
            value = self.layernorm(m.norm, f"{path}.norm", value)
        return value

    def token_layer(self, value: _Value, path: str) -> _Layer:
        """The layer holding a class token and position embedding of token-major states."""
        layer = self.layers[value.layer]
        if layer.kind == "tokens" and self.is_open(value):
            return layer
        src = self.source(value, layer.size, layer.spatial_dims or 0, path)
        tokens = self.new_layer("tokens", layer.size, path, None, 1)
        tokens.groups.append(_Group(src[0], "residual", src[1]))
        return tokens

    def prepend(self, attr: _Attr, value: _Value, path: str) -> _Value:
        param = self.model.get_parameter(attr.target)
        layer = self.token_layer(value, path)
        if param.numel() != layer.size or "prepend" in layer.tokens:
            raise TypeError(f"to_neural_graph: concatenation at '{path}' must prepend one "
                            f"token of {layer.size} features")
        layer.tokens["prepend"] = attr.target
        return _Value(layer.index, tokens=True)

    def position(self, attr: _Attr, value: _Value, path: str) -> _Value:
        param = self.model.get_parameter(attr.target)
        layer = self.token_layer(value, path)
        if param.dim() != 3 or param.shape[0] != 1 or param.shape[2] != layer.size or \
                "position" in layer.tokens:
            raise TypeError(f"to_neural_graph: addition of '{attr.target}' at '{path}' must "
                            f"add a (1, tokens, {layer.size}) position embedding")
        layer.tokens["position"] = attr.target
        return _Value(layer.index, tokens=True)

    def conv(self, m: nn.Module, path: str, value: _Value) -> _Value:
        dims = len(m.kernel_size)
        src, pre = self.source(value, m.in_channels, dims, path)
        if self.layers[src].spatial_dims not in (dims, None):
            raise TypeError(f"to_neural_graph: '{path}' is a {dims}-d convolution of "
                            f"{self.layers[src].spatial_dims}-d states")
        padding = m.padding if isinstance(m.padding, str) else tuple(m.padding)
        params = {"stride": tuple(m.stride), "padding": padding,
                  "dilation": tuple(m.dilation), "groups": m.groups,
                  "padding_mode": m.padding_mode, "kernel_size": tuple(m.kernel_size)}
        layer = self.new_layer("conv", m.out_channels, path, m, dims)
        layer.groups.append(_Group(src, "conv", pre, m, path, params))
        return _Value(layer.index)

    def batchnorm(self, m: nn.Module, path: str, value: _Value) -> _Value:
        layer = self.layers[value.layer]
        if not self.is_open(value) or layer.kind not in ("linear", "conv") or \
                layer.batchnorm is not None or len(layer.groups) != 1:
            raise TypeError(f"to_neural_graph: BatchNorm at '{path}' must directly follow a "
                            "Linear or Conv layer")
        if layer.offset:
            raise TypeError(f"to_neural_graph: BatchNorm at '{path}' follows a constant "
                            f"added to '{layer.path}'; only constants after it are supported")
        if m.running_mean is None or not m.affine:
            raise TypeError(f"to_neural_graph: BatchNorm at '{path}' needs running "
                            "statistics and affine parameters")
        if m.training:
            raise TypeError(f"to_neural_graph: BatchNorm at '{path}' is in training mode "
                            "(batch statistics); call model.eval() first")
        if m.num_features != layer.size:
            raise TypeError(f"to_neural_graph: BatchNorm at '{path}' has {m.num_features} "
                            f"features, '{layer.path}' has {layer.size} neurons")
        layer.batchnorm, layer.batchnorm_path = m, path
        return value

    def layernorm(self, m: nn.Module, path: str, value: _Value) -> _Value:
        shape = tuple(m.normalized_shape)
        if len(shape) != 1 or m.weight is None or m.bias is None:
            raise TypeError(f"to_neural_graph: LayerNorm at '{path}' must normalize one "
                            "dimension of neurons, with affine parameters")
        src, pre = self.source(value, shape[0], 0, path)
        spatial = _dims(self.layers[src], pre)
        if spatial and not value.tokens:
            raise TypeError(f"to_neural_graph: LayerNorm at '{path}' normalizes a spatial "
                            "axis, not the neurons")
        layer = self.new_layer("layernorm", shape[0], path, m, spatial)
        layer.groups.append(_Group(src, "layernorm", pre, m, path, {"eps": m.eps}))
        return _Value(layer.index, tokens=value.tokens)

    def activation(self, name: str, param: float | None, value: _Value) -> _Value:
        if not self.is_open(value) or self.layers[value.layer].activation != "identity":
            value = self.identity_layer([value], "")
        layer = self.layers[value.layer]
        layer.activation, layer.activation_param = name, param
        return self.close(value)

    def identity_layer(self, values: list[_Value], path: str) -> _Value:
        """A parameter-free layer summing its sources through identity edges."""
        sizes = {self.layers[v.layer].size for v in values}
        dims = {self.layers[v.layer].spatial_dims for v in values}
        if len(sizes) != 1:
            raise TypeError(f"to_neural_graph: addition at '{path}' of layers with "
                            f"{sorted(sizes)} neurons")
        layer = self.new_layer("sum", sizes.pop(), path, None, dims.pop())
        for v in values:
            self.close(v)
            layer.groups.append(_Group(v.layer, "residual", v.pre))
        return _Value(layer.index)

    def add(self, a: Any, b: Any, path: str) -> _Value:
        if isinstance(a, _Value) and isinstance(b, (int, float)):
            a, b = b, a
        if isinstance(b, _Value) and isinstance(a, (int, float)):
            if not self.is_open(b):
                b = self.identity_layer([b], path)
            self.layers[b.layer].offset += float(a)  # added after the layer's BatchNorm
            return b
        if isinstance(a, _Attr) and isinstance(b, _Value):
            a, b = b, a
        if isinstance(a, _Value) and isinstance(b, _Attr):
            return self.position(b, a, path)
        if not (isinstance(a, _Value) and isinstance(b, _Value)):
            raise TypeError(f"to_neural_graph: unsupported addition at '{path}' of "
                            f"{type(a).__name__} and {type(b).__name__}")
        # The later layer hosts the sum; the other one becomes its residual source.
        host, other = (a, b) if a.layer > b.layer else (b, a)
        if not self.is_open(host) or self.layers[host.layer].kind in ("input", "sum"):
            return self.identity_layer([a, b], path)
        if self.layers[other.layer].size != self.layers[host.layer].size:
            raise TypeError(f"to_neural_graph: residual addition at '{path}' of "
                            f"{self.layers[other.layer].size} and "
                            f"{self.layers[host.layer].size} neurons")
        self.close(other)
        self.layers[host.layer].groups.append(_Group(other.layer, "residual", other.pre))
        return host

    def select_token(self, value: _Value, index: Any, path: str) -> _Value:
        if not (value.tokens and isinstance(index, tuple) and len(index) == 2
                and index[0] == slice(None) and isinstance(index[1], int)):
            raise TypeError(f"to_neural_graph: unsupported indexing at '{path}' (only "
                            "[:, i], one token of token-major states)")
        self.close(value)
        return _Value(value.layer, (*value.pre, ("select_token", index[1])), tokens=False)

    def pool(self, m: nn.Module, path: str, value: _Value) -> _Value:
        native = _POOL_TWINS.get(type(m), type(m))
        kwargs = TWINS[native].native_kwargs(m)
        if kwargs.get("return_indices"):
            raise TypeError(f"to_neural_graph: pooling at '{path}' returns indices")
        self.close(value)
        return _Value(value.layer, (*value.pre, ("pool", native.__name__, kwargs)))

    def flatten(self, value: _Value, start_dim: int, end_dim: int, path: str) -> _Value:
        if start_dim != 1 or end_dim != -1:
            raise TypeError(f"to_neural_graph: flatten at '{path}' must flatten all "
                            f"dimensions after the batch (start_dim 1, end_dim -1), got "
                            f"({start_dim}, {end_dim})")
        self.close(value)
        if value.pre and value.pre[-1] == ("flatten",):
            return value
        return _Value(value.layer, (*value.pre, ("flatten",)))

    # -- fx nodes ------------------------------------------------------------------
    def call_module(self, node: fx.Node, args: tuple, kwargs: dict) -> Any:
        path = str(node.target)
        m = self.modules[path]
        value = args[0] if args else None
        if not isinstance(value, _Value):
            raise TypeError(f"to_neural_graph: module '{path}' is not applied to a layer's "
                            "neurons")
        if isinstance(m, _LINEAR):
            return self.linear(m, path, value)
        if isinstance(m, _CONV) and len(m.kernel_size) in (1, 2):
            return self.conv(m, path, value)
        if type(m) in _BATCHNORM:
            return self.batchnorm(m, path, value)
        if type(m) is nn.LayerNorm:
            return self.layernorm(m, path, value)
        if type(m) in _ACTIVATION_MODULES:
            name = _ACTIVATION_MODULES[type(m)]
            if name == "identity":
                return value
            param = m.negative_slope if name == "leaky_relu" else (
                m.omega_0 if name == "sine" else None)
            if name == "gelu" and m.approximate != "none":
                name = "gelu_tanh"
                raise TypeError(f"to_neural_graph: GELU(approximate='tanh') at '{path}' "
                                "is not supported")
            return self.activation(name, param, value)
        if isinstance(m, _PASS_THROUGH):
            return value
        if type(m) in _POOL_NATIVE or type(m) in _POOL_TWINS:
            return self.pool(m, path, value)
        if type(m) is nn.Flatten:
            return self.flatten(value, m.start_dim, m.end_dim, path)
        if _is_encoder_layer(m):
            return self.encoder_layer(m, path, value)
        if _is_encoder(m):
            return self.encoder(m, path, value)
        if _is_attention(m) and args[1:3] == (value, value) and not kwargs.get("need_weights"):
            return ("attention", self.attention(m, path, value))
        raise TypeError(f"to_neural_graph: unsupported module {type(m).__name__} at "
                        f"'{path}'")

    def call_function(self, node: fx.Node, args: tuple, kwargs: dict) -> Any:
        target, path = node.target, node.name
        if getattr(target, "__name__", "") == "check_input":
            return None
        if target in _ADD:
            if kwargs.get("alpha", 1) != 1:
                raise TypeError(f"to_neural_graph: torch.add with alpha at '{path}' is not "
                                "supported")
            return self.add(args[0], args[1], path)
        if target in (operator.sub, operator.isub) and isinstance(args[1], (int, float)):
            return self.add(args[0], -float(args[1]), path)
        if target in _ACTIVATION_FUNCTIONS:
            name = _ACTIVATION_FUNCTIONS[target]
            param = None
            if name == "leaky_relu":
                param = kwargs.get("negative_slope", args[1] if len(args) > 1 else 0.01)
            return self.activation(name, param, args[0])
        if target is torch.flatten:
            start = kwargs.get("start_dim", args[1] if len(args) > 1 else 0)
            end = kwargs.get("end_dim", args[2] if len(args) > 2 else -1)
            return self.flatten(args[0], start, end, path)
        if target is getattr and args[1] == "shape":
            return None
        if target is operator.getitem and args[0] is None:
            return None
        if target is operator.getitem and isinstance(args[0], tuple) and \
                args[0][0] == "attention" and args[1] == 0:
            return args[0][1]
        if target is operator.getitem and isinstance(args[0], _Value):
            return self.select_token(args[0], args[1], path)
        if target is torch.cat:
            parts = args[0]
            dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
            if len(parts) == 2 and isinstance(parts[0], _Attr) and \
                    isinstance(parts[1], _Value) and parts[1].tokens and dim == 1:
                return self.prepend(parts[0], parts[1], path)
            raise TypeError(f"to_neural_graph: unsupported concatenation at '{path}' (only "
                            "a class token prepended to token-major states)")
        if target in (F.dropout, F.dropout1d, F.dropout2d):
            return args[0]
        raise TypeError(f"to_neural_graph: unsupported function "
                        f"{getattr(target, '__name__', target)} at '{path}'")

    def call_method(self, node: fx.Node, args: tuple, kwargs: dict) -> Any:
        name, path = str(node.target), node.name
        value = args[0]
        if name == "size":
            return None
        if name == "expand" and isinstance(value, _Attr):
            return value
        if name == "transpose" and isinstance(value, _Value) and \
                sorted(a % 3 for a in args[1:3]) == [1, 2]:
            return _Value(self.close(value).layer, value.pre, not value.tokens)
        if name == "flatten" and len(args) == 2 and args[1] == 2 and not value.tokens:
            self.close(value)
            return _Value(value.layer, (*value.pre, ("flatten_spatial",)))
        if name in _ACTIVATION_METHODS:
            return self.activation(_ACTIVATION_METHODS[name], None, value)
        if name in ("add", "add_", "__add__"):
            return self.add(value, args[1], path)
        if name == "flatten":
            start = kwargs.get("start_dim", args[1] if len(args) > 1 else 0)
            end = kwargs.get("end_dim", args[2] if len(args) > 2 else -1)
            return self.flatten(value, start, end, path)
        if name in ("view", "reshape") and len(args) == 3 and args[2] == -1:
            return self.flatten(value, 1, -1, path)
        if name in ("contiguous",):
            return value
        raise TypeError(f"to_neural_graph: unsupported method .{name}() at '{path}'")

    def run(self) -> int:
        env: dict[fx.Node, Any] = {}
        graph = _trace(self.model)
        output = None
        for node in graph.nodes:
            args = fx.node.map_arg(node.args, lambda n: env[n])
            kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
            if node.op == "placeholder":
                if any(isinstance(v, _Value) for v in env.values()):
                    raise TypeError("to_neural_graph: networks with several inputs are not "
                                    "supported")
                env[node] = _Value(0, tokens=True)
            elif node.op == "get_attr":
                env[node] = _Attr(str(node.target))
            elif node.op == "call_module":
                env[node] = self.call_module(node, args, kwargs)
            elif node.op == "call_function":
                env[node] = self.call_function(node, args, kwargs)
            elif node.op == "call_method":
                env[node] = self.call_method(node, args, kwargs)
            elif node.op == "output":
                output = args[0]
        if not isinstance(output, _Value) or output.pre or output.layer == 0:
            raise TypeError("to_neural_graph: the network must return the neurons of its last "
                            "layer (no pooling or flatten after it)")
        self.close(output)
        if output.tokens:
            self.layers[output.layer].tokens["neurons_last"] = True
        return output.layer


def _dims(layer: _Layer, pre: tuple) -> int:
    """Spatial (or token) axes left after the pending steps ``pre``."""
    dims = layer.spatial_dims or 0
    for step in pre:
        if step[0] in ("flatten", "select_token"):
            dims = 0
        elif step[0] == "flatten_spatial":
            dims = min(dims, 1)
    return dims


def _is_encoder_layer(m: nn.Module) -> bool:
    return type(m).__name__ in ("TransformerEncoderLayer", "TransformerEncoderLayerAsGNN")


def _is_encoder(m: nn.Module) -> bool:
    return type(m).__name__ in ("TransformerEncoder", "TransformerEncoderAsGNN")


def _is_attention(m: nn.Module) -> bool:
    return type(m).__name__ in ("MultiheadAttention", "MultiHeadCrossAttentionAsGNN",
                                "MultiHeadSelfAttentionAsGNN")


def _map_shape(area: int, spatial_dims: int | None, path: str) -> tuple[int, ...]:
    if spatial_dims == 1:
        return (area,)
    side = math.isqrt(area)
    if side * side != area:
        raise TypeError(f"to_neural_graph: '{path}' reads a flattened map of {area} "
                        "positions per channel; only square maps are supported")
    return (side, side)


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


def _placement(kernel: tuple[int, ...], grid: tuple[int, ...]) -> Tensor:
    """Flat indices of a centred ``kernel`` inside the flattened ``grid``."""
    if len(kernel) < len(grid):
        kernel = (1,) * (len(grid) - len(kernel)) + tuple(kernel)
    ranges = [torch.arange(k) + (g - k) // 2 for k, g in zip(kernel, grid)]
    index = torch.zeros((), dtype=torch.long)
    for r, g in zip(ranges, grid):
        index = index.unsqueeze(-1) * g + r
    return index.reshape(-1)


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
    builder = _Builder(model)
    output = builder.run()
    layers = _reachable(builder.layers, output)
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
        node_activation[lo:hi] = ACTIVATIONS.index(layer.activation)
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
            "tokens": {role: (key, model.get_parameter(key).detach().clone())
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
    if group.kind in ("residual", "layernorm", "attention"):
        return layer.size
    return layer.size * (group.module.weight.shape[1] if group.kind == "conv" else src.size)


def _fill_group(layer: _Layer, group: _Group, src: _Layer, fold: bool, grid: tuple[int, ...],
                edge_index: Tensor, edge_attr: Tensor, edge_mask: Tensor) -> None:
    """Write a group's edges (local target and source neuron indices) and kernels."""
    n_out, n_in = layer.size, src.size
    device = edge_index.device
    if group.kind in ("residual", "layernorm", "attention"):
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
    place = _placement(shape, grid)
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
    values = _kernel_columns(graph.edge_attr[start:stop], shape, grid)
    if kind in ("residual", "layernorm", "attention"):
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


def _kernel_columns(attr: Tensor, shape: tuple[int, ...], grid: tuple[int, ...]) -> Tensor:
    """The columns of ``edge_attr`` that hold a centred kernel of ``shape``."""
    place = _placement(shape, grid)
    first = int(place[0])
    if torch.equal(place, torch.arange(first, first + place.numel())):
        return attr[:, first:first + place.numel()]
    return attr[:, place.to(attr.device)]


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
                params[key].copy_(value)
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
