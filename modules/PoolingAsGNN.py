"""Pooling as message passing: messages are the source features, unchanged; the
aggregation is max or mean over the window's edges.

Nodes are spatial positions carrying channel features; each output position receives
one edge per window offset. Padding means absent edges (torch pads pooling with -inf
for max and zeros for average); average pooling divides by the window size (padding
included or not, or ``divisor_override``), a per-target node attribute.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _ntuple
from torch_geometric.data import Data

from modules.base import MessagePassingModule, channels_to_nodes, nodes_last_to_channels
from modules.equivalence import Case, run_check
from modules.window_graph import (
    WindowGraph,
    adaptive_axis,
    combine_axes,
    ell_table,
    gather_windows,
    pooling_out_len,
    sliding_axis,
)


class _PoolAsGNN(MessagePassingModule):
    """Shared machinery: input checks, cached window graph, node layout, both paths."""

    n: int = 2
    reduce: str = "max"

    def __init__(self) -> None:
        super().__init__(aggr=self.reduce, node_dim=-2)

    @staticmethod
    def native_kwargs(module: nn.Module) -> dict[str, Any]:
        raise NotImplementedError

    def _validate_input(self, input: Tensor) -> tuple[Tensor, bool]:
        n = self.n
        if input.dim() not in (n + 1, n + 2):
            raise RuntimeError(f"{type(self).__name__}: expected {n + 1}D (unbatched) or "
                               f"{n + 2}D (batched) input, but got input of size: "
                               f"{list(input.shape)}")
        if any(s == 0 for s in input.shape[-n:]):
            raise RuntimeError(f"{type(self).__name__}: expected non-empty spatial dimensions, "
                               f"got input of size {list(input.shape)}")
        unbatched = input.dim() == n + 1
        return (input.unsqueeze(0) if unbatched else input), unbatched

    def _build(self, spatial: tuple[int, ...], device: torch.device) -> WindowGraph:
        raise NotImplementedError

    def _window_graph(self, spatial: tuple[int, ...], device: torch.device) -> WindowGraph:
        return self.cached((spatial, device), lambda: self._build(spatial, device))

    def _divisor(self, graph: WindowGraph, device: torch.device) -> Tensor:
        return torch.ones(())

    def graph(self, input_shape: Sequence[int]) -> Data:
        """The position graph for an input of this shape ((B,) C, *spatial)."""
        x, _ = self._validate_input(torch.empty(tuple(input_shape), device="meta"))
        g = self._window_graph(tuple(x.shape[2:]), torch.device("cpu"))
        extra = {} if self.reduce == "max" else {"divisor": self._divisor(g, g.table.device)}
        return g.to_data(**extra)

    def forward(self, input: Tensor) -> Tensor:
        x, unbatched = self._validate_input(input)
        g = self._window_graph(tuple(x.shape[2:]), x.device)
        nodes = channels_to_nodes(x)
        # A sparse adjacency makes PyG call message_and_aggregate; an edge list, message.
        if self.fused:
            adj, edge_source = g.adj_t, None
        else:
            adj, _ = self.cached(("edges", g.input_size, x.device), g.edges)
            edge_source = adj[0]
        out = self.propagate(adj, x=nodes, divisor=self._divisor(g, x.device),
                             edge_source=edge_source, padded=g.padded, tiled=g.tiled,
                             size=(g.num_src_nodes, g.num_dst_nodes))
        if isinstance(out, tuple):
            out, index = out
            index = nodes_last_to_channels(index, g.output_size)
            out = nodes_last_to_channels(out, g.output_size)
            return (out.squeeze(0), index.squeeze(0)) if unbatched else (out, index)
        out = nodes_last_to_channels(out, g.output_size)
        return out.squeeze(0) if unbatched else out

    def message(self, x_j: Tensor) -> Tensor:
        return x_j


class _MaxPoolAsGNN(_PoolAsGNN):
    reduce = "max"
    return_indices: bool = False

    def message_and_aggregate(self, adj_t: Tensor, x: Tensor, padded: bool,
                              tiled: bool) -> Tensor | tuple[Tensor, Tensor]:
        windows = gather_windows(adj_t, x, padded, tiled, float("-inf"))
        if not (self.return_indices or (torch.is_grad_enabled() and x.requires_grad)):
            return windows.amax(dim=2)  # same values; no argmax to route gradients to
        # max() routes the gradient to the first maximal edge of each window, as torch does.
        values, arg = windows.max(dim=2)
        if not self.return_indices:
            return values
        return values, self._source_of(adj_t, arg)

    @staticmethod
    def _source_of(adj_t: Tensor, arg: Tensor) -> Tensor:
        """Flat input index of the window offset ``arg`` (B, N_dst, C) of each target."""
        table = ell_table(adj_t)
        b, n, c = arg.shape
        return table[None, :, :, None].expand(b, n, table.shape[1], c).gather(
            2, arg.unsqueeze(2)).squeeze(2)

    def aggregate(self, inputs: Tensor, index: Tensor, edge_source: Tensor,
                  dim_size: int | None = None) -> Tensor | tuple[Tensor, Tensor]:
        out = super().aggregate(inputs, index, dim_size=dim_size)
        if not self.return_indices:
            return out
        # Edges are sorted by (target, window offset): the first edge carrying the maximum
        # is the one torch reports.
        edge_id = torch.arange(index.numel(), device=index.device)[None, :, None]
        hit = inputs == out.index_select(-2, index)
        first = torch.full(out.shape, index.numel(), dtype=torch.long, device=out.device)
        first = first.scatter_reduce(-2, index[None, :, None].expand(hit.shape),
                                     torch.where(hit, edge_id, index.numel()), "amin")
        return out, edge_source[first]

    def update(self, aggr_out: Tensor) -> Tensor:
        return aggr_out


class _AvgPoolAsGNN(_PoolAsGNN):
    reduce = "sum"

    def message_and_aggregate(self, adj_t: Tensor, x: Tensor, padded: bool,
                              tiled: bool) -> Tensor:
        return gather_windows(adj_t, x, padded, tiled).sum(dim=2)

    def update(self, aggr_out: Tensor, divisor: Tensor) -> Tensor:
        return aggr_out / divisor.to(aggr_out.dtype)


class _SlidingMaxPoolAsGNN(_MaxPoolAsGNN):
    def __init__(self, kernel_size: int | tuple[int, ...],
                 stride: int | tuple[int, ...] | None = None,
                 padding: int | tuple[int, ...] = 0, dilation: int | tuple[int, ...] = 1,
                 return_indices: bool = False, ceil_mode: bool = False) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.dilation = dilation
        self.return_indices = return_indices
        self.ceil_mode = ceil_mode

    @staticmethod
    def native_kwargs(module: nn.Module) -> dict[str, Any]:
        return {k: getattr(module, k) for k in (
            "kernel_size", "stride", "padding", "dilation", "return_indices", "ceil_mode")}

    def extra_repr(self) -> str:
        return nn.modules.pooling._MaxPoolNd.extra_repr(self)

    def _build(self, spatial: tuple[int, ...], device: torch.device) -> WindowGraph:
        ntuple = _ntuple(self.n)
        kernel, stride, pad, dil = (ntuple(v) for v in (
            self.kernel_size, self.stride, self.padding, self.dilation))
        return _sliding_graph(self, spatial, kernel, stride, pad, dil, device)


class MaxPool1dAsGNN(_SlidingMaxPoolAsGNN):
    """Twin of :class:`torch.nn.MaxPool1d`: max over each window's edges."""

    n = 1
    native_type = nn.MaxPool1d


