"""Graphs of sliding-window operators (convolution, pooling, adaptive pooling).

Nodes are spatial positions carrying channel features. Every output position is a
target node; it receives one edge per kernel offset from the input position under that
offset. Zero padding means the edge is absent; reflect, replicate and circular padding
mean the edge comes from the mirrored, clamped or wrapped source. Everything is built
with vectorized index arithmetic, one small tensor per spatial axis, then combined by
broadcasting: no loop over positions or channels.

Two equivalent encodings of the same graph are kept:
- ``edge_index`` (2, E) with ``kernel_offset`` (E,): PyG's edge list, for the reference
  ``message``/``aggregate`` path and for inspection;
- a CSR adjacency (N_dst x N_src + 1) with exactly K entries per row, ordered by kernel
  offset, where an absent edge points at an extra all-zero (or -inf) "padding node"
  N_src. This is the ELL layout of the same adjacency, which the fused path gathers with.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch_geometric.data import Data

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


@dataclass(frozen=True)
class WindowAxis:
    """One spatial axis of a window graph: sources of every (output, offset) pair."""

    out_len: int
    source: Tensor  # (out_len, k) long, source coordinate (arbitrary where invalid)
    valid: Tensor  # (out_len, k) bool, False for an absent (zero-padded) edge
    window_size: Tensor  # (out_len,) long, window length inside the padded input


def pooling_out_len(length: int, kernel: int, stride: int, pad: int, dilation: int,
                    ceil_mode: bool) -> int:
    """Output length of torch's pooling operators (``pooling_output_shape`` in ATen)."""
    span = length + 2 * pad - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1  # floor, as div_rtn
    # The last window must start inside the input or its left padding.
    if ceil_mode and (out - 1) * stride >= length + pad:
        out -= 1
    return out


def sliding_axis(length: int, kernel: int, stride: int, pad_lo: int, pad_hi: int,
                 dilation: int, out_len: int, padding_mode: str = "zeros",
                 device: torch.device | None = None) -> WindowAxis:
    """Sources for a sliding window along one axis of the given input length."""
    starts = torch.arange(out_len, device=device) * stride - pad_lo
    pos = starts[:, None] + torch.arange(kernel, device=device)[None, :] * dilation
    inside = (pos >= 0) & (pos < length)
    if padding_mode == "zeros":
        source, valid = pos.clamp(0, length - 1), inside
    elif padding_mode == "reflect":
        period = 2 * (length - 1) if length > 1 else 1
        folded = pos.remainder(period)
        source = torch.where(folded >= length, period - folded, folded)
        valid = torch.ones_like(inside)
    elif padding_mode == "replicate":
        source, valid = pos.clamp(0, length - 1), torch.ones_like(inside)
    elif padding_mode == "circular":
        # torch crops a negative padding first, then wraps around what is left
        lo, hi = max(-pad_lo, 0), length - max(-pad_hi, 0)
        source, valid = lo + (pos - lo).remainder(max(hi - lo, 1)), torch.ones_like(inside)
    else:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    # Window length inside the padded input (torch's count_include_pad divisor).
    window_size = (starts + kernel).clamp(max=length + pad_hi) - starts
    return WindowAxis(out_len, source, valid, window_size)


def adaptive_axis(length: int, out_len: int, device: torch.device | None = None) -> WindowAxis:
    """Sources of adaptive pooling: window i covers [floor(i L / O), ceil((i + 1) L / O))."""
    i = torch.arange(out_len, device=device)
    start = torch.div(i * length, out_len, rounding_mode="floor")
    end = torch.div((i + 1) * length + out_len - 1, out_len, rounding_mode="floor")
    kmax = int((end - start).max())
    pos = start[:, None] + torch.arange(kmax, device=device)[None, :]
    valid = pos < end[:, None]
    return WindowAxis(out_len, pos.clamp(max=length - 1), valid, end - start)


