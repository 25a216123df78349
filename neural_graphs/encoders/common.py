"""Pieces every weight-space encoder shares: reading a batch of neural graphs, random Fourier
features of scalars, position / activation / edge-type embeddings, probe features and
readouts.

Symmetry: nothing here looks at a hidden neuron's ``node_position`` or its position in the
node list. A hidden neuron is seen through its bias, its activation, its layer
(``node_layer``) and its edges; input and output neurons (which no hidden permutation
moves) also through their ``node_position``. Every function of a batch below is therefore
invariant (per graph) or equivariant (per node, per edge) under hidden-neuron
permutations, and computes each graph from that graph's nodes and edges only, so a graph
gets the same result alone or batched with any others.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter
from torch_geometric.data import Batch, Data
from torch_geometric.utils import scatter

from neural_graphs.graph import ACTIVATIONS, EDGE_TYPES

__all__ = [
    "GRAPH_FIELDS",
    "FourierFeatures",
    "GraphEmbedding",
    "IndexEmbedding",
    "ProbeFeatures",
    "Readout",
    "as_batch",
    "edge_ptr",
    "graph_structure",
    "head_mlp",
    "layer_slot",
    "linear_chain_weights",
    "local_node_position",
    "probe_activations",
    "require_fields",
]

GRAPH_FIELDS = ("x", "edge_index", "edge_attr", "edge_mask", "edge_type", "edge_layer",
                "node_layer", "node_position", "node_type", "node_activation")
_INPUT, _HIDDEN, _OUTPUT = 0, 1, 2


# --------------------------------------------------------------------------- batches


def as_batch(graphs: Data | Batch) -> Batch:
    """``graphs`` as a :class:`~torch_geometric.data.Batch` (a lone graph becomes a batch
    of one)."""
    if isinstance(graphs, Batch):
        return graphs
    if isinstance(graphs, Data):
        return Batch.from_data_list([graphs])
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


# --------------------------------------------------------------------------- lazy pieces


class FourierFeatures(LazyModuleMixin, nn.Module):
    r"""Gaussian random Fourier features of a vector of scalars (a bias, a kernel).

    .. math::
        \gamma(v) = [\cos(2\pi v B), \sin(2\pi v B)], \quad B_{kj} \sim
        \mathcal{N}(0, \sigma^2)

    ``B`` (``[in_features, num_frequencies]``) is a fixed buffer drawn when the width of
    ``v`` is first seen (or at construction when ``in_features`` is given). A scalar
    (``in_features = 1``) gets the features of the reference; zero-padded kernel entries
    add nothing to :math:`vB`.

    Args:
        num_frequencies (int): frequencies (output width ``2 * num_frequencies``).
        sigma (float): standard deviation of the frequencies.
        in_features (int, optional): width of ``v``; inferred on the first call if None.

    Shapes:
        - input: :math:`(*, \text{in\_features})`
        - output: :math:`(*, 2\,\text{num\_frequencies})`
    """

    frequencies: Tensor

    def __init__(self, num_frequencies: int = 128, sigma: float = 1.0,
                 in_features: int | None = None) -> None:
        super().__init__()
        self.num_frequencies = num_frequencies
        self.sigma = float(sigma)
        if in_features is None:
            self.register_buffer("frequencies", UninitializedBuffer())
        else:
            self.register_buffer("frequencies",
                                 torch.randn(in_features, num_frequencies) * self.sigma)

    def initialize_parameters(self, v: Tensor) -> None:  # type: ignore[override]
        if self.has_uninitialized_params():
            with torch.no_grad():
                self.frequencies.materialize((v.shape[-1], self.num_frequencies))
                self.frequencies.normal_(0.0, self.sigma)

    def forward(self, v: Tensor) -> Tensor:
        if v.shape[-1] != self.frequencies.shape[0]:
            raise ValueError(f"FourierFeatures was built for {self.frequencies.shape[0]} "
                             f"input columns (edge_attr width K or x width), got "
                             f"{v.shape[-1]}; build graphs with one kernel_shape=")
        proj = (2 * math.pi) * (v @ self.frequencies.to(v.dtype))
        return torch.cat([proj.cos(), proj.sin()], dim=-1)

    @property
    def out_features(self) -> int:
        return 2 * self.num_frequencies


class IndexEmbedding(LazyModuleMixin, nn.Module):
    r"""A learned vector per index (input neuron ``k``, output neuron ``k``), the table
    sized on the first call by the largest index seen.

    A later index beyond the table raises ``ValueError`` (the encoder was built for
    networks with fewer input or output neurons).

    Args:
        embedding_dim (int): vector size.
        what (str): what the indices are, for error messages.

    Shapes:
        - input: :math:`(M,)` long
        - output: :math:`(M, \text{embedding\_dim})`
    """

    weight: Tensor

    def __init__(self, embedding_dim: int, what: str = "index") -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.what = what
        self.weight = UninitializedParameter()

    def initialize_parameters(self, index: Tensor) -> None:  # type: ignore[override]
        if self.has_uninitialized_params():
            rows = int(index.max()) + 1 if index.numel() else 1
            with torch.no_grad():
                self.weight.materialize((rows, self.embedding_dim))
                nn.init.normal_(self.weight)

    def forward(self, index: Tensor) -> Tensor:
        if index.numel() and int(index.max()) >= self.weight.shape[0]:
            raise ValueError(f"this encoder was built (on its first batch) for at most "
                             f"{self.weight.shape[0]} {self.what}s; a graph has "
                             f"{int(index.max()) + 1}")
        return F.embedding(index, self.weight)


def layer_slot(node_layer: Tensor, node_type: Tensor, max_layers: int) -> Tensor:
    r"""The per-layer slot of each neuron: 0 for input neurons, ``max_layers - 1`` for
    output neurons, :math:`\min(l, \text{max\_layers} - 2)` for a hidden neuron of layer
    :math:`l` (hidden layers deeper than ``max_layers - 2`` share the last hidden slot).
    Depends on ``node_layer`` and ``node_type`` only: invariant to hidden permutations."""
    slot = node_layer.clamp(1, max_layers - 2)
    slot = torch.where(node_type == _INPUT, torch.zeros_like(slot), slot)
    return torch.where(node_type == _OUTPUT, torch.full_like(slot, max_layers - 1), slot)


# --------------------------------------------------------------------------- probes


def _linear_chain(layers: Sequence[dict[str, Any]]) -> bool:
    """Whether a network is a chain of Linear layers (an MLP, a SIREN)."""
    for index, layer in enumerate(layers[1:], start=1):
        groups = layer["groups"]
        if layer["kind"] != "linear" or len(groups) != 1 or groups[0]["kind"] != "linear" \
                or groups[0]["source"] != index - 1 or groups[0]["pre"] \
                or (layer.get("batchnorm") and not layer["batchnorm"].get("folded", True)):
            return False
    return len(layers) > 1 and not layers[0].get("flatten_input", False)


def linear_chain_weights(batch: Batch, graphs: Sequence[int], layers: Sequence[dict]
                         ) -> list[tuple[Tensor, Tensor]]:
    """Dense ``(weight [G, out, in], bias [G, out])`` of each layer of the graphs
    ``graphs`` (one architecture ``layers``, a chain of Linear layers), gathered from
    ``edge_attr`` by each edge's (target, source) place, so relabelled graphs give
    consistently permuted weights."""
    device = batch.edge_index.device
    ids = torch.as_tensor(list(graphs), device=device)
    nodes0 = node_ptr(batch)[ids]
    edges0 = edge_ptr(batch)[ids]
    value = (batch.edge_attr * batch.edge_mask).sum(-1)  # the one weight of a Linear edge
    rows = torch.arange(len(graphs), device=device)[:, None]
    out = []
    for layer in layers[1:]:
        group = layer["groups"][0]
        start, stop = group["edges"]
        lo, hi = layer["nodes"]
        src_lo, src_hi = layers[group["source"]]["nodes"]
        edges = edges0[:, None] + torch.arange(start, stop, device=device)  # [G, n]
        dst = batch.edge_index[1, edges] - nodes0[:, None] - lo
        src = batch.edge_index[0, edges] - nodes0[:, None] - src_lo
        weight = value.new_zeros(len(graphs), hi - lo, src_hi - src_lo)
        weight = weight.index_put((rows.expand_as(dst), dst, src), value[edges])
        bias = batch.x[nodes0[:, None] + torch.arange(lo, hi, device=device), 0]
        out.append((weight, bias))
    return out


def _activate(z: Tensor, name: str, param: float | None) -> Tensor:
    if name == "identity":
        return z
    if name == "sine":
        return torch.sin(param * z)
    if name == "leaky_relu":
        return F.leaky_relu(z, 0.01 if param is None else param)
    functions = {"relu": torch.relu, "gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh,
                 "sigmoid": torch.sigmoid}
    if name not in functions:
        raise ValueError(f"unknown activation {name!r}; known: {ACTIVATIONS}")
    return functions[name](z)


def probe_activations(batch: Batch, inputs: Tensor) -> tuple[Tensor, Tensor]:
    r"""Every neuron's activation on ``P`` probe inputs, for all Linear-chain networks
    (MLPs, SIRENs) of the batch at once: graphs are grouped by architecture and each
    group runs as one batched matrix product per layer,
    :math:`h_l = \phi_l(W_l h_{l-1} + b_l + o_l)` (:math:`o_l` the layer's constant
    offset). A network with ``n`` inputs reads the first ``n`` columns of ``inputs``.

    Returns:
        ``(activations [N, P], probed [N] bool)``: zeros and False for the neurons of
        graphs that are not Linear chains (convolutional networks get no probes).
    """
    all_layers = _graph_list(batch, "layers")
    groups: dict[tuple, list[int]] = {}
    for index, layers in enumerate(all_layers):
        if _linear_chain(layers):
            groups.setdefault(graph_structure(layers), []).append(index)
    acts = inputs.new_zeros(batch.num_nodes, inputs.shape[0])
    probed = torch.zeros(batch.num_nodes, dtype=torch.bool, device=acts.device)
    starts = node_ptr(batch)
    for members in groups.values():
        layers = all_layers[members[0]]
        n_in = layers[0]["size"]
        if n_in > inputs.shape[1]:
            raise ValueError(f"the probe inputs have {inputs.shape[1]} coordinates, a "
                             f"network has {n_in} inputs")
        ids = torch.as_tensor(members, device=acts.device)
        h = inputs[:, :n_in].t().unsqueeze(0).expand(len(members), -1, -1)  # [G, in, P]
        states = [h]
        for layer, (weight, bias) in zip(layers[1:], linear_chain_weights(batch, members,
                                                                           layers)):
            z = torch.baddbmm(bias.unsqueeze(-1) + layer["offset"], weight, h)
            h = _activate(z, layer["activation"], layer["activation_param"])
            states.append(h)
        for layer, h in zip(layers, states):
            lo, hi = layer["nodes"]
            rows = (starts[ids][:, None] + torch.arange(lo, hi, device=acts.device)).reshape(-1)
            acts = acts.index_put((rows,), h.reshape(-1, h.shape[-1]))
            probed[rows] = True
    return acts, probed


class ProbeFeatures(nn.Module):
    r"""Probe features: ``num_probes`` learned inputs (initialised uniform in
    :math:`[-1, 1]`) run through every Linear-chain network of the batch; each neuron's
    activations over the probes, through a per-layer-slot Linear and LayerNorm, are its
    probe features (zero for neurons of other networks, e.g. CNNs).

    Args:
        num_probes (int): learned probe inputs.
        out_dim (int): feature size.
        max_layers (int): layer slots (see :func:`layer_slot`).

    Shapes:
        - output: :math:`(N, \text{out\_dim})`
    """

    def __init__(self, num_probes: int, out_dim: int, max_layers: int) -> None:
        super().__init__()
        self.num_probes = num_probes
        self.max_layers = max_layers
        self.inputs = UninitializedParameter()
        self.proj = nn.Parameter(torch.empty(max_layers, num_probes, out_dim))
        self.proj_bias = nn.Parameter(torch.zeros(max_layers, out_dim))
        self.norm = nn.LayerNorm(out_dim)
        bound = 1 / math.sqrt(num_probes)
        nn.init.uniform_(self.proj, -bound, bound)

    def forward(self, batch: Batch) -> Tensor:
        if isinstance(self.inputs, UninitializedParameter):
            n_in = max((layers[0]["size"] for layers in _graph_list(batch, "layers")),
                       default=1)
            with torch.no_grad():
                self.inputs.materialize((self.num_probes, n_in), device=batch.x.device,
                                        dtype=self.proj.dtype)
                self.inputs.uniform_(-1.0, 1.0)
        acts, probed = probe_activations(batch, self.inputs)
        slot = layer_slot(batch.node_layer, batch.node_type, self.max_layers)
        feats = torch.bmm(acts.unsqueeze(1), self.proj[slot]).squeeze(1) + self.proj_bias[slot]
        return self.norm(feats) * probed.unsqueeze(-1).to(feats.dtype)


# --------------------------------------------------------------------------- embeddings


class GraphEmbedding(nn.Module):
    r"""Initial node and edge features of a neural graph.

    .. math::
        h_i &= W_b\,\gamma_b(x_i) + P(i) + A[\text{act}_i] + \text{probe}_i \\
        e_{ij} &= W_e\,\gamma_e(\text{edge\_attr}_{ij}) + T[\text{type}_{ij}]

    :math:`\gamma` random Fourier features (:class:`FourierFeatures`), :math:`P(i)` the
    position embedding (its own vector per input and per output neuron index, one vector
    per hidden layer slot, :func:`layer_slot`), :math:`A` activation-type and :math:`T`
    edge-type embeddings.

    Args:
        node_dim (int): node feature size.
        edge_dim (int): edge feature size (0: no edge features).
        rff_dim (int): Fourier frequencies (features ``2 * rff_dim``).
        rff_sigma (float): frequency standard deviation.
        max_layers (int): layer slots of the hidden-layer embedding (and probes).
        num_probes (int): probe inputs (0: no probe features).
        position (bool): add position embeddings.
    """

    def __init__(self, node_dim: int, edge_dim: int, rff_dim: int = 128,
                 rff_sigma: float = 3.0, max_layers: int = 32, num_probes: int = 0,
                 position: bool = True) -> None:
        super().__init__()
        if max_layers < 3:
            raise ValueError(f"max_layers must be at least 3 (input, hidden, output), got "
                             f"{max_layers}")
        self.max_layers = max_layers
        self.node_rff = FourierFeatures(rff_dim, rff_sigma)
        self.node_proj = nn.Linear(2 * rff_dim, node_dim)
        self.activation = nn.Embedding(len(ACTIVATIONS), node_dim)
        self.position = position
        if position:
            self.input_position = IndexEmbedding(node_dim, "input neuron")
            self.output_position = IndexEmbedding(node_dim, "output neuron")
            self.layer_position = nn.Embedding(max_layers, node_dim)
        self.probes = ProbeFeatures(num_probes, node_dim, max_layers) if num_probes else None
        self.edge_dim = edge_dim
        if edge_dim:
            self.edge_rff = FourierFeatures(rff_dim, rff_sigma)
            self.edge_proj = nn.Linear(2 * rff_dim, edge_dim)
            self.edge_type = nn.Embedding(len(EDGE_TYPES), edge_dim)

    def nodes(self, batch: Batch) -> Tensor:
        h = self.node_proj(self.node_rff(batch.x)) + self.activation(batch.node_activation)
        if self.position:
            h = h + self.position_embedding(batch)
        if self.probes is not None:
            h = h + self.probes(batch)
        return h

    def position_embedding(self, batch: Batch) -> Tensor:
        node_type, node_position = batch.node_type, local_node_position(batch)
        pos = self.layer_position(layer_slot(batch.node_layer, node_type, self.max_layers))
        for kind, table in ((_INPUT, self.input_position), (_OUTPUT, self.output_position)):
            where = (node_type == kind).nonzero().squeeze(1)
            pos = pos.index_copy(0, where, table(node_position[where]).to(pos.dtype))
        return pos

    def edges(self, batch: Batch) -> Tensor:
        return self.edge_proj(self.edge_rff(batch.edge_attr)) + self.edge_type(batch.edge_type)


# --------------------------------------------------------------------------- readout


def head_mlp(hidden: int, out_dim: int, layers: int = 2) -> nn.Sequential:
    """``LazyLinear(hidden) -> ReLU -> ... -> Linear(out_dim)`` with ``layers`` hidden
    layers (the input width is read on the first call)."""
    modules: list[nn.Module] = [nn.LazyLinear(hidden), nn.ReLU()]
    for _ in range(layers - 1):
        modules += [nn.Linear(hidden, hidden), nn.ReLU()]
    modules.append(nn.Linear(hidden, out_dim))
    return nn.Sequential(*modules)


class Readout(nn.Module):
    r"""Graph features from node features.

    * ``"cat"``: the output neurons' features concatenated in ``node_position`` order (every
      graph of the batch must have the same number of output neurons), as the reference.
    * ``"mean"``, ``"max"``, ``"mean_max"``: pooling over all nodes of each graph (any
      architectures).

    Shapes:
        - input: :math:`(N, D)`
        - output: :math:`(G, D)` (``mean``, ``max``), :math:`(G, 2D)` (``mean_max``),
          :math:`(G, n_\text{out} D)` (``cat``)
    """

    MODES = ("cat", "mean", "max", "mean_max")

    def __init__(self, mode: str = "cat") -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"readout must be one of {self.MODES}, got {mode!r}")
        self.mode = mode

    def forward(self, h: Tensor, batch: Batch) -> Tensor:
        graphs = graph_ids(batch)
        size = batch.num_graphs
        if self.mode == "mean":
            return scatter(h, graphs, 0, size, "mean")
        if self.mode == "max":
            return scatter(h, graphs, 0, size, "max")
        if self.mode == "mean_max":
            return torch.cat([scatter(h, graphs, 0, size, "mean"),
                              scatter(h, graphs, 0, size, "max")], -1)
        out = (batch.node_type == _OUTPUT).nonzero().squeeze(1)
        counts = torch.bincount(graphs[out], minlength=size)
        if counts.numel() and (counts != counts[0]).any():
            raise ValueError(f"readout 'cat' needs the same number of output neurons in "
                             f"every graph, got {sorted(set(counts.tolist()))}; use "
                             "readout='mean', 'max' or 'mean_max' for such batches")
        n_out = int(counts[0]) if counts.numel() else 0
        position = local_node_position(batch)[out]
        if not out.numel() or int(position.max()) >= n_out or int(position.min()) < 0:
            raise ValueError("readout 'cat': every graph needs output neurons with "
                             "node_position 0..n-1")
        dense = h.new_zeros(size, n_out, h.shape[-1])
        dense = dense.index_put((graphs[out], position), h[out])
        return dense.reshape(size, -1)
