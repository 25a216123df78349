"""Convolutions as message passing over the graph of spatial positions.

A target node (output position) receives one edge per kernel offset from the input
position under it; the edge's kernel offset selects the weight matrix (out x in/groups
channels) that transforms the message, like a relation type in R-GCN. Aggregation sums.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _ntuple
from torch_geometric.data import Data

from modules.base import (
    MessagePassingModule,
    channels_to_nodes,
    layer_neural_graph,
    nodes_last_to_channels,
)
from modules.window_graph import (
    PADDING_MODES,
    WindowGraph,
    combine_axes,
    ell_table,
    gather_windows,
    sliding_axis,
    with_padding_node,
)

# Above this size the gathered (positions x offsets*channels) matrix costs more memory
# traffic than it saves: the fused path then accumulates one GEMM per kernel offset.
_IM2COL_MAX_BYTES = 32 * 2**20


class _ConvNdAsGNN(MessagePassingModule):
    """Convolution over ``n`` spatial axes as message passing (see the subclasses)."""

    n: int = 2

    def __init__(self, in_channels: int, out_channels: int,
                 kernel_size: int | tuple[int, ...], stride: int | tuple[int, ...] = 1,
                 padding: str | int | tuple[int, ...] = 0, dilation: int | tuple[int, ...] = 1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device: Any = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(aggr="sum", node_dim=-2)
        ntuple = _ntuple(self.n)
        if groups <= 0:
            raise ValueError("groups must be a positive integer")
        if in_channels % groups != 0:
            raise ValueError("in_channels must be divisible by groups")
        if out_channels % groups != 0:
            raise ValueError("out_channels must be divisible by groups")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Invalid padding string {padding!r}, "
                                 "should be one of {'valid', 'same'}")
            if padding == "same" and any(s != 1 for s in ntuple(stride)):
                raise ValueError("padding='same' is not supported for strided convolutions")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {list(PADDING_MODES)}, "
                             f"but got padding_mode='{padding_mode}'")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = ntuple(kernel_size)
        self.stride = ntuple(stride)
        self.padding = padding if isinstance(padding, str) else ntuple(padding)
        self.dilation = ntuple(dilation)
        self.groups = groups
        self.padding_mode = padding_mode
        self.output_padding = ntuple(0)  # read by torch's extra_repr
        factory = {"device": device, "dtype": dtype}
        # torch's error for a negative size, naming torch's weight shape
        torch.empty((out_channels, in_channels // groups, *self.kernel_size), device="meta")
        # torch's shape (out, in/groups, *kernel), stored offset-major (out, *kernel,
        # in/groups) in memory, the layout channels-last gives 4-d weights: each kernel
        # offset's (out x in) matrix and the (out x offsets*in) matrix are then plain
        # strided views that GEMMs read without copying.
        self.weight = nn.Parameter(torch.empty(
            out_channels, *self.kernel_size, in_channels // groups, **factory).movedim(-1, 1))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's initialization, drawn in torch's order (same values under a seed)."""
        with torch.no_grad():
            weight = torch.empty(self.weight.shape, dtype=self.weight.dtype,
                                 device=self.weight.device)
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
            self.weight.copy_(weight)
            if self.bias is not None:
                fan_in, _ = nn.init._calculate_fan_in_and_fan_out(weight)
                bound = 1 / math.sqrt(fan_in) if fan_in != 0 else 0
                nn.init.uniform_(self.bias, -bound, bound)

    @staticmethod
    def native_kwargs(module: nn.Module) -> dict[str, Any]:
        return {k: getattr(module, k) for k in (
            "in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
            "groups", "padding_mode")} | {"bias": module.bias is not None}

    def extra_repr(self) -> str:
        return nn.modules.conv._ConvNd.extra_repr(self)

    # -- checks and graph ---------------------------------------------------------------
    def _pads(self) -> list[tuple[int, int]]:
        if self.padding == "valid":
            return [(0, 0)] * self.n
        if self.padding == "same":
            totals = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
            # torch halves in C++ (toward zero) for zero padding, in Python (floor) else;
            # the halves differ only for the negative totals of invalid kernels
            half = (lambda t: int(t / 2)) if self.padding_mode == "zeros" else (lambda t: t // 2)
            return [(half(t), t - half(t)) for t in totals]
        return [(p, p) for p in self.padding]

    def _as_2d(self, values: tuple[int, ...]) -> list[int]:
        """torch runs conv1d as conv2d over a height of 1: its messages show both axes."""
        return [1, *values] if self.n == 1 else list(values)

    def _check_forward(self, input: Tensor) -> tuple[Tensor, bool, tuple[int, ...]]:
        """torch's checks, in torch's order and words (its reference CPU kernels'); the
        batched input, whether it was unbatched, and the output's spatial size."""
        n = self.n
        if input.dim() not in (n + 1, n + 2):
            raise RuntimeError(f"Expected {n + 1}D (unbatched) or {n + 2}D (batched) input to "
                               f"conv{n}d, but got input of size: {list(input.shape)}")
        unbatched = input.dim() == n + 1
        x = input.unsqueeze(0) if unbatched else input
        spatial = tuple(x.shape[2:])
        pads = self._pads()
        if self.padding_mode in ("reflect", "circular"):  # torch pads before convolving
            for axis, (s, (lo, hi)) in enumerate(zip(spatial, pads)):
                if max(lo, hi) > s or (self.padding_mode == "reflect" and max(lo, hi) >= s):
                    raise RuntimeError(
                        f"{self.padding_mode} padding of ({lo}, {hi}) is too large for "
                        f"spatial dimension {axis} of size {s}: padding must be "
                        f"{'less than' if self.padding_mode == 'reflect' else 'at most'} "
                        "the input size")
        if self.padding_mode == "zeros" and any(lo < 0 for lo, _ in pads):
            raise RuntimeError("negative padding is not supported")
        if any(s <= 0 for s in self.stride):
            raise RuntimeError("non-positive stride is not supported")
        if any(d < 0 for d in self.dilation):
            raise RuntimeError("dilation should be greater than zero")
        if self.out_channels < self.groups:
            raise RuntimeError(f"Given groups={self.groups}, expected weight to be at least "
                               f"{self.groups} at dimension 0, but got weight of size "
                               f"{list(self.weight.shape)} instead")
        if x.shape[1] != self.in_channels:
            raise RuntimeError(
                f"Given groups={self.groups}, weight of size {list(self.weight.shape)}, "
                f"expected input{list(x.shape)} to have {self.in_channels} channels, "
                f"but got {x.shape[1]} channels instead")
        padded = [s + lo + hi for s, (lo, hi) in zip(spatial, pads)]
        effective = [d * (k - 1) + 1 for d, k in zip(self.dilation, self.kernel_size)]
        if any(p < e for p, e in zip(padded, effective)):
            fmt = " x ".join
            raise RuntimeError(
                f"Calculated padded input size per channel: ({fmt(map(str, padded))}). "
                f"Kernel size: ({fmt(map(str, effective))}). "
                "Kernel size can't be greater than actual input size")
        out = tuple((p - e) // st + 1 for p, e, st in zip(padded, effective, self.stride))
        if x.numel() == 0:
            if x.shape[0] and x.shape[1]:
                raise RuntimeError("Only zero batch or zero channel inputs are supported, but "
                                   f"got input shape: {list(x.shape[:2]) + self._as_2d(spatial)}")
            return x, unbatched, out  # torch returns before its kernels check the rest
        if any(k <= 0 for k in self.kernel_size):
            kernel = self._as_2d(self.kernel_size)
            got = (f"kernel_height: {kernel[0]} kernel_width: {kernel[1]}"
                   if all(d == 1 for d in self.dilation) else str(kernel))
            raise RuntimeError(f"kernel size should be greater than zero, but got {got}")
        if any(d == 0 for d in self.dilation):
            raise RuntimeError("dilation should be greater than zero, but got "
                               f"{self._as_2d(self.dilation)}")
        return x, unbatched, out

    def _window_graph(self, spatial: tuple[int, ...], out: tuple[int, ...],
                      device: torch.device) -> WindowGraph:
        def build() -> WindowGraph:
            axes = [sliding_axis(s, k, st, lo, hi, d, o, self.padding_mode, device)
                    for s, k, st, (lo, hi), d, o in zip(
                        spatial, self.kernel_size, self.stride, self._pads(), self.dilation,
                        out)]
            return combine_axes(axes, spatial)
        return self.cached((spatial, device), build)

    def _edges(self, graph: WindowGraph, device: torch.device) -> tuple[Tensor, Tensor]:
        return self.cached(("edges", graph.input_size, device), graph.edges)

    def graph(self, input_shape: Sequence[int]) -> Data:
        """The position graph for an input of this shape ((B,) C, *spatial).

        ``kernel_offset[e]`` is the flat index into the kernel whose weight
        ``weight[:, :, *kernel_position[e]]`` (one block per channel group) edge e carries.
        """
        x, _, out = self._check_forward(torch.empty(tuple(input_shape), device="meta"))
        g = self._window_graph(tuple(x.shape[2:]), out, self.weight.device)
        return g.to_data(groups=torch.tensor(self.groups))

    # -- message passing ---------------------------------------------------------------
    def neural_graph(self) -> Data:
        """The layer's neural graph over channels: one edge per (input channel, output
        channel) pair of a group, carrying its kernel flattened, the bias on the output
        channels (see :func:`modules.base.layer_neural_graph`); the view
        :func:`neural_graphs.to_neural_graph` composes for whole networks."""
        return layer_neural_graph(self.weight, self.bias, self.groups)

    def forward(self, input: Tensor) -> Tensor:
        x, unbatched, out_size = self._check_forward(input)
        if x.numel() == 0:
            out = self._empty_output(x, out_size)
        else:
            g = self._window_graph(tuple(x.shape[2:]), out_size, x.device)
            nodes = channels_to_nodes(x)
            # A sparse adjacency makes PyG call message_and_aggregate; an edge list, message.
            adj, kernel_offset = (g.adj_t, None) if self.fused else self._edges(g, x.device)
            out = self.propagate(adj, x=nodes, kernel_offset=kernel_offset, padded=g.padded,
                                 tiled=g.tiled, size=(g.num_src_nodes, g.num_dst_nodes))
            out = nodes_last_to_channels(out, g.output_size)
        return out.squeeze(0) if unbatched else out

    def _empty_output(self, x: Tensor, out_size: tuple[int, ...]) -> Tensor:
        """torch's result for a batch of 0 samples or 0 channels (then 0 output channels):
        an empty tensor whose gradients are zero for the input, weight and bias."""
        channels = self.out_channels if x.shape[1] else 0
        out = x.new_zeros((x.shape[0], channels, *out_size))
        for tensor in (x, self.weight, self.bias):
            if tensor is not None and tensor.requires_grad:
                out = out + tensor.sum() * 0
        return out

    def _offset_weights(self) -> Tensor:
        """Weights as (groups, out/groups, K, in/groups): a view when stored offset-major."""
        g, k = self.groups, math.prod(self.kernel_size)
        return self.weight.movedim(1, -1).reshape(g, self.out_channels // g, k, -1)

    def message(self, x_j: Tensor, kernel_offset: Tensor) -> Tensor:
        w = self._offset_weights()[:, :, kernel_offset]  # (G, Og, E, Cg): one matrix per edge
        x_j = x_j.unflatten(-1, (self.groups, -1))
        return torch.einsum("...egc,goec->...ego", x_j, w).flatten(-2)

    def message_and_aggregate(self, adj_t: Tensor, x: Tensor, padded: bool,
                              tiled: bool) -> Tensor:
        w = self._offset_weights()
        g, og, k, cg = w.shape
        b, n_dst = x.shape[0], adj_t.shape[0]
        if k == 1 or b * n_dst * k * cg * x.element_size() <= _IM2COL_MAX_BYTES:
            # One gather of every window, then one GEMM over (offsets x channels).
            cols = gather_windows(adj_t, x, padded, tiled).reshape(b * n_dst, k, g, cg)
            if g == 1:
                out = cols.view(b * n_dst, k * cg) @ w.reshape(og, k * cg).t()
            else:
                out = torch.einsum("nkgc,gokc->ngo", cols, w)
            return out.reshape(b, n_dst, self.out_channels)
        # Wide inputs: one gather and GEMM per kernel offset, accumulated, instead of a
        # gathered matrix K times the input.
        if padded:
            x = with_padding_node(x)
        out = None
        for index, w_k in zip(ell_table(adj_t).t(), w.unbind(2)):
            msg = x.index_select(1, index)
            if g == 1:
                msg = msg @ w_k[0].t()
            else:
                msg = torch.einsum("bngc,goc->bngo", msg.unflatten(-1, (g, cg)), w_k)
                msg = msg.flatten(-2)
            out = msg if out is None else out.add_(msg)
        return out

    def update(self, aggr_out: Tensor) -> Tensor:
        return aggr_out if self.bias is None else aggr_out + self.bias


class Conv1dAsGNN(_ConvNdAsGNN):
    r"""Twin of :class:`torch.nn.Conv1d`, message passing over the graph of positions.

    Nodes are the positions of the sequence, each carrying its :math:`C_{in}` channels.
    Output position :math:`i` (target node) receives one edge per kernel offset
    :math:`k` from the input position :math:`j = i s - p + k d` under it (stride
    :math:`s`, padding :math:`p`, dilation :math:`d`); an edge from the zero padding is
    absent, reflect / replicate / circular padding make it come from the mirrored,
    clamped or wrapped position. The message is the source's channels transformed by the
    weight matrix of the edge's kernel offset (one matrix per offset, like a relation
    type in R-GCN), the aggregation a sum:

    .. math::
        \mathbf{y}_i = \mathbf{b} + \sum_{(j, k) \to i} W_k \, \mathbf{x}_j

    The reference path (``fused = False``) sends one message per edge; the fused path
    gathers every window from the cached adjacency and runs one GEMM. Same arguments,
    parameters and initialization as ``nn.Conv1d``.

    Args:
        in_channels (int): Channels :math:`C_{in}` of each input node.
        out_channels (int): Channels :math:`C_{out}` of each output node.
        kernel_size (int or tuple): Window size; one edge per kernel offset.
        stride (int or tuple, optional): Step between windows. (default: ``1``)
        padding (int, tuple or str, optional): Padding on both sides, ``'valid'`` or
            ``'same'``; zero padding means absent edges. (default: ``0``)
        dilation (int or tuple, optional): Spacing between kernel offsets. (default: ``1``)
        groups (int, optional): Blocked channel connections: each edge's weight matrix
            is block-diagonal with ``groups`` blocks. (default: ``1``)
        bias (bool, optional): Bias on every target node. (default: ``True``)
        padding_mode (str, optional): ``'zeros'``, ``'reflect'``, ``'replicate'`` or
            ``'circular'``: absent, mirrored, clamped or wrapped source. (default: ``'zeros'``)
        device (torch.device, optional): Device of the parameters.
        dtype (torch.dtype, optional): Data type of the parameters.

    Shapes:
        - **input:** :math:`(N, C_{in}, L_{in})` or :math:`(C_{in}, L_{in})`
        - **output:** :math:`(N, C_{out}, L_{out})` or :math:`(C_{out}, L_{out})`, with
          :math:`L_{out} = \lfloor (L_{in} + 2p - d (K - 1) - 1) / s \rfloor + 1`
    """

    n = 1
    native_type = nn.Conv1d


class Conv2dAsGNN(_ConvNdAsGNN):
    r"""Twin of :class:`torch.nn.Conv2d`, message passing over the graph of pixels.

    Nodes are the pixels, each carrying its :math:`C_{in}` channels. Output pixel
    :math:`i` (target node) receives one edge per kernel offset :math:`k = (k_h, k_w)`
    from the input pixel under it; an edge from the zero padding is absent, reflect /
    replicate / circular padding make it come from the mirrored, clamped or wrapped
    pixel. The message is the source's channels transformed by the weight matrix of the
    edge's kernel offset (one matrix per offset, like a relation type in R-GCN), the
    aggregation a sum:

    .. math::
        \mathbf{y}_i = \mathbf{b} + \sum_{(j, k) \to i} W_k \, \mathbf{x}_j

    The reference path (``fused = False``) sends one message per edge; the fused path
    gathers every window from the cached adjacency and runs one GEMM (or one per kernel
    offset for large inputs). Same arguments, parameters and initialization as
    ``nn.Conv2d``.

    Args:
        in_channels (int): Channels :math:`C_{in}` of each input node.
        out_channels (int): Channels :math:`C_{out}` of each output node.
        kernel_size (int or tuple): Window size; one edge per kernel offset.
        stride (int or tuple, optional): Step between windows. (default: ``1``)
        padding (int, tuple or str, optional): Padding on both sides, ``'valid'`` or
            ``'same'``; zero padding means absent edges. (default: ``0``)
        dilation (int or tuple, optional): Spacing between kernel offsets. (default: ``1``)
        groups (int, optional): Blocked channel connections: each edge's weight matrix
            is block-diagonal with ``groups`` blocks. (default: ``1``)
        bias (bool, optional): Bias on every target node. (default: ``True``)
        padding_mode (str, optional): ``'zeros'``, ``'reflect'``, ``'replicate'`` or
            ``'circular'``: absent, mirrored, clamped or wrapped source. (default: ``'zeros'``)
        device (torch.device, optional): Device of the parameters.
        dtype (torch.dtype, optional): Data type of the parameters.

    Shapes:
        - **input:** :math:`(N, C_{in}, H_{in}, W_{in})` or :math:`(C_{in}, H_{in}, W_{in})`
        - **output:** :math:`(N, C_{out}, H_{out}, W_{out})` or
          :math:`(C_{out}, H_{out}, W_{out})`, each axis as in :class:`Conv1dAsGNN`
    """

    n = 2
    native_type = nn.Conv2d
