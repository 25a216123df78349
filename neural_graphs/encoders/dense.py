"""Dense message passing for batches whose graphs share one layout (every INR set, a zoo
of one architecture): NG-GNN's PNA aggregation as reductions over a dense dimension.

A neural graph's nodes come in runs that receive their edges alike: the neurons of a
Linear layer each receive one edge from every neuron of the layer before (and, with
reversed edges, from every neuron of the layer after), the channels of a convolution one
edge from every input channel. :class:`DenseLayout` cuts one graph's nodes into such
*blocks* once: ``n`` consecutive target nodes of in-degree ``d`` whose incoming edges,
sorted by target and source, fill an ``n x d`` grid. For a batch of ``G`` graphs of that
layout each block's edge features are one tensor ``[G, n, d, C]``: a node's messages are
reduced over the dense ``d`` dimension (``sum``, ``amin``, ``amax`` instead of PyG's
scatter), target features reach their edges by broadcasting over ``d``, and source
features by broadcasting over ``n`` when every target of the block has the same sources
(a *shared* block; otherwise they are gathered). Nodes without incoming edges get zeros,
as in PyG.

The edge work of a layer (the edge update of the layer before, the messages and their
statistics) is one autograd node per block, :class:`_EdgeLayer`, that runs tiles of
:data:`TILE_ROWS` edges through the whole chain while they sit in the CPU's caches and
recomputes them in the backward pass: at hidden size 32 the work is bound by memory
traffic, which autograd over whole ``[G, n, d, C]`` tensors multiplies.

:class:`LayoutCache` finds the layout of a batch: one per graph-0 edge list, analysed once;
a batch qualifies when its ``edge_index`` is exactly graph 0's repeated ``G`` times (one
comparison with a cached tensor per batch, skipped when the same ``edge_index`` tensor comes
again unchanged). Anything else (mixed layouts, unequal graphs, layouts that would need
more than ``max_blocks`` blocks) takes the general path.
"""

from __future__ import annotations

import copy
import math
import weakref
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch_geometric.data import Batch

# The layers the dense path computes (``neural_graphs.encoders.gnn.PNAEdgeConv`` and
# ``EdgeUpdate``) are read by attribute only: importing them here would make the two
# modules import each other.
PNAEdgeConv = nn.Module
EdgeUpdate = nn.Module

__all__ = ["AGGREGATORS", "SCALERS", "TILE_ROWS", "Block", "BatchLayout", "DenseLayout",
           "LayoutCache", "layer"]

#: aggregators and scalers the dense path computes (PyG's formulas)
AGGREGATORS = frozenset({"sum", "mean", "min", "max", "var", "std"})
SCALERS = frozenset({"identity", "amplification", "attenuation", "linear",
                     "inverse_linear"})


@dataclass(frozen=True)
class Block:
    """``count`` consecutive target nodes from ``start``, each with ``degree`` incoming
    message edges.

    ``edges`` are their local message-edge ids ``[count * degree]``, by target, then source;
    ``sources`` the source nodes, ``[degree]`` when every target has the same sources
    (``shared``; ``source_start`` when they are ``source_start, ..., source_start +
    degree - 1``), else ``[count * degree]`` in the order of ``edges``.
    """

    start: int
    count: int
    degree: int
    edges: Tensor
    sources: Tensor
    shared: bool
    source_start: int | None


