"""Reading a batch of neural graphs: fields, per-graph pointers and architectures, and
the kernel grid an encoder reads.

Symmetry: nothing here looks at a hidden neuron's ``node_position`` or its position in the
node list (see ``neural_graphs.encoders.common``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from neural_graphs.kernels import collate_graphs, graph_grids, largest_grid, pad_kernels

__all__ = [
    "GRAPH_FIELDS",
    "KernelGrid",
    "as_batch",
    "check_one_architecture",
    "describe_difference",
    "edge_ptr",
    "graph_ids",
    "graph_structure",
    "layer_slot",
    "local_node_position",
    "node_ptr",
    "require_fields",
]

GRAPH_FIELDS = ("x", "edge_index", "edge_attr", "edge_mask", "edge_type", "edge_layer",
                "node_layer", "node_position", "node_type", "node_activation")
_INPUT, _HIDDEN, _OUTPUT = 0, 1, 2


def as_batch(graphs: Data | Batch | Sequence[Data],
             kernel_shape: Sequence[int] | None = None) -> Batch:
    """``graphs`` as a :class:`~torch_geometric.data.Batch`: a lone graph becomes a batch
    of one, a list of graphs is collated by :func:`~neural_graphs.collate_graphs` (kernels
    padded to ``kernel_shape``, by default the largest grid)."""
    if isinstance(graphs, Batch):
        return graphs
    if isinstance(graphs, Data):
        return Batch.from_data_list([graphs])
    if isinstance(graphs, (list, tuple)) and graphs and \
            all(isinstance(g, Data) for g in graphs):
        return collate_graphs(graphs, kernel_shape)
    raise TypeError(f"expected a torch_geometric Data or Batch from to_neural_graph, got "
                    f"{type(graphs).__name__}")


def require_fields(batch: Batch, fields: Iterable[str], owner: str) -> None:
    """Raise ``ValueError`` naming the first of ``fields`` that ``batch`` lacks (or holds
    with the wrong shape)."""
    for name in fields:
        value = getattr(batch, name, None)
        if value is None:
            raise ValueError(f"{owner} needs the graph field '{name}' (made by "
                             f"neural_graphs.to_neural_graph); the batch has none")
        if name in ("x", "edge_attr", "edge_mask", "edge_index") and (
                not isinstance(value, Tensor) or value.dim() != 2):
            raise ValueError(f"{owner}: graph field '{name}' must be a 2-d tensor, got "
                             f"{getattr(value, 'shape', type(value).__name__)}")
    if "edge_attr" in fields and "edge_mask" in fields and \
            batch.edge_attr.shape != batch.edge_mask.shape:
        raise ValueError(f"{owner}: edge_attr {tuple(batch.edge_attr.shape)} and edge_mask "
                         f"{tuple(batch.edge_mask.shape)} differ in shape")


def _graph_list(batch: Batch, name: str) -> list[Any]:
    """A Python graph attribute as one entry per graph (``Batch`` makes lists of them)."""
    value = getattr(batch, name, None)
    if value is None:
        raise ValueError(f"the graph attribute '{name}' (made by "
                         "neural_graphs.to_neural_graph) is missing")
    if batch.num_graphs == 1 and not (isinstance(value, list) and len(value) == 1
                                      and isinstance(value[0], (list, tuple))):
        return [value]
    return list(value)


def graph_ids(batch: Batch) -> Tensor:
    """The graph of each node (``batch.batch``; zeros for a lone graph)."""
    ids = getattr(batch, "batch", None)
    if ids is None:
        return torch.zeros(batch.num_nodes, dtype=torch.long, device=batch.x.device)
    return ids


def local_node_position(batch: Batch) -> Tensor:
    """Each neuron's index inside its layer (``node_position``: ``Batch`` leaves it local,
    its name holds no ``index``)."""
    return batch.node_position


def node_ptr(batch: Batch) -> Tensor:
    """Index of each graph's first node, and the node count at the end: ``[G + 1]``."""
    counts = torch.bincount(graph_ids(batch), minlength=batch.num_graphs)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def edge_ptr(batch: Batch) -> Tensor:
    """Index of each graph's first edge, and the edge count at the end: ``[G + 1]`` (the
    edges of a graph are contiguous in a ``Batch``)."""
    edge_graph = graph_ids(batch)[batch.edge_index[0]]
    counts = torch.bincount(edge_graph, minlength=batch.num_graphs)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def graph_structure(layers: Sequence[dict[str, Any]]) -> tuple:
    """What makes two graphs the same architecture: per layer its kind, size, activation
    (and parameter), offset and incoming groups with their operators."""
    def frozen(value: Any) -> Any:
        if isinstance(value, dict):
            return tuple(sorted((k, frozen(v)) for k, v in value.items()))
        if isinstance(value, (list, tuple)):
            return tuple(frozen(v) for v in value)
        return value

    return tuple((layer["kind"], layer["size"], layer["activation"],
                  layer["activation_param"], layer["offset"],
                  tuple((g["source"], g["kind"], frozen(g["pre"]), frozen(g["params"]),
                         tuple(g["edges"])) for g in layer["groups"]))
                 for layer in layers)