class MaxPool2dAsGNN(_SlidingMaxPoolAsGNN):
    """Twin of :class:`torch.nn.MaxPool2d`: max over each window's edges."""

    n = 2
    native_type = nn.MaxPool2d


class _SlidingAvgPoolAsGNN(_AvgPoolAsGNN):
    def __init__(self, kernel_size: int | tuple[int, ...],
                 stride: int | tuple[int, ...] | None = None,
                 padding: int | tuple[int, ...] = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: int | None = None) -> None:
        super().__init__()
        if divisor_override is not None and divisor_override == 0:
            raise RuntimeError("divisor must be not zero")
        # Stored as torch stores them: tuples for 1d, as given for 2d.
        keep = _ntuple(1) if self.n == 1 else (lambda v: v)
        self.kernel_size = keep(kernel_size)
        self.stride = keep(stride if stride is not None else kernel_size)
        self.padding = keep(padding)
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override

    @staticmethod
    def native_kwargs(module: nn.Module) -> dict[str, Any]:
        keys = ["kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"]
        if isinstance(module, (nn.AvgPool2d, AvgPool2dAsGNN)):
            keys.append("divisor_override")
        return {k: getattr(module, k) for k in keys}

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    def _build(self, spatial: tuple[int, ...], device: torch.device) -> WindowGraph:
        ntuple = _ntuple(self.n)
        return _sliding_graph(self, spatial, ntuple(self.kernel_size), ntuple(self.stride),
                              ntuple(self.padding), (1,) * self.n, device)

    def _divisor(self, graph: WindowGraph, device: torch.device) -> Tensor:
        def build() -> Tensor:
            if self.divisor_override is not None:
                return torch.tensor(float(self.divisor_override), device=device)
            if self.count_include_pad:
                size = graph.window_size
            else:
                size = (graph.table != graph.num_src_nodes).sum(1)
            return size.to(device=device, dtype=torch.float64)[:, None]
        return self.cached(("divisor", graph.input_size, device), build)