class DenseLayout:
    r"""One graph's message edges cut into dense blocks (see the module's docstring).

    Args:
        source, target (Tensor): the local message edges ``[Q]`` of one graph.
        num_nodes (int): its nodes.

    Runs of consecutive nodes with the same sources make shared blocks; consecutive nodes
    whose sources differ but whose in-degrees agree are pooled into one gathered block.
    """

    def __init__(self, source: Tensor, target: Tensor, num_nodes: int) -> None:
        source, target = source.cpu(), target.cpu()
        self.num_nodes, self.num_edges = num_nodes, int(source.numel())
        self.degree = torch.bincount(target, minlength=num_nodes)
        # Sort by target, then source; a stable sort keeps parallel edges in edge order.
        order = torch.sort(target * num_nodes + source, stable=True).indices
        ends = self.degree.cumsum(0).tolist()
        degree = self.degree.tolist()
        sorted_source = source[order]
        rows = [sorted_source[end - d:end] for end, d in zip(ends, degree)]
        runs: list[list[int]] = []  # [start, count] of nodes with equal source lists
        for node in range(num_nodes):
            if degree[node] == 0:
                continue
            if runs and sum(runs[-1]) == node and degree[node - 1] == degree[node] and \
                    torch.equal(rows[node - 1], rows[node]):
                runs[-1][1] += 1
            else:
                runs.append([node, 1])
        spans: list[list[int]] = []  # runs, and singletons of one degree pooled
        for start, count in runs:
            last = spans[-1] if spans else None
            if count == 1 and last is not None and last[2] and sum(last[:2]) == start \
                    and degree[last[0]] == degree[start]:
                last[1] += 1
            else:
                spans.append([start, count, count == 1])
        self.blocks: list[Block] = []
        for start, count, _ in spans:
            d = degree[start]
            first = ends[start] - d
            edges = order[first:first + count * d]
            shared = count == 1 or all(torch.equal(rows[start], rows[node])
                                       for node in range(start + 1, start + count))
            sources = rows[start] if shared else sorted_source[first:first + count * d]
            contiguous = shared and torch.equal(
                sources, torch.arange(int(sources[0]), int(sources[0]) + d))
            self.blocks.append(Block(start, count, d, edges, sources, shared,
                                     int(sources[0]) if contiguous else None))

    def to(self, device: torch.device) -> DenseLayout:
        """This layout with its index tensors on ``device``."""
        moved = copy.copy(self)
        moved.degree = self.degree.to(device)
        moved.blocks = [replace(b, edges=b.edges.to(device), sources=b.sources.to(device))
                        for b in self.blocks]
        return moved

    def targets(self, block: Block, x: Tensor) -> Tensor:
        """Node features ``[G, N, C]`` of the block's targets, ``[G, n, 1, C]``."""
        return x[:, block.start:block.start + block.count].unsqueeze(2)

    def sources(self, block: Block, x: Tensor) -> Tensor:
        """Node features ``[G, N, C]`` of the block's sources: ``[G, 1, d, C]`` (shared)
        or ``[G, n, d, C]``."""
        if block.source_start is not None:
            return x[:, block.source_start:block.source_start + block.degree].unsqueeze(1)
        picked = x.index_select(1, block.sources)
        if block.shared:
            return picked.unsqueeze(1)
        return picked.view(x.shape[0], block.count, block.degree, x.shape[-1])

    def nodes(self, pieces: list[Tensor]) -> Tensor:
        """Per-block node results ``[G, n, F]`` as one ``[G * N, F]`` in node order, zeros
        for nodes without incoming edges."""
        graphs, width = pieces[0].shape[0], pieces[0].shape[-1]
        parts, at = [], 0
        for start, piece in [*((b.start, p) for b, p in zip(self.blocks, pieces)),
                             (self.num_nodes, None)]:
            if start > at:
                parts.append(pieces[0].new_zeros(graphs, start - at, width))
            if piece is not None:
                parts.append(piece)
                at = start + piece.shape[1]
        return (torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]).reshape(-1, width)


@dataclass
class BatchLayout:
    """A :class:`DenseLayout` for a batch of ``num_graphs`` graphs: ``edge_index`` is the
    batch's edges it stands for (for checking later batches), and ``rows[b]`` the rows of
    block ``b``'s edges ``[G * n * d]`` (graph-major) among the batch's message edges
    (``copies`` of the batch's edges one after the other, as
    :meth:`~neural_graphs.encoders.embeddings.ConstructorEmbedding.edge_index` orders them)."""

    layout: DenseLayout
    num_graphs: int
    edge_index: Tensor
    ptr: Tensor
    rows: list[Tensor] = field(default_factory=list)


