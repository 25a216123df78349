"""NG-GNN: principal neighbourhood aggregation with edge-modulated messages and edge
updates over a neural graph (Kofinas et al., ICLR 2024; ../shared/SPEC.md 4.1)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.aggr import DegreeScalerAggregation
from torch_geometric.nn.norm import LayerNorm as GraphLayerNorm
from torch_geometric.utils import degree

from neural_graphs.encoders.batch import (
    _INPUT,
    _OUTPUT,
    GRAPH_FIELDS,
    KernelGrid,
    graph_ids,
    layer_slot,
    local_node_position,
    require_fields,
)
from neural_graphs.encoders.embeddings import GraphEmbedding, IndexEmbedding
from neural_graphs.encoders.readouts import Readout, head_mlp

__all__ = ["NGGNN", "PNAEdgeConv", "EdgeUpdate", "ReferenceFeatures"]

AGGREGATORS = ("mean", "min", "max", "std")
SCALERS = ("identity", "amplification")


class PNAEdgeConv(MessagePassing):
    r"""PNA convolution whose messages are modulated by the edge features.

    .. math::
        m_{ij} &= s(e_{ij}) \odot \text{MLP}([h_i, h_j]) + t(e_{ij}) \\
        h_i' &= W\,\text{MLP}_\text{post}\big([h_i, \textstyle\bigoplus_{j} m_{ij}]\big)

    with :math:`[s, t] = \text{Lin}(e_{ij})` and :math:`\bigoplus` PyG's
    :class:`~torch_geometric.nn.aggr.DegreeScalerAggregation` (mean, min, max, std times
    identity and amplification :math:`\log(d_i + 1) / \delta`; :math:`\delta` the mean
    :math:`\log(d + 1)` of the degree histogram it was calibrated on, a buffer).

    Args:
        channels (int): node feature size (in and out).
        edge_dim (int): edge feature size.
        aggregators, scalers: PNA aggregators and scalers.

    Shapes:
        - input: node features :math:`(N, C)`, edge_index :math:`(2, E)`, edge features
          :math:`(E, D)`
        - output: :math:`(N, C)`
    """

    def __init__(self, channels: int, edge_dim: int, aggregators: tuple[str, ...] = AGGREGATORS,
                 scalers: tuple[str, ...] = SCALERS) -> None:
        # Placeholder histogram; NGGNN calibrates the scalers on its first batch.
        aggr = DegreeScalerAggregation(list(aggregators), list(scalers), torch.ones(2))
        super().__init__(aggr=aggr, node_dim=0)
        self.channels, self.edge_dim = channels, edge_dim
        self.aggregators, self.scalers = list(aggregators), list(scalers)
        self.edge_encoder = nn.Linear(edge_dim, 2 * channels)
        self.pre_target = nn.Linear(channels, channels)
        self.pre_source = nn.Linear(channels, channels, bias=False)
        self.post = nn.Linear((len(aggregators) * len(scalers) + 1) * channels, channels)
        self.lin = nn.Linear(channels, channels)

    def reset_parameters(self) -> None:
        """Draw every weight afresh (the constructor's initialisation, in its order); the
        degree calibration of the scalers is kept."""
        super().reset_parameters()
        for lin in (self.edge_encoder, self.pre_target, self.pre_source, self.post, self.lin):
            lin.reset_parameters()

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.channels}, {self.channels}, "
                f"edge_dim={self.edge_dim}, aggregators={self.aggregators}, "
                f"scalers={self.scalers})")

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        # MLP([h_i, h_j]) = W_t h_i + W_s h_j + b: both halves per node, then gathered.
        out = self.propagate(edge_index, target=self.pre_target(x), source=self.pre_source(x),
                             edge_attr=edge_attr)
        return self.lin(self.post(torch.cat([x, out], dim=-1)))

    def message(self, target_i: Tensor, source_j: Tensor, edge_attr: Tensor) -> Tensor:
        scale, shift = self.edge_encoder(edge_attr).chunk(2, dim=-1)
        return scale * (target_i + source_j) + shift


class EdgeUpdate(nn.Module):
    r"""Edge update between message-passing layers:
    :math:`e_{ij}' = \text{Lin}(\text{SiLU}(\text{Lin}_e(e_{ij}) + \text{Lin}_s(h_j) +
    \text{Lin}_t(h_i)))` for edge :math:`j \to i`.

    Args:
        channels (int): node feature size.
        edge_dim (int): edge feature size.
        bias (bool): give :math:`\text{Lin}_s` and :math:`\text{Lin}_t` biases too (the
            reference's parametrisation; they only add to the bias of
            :math:`\text{Lin}_e`, so the default leaves them out).

    Shapes:
        - input: node features :math:`(N, C)`, edge_index :math:`(2, E)`, edge features
          :math:`(E, D)`
        - output: :math:`(E, D)`
    """

    def __init__(self, channels: int, edge_dim: int, bias: bool = False) -> None:
        super().__init__()
        self.lin_e = nn.Linear(edge_dim, edge_dim)
        self.lin_s = nn.Linear(channels, edge_dim, bias=bias)
        self.lin_t = nn.Linear(channels, edge_dim, bias=bias)
        self.out = nn.Linear(edge_dim, edge_dim)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        h = self.lin_e(edge_attr) + self.lin_s(x)[edge_index[0]] + self.lin_t(x)[edge_index[1]]
        return self.out(nn.functional.silu(h))


def _fourier(v: Tensor, b: Tensor) -> Tensor:
    """The reference's Gaussian Fourier features (``rff.functional.gaussian_encoding``), in
    its order of operations: ``(2 pi v) @ b.T`` with ``b`` ``[frequencies, in]``."""
    proj = (2 * math.pi * v) @ b.to(v.dtype).T
    return torch.cat([proj.cos(), proj.sin()], dim=-1)


class ReferenceFeatures(nn.Module):
    r"""Initial node and edge features as the reference's ``GraphConstructor`` makes them
    (mkofinas/neural-graphs ``nn/graph_constructor.py``) for networks of Linear layers.

    .. math::
        h_i &= W_b\,\gamma_b(\hat b_i) + c_b, \qquad
        P(i) = \begin{cases} p^\text{in}_k & \text{input neuron } k \\
        p^\text{hid}_l & \text{hidden neuron of layer } l \\
        p^\text{out}_k & \text{output neuron } k \end{cases} \\
        e_{ij} &= W_e\,\gamma_e(v_{ij}) + c_e, \qquad v_{j \to i} = [\hat w_{ij}, 0,
        \hat w_{ij}], \quad v_{i \to j} = [0, \hat w_{ij}, \hat w_{ij}]

    with :math:`\gamma(v) = [\cos(2\pi v B^\top), \sin(2\pi v B^\top)]` (fixed buffers
    ``node_b`` ``[rff_dim, 1]`` and ``edge_b`` ``[rff_dim, 3]``, the reference's ``b``),
    :math:`\hat b_i = (b_i - \mu^b_l) / \sigma^b_l` and :math:`\hat w_{ij} = (w_{ij} -
    \mu^w_l) / \sigma^w_l` normalized by the statistics of the layer :math:`l` the neuron
    (the edge's target) belongs to (input neurons keep 0). With ``reverse_edges`` every
    edge :math:`j \to i` also runs backwards, :math:`i \to j`; without, :math:`v = \hat
    w` and ``edge_b`` is ``[rff_dim, 1]``. :class:`NGGNN` adds :math:`P(i)` after its
    input projection of :math:`h_i`, as the reference.

    Args:
        hidden (int): node and edge feature size.
        rff_dim (int): Fourier frequencies (features ``2 * rff_dim``).
        rff_sigma (float): their standard deviation.
        max_layers (int): layers of the networks read (input, hidden layers, output):
            ``max_layers - 2`` hidden-layer position vectors.
        reverse_edges (bool): add the reversed edges.
        layer_stats (Mapping, optional): ``weights_mean``, ``weights_std``,
            ``biases_mean``, ``biases_std``, one value per layer of weights (buffers).

    Shapes:
        - input: a :class:`~torch_geometric.data.Batch` of graphs of Linear layers
          (``edge_attr`` :math:`(E, 1)`)
        - output: :meth:`nodes` and :meth:`position_embedding` :math:`(N, \text{hidden})`,
          :meth:`edges` :math:`(E', \text{hidden})` for the :math:`E'` edges of
          :meth:`edge_index` (:math:`2E` with ``reverse_edges``)
    """

    STATS = ("weights_mean", "weights_std", "biases_mean", "biases_std")

    def __init__(self, hidden: int, rff_dim: int = 128, rff_sigma: float = 3.0,
                 max_layers: int = 4, reverse_edges: bool = False,
                 layer_stats: Mapping[str, Sequence[float]] | None = None) -> None:
        super().__init__()
        if max_layers < 3:
            raise ValueError(f"max_layers must be at least 3 (input, hidden, output), got "
                             f"{max_layers}")
        self.max_layers, self.reverse_edges = max_layers, reverse_edges
        self.register_buffer("node_b", torch.randn(rff_dim, 1) * rff_sigma)
        self.register_buffer("edge_b", torch.randn(rff_dim, 3 if reverse_edges else 1)
                             * rff_sigma)
        self.node_proj = nn.Linear(2 * rff_dim, hidden)
        self.edge_proj = nn.Linear(2 * rff_dim, hidden)
        self.input_position = IndexEmbedding(hidden, "input neuron")
        self.hidden_position = nn.Embedding(max_layers - 2, hidden)
        self.output_position = IndexEmbedding(hidden, "output neuron")
        self.stats_layers = 0
        if layer_stats is not None:
            if set(layer_stats) != set(self.STATS) or \
                    len({len(layer_stats[k]) for k in self.STATS}) != 1:
                raise ValueError(f"layer_stats needs the keys {self.STATS}, each one value "
                                 f"per layer, got {dict(layer_stats)}")
            for key in self.STATS:
                self.register_buffer(key, torch.tensor([float(v) for v in layer_stats[key]]))
            self.stats_layers = len(layer_stats["weights_mean"])

    def _normalized(self, value: Tensor, layer: Tensor, kind: str) -> Tensor:
        if not self.stats_layers:
            return value
        if layer.numel() and int(layer.max()) > self.stats_layers:
            raise ValueError(f"layer_stats hold {self.stats_layers} layers; a graph has "
                             f"{int(layer.max())} layers of weights")
        index = (layer - 1).clamp(min=0)
        mean = getattr(self, f"{kind}_mean").to(value.dtype)[index].unsqueeze(-1)
        std = getattr(self, f"{kind}_std").to(value.dtype)[index].unsqueeze(-1)
        return torch.where((layer > 0).unsqueeze(-1), (value - mean) / std, value)

    def nodes(self, batch: Batch) -> Tensor:
        if batch.x.shape[-1] != 1:
            raise ValueError(f"features='reference' reads one bias per neuron (x [N, 1]), "
                             f"got x {tuple(batch.x.shape)}")
        bias = self._normalized(batch.x, batch.node_layer, "biases")
        return self.node_proj(_fourier(bias, self.node_b))

    def position_embedding(self, batch: Batch) -> Tensor:
        node_type, node_position = batch.node_type, local_node_position(batch)
        slot = layer_slot(batch.node_layer, node_type, self.max_layers)
        pos = self.hidden_position((slot - 1).clamp(0, self.max_layers - 3))
        for kind, table in ((_INPUT, self.input_position), (_OUTPUT, self.output_position)):
            where = (node_type == kind).nonzero().squeeze(1)
            pos = pos.index_copy(0, where, table(node_position[where]).to(pos.dtype))
        return pos

    def edge_index(self, batch: Batch) -> Tensor:
        edge_index = batch.edge_index
        return torch.cat([edge_index, edge_index.flip(0)], 1) if self.reverse_edges \
            else edge_index

    def edges(self, batch: Batch) -> Tensor:
        if batch.edge_attr.shape[-1] != 1:
            raise ValueError(f"features='reference' reads networks of Linear layers (one "
                             f"weight per edge), got edge_attr {tuple(batch.edge_attr.shape)}")
        w = self._normalized(batch.edge_attr, batch.edge_layer, "weights")
        if self.reverse_edges:
            zero = torch.zeros_like(w)
            w = torch.cat([torch.cat([w, zero, w], -1), torch.cat([zero, w, w], -1)], 0)
        return self.edge_proj(_fourier(w, self.edge_b))


class NGGNN(nn.Module):
    r"""NG-GNN: a neural graph read by PNA message passing with edge updates.

    Node and edge features start from :class:`~neural_graphs.encoders.embeddings.GraphEmbedding`
    (Fourier features of biases and weights, position, activation and edge-type
    embeddings, optional probe features). Each of ``num_layers`` layers runs
    :class:`PNAEdgeConv` along the network's edges (input to output, as the reference's
    pna.yaml; its mnist_cls_pna.sh adds the reversed edges: ``reverse_edges``);
    between layers the node features pass LayerNorm (per node) and SiLU, and the edges are
    updated (:class:`EdgeUpdate`). The readout (output-neuron concatenation by default)
    goes through an MLP to ``out_dim``.

    .. math::
        h^{(0)} &= W_\text{in} h + c_\text{in}, \quad e^{(0)} = W_\text{e,in} e +
        c_\text{e,in} \\
        h^{(t+1)} &= \text{Dropout}(\text{SiLU}(\text{LN}(h^{(t)} + \text{PNA}^{(t)}(
        h^{(t)}, e^{(t)})))), \quad e^{(t+1)} = e^{(t)} + \text{EdgeUpdate}^{(t)}(
        h^{(t+1)}, e^{(t)}) \\
        y &= \text{MLP}(\text{Readout}(h^{(T-1)} + \text{PNA}^{(T-1)}(h^{(T-1)},
        e^{(T-1)})))

    (the residual terms :math:`h^{(t)} +` and :math:`e^{(t)} +` with ``residual``, the
    default; the reference has none).

    The PNA scalers divide by the mean :math:`\log(d+1)` of a degree histogram: ``deg``
    when given, otherwise the in-degree histogram of the first batch seen, then frozen
    (buffers ``avg_deg_lin`` / ``avg_deg_log`` of each aggregation, saved in the state
    dict), so a graph's result never depends on the graphs batched with it. Unlike the
    reference, LayerNorm normalizes each node (PyG's default graph-mode LayerNorm,
    called there without the batch vector, mixes all graphs of a batch).

    **Reference configuration.** ``features="reference", reverse_edges=True,
    norm="batch", edge_update_bias=True, dropout=0.2, max_layers=4, residual=False``
    with the layer statistics and degree histogram of the reference's INR config computes
    exactly the function of mkofinas/neural-graphs ``GNNForClassification`` with its INR
    PNA config (``neural_graphs.encoders.reference.ngnn.REFERENCE_NGGNN_KWARGS`` and
    ``from_reference_state_dict``): features of :class:`ReferenceFeatures` (no activation
    or edge-type embeddings, position vectors added after the input projection), messages
    along both edge directions, LayerNorm over all nodes of the whole batch, biased
    :math:`\text{Lin}_s, \text{Lin}_t` in the edge update.

    Args:
        out_dim (int): output size.
        hidden (int): node and edge feature size (32 for INRs in the reference, 256 for
            CNN zoos).
        num_layers (int): message-passing layers.
        readout (str): ``"cat"``, ``"mean"``, ``"max"`` or ``"mean_max"``
            (:class:`~neural_graphs.encoders.readouts.Readout`).
        head_hidden (int, optional): width of the output MLP (default ``hidden``).
        rff_dim (int): Fourier frequencies of scalars.
        rff_sigma (float): their standard deviation (3, the reference's GNN).
        num_probes (int): probe inputs for Linear-chain networks (0: none, the default
            of the reference).
        max_layers (int): hidden-layer slots of the position embedding (with
            ``features="reference"``: the layers of the networks read, input and output
            included).
        update_edges (bool): update edge features between layers.
        deg (Tensor, optional): in-degree histogram for the PNA scalers.
        aggregators, scalers: PNA aggregators and scalers.
        kernel_shape (tuple, optional): the kernel grid weights are read on (default:
            the first batch's largest; :class:`~neural_graphs.encoders.batch.KernelGrid`).
        features (str): ``"ours"`` (:class:`~neural_graphs.encoders.embeddings.GraphEmbedding`,
            any architecture) or ``"reference"`` (:class:`ReferenceFeatures`, networks of
            Linear layers).
        reverse_edges (bool): pass messages along the reversed edges too (``features=
            "reference"`` only).
        layer_stats (Mapping, optional): per-layer statistics the weights and biases are
            normalized with (``features="reference"`` only; :class:`ReferenceFeatures`).
        norm (str): LayerNorm between layers over ``"node"`` (each node, the default),
            ``"graph"`` (all nodes and channels of each graph) or ``"batch"`` (all nodes
            of the whole batch, as the reference).
        dropout (float): dropout of the node features after each norm and activation.
        edge_update_bias (bool): biases in the edge update's node projections
            (:class:`EdgeUpdate`).
        residual (bool): add each layer's PNA output to its input and each edge update
            to the edge features. The reference has none; with them the input features
            (probes above all) reach the readout undiluted: 5 epochs on 1,000 MNIST INRs
            reach 29% test accuracy instead of 17.5%.

    Shapes:
        - input: a :class:`~torch_geometric.data.Batch` of graphs from
          :func:`~neural_graphs.to_neural_graph` (or one graph)
        - output: :math:`(G, \text{out\_dim})`
    """

    FEATURES = ("ours", "reference")
    NORMS = ("node", "graph", "batch")

    def __init__(self, out_dim: int, hidden: int = 32, num_layers: int = 4,
                 readout: str = "cat", head_hidden: int | None = None, rff_dim: int = 128,
                 rff_sigma: float = 3.0, num_probes: int = 0, max_layers: int = 32,
                 update_edges: bool = True, deg: Tensor | None = None,
                 aggregators: tuple[str, ...] = AGGREGATORS,
                 scalers: tuple[str, ...] = SCALERS,
                 kernel_shape: tuple[int, ...] | None = None, features: str = "ours",
                 reverse_edges: bool = False,
                 layer_stats: Mapping[str, Sequence[float]] | None = None,
                 norm: str = "node", dropout: float = 0.0,
                 edge_update_bias: bool = False, residual: bool = True) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        if features not in self.FEATURES:
            raise ValueError(f"features must be one of {self.FEATURES}, got {features!r}")
        if norm not in self.NORMS:
            raise ValueError(f"norm must be one of {self.NORMS}, got {norm!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if features == "ours" and (reverse_edges or layer_stats is not None):
            raise ValueError("reverse_edges and layer_stats need features='reference'")
        if features == "reference" and num_probes:
            raise ValueError("features='reference' has no probe features (num_probes=0)")
        self.features, self.norm, self.dropout = features, norm, float(dropout)
        self.residual = residual
        self.kernels = KernelGrid(kernel_shape)
        self.embed: nn.Module = GraphEmbedding(
            hidden, hidden, rff_dim, rff_sigma, max_layers, num_probes) \
            if features == "ours" else ReferenceFeatures(
            hidden, rff_dim, rff_sigma, max_layers, reverse_edges, layer_stats)
        self.node_in = nn.Linear(hidden, hidden)
        self.edge_in = nn.Linear(hidden, hidden)
        self.convs = nn.ModuleList(PNAEdgeConv(hidden, hidden, aggregators, scalers)
                                   for _ in range(num_layers))
        self.norms = nn.ModuleList(
            nn.LayerNorm(hidden) if norm == "node" else GraphLayerNorm(hidden, mode="graph")
            for _ in range(num_layers - 1))
        self.edge_updates = nn.ModuleList(EdgeUpdate(hidden, hidden, edge_update_bias)
                                          for _ in range(num_layers - 1)) if update_edges \
            else None
        self.readout = Readout(readout)
        self.head = head_mlp(head_hidden or hidden, out_dim)
        self.register_buffer("degree_calibrated", torch.tensor(False))
        if deg is not None:
            self.calibrate(deg)

    @torch.no_grad()
    def calibrate(self, deg: Tensor) -> None:
        """Set the PNA scalers' normalization from an in-degree histogram (``deg[d]``
        nodes of in-degree ``d``)."""
        deg = deg.to(torch.float64)
        if deg.dim() != 1 or deg.sum() <= 0:
            raise ValueError(f"deg must be a 1-d histogram with a positive total, got "
                             f"{tuple(deg.shape)}")
        bins = torch.arange(deg.numel(), dtype=torch.float64)
        lin = float((bins * deg).sum() / deg.sum())
        log = float(((bins + 1).log() * deg).sum() / deg.sum())
        for conv in self.convs:
            conv.aggr_module.init_avg_deg_lin = lin
            conv.aggr_module.init_avg_deg_log = log
            conv.aggr_module.reset_parameters()
        self.degree_calibrated.fill_(True)

    def _inputs(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """Node features, edge features and the edges messages run along."""
        if self.features == "reference":
            h = self.node_in(self.embed.nodes(batch)) + self.embed.position_embedding(batch)
            return h, self.edge_in(self.embed.edges(batch)), self.embed.edge_index(batch)
        return (self.node_in(self.embed.nodes(batch)),
                self.edge_in(self.embed.edges(batch)), batch.edge_index)

    def _normalize(self, index: int, h: Tensor, batch: Batch) -> Tensor:
        if self.norm == "graph":
            return self.norms[index](h, graph_ids(batch), batch.num_graphs)
        return self.norms[index](h)

    def forward(self, graphs: Batch | Data | list[Data]) -> Tensor:
        batch = self.kernels.collate(graphs)
        require_fields(batch, GRAPH_FIELDS, type(self).__name__)
        batch = self.kernels(batch)
        h, e, edge_index = self._inputs(batch)
        if not bool(self.degree_calibrated):
            self.calibrate(torch.bincount(degree(edge_index[1], batch.num_nodes,
                                                 dtype=torch.long)).cpu())
        for index, conv in enumerate(self.convs):
            h = h + conv(h, edge_index, e) if self.residual else conv(h, edge_index, e)
            if index == len(self.convs) - 1:
                break
            h = F.silu(self._normalize(index, h, batch))
            if self.dropout:
                h = F.dropout(h, self.dropout, self.training)
            if self.edge_updates is not None:
                update = self.edge_updates[index](h, edge_index, e)
                e = e + update if self.residual else update
        return self.head(self.readout(h, batch))
