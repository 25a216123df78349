"""Pooling as message passing: messages are the source features, unchanged; the
aggregation is max or mean over the window's edges.

Nodes are spatial positions carrying channel features; each output position receives
one edge per window offset. Padding means absent edges (torch pads pooling with -inf
for max and zeros for average); average pooling divides by the window size (padding
included or not, or ``divisor_override``), a per-target node attribute.

Every twin checks its hyper-parameters, input shape and dtype as torch's CPU kernels do,
in the same order and with the same error types and messages, when called (torch's
pooling modules accept anything at construction).

The sliding-window twins live here with the shared base classes; the adaptive twins in
:mod:`modules.adaptive_pooling`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _ntuple
from torch_geometric.data import Data

from modules.base import MessagePassingModule, channels_to_nodes, nodes_last_to_channels
from modules.window_graph import (
    WindowGraph,
    combine_axes,
    ell_table,
    gather_windows,
    pooling_out_len,
    sliding_axis,
)

# ATen's names of scalar types, as its "not implemented for" errors print them.
_SCALAR_NAMES = {
    torch.bool: "Bool", torch.uint8: "Byte", torch.int8: "Char", torch.int16: "Short",
    torch.int32: "Int", torch.int64: "Long", torch.uint16: "UInt16", torch.uint32: "UInt32",
    torch.uint64: "UInt64", torch.float16: "Half", torch.bfloat16: "BFloat16",
    torch.float32: "Float", torch.float64: "Double", torch.complex32: "ComplexHalf",
    torch.complex64: "ComplexFloat", torch.complex128: "ComplexDouble",
}


def _scalar_name(dtype: torch.dtype) -> str:
    return _SCALAR_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def _require_dtype(kernel: str, dtype: torch.dtype, integers: str) -> None:
    """torch's dtype dispatch: floating types, plus ``integers`` ('all', 'long', 'none')."""
    if dtype.is_floating_point:
        return
    is_int = not dtype.is_complex and dtype != torch.bool
    if (integers == "all" and is_int) or (integers == "long" and dtype == torch.int64):
        return
    raise NotImplementedError(f'"{kernel}" not implemented for \'{_scalar_name(dtype)}\'')


def _trunc_div(a: int, b: int) -> int:
    """C++ integer division (rounds toward zero), as ATen's checks compute it."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _check_dims_1d(op: str, shape: tuple[int, ...]) -> None:
    if len(shape) not in (2, 3):
        raise RuntimeError(f"Expected 2 to 3 dimensions, but got {len(shape)}-dimensional "
                           f"tensor for argument #1 'self' (while checking arguments for {op})")


def _pooling_output_size(size: int, kernel: int, pad: int, stride: int, dilation: int,
                         ceil_mode: bool) -> int:
    """ATen's ``pooling_output_shape``, with its checks."""
    if stride == 0:
        raise RuntimeError("stride should not be zero")
    if pad < 0:
        raise RuntimeError(f"pad must be non-negative, but got pad: {pad}")
    if pad > _trunc_div((kernel - 1) * dilation + 1, 2):
        raise RuntimeError(f"pad should be at most half of effective kernel size, but got "
                           f"pad={pad}, kernel_size={kernel} and dilation={dilation}")
    return pooling_out_len(size, kernel, stride, pad, dilation, ceil_mode)


