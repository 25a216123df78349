"""NG-GNN: principal neighbourhood aggregation with edge-modulated messages and edge
updates over a neural graph (Kofinas et al., ICLR 2024; ../shared/SPEC.md 4.1)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.aggr import DegreeScalerAggregation
from torch_geometric.nn.norm import LayerNorm as GraphLayerNorm
from torch_geometric.utils import degree

from neural_graphs.encoders import dense as dense_path
from neural_graphs.encoders.batch import (
    GRAPH_FIELDS,
    KernelGrid,
    graph_ids,
    require_fields,
)
from neural_graphs.encoders.embeddings import ConstructorEmbedding, GraphEmbedding
from neural_graphs.encoders.readouts import NodeEmbeddings, Readout, head_mlp

__all__ = ["NGGNN", "PNAEdgeConv", "EdgeUpdate"]

AGGREGATORS = ("mean", "min", "max", "std")
SCALERS = ("identity", "amplification")
EDGE_FIELDS = tuple(f for f in GRAPH_FIELDS if f.startswith("edge_") and f != "edge_index")


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
        return self.combine(x, out)

    def combine(self, x: Tensor, aggregated: Tensor) -> Tensor:
        r""":math:`W\,\text{MLP}_\text{post}([h_i, \bigoplus_j m_{ij}])` from the
        aggregated messages ``[N, len(aggregators) * len(scalers) * C]``."""
        return self.lin(self.post(torch.cat([x, aggregated], dim=-1)))

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


class NGGNN(nn.Module):
    r"""NG-GNN: a neural graph read by PNA message passing with edge updates.

    Node and edge features start from :class:`~neural_graphs.encoders.embeddings.GraphEmbedding`
    (Fourier features of biases and weights, position, activation and edge-type
    embeddings, optional probe features). Each of ``num_layers`` layers runs
    :class:`PNAEdgeConv` along the network's edges (input to output, as the reference's
    pna.yaml; its mnist_cls_pna.sh and mnist_dilation_gnn.sh add the reversed edges:
    ``reverse_edges``, so every neuron also hears the neurons it feeds);
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
    default; the reference has none). With ``reverse_edges`` every edge :math:`j \to i`
    also has a reversed twin :math:`i \to j` with :math:`e^{(0)}_{\bar{ij}} = e^{(0)}_{ij}
    + D` (:attr:`edge_direction`), updated like any edge, so each neuron aggregates over
    the neurons that feed it and those it feeds.

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
    ``from_reference_state_dict``): features of :class:`~.ConstructorEmbedding` (no activation
    or edge-type embeddings, position vectors added after the input projection), messages
    along both edge directions, LayerNorm over all nodes of the whole batch, biased
    :math:`\text{Lin}_s, \text{Lin}_t` in the edge update.

    **Dense path.** A batch whose graphs all share one layout (an INR set, a zoo of one
    architecture; any architecture) runs through :mod:`neural_graphs.encoders.dense`: the
    same function (to rounding), PNA's aggregations as reductions over dense
    ``[G, n, d, C]`` blocks of edges instead of scatters, each layer's edge work in
    cache-sized tiles. The layout is analysed once and cached (:attr:`layouts`); a batch
    qualifies when its ``edge_index`` equals graph 0's repeated (one comparison per
    batch). Other batches take the general path; ``last_path`` says which path the last
    call took.

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
        num_probes (int): probe inputs (0: none, the default of the reference): Linear
            chains read coordinates, convolutional networks images (``probe_shape``).
        max_layers (int): hidden-layer slots of the position embedding (with
            ``features="reference"``: the layers of the networks read, input and output
            included).
        update_edges (bool): update edge features between layers.
        deg (Tensor, optional): in-degree histogram for the PNA scalers.
        aggregators, scalers: PNA aggregators and scalers.
        kernel_shape (tuple, optional): the kernel grid weights are read on (default:
            the first batch's largest; :class:`~neural_graphs.encoders.batch.KernelGrid`).
        features (str): ``"ours"`` (:class:`~neural_graphs.encoders.embeddings.GraphEmbedding`,
            any architecture) or ``"reference"`` (:class:`~.ConstructorEmbedding`, networks of
            Linear layers).
        reverse_edges (bool): pass messages along the reversed edges too, output to
            input; with ``features="ours"`` a reversed edge has its edge's features plus
            a learned direction vector (:attr:`edge_direction`), with ``"reference"`` the
            reference's reversed-edge features.
        layer_stats (Mapping, optional): per-layer statistics the weights and biases are
            normalized with (``features="reference"`` only; :class:`~.ConstructorEmbedding`).
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
        dense (bool): take the dense path for batches of one layout (the attribute
            ``dense`` may be switched later; aggregators and scalers other than those of
            :mod:`~neural_graphs.encoders.dense` always take the general path).
        probe_shape (tuple, optional): ``(C, *S)`` of the learned probe images that
            convolutional networks read with ``num_probes`` (None: they get no probes;
            :class:`~neural_graphs.encoders.probes.ProbeFeatures`).

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
                 edge_update_bias: bool = False, residual: bool = True,
                 dense: bool = True, probe_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        if features not in self.FEATURES:
            raise ValueError(f"features must be one of {self.FEATURES}, got {features!r}")
        if norm not in self.NORMS:
            raise ValueError(f"norm must be one of {self.NORMS}, got {norm!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if features == "ours" and layer_stats is not None:
            raise ValueError("layer_stats needs features='reference'")
        if features == "reference" and (num_probes or probe_shape is not None):
            raise ValueError("features='reference' has no probe features (num_probes=0)")
        self.feature_kind, self.norm, self.dropout = features, norm, float(dropout)
        self.residual, self.reverse_edges = residual, reverse_edges
        self.kernels = KernelGrid(kernel_shape)
        self.embed: nn.Module = GraphEmbedding(
            hidden, hidden, rff_dim, rff_sigma, max_layers, num_probes,
            probe_shape=probe_shape) \
            if features == "ours" else ConstructorEmbedding(
            hidden, rff_dim, rff_sigma, max_layers, reverse_edges, layer_stats)
        self.node_in = nn.Linear(hidden, hidden)
        self.edge_in = nn.Linear(hidden, hidden)
        # Forward and reversed edges of the same weight, told apart.
        self.edge_direction = nn.Embedding(2, hidden) \
            if features == "ours" and reverse_edges else None
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
        self.dense = dense
        self._dense_supported = set(aggregators) <= dense_path.AGGREGATORS and \
            set(scalers) <= dense_path.SCALERS
        self.layouts = dense_path.LayoutCache()
        #: "dense" or "general": the path the last forward call took
        self.last_path = ""
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

    def _nodes(self, batch: Batch) -> Tensor:
        if self.feature_kind == "reference":
            return self.node_in(self.embed.nodes(batch)) + self.embed.position_embedding(batch)
        return self.node_in(self.embed.nodes(batch))

    def _edges(self, batch: Batch, plan: dense_path.BatchLayout | None
               ) -> tuple[Tensor | list[Tensor], Tensor | None]:
        """Edge features (one tensor, or one ``[G, n, d, C]`` per dense block) and, on the
        general path, the edges messages run along."""
        # The embedding's inputs per message edge (no parameters: nothing to backprop).
        if self.feature_kind == "reference":
            fields = {"values": self.embed.edge_values(batch)}
            edge_index = self.embed.edge_index(batch)
        else:
            fields, edge_index = {name: batch[name] for name in EDGE_FIELDS}, batch.edge_index
            if self.edge_direction is not None:  # the edges, then all of them reversed
                count = edge_index.shape[1]
                fields = {name: torch.cat([v, v]) for name, v in fields.items()}
                fields["direction"] = torch.arange(2, device=edge_index.device
                                                   ).repeat_interleave(count)
                edge_index = torch.cat([edge_index, edge_index.flip(0)], 1)
        if plan is None:
            return self._embed_edges(fields), edge_index
        return [self._embed_edges({k: v.index_select(0, rows) for k, v in fields.items()})
                .view(plan.num_graphs, block.count, block.degree, -1)
                for block, rows in zip(plan.layout.blocks, plan.rows)], None

    def _embed_edges(self, fields: dict[str, Tensor]) -> Tensor:
        """Edge features of the edges whose embedding inputs are ``fields``: ``edge_in``
        folded into the embedding's projection (one product of small weights, not a pass
        over every edge), the Fourier features made in cache-sized chunks and kept for the
        backward pass within a budget
        (:func:`~neural_graphs.encoders.embeddings.fourier_linear`)."""
        if self.feature_kind == "reference":
            return self.embed.edge_features(fields["values"], self.edge_in)
        direction = fields.get("direction")
        e = self.embed.edges(Data(**{k: v for k, v in fields.items() if k != "direction"}),
                             self.edge_in)
        return e if direction is None else e + self.edge_direction(direction)

    def _normalize(self, index: int, h: Tensor, batch: Batch) -> Tensor:
        if self.norm == "graph":
            return self.norms[index](h, graph_ids(batch), batch.num_graphs)
        return self.norms[index](h)

    def forward(self, graphs: Batch | Data | list[Data]) -> Tensor:
        return self.head(self.features(graphs))

    def features(self, graphs: Batch | Data | list[Data]) -> Tensor:
        """What the output MLP reads: the readout of the final node states, ``[G, D]``."""
        return self.readout(*self.node_embeddings(graphs))

    def node_embeddings(self, graphs: Batch | Data | list[Data]) -> NodeEmbeddings:
        """The final state of every neuron, ``[N, hidden]``, with the batch they follow
        (:class:`~neural_graphs.encoders.readouts.NodeEmbeddings`; ``.layer(l)`` for one
        layer's neurons): what the readout, the dilation heads and INR2JLS read."""
        batch = self.kernels.collate(graphs)
        require_fields(batch, GRAPH_FIELDS, type(self).__name__)
        batch = self.kernels(batch)
        plan = self.layouts(batch, 2 if self.reverse_edges else 1) \
            if self.dense and self._dense_supported else None
        self.last_path = "general" if plan is None else "dense"
        h = self._nodes(batch)
        e, edge_index = self._edges(batch, plan)
        if not bool(self.degree_calibrated):
            in_degree = degree(edge_index[1], batch.num_nodes, dtype=torch.long) \
                if plan is None else plan.layout.degree.repeat(plan.num_graphs)
            self.calibrate(torch.bincount(in_degree).cpu())
        last = len(self.convs) - 1
        for index, conv in enumerate(self.convs):
            if index:
                h = F.silu(self._normalize(index - 1, h, batch))
                if self.dropout:
                    h = F.dropout(h, self.dropout, self.training)
            update = self.edge_updates[index - 1] \
                if index and self.edge_updates is not None else None
            if plan is not None:  # the update of the layer before runs with the messages
                out, e = dense_path.layer(conv, h, e, plan, update, self.residual,
                                          keep=index < last)
            else:
                if update is not None:
                    change = update(h, edge_index, e)
                    e = e + change if self.residual else change
                out = conv(h, edge_index, e)
            h = h + out if self.residual else out
        return NodeEmbeddings(h, batch)
