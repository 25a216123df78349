"""DNG-Encoder: the network read layer by layer, like a forward pass, with a GRU as node
memory (dynamic neural graph; ../shared/SPEC.md 4.2)."""

from __future__ import annotations

from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.utils import scatter

from neural_graphs.encoders.batch import GRAPH_FIELDS, KernelGrid, require_fields
from neural_graphs.encoders.embeddings import FourierFeatures, GraphEmbedding
from neural_graphs.encoders.readouts import Readout, head_mlp
from neural_graphs.graph import EDGE_TYPES, layer_snapshots

__all__ = ["DNGEncoder"]


class DNGEncoder(nn.Module):
    r"""DNG-Encoder: one message-passing step per layer of the network, in order.

    Input neurons start from their features: a learned vector per input index (the
    position embedding of :class:`~neural_graphs.encoders.embeddings.GraphEmbedding`). At
    step :math:`t` (:func:`~neural_graphs.layer_snapshots`), the neurons of layer :math:`t` receive
    multiplicative messages along their incoming edges, one head per kernel element
    :math:`k` (``K = prod(kernel_shape)`` heads; a Linear edge fills the centre head):

    .. math::
        m_i^{(k)} &= \sum_{j} \big(W_1\,\gamma(w_{ij}^{(k)}) + T[\text{type}_{ij}]\big)
        \odot (W_2\, s_j) \\
        m_i &= \text{MLP}\big(\Vert_k\, m_i^{(k)}\big) \\
        s_i &= \text{LN}\big(\text{GRU}(\text{input} = u_i,\ \text{hidden} = m_i)\big)

    :math:`\gamma` random Fourier features of each scalar kernel entry (padding entries,
    ``edge_mask`` false, send nothing), :math:`T` an edge-type embedding (residual edges
    are edges of the snapshot whose sources lie further back), and :math:`u_i` the
    neuron's own features (Fourier features of its bias, position and activation
    embeddings, optional probes; :class:`~neural_graphs.encoders.embeddings.GraphEmbedding`).
    Edges are not updated. Graphs of any architectures batch together: a step only
    touches the neurons of that layer in each graph.

    Args:
        out_dim (int): output size.
        hidden (int): node state and message size (128 in the paper).
        head_dim (int, optional): size of each kernel-element head (default ``hidden``).
        readout (str): ``"cat"``, ``"mean"``, ``"max"`` or ``"mean_max"``.
        head_hidden (int, optional): output MLP width (default ``hidden``).
        rff_dim (int): Fourier frequencies of scalars (128).
        rff_sigma (float): their standard deviation (3 for INRs, 1 for CNNs in the paper).
        num_probes (int): probe inputs for Linear-chain networks (0: none, the paper).
        max_layers (int): hidden-layer slots of the position embedding.
        kernel_shape (tuple, optional): the kernel grid weights are read on (default:
            the first batch's largest; :class:`~neural_graphs.encoders.batch.KernelGrid`).

    Shapes:
        - input: a :class:`~torch_geometric.data.Batch` of graphs from
          :func:`~neural_graphs.to_neural_graph` (or one graph)
        - output: :math:`(G, \text{out\_dim})`
    """

    def __init__(self, out_dim: int, hidden: int = 128, head_dim: int | None = None,
                 readout: str = "cat", head_hidden: int | None = None, rff_dim: int = 128,
                 rff_sigma: float = 3.0, num_probes: int = 0, max_layers: int = 32,
                 kernel_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        head_dim = head_dim or hidden
        self.kernels = KernelGrid(kernel_shape)
        self.embed = GraphEmbedding(hidden, 0, rff_dim, rff_sigma, max_layers, num_probes)
        self.edge_rff = FourierFeatures(rff_dim, rff_sigma, in_features=1)
        self.edge_proj = nn.Linear(2 * rff_dim, head_dim)
        self.edge_type = nn.Embedding(len(EDGE_TYPES), head_dim)
        self.source_proj = nn.Linear(hidden, head_dim, bias=False)
        self.message_mlp = nn.Sequential(nn.LazyLinear(hidden), nn.SiLU(),
                                         nn.Linear(hidden, hidden))
        self.gru = nn.GRUCell(hidden, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.readout = Readout(readout)
        self.head = head_mlp(head_hidden or hidden, out_dim)

    def edge_heads(self, batch: Batch) -> Tensor:
        """Per edge and kernel element, :math:`W_1 \\gamma(w) + T[\\text{type}]` (zero at
        padding entries): ``[E, K, head_dim]``."""
        attr = batch.edge_attr
        heads = self.edge_proj(self.edge_rff(attr.unsqueeze(-1)))
        heads = heads + self.edge_type(batch.edge_type).unsqueeze(1)
        return heads * batch.edge_mask.unsqueeze(-1).to(heads.dtype)

    def forward(self, graphs: Batch | Data | list[Data]) -> Tensor:
        batch = self.kernels.collate(graphs)
        require_fields(batch, GRAPH_FIELDS, type(self).__name__)
        batch = self.kernels(batch)
        own = self.embed.nodes(batch)
        state = own.new_zeros(batch.num_nodes, own.shape[-1])
        inputs = (batch.node_type == 0).nonzero().squeeze(1)
        state = state.index_copy(0, inputs, own[inputs])
        heads = self.edge_heads(batch)
        step_of_edge = batch.edge_layer
        for snapshot in layer_snapshots(batch):
            keep = (step_of_edge == snapshot.step).nonzero().squeeze(1)
            src, dst = snapshot.edge_index
            targets = snapshot.target.nonzero().squeeze(1)
            messages = heads[keep] * self.source_proj(state)[src].unsqueeze(1)  # [E_t, K, d]
            summed = scatter(messages, dst, 0, batch.num_nodes, "sum")[targets]
            memory = self.message_mlp(summed.flatten(1))
            updated = self.norm(self.gru(own[targets], memory))
            state = state.index_copy(0, targets, updated)
        return self.head(self.readout(state, batch))