def describe_difference(a: tuple, b: tuple) -> str:
    """The first layer where two :func:`graph_structure` values differ, in words."""
    if len(a) != len(b):
        return f"{len(a)} layers against {len(b)}"
    for index, (la, lb) in enumerate(zip(a, b)):
        if la != lb:
            return (f"layer {index}: {la[0]} of {la[1]} neurons ({la[2]}) against "
                    f"{lb[0]} of {lb[1]} neurons ({lb[2]}), inputs {list(la[5])[:2]} "
                    f"against {list(lb[5])[:2]}")
    return "nothing"


def _weight_layout(structure: tuple) -> tuple:
    """A structure without activations and offsets: readers of weights alone (flattened
    or as NFN weight spaces) need the layout of the weights, not the nonlinearities."""
    return tuple((layer[0], layer[1], None, None, None, layer[5]) for layer in structure)


def check_one_architecture(batch: Batch, owner: str) -> list[dict[str, Any]]:
    """The layers of the batch's one weight layout (activations may differ); ``ValueError``
    naming the first graph that differs from graph 0 otherwise."""
    all_layers = _graph_list(batch, "layers")
    reference = _weight_layout(graph_structure(all_layers[0]))
    for index, layers in enumerate(all_layers[1:], start=1):
        structure = _weight_layout(graph_structure(layers))
        if structure != reference:
            raise ValueError(f"{owner} reads one architecture per batch (and per model); "
                             f"graph {index} differs from graph 0: "
                             f"{describe_difference(structure, reference)}")
    return all_layers[0]



def layer_slot(node_layer: Tensor, node_type: Tensor, max_layers: int) -> Tensor:
    r"""The per-layer slot of each neuron: 0 for input neurons, ``max_layers - 1`` for
    output neurons, :math:`\min(l, \text{max\_layers} - 2)` for a hidden neuron of layer
    :math:`l` (hidden layers deeper than ``max_layers - 2`` share the last hidden slot).
    Depends on ``node_layer`` and ``node_type`` only: invariant to hidden permutations."""
    slot = node_layer.clamp(1, max_layers - 2)
    slot = torch.where(node_type == _INPUT, torch.zeros_like(slot), slot)
    return torch.where(node_type == _OUTPUT, torch.full_like(slot, max_layers - 1), slot)



class KernelGrid(nn.Module):
    r"""The kernel grid an encoder reads, and the padding of every batch to it.

    Weights enter an encoder as ``edge_attr`` rows of ``K = prod(kernel_shape)`` entries,
    so its layers are built for one grid: ``kernel_shape`` when given, else the largest
    grid of the first batch (a buffer, saved in the state dict). Every later batch is
    re-padded to it (:func:`~neural_graphs.pad_kernels`, kernels zero-padded and
    centred), so a 3x3 CNN's graph gives the same output alone as batched with a 5x5
    one; a batch with a larger kernel raises ``ValueError``.

    Args:
        kernel_shape (tuple, optional): the grid; None reads it from the first batch.
    """

    grid: Tensor

    def __init__(self, kernel_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        self.register_buffer("grid", torch.tensor(list(kernel_shape or []), dtype=torch.long))
        #: the grid as a tuple (None until the first batch), so that no forward pass reads
        #: the buffer back from its device
        self.shape: tuple[int, ...] | None = tuple(kernel_shape) if kernel_shape else None

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        # Any grid size loads (a grid read on the first batch); checkpoints without one
        # read it again from their next batch.
        value = state_dict.get(prefix + "grid")
        if value is not None:
            self.grid = value.detach().to(torch.long).clone()
            self.shape = tuple(self.grid.tolist()) or None

    def collate(self, graphs: Data | Batch | Sequence[Data]) -> Batch:
        """:func:`as_batch`, a list of graphs padded straight to this grid (once its grid is
        known), so that :meth:`forward` has nothing left to re-pad."""
        with self._explained():
            return as_batch(graphs, self.shape)

    def forward(self, batch: Batch) -> Batch:
        if getattr(batch, "kernel_shape", None) is None:
            return batch  # a hand-made batch: its edge_attr is read as it is
        if self.shape is None:
            self.shape = largest_grid(graph_grids(batch))
            self.grid = torch.tensor(self.shape, dtype=torch.long)
        with self._explained():
            return pad_kernels(batch, self.shape)

    @contextlib.contextmanager
    def _explained(self) -> Iterator[None]:
        try:
            yield
        except ValueError as err:
            raise ValueError(f"this encoder reads kernels on the grid {self.shape} (its "
                             f"first batch, or kernel_shape=); {err}") from err