def _pool2d_checks(shape: tuple[int, ...], kernel: tuple[int, int], stride: tuple[int, int],
                   pad: tuple[int, int], dilation: tuple[int, int],
                   ceil_mode: bool) -> tuple[int, int]:
    """ATen's 2-d pooling checks (output sizes, then ``pool2d_shape_check``) on the input
    shape torch's kernel sees; the output's (height, width)."""
    (k_h, k_w), (d_h, d_w), (p_h, p_w), (dil_h, dil_w) = kernel, stride, pad, dilation
    channels, height, width = shape[-3:]
    out_h = _pooling_output_size(height, k_h, p_h, d_h, dil_h, ceil_mode)
    out_w = _pooling_output_size(width, k_w, p_w, d_w, dil_w, ceil_mode)
    if k_w <= 0 or k_h <= 0:
        raise RuntimeError(f"kernel size should be greater than zero, but got kH: {k_h} "
                           f"kW: {k_w}")
    if d_w <= 0 or d_h <= 0:
        raise RuntimeError(f"stride should be greater than zero, but got dH: {d_h} dW: {d_w}")
    if dil_h <= 0 or dil_w <= 0:
        raise RuntimeError(f"dilation should be greater than zero, but got dilationH: {dil_h} "
                           f"dilationW: {dil_w}")
    valid = shape[1] != 0 and shape[2] != 0
    if not ((len(shape) == 3 and shape[0] != 0 and valid)
            or (len(shape) == 4 and valid and shape[3] != 0)):
        raise RuntimeError("Expected 3D or 4D (batch mode) tensor with optional 0 dim batch "
                           f"size for input, but got:{list(shape)}")
    if k_w // 2 < p_w or k_h // 2 < p_h:
        raise RuntimeError(f"pad should be smaller than or equal to half of kernel size, but "
                           f"got padW = {p_w}, padH = {p_h}, kW = {k_w}, kH = {k_h}")
    if out_w < 1 or out_h < 1:
        raise RuntimeError(f"Given input size: ({channels}x{height}x{width}). Calculated "
                           f"output size: ({channels}x{out_h}x{out_w}). Output size is too small")
    return out_h, out_w


