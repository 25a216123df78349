"""What every message-passing twin shares: the native -> twin registry, conversion with
the weights, graph cache, execution path.

Every twin class names the torch.nn layer it twins in its ``native_type`` class attribute;
defining the class registers it (exact types: a subclass of a native layer may change its
forward, so it is never swapped silently). :func:`swap_to_twins` and
:func:`swap_to_native` walk a network with that registry; ``modules.convert`` imports
every component so that the registry is complete.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.nn import MessagePassing

#: native type -> twin type, filled by :meth:`NativeTwin.__init_subclass__`.
TWIN_REGISTRY: dict[type[nn.Module], type[nn.Module]] = {}

#: torch.nn modules that act on each node (position, token, neuron) on its own, or only
#: reshape: they stay native inside a twin.
NODE_WISE: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus,
    nn.Softsign, nn.Tanhshrink, nn.Threshold, nn.LogSigmoid, nn.Softmax, nn.LogSoftmax,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d,
    nn.InstanceNorm2d, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Flatten,
    nn.Unflatten, nn.Identity,
)

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


class NativeTwin:
    """Mixin of every twin: registration, and conversion from and to the native layer.

    A subclass that sets ``native_type`` is registered as the twin of that exact type.
    ``from_native`` builds the twin from ``native_kwargs(native)`` (the constructor
    arguments, read from either side), lets ``_copy_modules`` carry over what the
    constructor cannot (native node-wise sub-modules, converted sub-layers) and copies the
    state_dict (same keys on both sides); ``to_native`` does the same the other way.
    Construction runs under a forked RNG: the initialization is overwritten, and
    converting a model must not change the random stream of what follows.
    """

    native_type: ClassVar[type[nn.Module]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        native = cls.__dict__.get("native_type")
        if native is None:
            return
        known = TWIN_REGISTRY.get(native)
        # The same class defined again (importlib.reload) replaces the old one.
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise TypeError(f"{cls.__qualname__}: {native.__name__} already has the twin "
                            f"{known.__module__}.{known.__qualname__}")
        TWIN_REGISTRY[native] = cls

    @staticmethod
    def native_kwargs(module: nn.Module) -> dict[str, Any]:
        """Constructor arguments shared by the native layer and its twin."""
        raise NotImplementedError

    def _copy_modules(self, src: nn.Module, dst: nn.Module) -> None:
        """Sub-modules the constructor cannot rebuild, from ``src`` into ``dst`` (one of
        them is ``self``); the state_dict is copied afterwards."""

    @classmethod
    def from_native(cls, module: nn.Module) -> nn.Module:
        """The twin of an existing torch.nn layer, with its weights, device and dtype."""
        if not isinstance(module, cls.native_type):
            raise TypeError(f"{cls.__name__}.from_native expects {cls.native_type.__name__}, "
                            f"got {type(module).__name__}")
        with torch.random.fork_rng(devices=[]):
            twin = cls(**cls.native_kwargs(module))
        twin._copy_modules(module, twin)
        _copy_state(module, twin)
        return twin

    def to_native(self) -> nn.Module:
        """The torch.nn layer this module twins, with the same weights."""
        with torch.random.fork_rng(devices=[]):
            native = self.native_type(**self.native_kwargs(self))
        self._copy_modules(self, native)
        _copy_state(self, native)
        return native


def _copy_state(src: nn.Module, dst: nn.Module) -> None:
    tensors = list(src.parameters()) + list(src.buffers())
    if tensors:
        dst.to(device=tensors[0].device, dtype=tensors[0].dtype)
    dst.load_state_dict(src.state_dict(), strict=True)
    dst.train(src.training)


def copy_named_modules(src: nn.Module, dst: nn.Module, names: tuple[str, ...]) -> None:
    """Deep copies of ``src``'s sub-modules (or functions) ``names`` set on ``dst``."""
    for name in names:
        setattr(dst, name, copy.deepcopy(getattr(src, name)))


def swap_to_twins(model: nn.Module, path: str = "") -> nn.Module:
    """``model`` with every registered native layer replaced by its twin, in place.

    Node-wise modules stay; another torch.nn layer raises ``TypeError`` naming it and its
    path; other modules are walked into.
    """
    twin_type = TWIN_REGISTRY.get(type(model))
    if twin_type is not None:
        return twin_type.from_native(model)
    if isinstance(model, (NativeTwin, *NODE_WISE)):
        return model
    is_torch_layer = type(model).__module__.startswith("torch.nn.")
    if is_torch_layer and not isinstance(model, _CONTAINERS):
        raise TypeError(f"to_gnn: no message-passing twin for {type(model).__name__} at "
                        f"'{path or '<root>'}'; supported: "
                        f"{sorted(t.__name__ for t in TWIN_REGISTRY)} and node-wise modules")
    for name, child in model.named_children():
        setattr(model, name, swap_to_twins(child, f"{path}.{name}" if path else name))
    return model