@dataclass(frozen=True)
class WindowGraph:
    """A cached window graph for one input spatial shape on one device."""

    input_size: tuple[int, ...]
    output_size: tuple[int, ...]
    kernel_size: tuple[int, ...]
    table: Tensor  # (N_dst, K) long, source node per (target, offset); N_src marks absent
    window_size: Tensor  # (N_dst,) long, window size inside the padded input
    adj_t: Tensor  # sparse CSR (N_dst, N_src + 1), K entries per row, values = offset
    padded: bool  # some edge is absent: the fused path needs the padding node
    tiled: bool  # windows tile the input in order (global pooling, 1-d pooling with
    # stride = kernel): the table is the identity and the gather a view

    @property
    def num_src_nodes(self) -> int:
        return math.prod(self.input_size)

    @property
    def num_dst_nodes(self) -> int:
        return math.prod(self.output_size)

    def edges(self) -> tuple[Tensor, Tensor]:
        """``edge_index`` (2, E) without absent edges, and each edge's kernel offset."""
        n_dst, k = self.table.shape
        present = self.table != self.num_src_nodes
        dst = torch.arange(n_dst, device=self.table.device)[:, None].expand(n_dst, k)
        offset = torch.arange(k, device=self.table.device)[None, :].expand(n_dst, k)
        edge_index = torch.stack([self.table[present], dst[present]])
        return edge_index, offset[present]

    def to_data(self, **extra: Tensor) -> Data:
        """The graph as ``torch_geometric.data.Data`` (bipartite: sources -> targets)."""
        edge_index, kernel_offset = self.edges()
        position = torch.stack(torch.unravel_index(kernel_offset, self.kernel_size), dim=1)
        return Data(edge_index=edge_index, kernel_offset=kernel_offset,
                    kernel_position=position, num_src_nodes=self.num_src_nodes,
                    num_dst_nodes=self.num_dst_nodes, num_nodes=self.num_src_nodes,
                    input_size=self.input_size, output_size=self.output_size,
                    window_size=self.window_size, **extra)


def combine_axes(axes: Sequence[WindowAxis], input_size: Sequence[int]) -> WindowGraph:
    """Combine per-axis windows into the graph over all spatial positions (row-major)."""
    input_size = tuple(int(s) for s in input_size)
    ndim = len(axes)
    source = valid = window = None
    for d, axis in enumerate(axes):
        # Output axes occupy dims [0, ndim), kernel axes dims [ndim, 2 ndim).
        shape = [1] * (2 * ndim)
        shape[d], shape[ndim + d] = axis.source.shape
        stride = math.prod(input_size[d + 1:])
        src_d = (axis.source * stride).view(shape)
        val_d = axis.valid.view(shape)
        win_shape = [1] * ndim
        win_shape[d] = axis.out_len
        win_d = axis.window_size.view(win_shape)
        source = src_d if source is None else source + src_d
        valid = val_d if valid is None else valid & val_d
        window = win_d if window is None else window * win_d
    output_size = tuple(a.out_len for a in axes)
    kernel_size = tuple(a.source.shape[1] for a in axes)
    n_dst, k = math.prod(output_size), math.prod(kernel_size)
    n_src = math.prod(input_size)
    source, valid = torch.broadcast_tensors(source, valid)
    table = torch.where(valid, source, torch.full_like(source, n_src)).reshape(n_dst, k)
    device = table.device
    with warnings.catch_warnings():
        # PyG runs its fused path on sparse adjacencies; torch labels sparse CSR "beta".
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        adj_t = torch.sparse_csr_tensor(
            torch.arange(0, n_dst * k + 1, k, device=device),
            table.reshape(-1),
            torch.arange(k, device=device).repeat(n_dst),
            size=(n_dst, n_src + 1),
            check_invariants=False,
        )
    padded = bool((~valid).any())
    tiled = (not padded and n_dst * k == n_src
             and torch.equal(table.reshape(-1), torch.arange(n_src, device=device)))
    return WindowGraph(input_size, output_size, kernel_size, table.contiguous(),
                       window.reshape(n_dst), adj_t, padded, tiled)


def ell_table(adj_t: Tensor) -> Tensor:
    """The (N_dst, K) neighbour table stored in a window graph's CSR adjacency."""
    n_dst = adj_t.shape[0]
    return adj_t.col_indices().view(n_dst, -1)


def with_padding_node(x: Tensor, fill: float = 0.0) -> Tensor:
    """Node features (B, N, C) with the extra node N that absent edges point at."""
    return torch.cat([x, x.new_full((x.shape[0], 1, x.shape[2]), fill)], dim=1)


def gather_windows(adj_t: Tensor, x: Tensor, padded: bool, tiled: bool = False,
                   fill: float = 0.0) -> Tensor:
    """Source features of every (target, offset) edge: (B, N_dst, K, C) from (B, N_src, C).

    Absent edges read an extra padding node holding ``fill``; windows that tile the input
    in order are a view of it.
    """
    table = ell_table(adj_t)
    if tiled:
        return x.reshape(x.shape[0], *table.shape, x.shape[2])
    if padded:
        x = with_padding_node(x, fill)
    if x.shape[2] == 1:  # one channel: gathering from a matrix beats 1-element rows
        flat = x.reshape(x.shape[0], -1).index_select(1, table.reshape(-1))
        return flat.view(x.shape[0], *table.shape, 1)
    return x.index_select(1, table.reshape(-1)).view(x.shape[0], *table.shape, x.shape[2])