class _PoolAsGNN(MessagePassingModule):
    """Shared machinery: torch's checks, cached window graph, node layout, both paths."""

    n: int = 2
    reduce: str = "max"
    return_indices: bool = False

    def __init__(self) -> None:
        super().__init__(aggr=self.reduce, node_dim=-2)

    def _check(self, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[int, ...]:
        """torch's checks of the hyper-parameters, input shape and dtype, in torch's order;
        the output's spatial size."""
        raise NotImplementedError

    def _output_size(self, input: Tensor) -> tuple[int, ...]:
        # The checks depend on the shape (the batch only through being empty) and dtype:
        # run once per kind of input. Failing checks raise every time.
        shape = tuple(input.shape)
        key = ("checked", shape[0] == 0, shape[1:], input.dtype)
        out = self._graph_cache.get(key)
        if out is None:
            out = self._graph_cache[key] = self._check(shape, input.dtype)
        return out

    def _build(self, spatial: tuple[int, ...], out: tuple[int, ...],
               device: torch.device) -> WindowGraph:
        raise NotImplementedError

    def _window_graph(self, spatial: tuple[int, ...], out: tuple[int, ...],
                      device: torch.device) -> WindowGraph:
        return self.cached((spatial, device), lambda: self._build(spatial, out, device))

    def _divisor(self, graph: WindowGraph, device: torch.device) -> Tensor:
        return torch.ones(())

    def graph(self, input_shape: Sequence[int]) -> Data:
        """The position graph for an input of this shape ((B,) C, *spatial)."""
        shape = tuple(input_shape)
        out = self._output_size(torch.empty(shape, device="meta"))
        g = self._window_graph(shape[-self.n:], out, torch.device("cpu"))
        extra = {} if self.reduce == "max" else {"divisor": self._divisor(g, g.table.device)}
        return g.to_data(**extra)

    def forward(self, input: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        out_size = self._output_size(input)
        unbatched = input.dim() == self.n + 1
        x = input.unsqueeze(0) if unbatched else input
        if x.numel() == 0 or math.prod(out_size) == 0:
            out = x.new_zeros((*x.shape[:2], *out_size))
            if x.requires_grad:  # torch's empty result has zero gradients
                out = out + x.sum() * 0
            index = torch.zeros(out.shape, dtype=torch.long, device=x.device)
        else:
            out, index = self._propagate(x, out_size)
        if unbatched:
            out, index = out.squeeze(0), index.squeeze(0) if index is not None else None
        return (out, index) if self.return_indices else out

    def _propagate(self, x: Tensor, out_size: tuple[int, ...]) -> tuple[Tensor, Tensor | None]:
        g = self._window_graph(tuple(x.shape[2:]), out_size, x.device)
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
        index = None
        if isinstance(out, tuple):
            out, index = out
            index = nodes_last_to_channels(index, g.output_size)
        return nodes_last_to_channels(out, g.output_size), index

    def message(self, x_j: Tensor) -> Tensor:
        return x_j


def _lowest(dtype: torch.dtype) -> float | int:
    """What max pooling pads with: -inf, or the smallest integer."""
    return float("-inf") if dtype.is_floating_point else torch.iinfo(dtype).min


class _MaxPoolAsGNN(_PoolAsGNN):
    reduce = "max"

    def message_and_aggregate(self, adj_t: Tensor, x: Tensor, padded: bool,
                              tiled: bool) -> Tensor | tuple[Tensor, Tensor]:
        windows = gather_windows(adj_t, x, padded, tiled, _lowest(x.dtype))
        if not (self.return_indices or (torch.is_grad_enabled() and x.requires_grad)):
            return windows.amax(dim=2)  # same values; no argmax to route gradients to
        # max() routes the gradient to the first maximal edge of each window, as torch does.
        values, arg = windows.max(dim=2)
        if not self.return_indices:
            return values
        return values, self._source_of(adj_t, arg)

    @staticmethod
    def _source_of(adj_t: Tensor, arg: Tensor) -> Tensor:
        """Flat input index of the window offset ``arg`` (B, N_dst, C) of each target.

        A maximum that ties with the padding (integers at their smallest value) is the
        window's first input position, as in torch, not the padding node."""
        table = ell_table(adj_t)
        b, n, c = arg.shape
        source = table[None, :, :, None].expand(b, n, table.shape[1], c).gather(
            2, arg.unsqueeze(2)).squeeze(2)
        padding_node = adj_t.shape[1] - 1
        if bool((table == padding_node).any()):
            first = table.gather(1, (table != padding_node).int().argmax(1, keepdim=True))
            source = torch.where(source == padding_node, first[None], source)
        return source

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
        if not (aggr_out.is_floating_point() or aggr_out.is_complex()):
            # torch's integer average rounds toward zero
            return torch.div(aggr_out, divisor.to(aggr_out.dtype), rounding_mode="trunc")
        return aggr_out / divisor.to(aggr_out.dtype)


def _sliding_graph(spatial: tuple[int, ...], out: tuple[int, ...], kernel: tuple[int, ...],
                   stride: tuple[int, ...], pad: tuple[int, ...], dilation: tuple[int, ...],
                   device: torch.device) -> WindowGraph:
    axes = [sliding_axis(s, k, st, p, p, d, o, "zeros", device)
            for s, k, st, p, d, o in zip(spatial, kernel, stride, pad, dilation, out)]
    return combine_axes(axes, spatial)


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

    def _params(self) -> tuple[tuple[int, ...], ...]:
        ntuple = _ntuple(self.n)
        return tuple(ntuple(v) for v in (self.kernel_size, self.stride, self.padding,
                                          self.dilation))

    def _build(self, spatial: tuple[int, ...], out: tuple[int, ...],
               device: torch.device) -> WindowGraph:
        return _sliding_graph(spatial, out, *self._params(), device)


class MaxPool1dAsGNN(_SlidingMaxPoolAsGNN):
    r"""Twin of :class:`torch.nn.MaxPool1d`, message passing over the graph of positions.

    Nodes are the positions of the sequence, each carrying its :math:`C` channels. Output
    position :math:`i` (target node) receives one edge per window offset :math:`k` from
    input position :math:`j = i s - p + k d`; an edge from the padding is absent. The
    message is the source's features unchanged, the aggregation a channel-wise max (the
    first maximal edge gets the gradient and, with ``return_indices``, gives the index):

    .. math::
        \mathbf{y}_i = \max_{j \to i} \mathbf{x}_j

    Args:
        kernel_size (int or tuple): Window size; one edge per window offset.
        stride (int or tuple, optional): Step between windows. (default: ``kernel_size``)
        padding (int or tuple, optional): Implicit padding on both sides, absent edges;
            at most half the (effective) kernel size. (default: ``0``)
        dilation (int or tuple, optional): Spacing between window offsets. (default: ``1``)
        return_indices (bool, optional): Also return the flat input index of each
            maximum. (default: ``False``)
        ceil_mode (bool, optional): Round the output length up. (default: ``False``)

    Shapes:
        - **input:** :math:`(N, C, L_{in})` or :math:`(C, L_{in})`
        - **output:** :math:`(N, C, L_{out})` or :math:`(C, L_{out})` (and the indices,
          same shape, with ``return_indices``)
    """

    n = 1
    native_type = nn.MaxPool1d

    def _check(self, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[int, ...]:
        (k,), (s,), (p,), (d,) = self._params()
        if self.return_indices:  # torch runs max_pool2d_with_indices over a height of 1
            _check_dims_1d("max_pool1d", shape)
            view = (*shape[:-1], 1, shape[-1])
            _, out = _pool2d_checks(view, (1, k), (1, s), (0, p), (1, d), self.ceil_mode)
            _require_dtype("max_pool2d", dtype, "all")
            return (out,)
        if not ((len(shape) == 2 and shape[0] != 0 and shape[1] != 0)
                or (len(shape) == 3 and shape[1] != 0 and shape[2] != 0)):
            raise RuntimeError("max_pool1d: Expected 2D or 3D (batch mode) tensor with "
                               f"optional 0 dim batch size for input, but got:{list(shape)}")
        for value, what in ((k, "kernel_size"), (s, "stride")):
            if value <= 0:
                raise RuntimeError(f"max_pool1d() {what} must be greater than zero, but got "
                                   f"{value}")
        if p < 0:
            raise RuntimeError(f"max_pool1d() padding must be non-negative, but got {p}")
        if p > k // 2:
            raise RuntimeError("max_pool1d() padding should be at most half of kernel size, "
                               f"but got padding={p} and kernel_size={k}")
        if d <= 0:
            raise RuntimeError(f"max_pool1d() dilation must be greater than zero, but got {d}")
        out = pooling_out_len(shape[-1], k, s, p, d, self.ceil_mode)
        if out <= 0:
            raise RuntimeError(f"max_pool1d() Invalid computed output size: {out}")
        _require_dtype("max_pool1d_impl", dtype, "none")
        return (out,)


class MaxPool2dAsGNN(_SlidingMaxPoolAsGNN):
    r"""Twin of :class:`torch.nn.MaxPool2d`, message passing over the graph of pixels.

    Nodes are the pixels, each carrying its :math:`C` channels. Output pixel :math:`i`
    (target node) receives one edge per window offset from the input pixel under it; an
    edge from the padding is absent. The message is the source's features unchanged, the
    aggregation a channel-wise max (the first maximal edge gets the gradient and, with
    ``return_indices``, gives the index):

    .. math::
        \mathbf{y}_i = \max_{j \to i} \mathbf{x}_j

    Args:
        kernel_size (int or tuple): Window size; one edge per window offset.
        stride (int or tuple, optional): Step between windows. (default: ``kernel_size``)
        padding (int or tuple, optional): Implicit padding on both sides, absent edges;
            at most half the (effective) kernel size. (default: ``0``)
        dilation (int or tuple, optional): Spacing between window offsets. (default: ``1``)
        return_indices (bool, optional): Also return the flat input index of each
            maximum. (default: ``False``)
        ceil_mode (bool, optional): Round the output size up. (default: ``False``)

    Shapes:
        - **input:** :math:`(N, C, H_{in}, W_{in})` or :math:`(C, H_{in}, W_{in})`
        - **output:** :math:`(N, C, H_{out}, W_{out})` or :math:`(C, H_{out}, W_{out})`
          (and the indices, same shape, with ``return_indices``)
    """

    n = 2
    native_type = nn.MaxPool2d

    def _check(self, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[int, ...]:
        if len(shape) not in (3, 4):
            raise RuntimeError("non-empty 3D or 4D (batch mode) tensor expected for input")
        out = _pool2d_checks(shape, *self._params(), self.ceil_mode)
        _require_dtype("max_pool2d", dtype, "all")
        return out


class _SlidingAvgPoolAsGNN(_AvgPoolAsGNN):
    def __init__(self, kernel_size: int | tuple[int, ...],
                 stride: int | tuple[int, ...] | None = None,
                 padding: int | tuple[int, ...] = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: int | None = None) -> None:
        super().__init__()
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

    def _params(self) -> tuple[tuple[int, ...], ...]:
        ntuple = _ntuple(self.n)
        return (ntuple(self.kernel_size), ntuple(self.stride), ntuple(self.padding),
                (1,) * self.n)

    def _build(self, spatial: tuple[int, ...], out: tuple[int, ...],
               device: torch.device) -> WindowGraph:
        return _sliding_graph(spatial, out, *self._params(), device)

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
    r"""Twin of :class:`torch.nn.AvgPool1d`, message passing over the graph of positions.

    Nodes are the positions of the sequence, each carrying its :math:`C` channels. Output
    position :math:`i` (target node) receives one edge per window offset from the input
    position under it; an edge from the padding is absent. The message is the source's
    features unchanged, the aggregation a sum divided by the window size :math:`|W_i|`
    (padding counted or not), a target node attribute:

    .. math::
        \mathbf{y}_i = \frac{1}{|W_i|} \sum_{j \to i} \mathbf{x}_j

    Args:
        kernel_size (int or tuple): Window size; one edge per window offset.
        stride (int or tuple, optional): Step between windows. (default: ``kernel_size``)
        padding (int or tuple, optional): Implicit padding on both sides, absent edges;
            at most half the (effective) kernel size. (default: ``0``)
        ceil_mode (bool, optional): Round the output length up. (default: ``False``)
        count_include_pad (bool, optional): Count the padding in :math:`|W_i|`.
            (default: ``True``)

    Shapes:
        - **input:** :math:`(N, C, L_{in})` or :math:`(C, L_{in})`
        - **output:** :math:`(N, C, L_{out})` or :math:`(C, L_{out})`
    """

    n = 1
    native_type = nn.AvgPool1d

    def __init__(self, kernel_size: int | tuple[int], stride: int | tuple[int] | None = None,
                 padding: int | tuple[int] = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad)

    def _check(self, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[int, ...]:
        _check_dims_1d("avg_pool1d", shape)  # then avg_pool2d over a height of 1
        (k,), (s,), (p,), _ = self._params()
        view = (*shape[:-1], 1, shape[-1])
        _, out = _pool2d_checks(view, (1, k), (1, s), (0, p), (1, 1), self.ceil_mode)
        _require_dtype("avg_pool2d", dtype, "long")
        return (out,)


class AvgPool2dAsGNN(_SlidingAvgPoolAsGNN):
    r"""Twin of :class:`torch.nn.AvgPool2d`, message passing over the graph of pixels.

    Nodes are the pixels, each carrying its :math:`C` channels. Output pixel :math:`i`
    (target node) receives one edge per window offset from the input pixel under it; an
    edge from the padding is absent. The message is the source's features unchanged, the
    aggregation a sum divided by the window size :math:`|W_i|` (padding counted or not,
    or ``divisor_override``), a target node attribute:

    .. math::
        \mathbf{y}_i = \frac{1}{|W_i|} \sum_{j \to i} \mathbf{x}_j

    Args:
        kernel_size (int or tuple): Window size; one edge per window offset.
        stride (int or tuple, optional): Step between windows. (default: ``kernel_size``)
        padding (int or tuple, optional): Implicit padding on both sides, absent edges;
            at most half the (effective) kernel size. (default: ``0``)
        ceil_mode (bool, optional): Round the output size up. (default: ``False``)
        count_include_pad (bool, optional): Count the padding in :math:`|W_i|`.
            (default: ``True``)
        divisor_override (int, optional): Divide by this instead of :math:`|W_i|`.

    Shapes:
        - **input:** :math:`(N, C, H_{in}, W_{in})` or :math:`(C, H_{in}, W_{in})`
        - **output:** :math:`(N, C, H_{out}, W_{out})` or :math:`(C, H_{out}, W_{out})`
    """

    n = 2
    native_type = nn.AvgPool2d

    def _check(self, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[int, ...]:
        if self.divisor_override is not None and self.divisor_override == 0:
            raise RuntimeError("divisor must be not zero")
        if len(shape) < 3:
            raise IndexError(f"Dimension out of range (expected to be in range of "
                             f"[{-len(shape)}, {len(shape) - 1}], but got -3)")
        out = _pool2d_checks(shape, *self._params()[:3], (1, 1), self.ceil_mode)
        _require_dtype("avg_pool2d", dtype, "long")
        return out