def swap_to_native(model: nn.Module) -> nn.Module:
    """``model`` with every twin replaced by its torch.nn layer, in place."""
    if isinstance(model, NativeTwin):
        return model.to_native()
    for name, child in model.named_children():
        setattr(model, name, swap_to_native(child))
    return model


class MessagePassingModule(NativeTwin, MessagePassing):
    """Base class of the twins that run message passing themselves.

    ``fused`` picks the execution path: ``True`` (default) runs ``message_and_aggregate``
    on the cached adjacency, ``False`` runs the per-edge reference ``message`` then
    ``aggregate``. Graph structures depend only on hyper-parameters, input shape and
    device: :meth:`cached` builds each once.
    """

    def __init__(self, aggr: str | None = "sum", node_dim: int = -2) -> None:
        super().__init__(aggr=aggr, node_dim=node_dim)
        self.fused = True
        self._graph_cache: dict[Hashable, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Graphs are rebuilt on demand: copies and pickles carry no cache (torch cannot
        # deep-copy sparse CSR tensors, and the cache may hold other devices' graphs).
        state = super().__getstate__().copy()
        state["_graph_cache"] = {}
        return state

    def cached(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """The graph structure under ``key``, built once."""
        graph = self._graph_cache.get(key)
        if graph is None:
            graph = self._graph_cache[key] = build()
        return graph

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


def set_fused(model: nn.Module, fused: bool) -> nn.Module:
    """Select the fused (default) or the per-edge reference path in every twin of a model."""
    for module in model.modules():
        if isinstance(module, MessagePassingModule):
            module.fused = fused
    return model


def nodes_last_to_channels(x: Tensor, spatial: tuple[int, ...]) -> Tensor:
    """(B, N, C) node features back to (B, C, *spatial), a view in channels-last memory."""
    b, _, c = x.shape
    out = x.view(b, *spatial, c)
    return out.permute(0, out.dim() - 1, *range(1, out.dim() - 1))


def channels_to_nodes(x: Tensor) -> Tensor:
    """(B, C, *spatial) to (B, N, C) node features; free when x is channels-last."""
    b, c = x.shape[:2]
    n = 1
    for size in x.shape[2:]:
        n *= size
    return x.movedim(1, -1).reshape(b, n, c)


def parameter_edges(weight: Tensor, groups: int = 1) -> tuple[Tensor, Tensor]:
    """The neural-graph edges of a Linear or convolution weight.

    One edge per (input neuron, output neuron) pair that a weight connects (inside a
    channel group for grouped convolutions), target-major. Returns the local
    ``(source, target)`` neuron indices ``[2, E]`` and each edge's kernel ``[E, *kernel]``
    (``[E, 1]`` for a Linear weight).
    """
    n_out, per_group = weight.shape[:2]
    out_per_group = n_out // groups
    targets = torch.arange(n_out, device=weight.device)
    sources = (targets // out_per_group * per_group)[:, None] + torch.arange(
        per_group, device=weight.device)
    kernel = weight.shape[2:] or (1,)
    return (torch.stack([sources.reshape(-1), targets.repeat_interleave(per_group)]),
            weight.reshape(n_out * per_group, *kernel))


def layer_neural_graph(weight: Tensor, bias: Tensor | None, groups: int = 1) -> Data:
    """The bipartite neural graph of one Linear or convolution layer.

    Nodes: the layer's input neurons (channels), then its output neurons; ``x`` ``[N, 1]``
    holds each output neuron's bias (0 for inputs), ``node_layer`` 0 or 1. Edges
    (:func:`parameter_edges`) carry the flattened kernel in ``edge_attr`` ``[E, k]``;
    ``kernel_shape`` is the kernel's shape (``(1,)`` for Linear).
    """
    n_out, n_in = weight.shape[0], weight.shape[1] * groups
    edge_index, kernels = parameter_edges(weight.detach(), groups)
    edge_index[1] += n_in
    x = weight.new_zeros(n_in + n_out, 1)
    if bias is not None:
        x[n_in:, 0] = bias.detach()
    node_layer = torch.cat([torch.zeros(n_in, dtype=torch.long),
                            torch.ones(n_out, dtype=torch.long)]).to(weight.device)
    return Data(x=x, edge_index=edge_index, edge_attr=kernels.flatten(1), node_layer=node_layer,
                kernel_shape=tuple(weight.shape[2:]) or (1,), num_nodes=n_in + n_out)
