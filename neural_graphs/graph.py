"""Networks as neural graphs: one node per neuron, one edge per weight (or kernel).

``to_neural_graph(model)`` traces the model with ``torch.fx`` (no per-model code), reads
the dataflow between its layers and returns a :class:`torch_geometric.data.Data`:

Nodes (``N`` = every neuron of every layer, layers in topological order, input first):

* ``x`` ``[N, 1]``: the neuron's bias (0 for input neurons and bias-free layers). With
  ``batchnorm="nodes"`` ``[N, 5]``: bias, then the BatchNorm ``weight``, ``bias``,
  ``running_mean`` and ``running_var`` of the neuron's channel (1, 0, 0, 1 where there is
  no BatchNorm).
* ``node_layer`` ``[N]``: the layer index (0 = input layer).
* ``node_index`` ``[N]``: the neuron's index inside its layer (channel, feature).
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
from modules.convert import TWINS
from neural_graphs.inr import Sine

__all__ = [
    "ACTIVATIONS",
    "EDGE_TYPES",
    "NODE_TYPES",
    "fold_batchnorm",
    "from_neural_graph",
    "layer_snapshots",
    "to_neural_graph",
]

ACTIVATIONS = ("identity", "relu", "leaky_relu", "gelu", "silu", "tanh", "sigmoid", "sine")
EDGE_TYPES = ("linear", "conv", "flatten", "residual", "layernorm")
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
                nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
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


@dataclass(frozen=True)
class _Value:
    """A traced tensor: the states of a layer's neurons, with pending pooling/flatten."""

    layer: int
    pre: tuple = ()


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
        elif src_layer.size != m.in_features:
            raise TypeError(f"to_neural_graph: '{path}' expects {m.in_features} inputs, "
                            f"its source has {src_layer.size} neurons")
        layer = self.new_layer("linear", m.out_features, path, m, 0)
        layer.groups.append(group)
        return _Value(layer.index)

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
        if m.running_mean is None or not m.affine:
            raise TypeError(f"to_neural_graph: BatchNorm at '{path}' needs running "
                            "statistics and affine parameters")
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
        if self.layers[src].spatial_dims:
            raise TypeError(f"to_neural_graph: LayerNorm at '{path}' normalizes a spatial "
                            "axis, not the neurons")
        layer = self.new_layer("layernorm", shape[0], path, m, 0)
        layer.groups.append(_Group(src, "layernorm", pre, m, path, {"eps": m.eps}))
        return _Value(layer.index)

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
            if not self.is_open(b) or self.layers[b.layer].batchnorm is not None:
                b = self.identity_layer([b], path)
            self.layers[b.layer].offset += float(a)
            return b
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
        raise TypeError(f"to_neural_graph: unsupported module {type(m).__name__} at "
                        f"'{path}'")

    def call_function(self, node: fx.Node, args: tuple, kwargs: dict) -> Any:
        target, path = node.target, node.name
        if getattr(target, "__name__", "") == "check_input":
            return None
        if target in _ADD:
            return self.add(args[0], args[1], path)
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
        if target in (F.dropout, F.dropout1d, F.dropout2d):
            return args[0]
        raise TypeError(f"to_neural_graph: unsupported function "
                        f"{getattr(target, '__name__', target)} at '{path}'")

    def call_method(self, node: fx.Node, args: tuple, kwargs: dict) -> Any:
        name, path = str(node.target), node.name
        value = args[0]
        if name == "size":
            return None
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
                env[node] = _Value(0)
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
        return output.layer


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
    node_index = torch.cat([torch.arange(lay.size) for lay in layers])
    node_type = torch.ones(total, dtype=torch.long)
    node_type[: layers[0].size] = 0
    node_type[offsets[-1]:] = 2
    node_activation = torch.zeros(total, dtype=torch.long)

    edge_index, edge_attr, edge_mask, edge_type, edge_layer = [], [], [], [], []
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
        for group in layer.groups:
            src = renumber[group.source]
            s_lo = offsets[src]
            dst, srcs, attr, mask = _group_edges(layer, group, layers[src], fold, grid)
            start = n_edges
            n_edges += dst.numel()
            edge_index.append(torch.stack([srcs + s_lo, dst + lo]))
            edge_attr.append(attr.to(**factory))
            edge_mask.append(mask)
            edge_type.append(torch.full((dst.numel(),), EDGE_TYPES.index(group.kind)))
            edge_layer.append(torch.full((dst.numel(),), index))
            groups_meta.append({
                "source": src, "kind": group.kind, "pre": list(group.pre),
                "params": dict(group.params), "edges": (start, n_edges),
                "weight": _param_path(group.path, "weight") if group.module is not None
                and group.kind != "layernorm" else None,
            })
        meta.append({
            "path": layer.path, "kind": layer.kind, "size": layer.size,
            "spatial_dims": layer.spatial_dims or 0, "activation": layer.activation,
            "activation_param": layer.activation_param, "offset": layer.offset,
            "flatten_input": layer.flatten_input, "nodes": (lo, hi),
            "bias": _param_path(layer.path, "bias")
            if layer.module is not None and getattr(layer.module, "bias", None) is not None
            else None,
            "batchnorm": None if layer.batchnorm is None else {
                "path": layer.batchnorm_path, "eps": layer.batchnorm.eps, "folded": fold},
            "groups": groups_meta,
        })
    empty = torch.zeros(0, dtype=torch.long)
    return Data(
        x=x, edge_index=torch.cat(edge_index, 1).to(factory["device"]) if edge_index
        else empty.view(2, 0),
        edge_attr=torch.cat(edge_attr) if edge_attr else torch.zeros(0, width, **factory),
        edge_mask=torch.cat(edge_mask).to(factory["device"]) if edge_mask
        else torch.zeros(0, width, dtype=torch.bool),
        edge_type=torch.cat(edge_type).to(factory["device"]),
        edge_layer=torch.cat(edge_layer).to(factory["device"]),
        node_layer=node_layer.to(factory["device"]),
        node_index=node_index.to(factory["device"]),
        node_type=node_type.to(factory["device"]),
        node_activation=node_activation.to(factory["device"]),
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


def _group_edges(layer: _Layer, group: _Group, src: _Layer, fold: bool,
                 grid: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Local (target, source) neuron indices of a group's edges and their kernels."""
    width = math.prod(grid)
    n_out, n_in = layer.size, src.size
    if group.kind in ("residual", "layernorm"):
        dst = srcs = torch.arange(n_out)
        kernel = (torch.ones(n_out) if group.kind == "residual"
                  else group.module.weight.detach()).view(n_out, 1)
        shape: tuple[int, ...] = (1,)
    else:
        weight = _layer_weight(layer, group, fold)
        if group.kind == "flatten":
            shape = group.params["map_shape"]
            weight = weight.reshape(n_out, n_in, *shape)
        elif group.kind == "linear":
            shape = (1,)
            weight = weight.unsqueeze(-1)
        else:
            shape = group.params["kernel_size"]
        per_group = weight.shape[1]
        groups = n_in // per_group
        out_per_group = n_out // groups
        dst = torch.arange(n_out).repeat_interleave(per_group)
        srcs = (torch.arange(n_out) // out_per_group * per_group).repeat_interleave(
            per_group) + torch.arange(per_group).repeat(n_out)
        kernel = weight.reshape(n_out * per_group, -1)
    place = _placement(shape, grid)
    attr = kernel.new_zeros(dst.numel(), width)
    attr[:, place] = kernel
    mask = torch.zeros(dst.numel(), width, dtype=torch.bool)
    mask[:, place] = True
    return dst, srcs, attr, mask


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
    place = _placement(shape, grid).to(graph.edge_attr.device)
    values = graph.edge_attr[start:stop][:, place]
    if kind in ("residual", "layernorm"):
        out = values.new_zeros(n_out)
        return out.index_put((dst,), values[:, 0])
    if kind == "conv":
        per_group = src_layer["size"] // group["params"]["groups"]
        out_per_group = n_out // group["params"]["groups"]
        srcs = srcs - dst // out_per_group * per_group
        out = values.new_zeros(n_out, per_group, math.prod(shape))
        out = out.index_put((dst, srcs), values)
        return out.view(n_out, per_group, *shape)
    out = values.new_zeros(n_out, src_layer["size"], math.prod(shape))
    out = out.index_put((dst, srcs), values)
    if kind == "linear":
        return out.view(n_out, src_layer["size"])
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
                params[key].copy_(graph.x[lo:hi, 0])
            if layer["batchnorm"] is not None and not fold:
                path = layer["batchnorm"]["path"]
                for col, name in enumerate(("weight", "bias")):
                    params[_param_path(path, name)].copy_(graph.x[lo:hi, 1 + col])
                for col, name in enumerate(("running_mean", "running_var")):
                    buffers[_param_path(path, name)].copy_(graph.x[lo:hi, 3 + col])
            for group in layer["groups"]:
                if group["weight"] is not None:
                    p = params[group["weight"]]
                    p.copy_(group_weight(graph, index, group).reshape(p.shape))
                elif group["kind"] == "layernorm":
                    params[_param_path(layer["path"], "weight")].copy_(
                        group_weight(graph, index, group))
    return model


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