class AvgPool1dAsGNN(_SlidingAvgPoolAsGNN):
    """Twin of :class:`torch.nn.AvgPool1d`: window sum divided by the window size."""

    n = 1
    native_type = nn.AvgPool1d

    def __init__(self, kernel_size: int | tuple[int], stride: int | tuple[int] | None = None,
                 padding: int | tuple[int] = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad)


class AvgPool2dAsGNN(_SlidingAvgPoolAsGNN):
    """Twin of :class:`torch.nn.AvgPool2d`: window sum divided by the window size."""

    n = 2
    native_type = nn.AvgPool2d


def _sliding_graph(module: _PoolAsGNN, spatial: tuple[int, ...], kernel: tuple[int, ...],
                   stride: tuple[int, ...], pad: tuple[int, ...], dilation: tuple[int, ...],
                   device: torch.device) -> WindowGraph:
    """Window graph of torch's pooling, with its checks and output-size rule."""
    name = type(module).__name__
    for k, p, d in zip(kernel, pad, dilation):
        if k <= 0 or d <= 0:
            raise RuntimeError(f"{name}: kernel_size and dilation must be greater than zero, "
                               f"but got kernel_size={kernel} and dilation={dilation}")
        if p < 0 or p > (d * (k - 1) + 1) // 2:
            raise RuntimeError(f"{name}: pad should be at most half of effective kernel size, "
                               f"but got pad={p}, kernel_size={k} and dilation={d}")
    if any(s <= 0 for s in stride):
        raise RuntimeError(f"{name}: stride should be greater than zero, but got {stride}")
    out = [pooling_out_len(s, k, st, p, d, module.ceil_mode)
           for s, k, st, p, d in zip(spatial, kernel, stride, pad, dilation)]
    if any(o <= 0 for o in out):
        raise RuntimeError(f"{name}: given input of spatial size {tuple(spatial)}, the "
                           f"calculated output size {tuple(out)} is too small (kernel "
                           f"{kernel}, stride {stride}, padding {pad}, dilation {dilation})")
    axes = [sliding_axis(s, k, st, p, p, d, o, "zeros", device)
            for s, k, st, p, d, o in zip(spatial, kernel, stride, pad, dilation, out)]
    return combine_axes(axes, spatial)


def _adaptive_sizes(module: _PoolAsGNN, spatial: tuple[int, ...]) -> list[int]:
    size = module.output_size
    size = (size,) * module.n if isinstance(size, int) or size is None else tuple(size)
    if len(size) != module.n:
        raise ValueError(f"{type(module).__name__}: output_size must have {module.n} "
                         f"elements, got {module.output_size}")
    return [s if o is None else int(o) for s, o in zip(spatial, size)]


