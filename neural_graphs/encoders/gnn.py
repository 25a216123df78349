"""NG-GNN: principal neighbourhood aggregation with edge-modulated messages and edge
updates over a neural graph (Kofinas et al., ICLR 2024; ../shared/SPEC.md 4.1)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.aggr import DegreeScalerAggregation
from torch_geometric.utils import degree

from neural_graphs.encoders.batch import GRAPH_FIELDS, KernelGrid, require_fields
from neural_graphs.encoders.embeddings import GraphEmbedding
from neural_graphs.encoders.readouts import Readout, head_mlp

__all__ = ["NGGNN", "PNAEdgeConv", "EdgeUpdate"]

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

    Shapes:
        - input: node features :math:`(N, C)`, edge_index :math:`(2, E)`, edge features
          :math:`(E, D)`
        - output: :math:`(E, D)`
    """

    def __init__(self, channels: int, edge_dim: int) -> None:
        super().__init__()
        self.lin_e = nn.Linear(edge_dim, edge_dim)
        self.lin_s = nn.Linear(channels, edge_dim, bias=False)
        self.lin_t = nn.Linear(channels, edge_dim, bias=False)
        self.out = nn.Linear(edge_dim, edge_dim)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        h = self.lin_e(edge_attr) + self.lin_s(x)[edge_index[0]] + self.lin_t(x)[edge_index[1]]
        return self.out(nn.functional.silu(h))


class NGGNN(nn.Module):
    r"""NG-GNN: a neural graph read by PNA message passing with edge updates.

    Node and edge features start from :class:`~neural_graphs.encoders.embeddings.GraphEmbedding`
    (Fourier features of biases and weights, position, activation and edge-type
    embeddings, optional probe features). Each of ``num_layers`` layers runs
    :class:`PNAEdgeConv` along the network's edges (input to output, as the reference);
    between layers the node features pass LayerNorm (per node) and SiLU, and the edges are
    updated (:class:`EdgeUpdate`). The readout (output-neuron concatenation by default)
    goes through an MLP to ``out_dim``.

    The PNA scalers divide by the mean :math:`\log(d+1)` of a degree histogram: ``deg``
    when given, otherwise the in-degree histogram of the first batch seen, then frozen
    (buffers ``avg_deg_lin`` / ``avg_deg_log`` of each aggregation, saved in the state
    dict), so a graph's result never depends on the graphs batched with it. Unlike the
    reference, LayerNorm normalizes each node (PyG's default graph-mode LayerNorm,
    called there without the batch vector, mixes all graphs of a batch).

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
        max_layers (int): hidden-layer slots of the position embedding.
        update_edges (bool): update edge features between layers.
        deg (Tensor, optional): in-degree histogram for the PNA scalers.
        aggregators, scalers: PNA aggregators and scalers.
        kernel_shape (tuple, optional): the kernel grid weights are read on (default:
            the first batch's largest; :class:`~neural_graphs.encoders.batch.KernelGrid`).

    Shapes:
        - input: a :class:`~torch_geometric.data.Batch` of graphs from
          :func:`~neural_graphs.to_neural_graph` (or one graph)
        - output: :math:`(G, \text{out\_dim})`
    """

    def __init__(self, out_dim: int, hidden: int = 32, num_layers: int = 4,
                 readout: str = "cat", head_hidden: int | None = None, rff_dim: int = 128,
                 rff_sigma: float = 3.0, num_probes: int = 0, max_layers: int = 32,
                 update_edges: bool = True, deg: Tensor | None = None,
                 aggregators: tuple[str, ...] = AGGREGATORS,
                 scalers: tuple[str, ...] = SCALERS,
                 kernel_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        self.kernels = KernelGrid(kernel_shape)
        self.embed = GraphEmbedding(hidden, hidden, rff_dim, rff_sigma, max_layers, num_probes)
        self.node_in = nn.Linear(hidden, hidden)
        self.edge_in = nn.Linear(hidden, hidden)
        self.convs = nn.ModuleList(PNAEdgeConv(hidden, hidden, aggregators, scalers)
                                   for _ in range(num_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(num_layers - 1))
        self.edge_updates = nn.ModuleList(EdgeUpdate(hidden, hidden)
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

    def forward(self, graphs: Batch | Data | list[Data]) -> Tensor:
        batch = self.kernels.collate(graphs)
        require_fields(batch, GRAPH_FIELDS, type(self).__name__)
        batch = self.kernels(batch)
        edge_index = batch.edge_index
        if not bool(self.degree_calibrated):
            self.calibrate(torch.bincount(degree(edge_index[1], batch.num_nodes,
                                                 dtype=torch.long)).cpu())
        h = self.node_in(self.embed.nodes(batch))
        e = self.edge_in(self.embed.edges(batch))
        for index, conv in enumerate(self.convs):
            h = conv(h, edge_index, e)
            if index == len(self.convs) - 1:
                break
            h = nn.functional.silu(self.norms[index](h))
            if self.edge_updates is not None:
                e = self.edge_updates[index](h, edge_index, e)
        return self.head(self.readout(h, batch))
