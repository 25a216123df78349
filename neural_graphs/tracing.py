"""Reading a network's dataflow with ``torch.fx`` (internal to ``to_neural_graph``).

:func:`read_network` traces the model (stopping at every ``torch.nn`` and ``modules``
layer, tracing through containers and your own modules) and walks the fx graph: each
Linear, Conv or LayerNorm opens a layer of neurons, BatchNorm, constants, residual
additions and the activation attach to the open layer, and pooling / flatten steps are
recorded on the edges that read them (global pooling ``x.mean((2, 3))`` of feature maps,
and the mean over the tokens ``x.mean(1)`` of token-major states, SimpleViT's pooling, are
pooling steps too). Functions and tensor methods are read in ``trace_functions``,
transformers in ``trace_tokens`` (with the class token and position embedding, held as
parameters or as buffers like SimpleViT's fixed sin-cos embedding).
"""

from __future__ import annotations

from typing import Any

from torch import fx, nn

from modules import Conv1dAsGNN, Conv2dAsGNN, LinearAsGNN
from modules.convert import TWINS
from neural_graphs.activations import Sine, module_activation
from neural_graphs.trace_functions import SUPPORTED, _FunctionMixin, place
from neural_graphs.trace_state import _Attr, _dims, _Group, _Layer, _map_shape, _Value
from neural_graphs.trace_tokens import (
    _is_attention,
    _is_encoder,
    _is_encoder_layer,
    _TokenMixin,
)

__all__ = ["read_network"]

_LINEAR = (nn.Linear, LinearAsGNN)
_CONV = (nn.Conv1d, nn.Conv2d, Conv1dAsGNN, Conv2dAsGNN)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)
_PASS_THROUGH = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout,
                 nn.FeatureAlphaDropout)
_POOL_NATIVE = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
                nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)  # those with a twin in modules/
_POOL_TWINS = {twin: native for native, twin in TWINS.items() if native in _POOL_NATIVE}


class _Tracer(fx.Tracer):
    """Stops at every module this builder reads as a whole; traces through the rest.
    Buffers read in a traced forward are proxied like parameters, so a class token held as
    a buffer can be expanded to the batch (``self.cls_token.expand(x.shape[0], -1, -1)``)."""

    proxy_buffer_attributes = True

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


class _Builder(_TokenMixin, _FunctionMixin):
    """Reads a traced network into layers of neurons and their incoming edge groups."""

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
        try:
            activation = module_activation(m)
        except TypeError as err:
            raise TypeError(f"to_neural_graph: {err}; at '{path}'") from err
        if activation is not None:
            return value if activation[0] == "identity" else self.activation(*activation,
                                                                             value)
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
                        f"'{path}' ({place(node)}); supported: {SUPPORTED}")

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


def read_network(model: nn.Module) -> tuple[list[_Layer], int]:
    """Trace ``model`` and read its layers: ``(layers, index of the output layer)``."""
    builder = _Builder(model)
    output = builder.run()
    return builder.layers, output