class _AdaptiveMixin:
    def _build(self, spatial: tuple[int, ...], device: torch.device) -> WindowGraph:
        out = _adaptive_sizes(self, spatial)
        if any(o <= 0 for o in out):
            raise RuntimeError(f"{type(self).__name__}: output_size must be positive, "
                               f"got {self.output_size}")
        return combine_axes([adaptive_axis(s, o, device) for s, o in zip(spatial, out)],
                            spatial)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveAvgPool1dAsGNN(_AdaptiveMixin, _AvgPoolAsGNN):
    """Twin of :class:`torch.nn.AdaptiveAvgPool1d`: mean over variable windows."""

    n = 1
    native_type = nn.AdaptiveAvgPool1d

    def __init__(self, output_size: int | tuple[int]) -> None:
        super().__init__()
        self.output_size = output_size

    @staticmethod
    def native_kwargs(module: nn.Module) -> dict[str, Any]:
        return {"output_size": module.output_size}

    def _divisor(self, graph: WindowGraph, device: torch.device) -> Tensor:
        return self.cached(("divisor", graph.input_size, device), lambda: graph.window_size.to(
            device=device, dtype=torch.float64)[:, None])


class AdaptiveAvgPool2dAsGNN(AdaptiveAvgPool1dAsGNN):
    """Twin of :class:`torch.nn.AdaptiveAvgPool2d` (global average pooling at size 1)."""

    n = 2
    native_type = nn.AdaptiveAvgPool2d

    def __init__(self, output_size: int | None | tuple[int | None, int | None]) -> None:
        super().__init__(output_size)


class AdaptiveMaxPool2dAsGNN(_AdaptiveMixin, _MaxPoolAsGNN):
    """Twin of :class:`torch.nn.AdaptiveMaxPool2d`: max over variable windows."""

    n = 2
    native_type = nn.AdaptiveMaxPool2d

    def __init__(self, output_size: int | None | tuple[int | None, int | None],
                 return_indices: bool = False) -> None:
        super().__init__()
        self.output_size = output_size
        self.return_indices = return_indices

    @staticmethod
    def native_kwargs(module: nn.Module) -> dict[str, Any]:
        return {"output_size": module.output_size, "return_indices": module.return_indices}


def check_cases() -> list[Case]:
    """Representative poolings (CWRU, VGG, ResNet) and the odd corners."""
    return [
        Case("MaxPool1d 2 (CWRU)", lambda: nn.MaxPool1d(2, 2), (16, 128)),
        Case("MaxPool2d 2 (VGG)", lambda: nn.MaxPool2d(2, 2), (64, 32, 32), chunk=100),
        Case("MaxPool2d 3 s2 p1 (ResNet)", lambda: nn.MaxPool2d(3, 2, 1), (64, 16, 16),
             chunk=100),
        Case("MaxPool2d 3 s2 dil2 ceil", lambda: nn.MaxPool2d(3, 2, 1, dilation=2,
                                                               ceil_mode=True), (4, 11, 10)),
        Case("AvgPool1d 4 s3 p2 ceil no pad count",
             lambda: nn.AvgPool1d(4, 3, 2, ceil_mode=True, count_include_pad=False), (4, 23)),
        Case("AvgPool2d 3 s2 p1 ceil", lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True),
             (4, 12, 9)),
        Case("AvgPool2d 2 divisor 3", lambda: nn.AvgPool2d(2, divisor_override=3), (4, 8, 8)),
        Case("AdaptiveAvgPool1d 7", lambda: nn.AdaptiveAvgPool1d(7), (4, 30)),
        Case("AdaptiveAvgPool2d 1 (ResNet head)", lambda: nn.AdaptiveAvgPool2d(1),
             (512, 2, 2), chunk=250),
        Case("AdaptiveAvgPool2d (3,5)", lambda: nn.AdaptiveAvgPool2d((3, 5)), (4, 10, 11)),
        Case("AdaptiveMaxPool2d (4,None)", lambda: nn.AdaptiveMaxPool2d((4, None)),
             (4, 9, 7)),
    ]


if __name__ == "__main__":
    sys.exit(run_check(check_cases, "python -m modules.PoolingAsGNN"))