@dataclass
class _Entry:
    edges: Tensor  # graph 0's edge_index
    nodes: int
    copies: int
    layout: DenseLayout | None  # None: no dense layout (too many blocks)
    batches: dict[int, BatchLayout] = field(default_factory=dict)  # by num_graphs

    def batch_layout(self, graphs: int) -> BatchLayout:
        """The layout of ``graphs`` graphs (cached)."""
        if graphs not in self.batches:
            assert self.layout is not None
            edges, device = self.edges.shape[1], self.edges.device
            offsets = torch.arange(graphs, device=device)
            edge_index = self.edges.unsqueeze(1) + (offsets * self.nodes).view(1, -1, 1)
            rows = [((b.edges // edges * graphs * edges + b.edges % edges).unsqueeze(0)
                     + (offsets * edges).unsqueeze(1)).reshape(-1) for b in self.layout.blocks]
            if len(self.batches) >= 4:
                self.batches.pop(next(iter(self.batches)))
            self.batches[graphs] = BatchLayout(
                self.layout, graphs, edge_index.reshape(2, -1),
                torch.arange(graphs + 1, device=device) * self.nodes, rows)
        return self.batches[graphs]


class LayoutCache:
    """The dense layout of a batch, or None when the batch takes the general path.

    Layouts are analysed once per graph-0 edge list (``max_layouts`` kept, least recently
    used dropped) and per batch size; a batch qualifies when it holds ``G`` graphs of
    ``N`` nodes each (``ptr``) and its ``edge_index`` equals graph 0's repeated with node
    offsets ``g * N``: one ``torch.equal`` against a cached tensor, ``O(E)`` per batch,
    skipped when the last qualified ``edge_index`` tensor comes again with the same
    version.

    Args:
        max_blocks (int): layouts needing more blocks take the general path (one block
            costs a few small kernels per layer).
        max_layouts (int): layouts kept.
    """

    def __init__(self, max_blocks: int = 64, max_layouts: int = 8) -> None:
        self.max_blocks, self.max_layouts = max_blocks, max_layouts
        self._entries: list[_Entry] = []  # the most recently used last
        self._last: tuple[Any, ...] | None = None

    def __getstate__(self) -> dict[str, int]:
        return {"max_blocks": self.max_blocks, "max_layouts": self.max_layouts}  # no caches

    def __setstate__(self, state: dict[str, int]) -> None:
        self.__init__(**state)

    def __call__(self, batch: Batch, copies: int = 1) -> BatchLayout | None:
        """The layout of ``batch`` whose messages run along ``copies`` copies of its edges
        (2: the edges and the reversed edges, in that order), or None."""
        edge_index, ptr = batch.edge_index, getattr(batch, "ptr", None)
        graphs = int(getattr(batch, "num_graphs", 1))
        key = (edge_index._version, int(batch.num_nodes), graphs, copies)
        if self._last is not None:
            ref, last_key, plan = self._last
            if ref() is edge_index and last_key == key and \
                    (ptr is None or torch.equal(ptr, plan.ptr)):
                return plan
        plan = self._find(edge_index, ptr, key[1], graphs, copies)
        self._last = (weakref.ref(edge_index), key, plan) if plan is not None else None
        return plan

    def _find(self, edge_index: Tensor, ptr: Tensor | None, total_nodes: int, graphs: int,
              copies: int) -> BatchLayout | None:
        total_edges = int(edge_index.shape[1])
        if graphs < 1 or total_edges == 0 or total_nodes % graphs or total_edges % graphs:
            return None
        nodes, edges = total_nodes // graphs, total_edges // graphs
        if (ptr is None and graphs != 1) or (ptr is not None and int(ptr[1]) != nodes):
            return None
        if graphs > 1 and not int(edge_index[0, edges - 1]) < nodes <= int(edge_index[0, edges]):
            return None  # the first edges / graphs edges are not graph 0's
        entry = self._entry(edge_index[:, :edges], nodes, copies)
        if entry is None or entry.layout is None:
            return None
        plan = entry.batch_layout(graphs)
        if (ptr is not None and not torch.equal(ptr, plan.ptr)) or \
                not torch.equal(edge_index, plan.edge_index):
            return None
        return plan

    def _entry(self, local: Tensor, nodes: int, copies: int) -> _Entry | None:
        for index, entry in enumerate(self._entries):
            if (entry.nodes, entry.copies, entry.edges.shape, entry.edges.device) == \
                    (nodes, copies, local.shape, local.device) and torch.equal(entry.edges, local):
                self._entries.append(self._entries.pop(index))
                return entry
        if int(local.min()) < 0 or int(local.max()) >= nodes:
            return None  # graph 0's edges leave it: not a batch of whole graphs
        source, target = local[0], local[1]
        if copies == 2:
            source, target = torch.cat([source, target]), torch.cat([target, source])
        elif copies != 1:
            raise ValueError(f"copies must be 1 or 2, got {copies}")
        layout = DenseLayout(source, target, nodes)
        self._entries.append(_Entry(local.clone(), nodes, copies, layout.to(local.device)
                                    if len(layout.blocks) <= self.max_blocks else None))
        del self._entries[:-self.max_layouts]
        return self._entries[-1]


#: rows (edges) of one tile of a block: the tile's working set stays in the CPU's caches
TILE_ROWS = 4096


@dataclass(frozen=True)
class _Config:
    """What one :class:`_EdgeLayer` call computes (static, not tensors)."""

    update: bool  # update the edges first
    residual: bool  # e' = e + update (else e' = update)
    keep: bool  # return e' (the next layer reads it)
    squares: bool  # sum of squares of the messages
    extremes: bool  # their minimum and maximum
    tiles: tuple[tuple[slice, slice], ...]  # (graphs, targets) of each tile


def _tiles(graphs: int, count: int, degree: int) -> tuple[tuple[slice, slice], ...]:
    """Tiles of about :data:`TILE_ROWS` edges: whole graphs when one graph's block is
    smaller, else runs of targets of one graph (contiguous either way)."""
    if count * degree <= TILE_ROWS:
        step = max(1, TILE_ROWS // (count * degree))
        return tuple((slice(g, min(g + step, graphs)), slice(0, count))
                     for g in range(0, graphs, step))
    step = max(1, TILE_ROWS // degree)
    return tuple((slice(g, g + 1), slice(i, min(i + step, count)))
                 for g in range(graphs) for i in range(0, count, step))


class _EdgeLayer(torch.autograd.Function):
    r"""One block's edge work of one NG-GNN layer, tile by tile: the edge update of the
    layer before (optional) and the PNA messages with their statistics.

    .. math::
        e' &= e + \text{Lin}_o(\text{SiLU}(\text{Lin}_e(e) + l^s_j + l^t_i)) \\
        m_{ij} &= s(e'_{ij}) \odot (t_i + u_j) + b(e'_{ij}), \quad
        [s, b] = \text{Lin}_\text{enc}(e') \\
        &\textstyle\sum_j m_{ij}, \quad \sum_j m_{ij}^2, \quad \min_j m_{ij}, \quad
        \max_j m_{ij}

    Each tile of :data:`TILE_ROWS` edges runs the whole chain while it sits in the CPU's
    caches; in memory only ``e`` is read and ``e'`` written, and the backward pass
    recomputes the tile's intermediates rather than storing them (autograd over whole
    ``[G, n, d, C]`` tensors passes through memory some ninety times per layer). Ties at a
    minimum or maximum share its gradient equally, as with PyG's scatter ``amin``/``amax``.
    The update's inputs are None without one.
    """

    @staticmethod
    def forward(ctx: Any, cfg: _Config, e: Tensor, lt: Tensor | None, ls: Tensor | None,
                w_e: Tensor | None, b_e: Tensor | None, w_o: Tensor | None,
                b_o: Tensor | None, t: Tensor, s: Tensor, w_enc: Tensor,
                b_enc: Tensor | None) -> tuple[Tensor | None, ...]:
        stats = e.shape[:2] + e.shape[3:]
        total = e.new_empty(stats)
        square = e.new_empty(stats) if cfg.squares else None
        low, high = (e.new_empty(stats), e.new_empty(stats)) if cfg.extremes else (None, None)
        new = torch.empty_like(e) if cfg.update and cfg.keep else None
        lsb = ls if b_e is None or ls is None else ls + b_e  # Lin_e's bias rides on l^s
        for tile in cfg.tiles:
            y = e[tile]
            if cfg.update:
                a = F.silu(_pre(y, lt, lsb, w_e, tile), inplace=True)
                y = _updated(y, a, w_o, b_o, cfg.residual,
                             torch.empty_like(y) if new is None else new[tile])
            m = _messages(y, t, s, w_enc, b_enc, tile)[0]
            torch.sum(m, 2, out=total[tile])
            if square is not None:
                torch.linalg.vecdot(m, m, dim=2, out=square[tile])
            if low is not None and high is not None:
                torch.amin(m, 2, out=low[tile])
                torch.amax(m, 2, out=high[tile])
        ctx.cfg = cfg
        ctx.save_for_backward(e, lt, lsb, w_e, b_e, w_o, b_o, t, s, w_enc, b_enc, low, high,
                              new)
        return new, total, square, low, high

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g_new: Tensor | None, g_total: Tensor | None,
                 g_square: Tensor | None, g_low: Tensor | None,
                 g_high: Tensor | None) -> tuple[Tensor | None, ...]:
        cfg = ctx.cfg
        e, lt, lsb, w_e, b_e, w_o, b_o, t, s, w_enc, b_enc, low, high, new = ctx.saved_tensors
        g = _Grads(e, lt, lsb, w_e, w_o, b_o, t, s, w_enc, b_enc)
        g_square = None if g_square is None else 2 * g_square
        channels = e.shape[-1]
        for tile in cfg.tiles:
            x = e[tile]
            rows = x.numel() // channels
            if cfg.update:
                pre = _pre(x, lt, lsb, w_e, tile)
                a = F.silu(pre)
                y = new[tile] if new is not None else _updated(x, a, w_o, b_o, cfg.residual,
                                                               torch.empty_like(x))
            else:
                y = x
            m, u, scale = _messages(y, t, s, w_enc, b_enc, tile)
            g_enc = m.new_empty(rows, 2 * channels)
            g_m = g_enc[:, channels:].view(m.shape)  # the gradient of the shift: dL/dm
            _message_grad(m, tile, g_total, g_square, low, g_low, high, g_high, g_m)
            torch.mul(g_m, u, out=g_enc[:, :channels].view(m.shape))
            g_u = g_m * scale
            g.target(g.t, g_u, tile)
            g.source(g.s, g_u, tile)
            y2d = y.reshape(rows, channels)
            g.weight(g.w_enc, g.b_enc, g_enc, y2d)
            g_x = g.e[tile].view(rows, channels)
            if not cfg.update:
                torch.mm(g_enc, w_enc, out=g_x)
                continue
            g_y = torch.mm(g_enc, w_enc, out=g_x)  # g_x holds g_y until its last use
            if g_new is not None:
                g_y += g_new[tile].view(rows, channels)
            g.weight(g.w_o, g.b_o, g_y, a.view(rows, channels))
            g_pre = torch.ops.aten.silu_backward(g_y @ w_o, pre.view(rows, channels))
            g.weight(g.w_e, None, g_pre, x.reshape(rows, channels))
            g.source(g.ls, g_pre.view(x.shape), tile)
            g.target(g.lt, g_pre.view(x.shape), tile)
            if cfg.residual:
                g_x.addmm_(g_pre, w_e)
            else:
                torch.mm(g_pre, w_e, out=g_x)
        g_b_e = None if b_e is None else g.ls.sum(tuple(range(g.ls.dim() - 1)))
        return (None, g.e, g.lt, g.ls, g.w_e, g_b_e, g.w_o, g.b_o, g.t, g.s, g.w_enc,
                g.b_enc)


def _part(x: Tensor, tile: tuple[slice, slice]) -> Tensor:
    """A node term's part for a tile (terms broadcast over targets have size 1 there)."""
    return x[tile[0]] if x.shape[1] == 1 else x[tile]


def _pre(x: Tensor, lt: Tensor, lsb: Tensor, w_e: Tensor, tile: tuple[slice, slice]
         ) -> Tensor:
    r""":math:`\text{Lin}_e(e) + l^s_j + l^t_i` of a tile (the bias inside ``lsb``)."""
    pre = (x.reshape(-1, x.shape[-1]) @ w_e.t()).view(x.shape)
    pre += _part(lsb, tile)
    pre += _part(lt, tile)
    return pre


def _updated(x: Tensor, a: Tensor, w_o: Tensor, b_o: Tensor | None, residual: bool,
             out: Tensor) -> Tensor:
    r""":math:`e + \text{Lin}_o(a)` (or :math:`\text{Lin}_o(a)`) of a tile, into ``out``."""
    flat, a2d = out.view(-1, out.shape[-1]), a.view(-1, a.shape[-1])
    if b_o is None:
        torch.mm(a2d, w_o.t(), out=flat)
    else:
        torch.addmm(b_o, a2d, w_o.t(), out=flat)
    return out.add_(x) if residual else out


def _messages(x: Tensor, t: Tensor, s: Tensor, w_enc: Tensor, b_enc: Tensor | None,
              tile: tuple[slice, slice]) -> tuple[Tensor, Tensor, Tensor]:
    """The messages of a tile, their ``t_i + u_j`` and the scale ``s(e)``."""
    flat = x.reshape(-1, x.shape[-1])
    enc = (flat @ w_enc.t() if b_enc is None else torch.addmm(b_enc, flat, w_enc.t()))
    enc = enc.view(*x.shape[:-1], -1)
    half = w_enc.shape[0] // 2
    scale, shift = enc[..., :half], enc[..., half:]
    u = _part(t, tile) + _part(s, tile)  # PyG's order: scale * (t_i + u_j) + shift
    return torch.addcmul(shift, scale, u), u, scale


def _message_grad(m: Tensor, tile: tuple[slice, slice], g_total: Tensor | None,
                  g_square2: Tensor | None, low: Tensor | None, g_low: Tensor | None,
                  high: Tensor | None, g_high: Tensor | None, out: Tensor) -> None:
    """The gradient of a tile's messages from those of their statistics (``g_square2``
    twice that of the sum of squares), into ``out``."""
    g_sum = None if g_total is None else g_total[tile].unsqueeze(2)
    if g_square2 is not None:
        torch.addcmul(m.new_zeros(()) if g_sum is None else g_sum, m,
                      g_square2[tile].unsqueeze(2), out=out)
    elif g_sum is not None:
        out.copy_(g_sum.expand_as(m))
    else:
        out.zero_()
    hits = None
    for extreme, g in ((low, g_low), (high, g_high)):
        if extreme is None or g is None:
            continue
        # A float comparison and a float count: several times faster than bool ones.
        hits = torch.eq(m, extreme[tile].unsqueeze(2),
                        out=torch.empty_like(m) if hits is None else hits)
        out.addcmul_(hits, g[tile].unsqueeze(2) / hits.sum(2, keepdim=True))


class _Grads:
    """Gradient buffers of one :class:`_EdgeLayer` backward pass, filled tile by tile."""

    def __init__(self, e: Tensor, lt: Tensor | None, ls: Tensor | None, w_e: Tensor | None,
                 w_o: Tensor | None, b_o: Tensor | None, t: Tensor, s: Tensor,
                 w_enc: Tensor, b_enc: Tensor | None) -> None:
        def buffer(x: Tensor | None, zeros: bool = False) -> Tensor | None:
            return None if x is None else torch.zeros_like(x) if zeros else torch.empty_like(x)

        self.e = torch.empty_like(e)
        # Terms broadcast over targets gather from several tiles: zeros to add into.
        self.lt, self.t = buffer(lt), buffer(t)
        self.ls = buffer(ls, ls is not None and ls.shape[1] == 1)
        self.s = buffer(s, s.shape[1] == 1)
        self.w_e, self.w_o, self.b_o, self.w_enc, self.b_enc = (
            buffer(x, True) for x in (w_e, w_o, b_o, w_enc, b_enc))

    @staticmethod
    def target(buffer: Tensor, g: Tensor, tile: tuple[slice, slice]) -> None:
        """A tile's edge gradient ``[g, n, d, C]`` into a target term's ``[G, n, 1, C]``."""
        torch.sum(g, 2, keepdim=True, out=buffer[tile])

    def source(self, buffer: Tensor, g: Tensor, tile: tuple[slice, slice]) -> None:
        """A tile's edge gradient ``[g, n, d, C]`` into a source term's: ``[G, n, d, C]``,
        or ``[G, 1, d, C]`` summed over targets (added up when tiles split them)."""
        if buffer.shape[1] != 1:
            buffer[tile] = g
        elif tile[1].stop - tile[1].start == self.t.shape[1]:
            torch.sum(g, 1, keepdim=True, out=buffer[tile[0]])
        else:
            buffer[tile[0]] += g.sum(1, keepdim=True)

    @staticmethod
    def weight(weight: Tensor, bias: Tensor | None, g: Tensor, x: Tensor) -> None:
        """Add a tile's ``g [rows, out]`` of a linear map of ``x [rows, in]``."""
        weight.addmm_(g.t(), x)
        if bias is not None:
            bias += g.sum(0)


def _aggregate(conv: PNAEdgeConv, moments: tuple[Tensor | None, ...], degree: int) -> Tensor:
    """PyG's ``DegreeScalerAggregation`` of one block's messages from their statistics,
    in its formulas and order (aggregators, then scalers)."""
    names = conv.aggregators
    total, square, low, high = moments
    mean = total / degree
    stats: dict[str, Tensor | None] = {"sum": total, "mean": mean, "min": low, "max": high}
    if square is not None:
        var = square / degree - mean * mean
        std = var.clamp(min=1e-5).sqrt()
        stats["var"], stats["std"] = var, std.masked_fill(std <= math.sqrt(1e-5), 0.0)
    out = torch.cat([stats[name] for name in names], dim=-1) if len(names) > 1 \
        else stats[names[0]]
    aggr = conv.aggr_module
    deg = out.new_full((1,), float(degree))
    scaled = []
    for scaler in conv.scalers:
        if scaler == "identity":
            scaled.append(out)
        elif scaler == "amplification":
            scaled.append(out * (torch.log(deg + 1) / aggr.avg_deg_log))
        elif scaler == "attenuation":
            scaled.append(out * (aggr.avg_deg_log / torch.log(deg.clamp(min=1) + 1)))
        elif scaler == "linear":
            scaled.append(out * (deg / aggr.avg_deg_lin))
        else:  # inverse_linear
            scaled.append(out * (aggr.avg_deg_lin / deg.clamp(min=1)))
    return torch.cat(scaled, dim=-1) if len(scaled) > 1 else scaled[0]


def layer(conv: PNAEdgeConv, x: Tensor, edges: list[Tensor], plan: BatchLayout,
          update: EdgeUpdate | None = None, residual: bool = True, keep: bool = True
          ) -> tuple[Tensor, list[Tensor]]:
    r"""One NG-GNN layer on a batch of one layout: the edge update of the layer before
    (``update``, optional) and :class:`~neural_graphs.encoders.gnn.PNAEdgeConv`.

    .. math::
        e'_{ij} &= e_{ij} + \text{EdgeUpdate}(h, e)_{ij} \quad (e' = e \text{ without }
        \text{update}) \\
        h' &= \text{PNAEdgeConv}(h, e')

    per block as ``[G, n, d, C]`` tensors, target terms broadcast over ``d`` and source
    terms over ``n`` (:class:`_EdgeLayer`).

    Args:
        conv (PNAEdgeConv): the layer's convolution (weights, degree calibration).
        x (Tensor): node features :math:`h`, ``[G * N, C]``.
        edges (list[Tensor]): each block's edge features ``[G, n, d, D]``.
        plan (BatchLayout): the batch's layout.
        update (EdgeUpdate, optional): the edge update to run first.
        residual (bool): :math:`e' = e + \text{update}` (else the update alone).
        keep (bool): return :math:`e'` (False: the edges are not read again).

    Returns:
        the convolution's output :math:`(G N, C)` and the blocks' :math:`e'` (``edges``
        without an update; an empty list when not ``keep``).
    """
    layout, graphs = plan.layout, plan.num_graphs

    def nodes(linear: nn.Linear) -> Tensor:
        return linear(x).view(graphs, layout.num_nodes, -1)

    target, source = nodes(conv.pre_target), nodes(conv.pre_source)
    lt = ls = None
    if update is not None:
        lt, ls = nodes(update.lin_t), nodes(update.lin_s)
    names = conv.aggregators
    pieces, kept = [], []
    for block, e in zip(layout.blocks, edges):
        cfg = _Config(update is not None, residual, keep, "var" in names or "std" in names,
                      "min" in names or "max" in names,
                      _tiles(graphs, block.count, block.degree))
        weights = (None,) * 6 if update is None else (
            layout.targets(block, lt), layout.sources(block, ls), update.lin_e.weight,
            update.lin_e.bias, update.out.weight, update.out.bias)
        new, *moments = _EdgeLayer.apply(
            cfg, e, *weights, layout.targets(block, target), layout.sources(block, source),
            conv.edge_encoder.weight, conv.edge_encoder.bias)
        pieces.append(_aggregate(conv, moments, block.degree))
        if keep:
            kept.append(e if new is None else new)
    return conv.combine(x, layout.nodes(pieces)), kept
