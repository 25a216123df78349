"""Kernel grids of neural graphs: where a kernel sits in ``edge_attr``, and batching graphs
whose largest kernels differ.

A graph's ``edge_attr`` holds each kernel zero-padded and centred to the graph's
``kernel_shape`` (its largest kernel by default). Graphs of networks with different
largest kernels (a 5x5 CNN and a 3x3 one, an MLP and a CNN) therefore have different
``edge_attr`` widths and ``Batch.from_data_list`` cannot concatenate them;
:func:`collate_graphs` first re-pads every graph to the batch's largest grid
(:func:`pad_kernels`), which gives exactly the graphs ``to_neural_graph(...,
kernel_shape=grid)`` would have made.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

__all__ = ["collate_graphs", "graph_grids", "kernel_placement", "largest_grid", "pad_kernels"]


def kernel_placement(kernel: Sequence[int], grid: Sequence[int]) -> Tensor:
    """Flat indices of a centred ``kernel`` inside the flattened ``grid`` (a kernel with
    fewer dimensions than the grid gets leading 1s: a Linear weight sits at the centre)."""
    kernel, grid = tuple(kernel), tuple(grid)
    if len(kernel) < len(grid):
        kernel = (1,) * (len(grid) - len(kernel)) + kernel
    ranges = [torch.arange(k) + (g - k) // 2 for k, g in zip(kernel, grid)]
    index = torch.zeros((), dtype=torch.long)
    for r, g in zip(ranges, grid):
        index = index.unsqueeze(-1) * g + r
    return index.reshape(-1)


def kernel_columns(attr: Tensor, shape: Sequence[int], grid: Sequence[int]) -> Tensor:
    """The columns of ``edge_attr`` that hold a centred kernel of ``shape``."""
    place = kernel_placement(shape, grid)
    first = int(place[0])
    if torch.equal(place, torch.arange(first, first + place.numel())):
        return attr[:, first:first + place.numel()]
    return attr[:, place.to(attr.device)]


def graph_grids(graphs: Data | Batch) -> list[tuple[int, ...]]:
    """The ``kernel_shape`` of each graph of a ``Batch`` (or of one graph)."""
    value = getattr(graphs, "kernel_shape", None)
    if value is None:
        raise ValueError("the graph attribute 'kernel_shape' (made by "
                         "neural_graphs.to_neural_graph) is missing")
    if isinstance(graphs, Batch):
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple)):
            return [tuple(v) for v in value]
        return [tuple(value)] * graphs.num_graphs
    return [tuple(value)]


def largest_grid(grids: Iterable[Sequence[int]]) -> tuple[int, ...]:
    """The smallest grid holding every grid of ``grids`` (per dimension the largest size;
    ``(1,)``, the grid of Linear-only networks, fits in any). ``ValueError`` for grids of
    1-d and 2-d kernels together."""
    grids = [tuple(g) for g in grids]
    shaped = {g for g in grids if math.prod(g) > 1}
    dims = {len(g) for g in shaped}
    if len(dims) > 1:
        raise ValueError(f"graphs with 1-d and 2-d kernel grids cannot batch together: "
                         f"{sorted(shaped)}")
    if not shaped:
        # Only 1-element kernels: the grid to_neural_graph gave them ((1, 1) for a network
        # of 1x1 convolutions), so nothing is re-padded.
        return max(grids, key=len, default=(1,))
    return tuple(max(g[d] for g in shaped) for d in range(dims.pop()))


def _fits(grid: tuple[int, ...], target: tuple[int, ...]) -> bool:
    return math.prod(grid) == 1 or (len(grid) == len(target) and
                                    all(g <= t for g, t in zip(grid, target)))


def _group_shape(group: dict[str, Any]) -> tuple[int, ...]:
    if group["kind"] == "conv":
        return tuple(group["params"]["kernel_size"])
    if group["kind"] == "flatten":
        return tuple(group["params"]["map_shape"])
    return (1,)


def _pad_one(graph: Data, grid: tuple[int, ...], target: tuple[int, ...]) -> Data:
    """One graph re-padded from ``grid`` to ``target``, kernel by kernel."""
    width = math.prod(target)
    attr = graph.edge_attr.new_zeros(graph.edge_attr.shape[0], width)
    mask = graph.edge_mask.new_zeros(graph.edge_mask.shape[0], width)
    layers = getattr(graph, "layers", None)
    if layers is None:
        raise ValueError("pad_kernels needs the graph attribute 'layers' (made by "
                         "neural_graphs.to_neural_graph) to move kernels to a new grid")
    for layer in layers:
        for group in layer["groups"]:
            start, stop = group["edges"]
            shape = _group_shape(group)
            place = kernel_placement(shape, target).to(attr.device)
            attr[start:stop, place] = kernel_columns(graph.edge_attr[start:stop], shape, grid)
            mask[start:stop, place] = kernel_columns(graph.edge_mask[start:stop], shape, grid)
    out = copy.copy(graph)
    out.edge_attr, out.edge_mask, out.kernel_shape = attr, mask, target
    return out


def pad_kernels(graphs: Data | Batch, kernel_shape: Sequence[int]) -> Data | Batch:
    """``graphs`` (one graph or a ``Batch``) with every kernel zero-padded and centred to
    ``kernel_shape``: the same tensors as ``to_neural_graph(..., kernel_shape=...)`` gives.
    Returns the input itself when it already has that grid; never changes it in place.

    Raises:
        ValueError: a graph's grid does not fit in ``kernel_shape``.
    """
    target = tuple(int(k) for k in kernel_shape)
    grids = graph_grids(graphs)
    for grid in grids:
        if not _fits(grid, target):
            raise ValueError(f"a graph's kernel grid {grid} does not fit in the grid "
                             f"{target}")
    if all(grid == target for grid in grids):
        return graphs
    first = grids[0]
    full = (1,) * (len(target) - len(first)) + first
    if all(grid == first for grid in grids) and len(full) == len(target) and \
            all((t - g) % 2 == 0 for g, t in zip(full, target)):
        # Centring a centred kernel's grid in the target centres the kernel there too
        # (offsets (t - k) // 2 = (g - k) // 2 + (t - g) / 2 when t - g is even).
        place = kernel_placement(full, target).to(graphs.edge_attr.device)
        width = math.prod(target)
        attr = graphs.edge_attr.new_zeros(graphs.edge_attr.shape[0], width)
        mask = graphs.edge_mask.new_zeros(graphs.edge_mask.shape[0], width)
        attr[:, place] = graphs.edge_attr
        mask[:, place] = graphs.edge_mask
        out = copy.copy(graphs)
        out.edge_attr, out.edge_mask = attr, mask
        out.kernel_shape = [target] * graphs.num_graphs if isinstance(graphs, Batch) \
            else target
        return out
    if isinstance(graphs, Batch):
        return Batch.from_data_list([_pad_one(g, grid, target) for g, grid in
                                     zip(graphs.to_data_list(), grids)])
    return _pad_one(graphs, first, target)


def collate_graphs(graphs: Sequence[Data], kernel_shape: Sequence[int] | None = None
                   ) -> Batch:
    """A :class:`~torch_geometric.data.Batch` of neural graphs of any networks: each graph
    re-padded (:func:`pad_kernels`) to ``kernel_shape``, by default the largest kernel
    grid of the graphs, then ``Batch.from_data_list``. Use it as the ``collate_fn`` of a
    ``torch.utils.data.DataLoader`` over ``to_neural_graph`` outputs."""
    graphs = list(graphs)
    grid = largest_grid(g for graph in graphs for g in graph_grids(graph)) \
        if kernel_shape is None else tuple(kernel_shape)
    return Batch.from_data_list([pad_kernels(graph, grid) for graph in graphs])
