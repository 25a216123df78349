"""What every message-passing twin shares: graph cache, execution path, native round trip."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing


class MessagePassingModule(MessagePassing):
    """Base class of the twins of torch.nn layers.

    Subclasses set ``native_type`` and implement ``native_kwargs`` (the constructor
    arguments of the torch.nn layer, read from either side), so ``from_native`` and
    ``to_native`` convert with the weights. ``fused`` picks the execution path:
    ``True`` (default) runs ``message_and_aggregate`` on the cached adjacency, ``False``
    runs the per-edge reference ``message`` then ``aggregate``.
    """

    native_type: ClassVar[type[nn.Module]]

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
        """Graph structures depend only on hyper-parameters, shape and device: build once."""
        graph = self._graph_cache.get(key)
        if graph is None:
            graph = self._graph_cache[key] = build()
        return graph

    @staticmethod
    def native_kwargs(module: nn.Module) -> dict[str, Any]:
        """Constructor arguments shared by the native layer and its twin."""
        raise NotImplementedError

    @classmethod
    def from_native(cls, module: nn.Module) -> MessagePassingModule:
        """The twin of an existing torch.nn layer, with its weights, device and dtype."""
        if not isinstance(module, cls.native_type):
            raise TypeError(f"{cls.__name__}.from_native expects {cls.native_type.__name__}, "
                            f"got {type(module).__name__}")
        # The twin's own initialization is overwritten: keep it off the global RNG so
        # converting a model does not change the random stream of what follows.
        with torch.random.fork_rng(devices=[]):
            twin = cls(**cls.native_kwargs(module))
        _copy_state(module, twin)
        return twin

    def to_native(self) -> nn.Module:
        """The torch.nn layer this module twins, with the same weights."""
        with torch.random.fork_rng(devices=[]):
            native = self.native_type(**self.native_kwargs(self))
        _copy_state(self, native)
        return native

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


def _copy_state(src: nn.Module, dst: nn.Module) -> None:
    tensors = list(src.parameters()) + list(src.buffers())
    if tensors:
        dst.to(device=tensors[0].device, dtype=tensors[0].dtype)
    dst.load_state_dict(src.state_dict(), strict=True)
    dst.train(src.training)


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
    return x.movedim(1, -1).reshape(b, -1, c)
