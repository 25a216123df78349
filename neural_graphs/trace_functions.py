"""Functions and tensor methods in ``to_neural_graph`` (internal).

What the graph supports as a module it supports in functional and method form too:
activations (``F.relu``, ``torch.tanh``, ``x.sigmoid()``, in-place variants), pooling
(``F.max_pool2d``, ``F.adaptive_avg_pool2d``, ...; global pooling written as
``x.mean((2, 3))``, ``x.mean(dim=(-2, -1))``, ``x.amax(...)``; the mean over the tokens of
token-major ``[B, T, C]`` states, ``x.mean(1)``, ``x.mean(dim=-2)``, ``torch.mean(x, 1)``,
as in SimpleViT), flatten (``torch.flatten``, ``x.flatten(1)``, ``x.view(x.size(0), -1)``,
``x.reshape(x.shape[0], -1)``), dropout and additions. Anything else raises ``TypeError``
naming the operation, its place in the model and what is supported.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from neural_graphs.activations import ACTIVATION_METHODS, ACTIVATIONS, function_activation
from neural_graphs.trace_state import _Attr, _dims, _Layer, _Value

__all__ = ["SUPPORTED"]

#: What ``to_neural_graph`` reads, for error messages.
SUPPORTED = (
    "Linear, Conv1d/Conv2d, BatchNorm1d/2d (eval), LayerNorm, the activations "
    f"{', '.join(ACTIVATIONS)} (modules, F./torch. functions or tensor methods), "
    "MaxPool/AvgPool 1d/2d, AdaptiveAvgPool1d/2d and AdaptiveMaxPool2d (modules or F. "
    "functions; global pooling also as x.mean/x.amax over the spatial axes, and "
    "x.mean(1) over the tokens of token-major [batch, tokens, channels] states), flatten "
    "(nn.Flatten, torch.flatten(x, 1), x.flatten(1), x.view/reshape(x.size(0), -1)), "
    "Dropout and Identity (ignored), residual and constant additions, multi-head "
    "self-attention and Transformer encoder layers, the ViT class token and position "
    "embedding (parameters or buffers); containers (Sequential, ModuleList, ModuleDict, "
    "your own modules) are traced through")

_ADD = (operator.add, operator.iadd, torch.add)
_SUB = (operator.sub, operator.isub, torch.sub)
_DROPOUT = (F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout, F.feature_alpha_dropout)
# Pooling functions: the module they are a form of, and their positional parameters.
_POOL_FUNCTIONS: dict[Any, tuple[type[nn.Module], tuple[str, ...]]] = {
    F.max_pool1d: (nn.MaxPool1d, ("kernel_size", "stride", "padding", "dilation",
                                  "ceil_mode", "return_indices")),
    F.max_pool2d: (nn.MaxPool2d, ("kernel_size", "stride", "padding", "dilation",
                                  "ceil_mode", "return_indices")),
    F.avg_pool1d: (nn.AvgPool1d, ("kernel_size", "stride", "padding", "ceil_mode",
                                  "count_include_pad")),
    F.avg_pool2d: (nn.AvgPool2d, ("kernel_size", "stride", "padding", "ceil_mode",
                                  "count_include_pad", "divisor_override")),
    F.adaptive_avg_pool1d: (nn.AdaptiveAvgPool1d, ("output_size",)),
    F.adaptive_avg_pool2d: (nn.AdaptiveAvgPool2d, ("output_size",)),
    F.adaptive_max_pool2d: (nn.AdaptiveMaxPool2d, ("output_size", "return_indices")),
}
# Global pooling methods / functions over every spatial axis: the adaptive pool per
# number of spatial axes (None: no message-passing twin).
_REDUCTIONS = {"mean": (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d),
               "amax": (None, nn.AdaptiveMaxPool2d)}
_REDUCTION_FUNCTIONS = {torch.mean: "mean", torch.amax: "amax"}


def place(node: fx.Node) -> str:
    """Where an fx node sits in the model: its module path and type, and the node."""
    stack = node.meta.get("nn_module_stack") or {}
    owner = list(stack.values())[-1] if stack else None
    if owner and owner[0]:
        kind = getattr(owner[1], "__name__", owner[1])
        return f"in '{owner[0]}' ({kind}.forward), fx node '{node.name}'"
    return f"in the model's forward, fx node '{node.name}'"


def unsupported(what: str, node: fx.Node, why: str = "") -> TypeError:
    """The ``TypeError`` for an operation the graph cannot hold."""
    why = f" ({why})" if why else ""
    return TypeError(f"to_neural_graph: unsupported {what} {place(node)}{why}; "
                     f"supported: {SUPPORTED}")


def _axes(dim: Any, ndim: int) -> list[int] | None:
    """The sorted axes a reduction's ``dim`` names in an ``ndim``-d tensor (negative ones
    counted from the end); None when it names none, a non-integer or one twice."""
    dims = (dim,) if isinstance(dim, int) else tuple(dim) if dim is not None else ()
    axes = sorted({d % ndim for d in dims if isinstance(d, int)})
    return axes if axes and len(axes) == len(dims) else None


def _argument(args: tuple, kwargs: dict, index: int, name: str, default: Any) -> Any:
    return kwargs.get(name, args[index] if len(args) > index else default)


class _FunctionMixin:
    """The function and method half of the network reader; mixed into
    ``tracing._Builder``, whose module-level operations it calls."""

    layers: list[_Layer]

    # -- function and method forms of module operations ------------------------------
    def pool_function(self, node: fx.Node, args: tuple, kwargs: dict) -> _Value:
        native, names = _POOL_FUNCTIONS[node.target]
        params = dict(zip(names, args[1:]))
        params.update({k: v for k, v in kwargs.items() if k in names})
        if params.get("stride") is None:
            params.pop("stride", None)
        try:
            m = native(**params)
        except TypeError as err:
            raise unsupported(f"call of {node.target.__name__}", node, str(err)) from err
        return self.pool(m, node.name, self.value_of(args[0], node))

    def reduction(self, how: str, value: Any, dim: Any, keepdim: bool,
                  node: fx.Node) -> _Value:
        """``x.mean(dims)`` / ``x.amax(dims)`` over every spatial axis: global pooling;
        over the tokens of token-major states see :meth:`token_reduction`."""
        value = self.value_of(value, node)
        if value.tokens:
            return self.token_reduction(how, value, dim, keepdim, node)
        spatial = _dims(self.layers[value.layer], value.pre)
        if not spatial or _axes(dim, 2 + spatial) != list(range(2, 2 + spatial)):
            raise unsupported(f"reduction .{how}(dim={dim})", node, "only a global "
                              "pooling over every spatial axis of conv feature maps")
        native = _REDUCTIONS[how][spatial - 1]
        if native is None:
            raise unsupported(f".{how}() over a 1-d map", node, "AdaptiveMaxPool1d has no "
                              "message-passing twin")
        value = self.pool(native(1), node.name, value)
        return value if keepdim else self.flatten(value, 1, -1, node.name)

    def token_reduction(self, how: str, value: _Value, dim: Any, keepdim: bool,
                        node: fx.Node) -> _Value:
        """A reduction of token-major ``[B, T, C]`` states. Only the mean over the tokens
        (axis 1, SimpleViT's pooling) is an exact pooling of every neuron on its own; over
        the channels it would mix neurons, and a max over the tokens has no pooling twin
        (AdaptiveMaxPool1d)."""
        if how != "mean" or _dims(self.layers[value.layer], value.pre) != 1 or \
                _axes(dim, 3) != [1]:
            raise unsupported(f"reduction .{how}(dim={dim}) of token-major states", node,
                              "only the mean over the tokens, x.mean(1) / x.mean(-2) / "
                              "torch.mean(x, 1) of [batch, tokens, channels]")
        return self.mean_tokens(value, keepdim, node.name)

    def value_of(self, value: Any, node: fx.Node) -> _Value:
        if not isinstance(value, _Value):
            raise unsupported(f"operation '{node.target}' on a non-neuron value", node)
        return value

    def reshape(self, value: Any, shape: tuple, node: fx.Node) -> _Value:
        """``view`` / ``reshape`` to ``(batch, -1)``: a flatten."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        if len(shape) != 2 or shape[0] is not None or shape[1] != -1:
            raise unsupported(f"reshape to {shape}", node, "only x.view(x.size(0), -1) or "
                              "x.reshape(x.shape[0], -1), flattening all but the batch")
        return self.flatten(self.value_of(value, node), 1, -1, node.name)

    # -- fx nodes --------------------------------------------------------------------
    def call_function(self, node: fx.Node, args: tuple, kwargs: dict) -> Any:
        target, path = node.target, node.name
        if getattr(target, "__name__", "") == "check_input":
            return None
        if target in _ADD:
            if kwargs.get("alpha", 1) != 1:
                raise unsupported("torch.add with alpha", node)
            return self.add(args[0], args[1], path)
        if target in _SUB and isinstance(args[1], (int, float)) and \
                kwargs.get("alpha", 1) == 1:
            return self.add(args[0], -float(args[1]), path)
        try:
            activation = function_activation(target, args[1:], kwargs)
        except TypeError as err:
            raise unsupported(f"function {target.__name__}", node, str(err)) from err
        if activation is not None:
            return self.activation(*activation, self.value_of(args[0], node))
        if target in _POOL_FUNCTIONS:
            return self.pool_function(node, args, kwargs)
        if target in _REDUCTION_FUNCTIONS:
            return self.reduction(_REDUCTION_FUNCTIONS[target], args[0],
                                  _argument(args, kwargs, 1, "dim", None),
                                  _argument(args, kwargs, 2, "keepdim", False), node)
        if target is torch.flatten:
            return self.flatten(self.value_of(args[0], node),
                                _argument(args, kwargs, 1, "start_dim", 0),
                                _argument(args, kwargs, 2, "end_dim", -1), path)
        if target is torch.reshape:
            return self.reshape(args[0], (_argument(args, kwargs, 1, "shape", ()),), node)
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
            dim = _argument(args, kwargs, 1, "dim", 0)
            if len(parts) == 2 and isinstance(parts[0], _Attr) and \
                    isinstance(parts[1], _Value) and parts[1].tokens and dim == 1:
                return self.prepend(parts[0], parts[1], path)
            raise unsupported("concatenation torch.cat", node, "only a class token "
                              "prepended to token-major states")
        if target in _DROPOUT:
            return args[0]
        raise unsupported(f"function {getattr(target, '__name__', target)}", node)

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
        if name == "flatten" and len(args) == 2 and args[1] == 2 and \
                isinstance(value, _Value) and not value.tokens:
            self.close(value)
            return _Value(value.layer, (*value.pre, ("flatten_spatial",)))
        if name in ACTIVATION_METHODS:
            return self.activation(ACTIVATION_METHODS[name], None, self.value_of(value, node))
        if name in ("add", "add_", "__add__"):
            return self.add(value, args[1], path)
        if name in _REDUCTIONS:
            return self.reduction(name, value, _argument(args, kwargs, 1, "dim", None),
                                  _argument(args, kwargs, 2, "keepdim", False), node)
        if name == "flatten":
            return self.flatten(self.value_of(value, node),
                                _argument(args, kwargs, 1, "start_dim", 0),
                                _argument(args, kwargs, 2, "end_dim", -1), path)
        if name in ("view", "reshape"):
            return self.reshape(value, args[1:] or (kwargs.get("shape", ()),), node)
        if name == "contiguous":
            return value
        raise unsupported(f"method .{name}()", node)
