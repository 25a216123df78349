"""Convolutions as message passing over the graph of spatial positions.

A target node (output position) receives one edge per kernel offset from the input
position under it; the edge's kernel offset selects the weight matrix (out x in/groups
channels) that transforms the message, like a relation type in R-GCN. Aggregation sums.
"""

from __future__ import annotations

import math
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

    # -- graph -------------------------------------------------------------------------
    def _pads(self) -> list[tuple[int, int]]:
        if self.padding == "valid":
            return [(0, 0)] * self.n
        if self.padding == "same":
            totals = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
            return [(t // 2, t - t // 2) for t in totals]
        return [(p, p) for p in self.padding]

    def _validate_input(self, input: Tensor) -> tuple[Tensor, bool]:
        n = self.n
        if input.dim() not in (n + 1, n + 2):
            raise RuntimeError(f"Expected {n + 1}D (unbatched) or {n + 2}D (batched) input to "
                               f"conv{n}d, but got input of size: {list(input.shape)}")
        unbatched = input.dim() == n + 1
        x = input.unsqueeze(0) if unbatched else input
        if x.shape[1] != self.in_channels:
            raise RuntimeError(
                f"Given groups={self.groups}, weight of size {list(self.weight.shape)}, "
                f"expected input{list(x.shape)} to have {self.in_channels} channels, "
                f"but got {x.shape[1]} channels instead")
        return x, unbatched

    def _window_graph(self, spatial: tuple[int, ...], device: torch.device) -> WindowGraph:
        def build() -> WindowGraph:
            pads = self._pads()
            padded = [s + lo + hi for s, (lo, hi) in zip(spatial, pads)]
            effective = [d * (k - 1) + 1 for d, k in zip(self.dilation, self.kernel_size)]
            if any(p < e for p, e in zip(padded, effective)):
                fmt = " x ".join
                raise RuntimeError(
                    f"Calculated padded input size per channel: ({fmt(map(str, padded))}). "
                    f"Kernel size: ({fmt(map(str, effective))}). "
                    "Kernel size can't be greater than actual input size")
            if self.padding_mode in ("reflect", "circular"):
                for axis, (s, (lo, hi)) in enumerate(zip(spatial, pads)):
                    if max(lo, hi) > s or (self.padding_mode == "reflect" and max(lo, hi) >= s):
                        raise RuntimeError(
                            f"{self.padding_mode} padding of ({lo}, {hi}) is too large for "
                            f"spatial dimension {axis} of size {s}: padding must be "
                            f"{'less than' if self.padding_mode == 'reflect' else 'at most'} "
                            "the input size")
            axes = [sliding_axis(s, k, st, lo, hi, d, (p - e) // st + 1, self.padding_mode,
                                 device)
                    for s, k, st, (lo, hi), d, p, e in zip(
                        spatial, self.kernel_size, self.stride, pads, self.dilation, padded,
                        effective)]
            return combine_axes(axes, spatial)
        return self.cached((tuple(spatial), device), build)

    def _edges(self, graph: WindowGraph, device: torch.device) -> tuple[Tensor, Tensor]:
        return self.cached(("edges", graph.input_size, device), graph.edges)

    def graph(self, input_shape: Sequence[int]) -> Data:
        """The position graph for an input of this shape ((B,) C, *spatial).

        ``kernel_offset[e]`` is the flat index into the kernel whose weight
        ``weight[:, :, *kernel_position[e]]`` (one block per channel group) edge e carries.
        """
        x, _ = self._validate_input(torch.empty(tuple(input_shape), device="meta"))
        g = self._window_graph(tuple(x.shape[2:]), self.weight.device)
        return g.to_data(groups=torch.tensor(self.groups))

    # -- message passing ---------------------------------------------------------------
    def forward(self, input: Tensor) -> Tensor:
        x, unbatched = self._validate_input(input)
        g = self._window_graph(tuple(x.shape[2:]), x.device)
        nodes = channels_to_nodes(x)
        # A sparse adjacency makes PyG call message_and_aggregate; an edge list, message.
        adj, kernel_offset = (g.adj_t, None) if self.fused else self._edges(g, x.device)
        out = self.propagate(adj, x=nodes, kernel_offset=kernel_offset, padded=g.padded,
                             tiled=g.tiled,
                             size=(g.num_src_nodes, g.num_dst_nodes))
        out = nodes_last_to_channels(out, g.output_size)
        return out.squeeze(0) if unbatched else out

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
    """Twin of :class:`torch.nn.Conv1d`: nodes are positions along the sequence."""

    n = 1
    native_type = nn.Conv1d


class Conv2dAsGNN(_ConvNdAsGNN):
    """Twin of :class:`torch.nn.Conv2d`: nodes are pixels, one edge per kernel offset."""

    n = 2
    native_type = nn.Conv2d


def check_cases() -> list[Case]:
    """Representative convolutions (CWRU, VGG, ResNet layers and every padding form)."""
    return [
        Case("Conv1d 1->16 k64 s16 p24 (CWRU)",
             lambda: nn.Conv1d(1, 16, 64, stride=16, padding=24), (1, 2048), chunk=250),
        Case("Conv1d 16->32 k3 p1 (CWRU)", lambda: nn.Conv1d(16, 32, 3, padding=1), (16, 64)),
        Case("Conv1d 4->6 k4 same reflect dil2",
             lambda: nn.Conv1d(4, 6, 4, padding="same", dilation=2, padding_mode="reflect"),
             (4, 19)),
        Case("Conv2d 3->64 k3 p1 (VGG)", lambda: nn.Conv2d(3, 64, 3, padding=1), (3, 32, 32),
             chunk=100),
        Case("Conv2d 3->64 k7 s2 p3 (ResNet stem)",
             lambda: nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), (3, 32, 32),
             chunk=100),
        Case("Conv2d 16->32 k1 s2 (downsample)",
             lambda: nn.Conv2d(16, 32, 1, stride=2, bias=False), (16, 8, 8)),
        Case("Conv2d 8->8 k(2,3) groups 4 circular",
             lambda: nn.Conv2d(8, 8, (2, 3), padding=(1, 1), groups=4,
                               padding_mode="circular"), (8, 7, 6)),
        Case("Conv2d 6->4 k3 s(2,1) replicate dil(1,2)",
             lambda: nn.Conv2d(6, 4, 3, stride=(2, 1), padding=2, dilation=(1, 2),
                               padding_mode="replicate"), (6, 9, 11)),
        Case("Conv2d 64->64 k3 p1 on 8x8", lambda: nn.Conv2d(64, 64, 3, padding=1),
             (64, 8, 8), chunk=250),
    ]


if __name__ == "__main__":
    sys.exit(run_check(check_cases, "python -m modules.ConvAsGNN"))
