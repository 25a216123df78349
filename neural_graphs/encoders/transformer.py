"""NG-T: the relational transformer over a neural graph (Kofinas et al., ICLR 2024;
../shared/SPEC.md 4.1), with padding masked everywhere; ``embedding="reference"`` and
``attn_scale="total"`` give the published code's function (``REFERENCE_KWARGS`` in
``neural_graphs.encoders.reference.ngt``)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.graph import saved_tensors_hooks
from torch.utils.checkpoint import checkpoint
from torch_geometric.data import Batch, Data
from torch_geometric.utils import to_dense_batch

from neural_graphs.encoders.batch import (
    GRAPH_FIELDS,
    KernelGrid,
    graph_ids,
    node_ptr,
    require_fields,
)
from neural_graphs.encoders.embeddings import ConstructorEmbedding, GraphEmbedding
from neural_graphs.encoders.readouts import NodeEmbeddings, Readout, head_mlp
from utils.memory import CHUNK_BYTES, graphs_per_chunk

__all__ = ["NGTransformer", "RelationalAttention", "RelationalLayer", "compiled_relational_stack",
           "relational_stack"]


def _xavier_linear(in_features: int, out_features: int, bias: bool = True) -> nn.Linear:
    layer = nn.Linear(in_features, out_features, bias)
    nn.init.xavier_uniform_(layer.weight)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


class RelationalAttention(nn.Module):
    r"""Multi-head attention of every node over all nodes of its graph, conditioned on
    the pair's edge features :math:`e_{ij}`.

    .. math::
        q_{ij} = W^q_n h_i + W^q_e e_{ij}, \quad k_{ij} = W^k_n h_j + W^k_e e_{ij}, \quad
        v_{ij} = (W^v_n h_j) \odot (W^m_e e_{ij}) + W^v_e e_{ij} \\
        \text{out}_i = W_o \big\Vert_{\text{heads}} \sum_j
        \operatorname{softmax}_j\big(q_{ij}^\top k_{ij} / \sqrt{d}\big)\, v_{ij}

    the softmax taken over the real nodes :math:`j` of the graph only (``mask``). The
    scores are divided by :math:`\sqrt{d}`, ``d`` the size of a head (``scale=None``), or
    multiplied by ``scale`` (the reference: :math:`1/\sqrt{\text{attn\_dim}}`).

    With ``rows`` (a slice of the nodes), ``e`` holds only those rows (the pairs ``(i, j)``
    of the nodes ``i`` in ``rows``, every ``j``) and the output is theirs: the same values
    as those rows of the whole.

    Shapes:
        - input: nodes :math:`(B, n, D_n)`, edges :math:`(B, n, n, D_e)` (or
          :math:`(B, r, n, D_e)`, the ``r`` nodes of ``rows``), mask :math:`(B, n)` bool
        - output: :math:`(B, n, D_n)` (or :math:`(B, r, D_n)`)
    """

    def __init__(self, node_dim: int, edge_dim: int, attn_dim: int, heads: int,
                 modulate_v: bool = True, scale: float | None = None) -> None:
        super().__init__()
        if attn_dim % heads:
            raise ValueError(f"attn_dim {attn_dim} must be a multiple of heads {heads}")
        self.heads, self.head_dim = heads, attn_dim // heads
        self.modulate_v = modulate_v
        self.scale = scale
        self.node_qkv = _xavier_linear(node_dim, 3 * attn_dim, bias=False)
        # q, k and (with modulate_v) the multiplicative value term, per pair of nodes
        self.edge_qk = _xavier_linear(edge_dim, (3 if modulate_v else 2) * attn_dim,
                                      bias=False)
        self.edge_v = _xavier_linear(edge_dim, attn_dim, bias=False)
        self.out = _xavier_linear(attn_dim, node_dim)

    def forward(self, h: Tensor, e: Tensor, mask: Tensor, rows: slice | None = None
                ) -> Tensor:
        b, n = h.shape[:2]
        r = e.shape[1]
        hd = (self.heads, self.head_dim)
        q_n, k_n, v_n = self.node_qkv(h).view(b, n, 3, *hd).unbind(2)
        if rows is not None:
            q_n = q_n[:, rows]
        parts = self.edge_qk(e).view(b, r, n, -1, *hd).unbind(3)
        q = q_n.unsqueeze(2) + parts[0]  # [b, i, j, heads, d]
        k = k_n.unsqueeze(1) + parts[1]
        if self.scale is None:
            dots = (q * k).sum(-1) / math.sqrt(self.head_dim)  # [b, i, j, heads]
        else:
            dots = self.scale * (q * k).sum(-1)
        dots = dots.masked_fill(~mask[:, None, :, None], float("-inf"))
        attn = torch.softmax(dots, dim=2)
        if self.modulate_v:
            out = (attn.unsqueeze(-1) * parts[2] * v_n.unsqueeze(1)).sum(2)  # [b, i, heads, d]
        else:
            out = torch.einsum("bijh,bjhd->bihd", attn, v_n)
        # sum_j a_ij (W_v e_ij) = W_v (sum_j a_ij e_ij): the additive value term per head
        pooled = torch.einsum("bijh,bijc->bihc", attn, e)
        weight = self.edge_v.weight.view(*hd, -1)  # [heads, d, edge_dim]
        out = out + torch.einsum("bihc,hdc->bihd", pooled, weight)
        return self.out(out.reshape(b, r, -1))


class RelationalLayer(nn.Module):
    r"""One relational-transformer layer: node update then (optionally) edge update.

    .. math::
        h &\leftarrow \text{LN}(h + W\,\text{Attn}(h, e)), \quad
        h \leftarrow \text{LN}(h + \text{MLP}(h)) \\
        e_{ij} &\leftarrow \text{LN}\big(e_{ij} + W_1\,\text{GELU}(W_e [e_{ij}, e_{ji}] +
        W_s h_i + W_t h_j)\big), \quad e \leftarrow \text{LN}(e + \text{MLP}(e))

    :math:`W_s, W_t` without biases (redundant with :math:`W_e`'s), or with them
    (``edge_node_bias``, the reference's parameters); ``attn_scale`` is the attention's
    ``scale``.

    With ``rows``, the pair tensors are computed in blocks of that many rows of ``e`` (the
    pairs whose first neuron is one of ``rows`` neurons): the same function, with no
    intermediate larger than a block, for graphs whose ``[n, n, D]`` tensors are too
    large to allocate cheaply (:meth:`NGTransformer.pair_rows`).

    Shapes:
        - input: nodes :math:`(B, n, D_n)`, edges :math:`(B, n, n, D_e)`, mask
          :math:`(B, n)`
        - output: nodes and edges, same shapes
    """

    def __init__(self, node_dim: int, edge_dim: int, attn_dim: int, node_hidden: int,
                 edge_hidden: int, heads: int, update_edges: bool = True,
                 modulate_v: bool = True, attn_scale: float | None = None,
                 edge_node_bias: bool = False) -> None:
        super().__init__()
        self.attention = RelationalAttention(node_dim, edge_dim, attn_dim, heads, modulate_v,
                                             attn_scale)
        self.attn_out = _xavier_linear(node_dim, node_dim)
        self.node_norm0 = nn.LayerNorm(node_dim)
        self.node_norm1 = nn.LayerNorm(node_dim)
        self.node_mlp = nn.Sequential(_xavier_linear(node_dim, node_hidden, bias=False),
                                      nn.GELU(), _xavier_linear(node_hidden, node_dim))
        self.update_edges = update_edges
        if update_edges:
            self.edge_pair = _xavier_linear(edge_dim, edge_hidden)
            self.edge_reverse = _xavier_linear(edge_dim, edge_hidden, bias=False)
            self.edge_source = _xavier_linear(node_dim, edge_hidden, bias=edge_node_bias)
            self.edge_target = _xavier_linear(node_dim, edge_hidden, bias=edge_node_bias)
            self.edge_out = _xavier_linear(edge_hidden, edge_dim)
            self.edge_mlp = nn.Sequential(_xavier_linear(edge_dim, edge_hidden, bias=False),
                                          nn.GELU(), _xavier_linear(edge_hidden, edge_dim))
            self.edge_norm0 = nn.LayerNorm(edge_dim)
            self.edge_norm1 = nn.LayerNorm(edge_dim)

    @property
    def pair_width(self) -> int:
        """Features per neuron pair of the widest ``[B, n, n, width]`` tensor a forward
        makes (the attention's edge projections or the edge update's hidden layer)."""
        widths = [self.attention.edge_qk.out_features, self.attention.edge_v.out_features]
        if self.update_edges:
            widths.append(self.edge_pair.out_features)
        return max(widths)

    def forward(self, h: Tensor, e: Tensor, mask: Tensor, rows: int | None = None
                ) -> tuple[Tensor, Tensor]:
        blocks = _row_blocks(e, rows)
        attended = _join_rows([self.attention(h, row, mask, where)
                               for where, row, _ in blocks])
        h = self.node_norm0(h + self.attn_out(attended))
        h = self.node_norm1(h + self.node_mlp(h))
        if self.update_edges:
            source, target = self.edge_source(h), self.edge_target(h).unsqueeze(1)
            e = _join_rows([self._edge_update(row, column,
                                              source if where is None else source[:, where],
                                              target)
                            for where, row, column in blocks])
        return h, e

    def _edge_update(self, e: Tensor, column: Tensor, source: Tensor, target: Tensor
                     ) -> Tensor:
        """The updated edges of rows ``e`` ``[B, r, n, D]``, from the columns of the same
        nodes ``column`` ``[B, n, r, D]`` (the reversed pairs), their neurons' ``source``
        projections ``[B, r, H]`` and every neuron's ``target`` ``[B, 1, n, H]``."""
        pair = self.edge_pair(e) + self.edge_reverse(column).transpose(1, 2)
        update = pair + source.unsqueeze(2) + target
        e = self.edge_norm0(e + self.edge_out(F.gelu(update)))
        return self.edge_norm1(e + self.edge_mlp(e))


def _row_blocks(e: Tensor, rows: int | None) -> list[tuple[slice | None, Tensor, Tensor]]:
    """``e`` ``[B, n, n, D]`` in blocks of ``rows`` rows: each block's nodes (``None``: all),
    its rows ``[B, r, n, D]`` and the same nodes' columns ``[B, n, r, D]``. Made by
    ``split``, not slicing, so that the backward pass assembles the gradient of ``e`` once
    instead of once a block; one block, ``e`` itself, when ``rows`` covers the graph."""
    n = e.shape[1]
    if rows is None or rows >= n:
        return [(None, e, e)]
    starts = range(0, n, rows)
    return [(slice(i, i + rows), row, column) for i, row, column in
            zip(starts, e.split(rows, dim=1), e.split(rows, dim=2))]


def _join_rows(blocks: list[Tensor]) -> Tensor:
    """Row blocks (dim 1) back into one tensor."""
    return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)


def relational_stack(layers: nn.ModuleList, h: Tensor, e: Tensor, mask: Tensor,
                     rows: int | None = None) -> Tensor:
    """The final node states after every layer of ``layers`` (padded nodes ``h``
    ``[B, n, D_n]``, edges ``e`` ``[B, n, n, D_e]``, ``mask`` ``[B, n]``), the pair tensors
    in blocks of ``rows`` rows if given (:class:`RelationalLayer`)."""
    for layer in layers:
        h, e = layer(h, e, mask, rows)
    return h


@functools.cache
def compiled_relational_stack() -> Callable[[nn.ModuleList, Tensor, Tensor, Tensor], Tensor]:
    """:func:`relational_stack` through ``torch.compile`` (built once per process and shared
    by every model: the compiled code is reused by every stack of the same structure)."""
    return torch.compile(relational_stack)


def _chunk_members(chunks: list[Tensor], graph_of_node: Tensor, graph_of_edge: Tensor
                   ) -> tuple[Tensor, Tensor, tuple[Tensor, ...], tuple[Tensor, ...]]:
    """Where each graph sits in its chunk (``local`` ``[G]``), the batch's nodes in chunk
    order (``node_order``), and each chunk's nodes and edges in batch order: one stable
    sort by chunk for nodes and one for edges, instead of a scan of the batch per chunk."""
    device = graph_of_node.device
    lengths = torch.tensor([len(chunk) for chunk in chunks], device=device)
    order = torch.cat(chunks)
    chunk_of_graph = torch.empty_like(order)
    chunk_of_graph[order] = torch.repeat_interleave(torch.arange(len(chunks), device=device),
                                                    lengths)
    local = torch.empty_like(order)
    local[order] = torch.arange(len(order), device=device) \
        - torch.repeat_interleave(lengths.cumsum(0) - lengths, lengths)

    def by_chunk(graph_of: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        chunk_of = chunk_of_graph[graph_of]
        order = torch.argsort(chunk_of, stable=True)
        return order, order.split(torch.bincount(chunk_of, minlength=len(chunks)).tolist())

    node_order, nodes_of = by_chunk(graph_of_node)
    _, edges_of = by_chunk(graph_of_edge)
    return local, node_order, nodes_of, edges_of


class NGTransformer(nn.Module):
    r"""NG-T: the relational transformer reading a neural graph.

    Every neuron attends to every neuron of its network, the attention conditioned on the
    pair's edge features: the embedded weight (or kernel) for a connected pair ``(j, i)``,
    held at place ``[j, i]`` (source, target) as in the reference, the sum of the embedded
    edges where several connect a pair (a layer and a residual edge), and a learned
    no-edge vector for unconnected pairs. Graphs are padded to the largest graph of their chunk
    (:func:`~torch_geometric.utils.to_dense_batch`; chunks of similar sizes within a byte
    budget, :meth:`graph_chunks`); padded nodes are masked out of every softmax and never
    reach the readout, so a graph's output is the same alone or batched with larger or
    other graphs. (The reference leaves that mask commented out;
    it reads one architecture per model, where there is no padding.) Edges are updated
    after every layer but the last.

    The reference configuration (``REFERENCE_KWARGS`` in
    :mod:`neural_graphs.encoders.reference.ngt`, which also maps the reference's
    ``state_dict``) computes the function of the published ``RelationalTransformer``
    (its notebook configuration): ``embedding="reference"``
    (:class:`~neural_graphs.encoders.embeddings.ConstructorEmbedding`, NG-GNN's reference
    features too: no activation or edge-type embeddings, weights and biases normalized by
    per-layer ``input_stats``, an unconnected pair read as weight 0 instead of a learned
    vector, position embeddings added after the input projection), ``max_layers`` the
    networks' layers, ``attn_scale="total"`` and ``edge_node_bias=True``.

    Args:
        out_dim (int): output size.
        node_dim (int): node feature size (64 in the reference).
        edge_dim (int): edge feature size (32).
        num_layers (int): layers (4).
        heads (int): attention heads (8).
        attn_dim (int): total query/key/value size over the heads (128).
        node_hidden (int): node MLP width (128).
        edge_hidden (int): edge MLP width (64).
        head_hidden (int): output MLP width (128).
        readout (str): ``"cat"``, ``"mean"``, ``"max"`` or ``"mean_max"``.
        rff_dim (int): Fourier frequencies of scalars (128).
        rff_sigma (float): their standard deviation (1, the reference's transformer).
        num_probes (int): probe inputs (0: none): Linear chains read coordinates,
            convolutional networks images (``probe_shape``).
        max_layers (int): layer slots of the position embedding (with
            ``embedding="reference"``: the layers of the networks read, input and output
            included; 4 for the reference's 2-32-32-1 SIRENs).
        update_edges (bool): update edge features between layers.
        modulate_v (bool): multiplicative edge term on the values.
        kernel_shape (tuple, optional): the kernel grid weights are read on (default:
            the first batch's largest; :class:`~neural_graphs.encoders.batch.KernelGrid`).
        embedding (str): ``"graph"``
            (:class:`~neural_graphs.encoders.embeddings.GraphEmbedding`, a learned
            no-edge vector) or ``"reference"``
            (:class:`~neural_graphs.encoders.embeddings.ConstructorEmbedding`).
        input_stats (dict, optional): per-layer ``weights_mean``, ``weights_std``,
            ``biases_mean``, ``biases_std`` normalizing the scalars (``embedding=
            "reference"`` only; the reference's ``stats``).
        attn_scale (str): attention scores over :math:`\sqrt{\text{attn\_dim} /
            \text{heads}}` (``"head"``) or :math:`\sqrt{\text{attn\_dim}}`
            (``"total"``, the reference).
        edge_node_bias (bool): biases on the edge update's node projections (the
            reference's redundant parameters).
        compile_layers (bool): run the relational layers through ``torch.compile``
            (:func:`compiled_relational_stack`): it fuses the elementwise work on the
            ``[graphs, n, n, D]`` pair tensors, which dominates the step on CPU. The same
            function up to rounding; the first batch pays the compilation (tens of
            seconds). A batch of several chunks compiles them once with symbolic sizes;
            a batch of one chunk compiles its sizes, and sizes that keep changing are
            compiled again once with symbolic sizes.
        activation_budget (int, optional): bytes of relational-layer activations a
            training forward pass on CPU keeps for the backward pass (estimated per neuron
            pair, :meth:`pair_activation_bytes`); the chunks of graphs beyond it are
            computed again in the backward pass instead (the same function). ``None``:
            keep every chunk's. Default :attr:`ACTIVATION_BUDGET`.
        probe_shape (tuple, optional): ``(C, *S)`` of the learned probe images that
            convolutional networks read with ``num_probes`` (None: they get no probes;
            :class:`~neural_graphs.encoders.probes.ProbeFeatures`).

    Shapes:
        - input: a :class:`~torch_geometric.data.Batch` of graphs from
          :func:`~neural_graphs.to_neural_graph` (or one graph)
        - output: :math:`(G, \text{out\_dim})`
    """

    #: Default ``activation_budget``: 3 GiB, so that a training step on 128 wild CNNs stays
    #: within 4 GB (it kept 5.4 GB) while an INR batch, which keeps less, recomputes nothing.
    ACTIVATION_BUDGET = 3 << 30

    def __init__(self, out_dim: int, node_dim: int = 64, edge_dim: int = 32,
                 num_layers: int = 4, heads: int = 8, attn_dim: int = 128,
                 node_hidden: int = 128, edge_hidden: int = 64, head_hidden: int = 128,
                 readout: str = "cat", rff_dim: int = 128, rff_sigma: float = 1.0,
                 num_probes: int = 0, max_layers: int = 32, update_edges: bool = True,
                 modulate_v: bool = True, kernel_shape: tuple[int, ...] | None = None,
                 embedding: str = "graph",
                 input_stats: Mapping[str, Sequence[float] | Tensor] | None = None,
                 attn_scale: str = "head", edge_node_bias: bool = False,
                 compile_layers: bool = False,
                 activation_budget: int | None = ACTIVATION_BUDGET,
                 probe_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        if activation_budget is not None and activation_budget < 0:
            raise ValueError(f"activation_budget must be None or at least 0 bytes, got "
                             f"{activation_budget}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        if embedding not in ("graph", "reference"):
            raise ValueError(f"embedding must be 'graph' or 'reference', got {embedding!r}")
        if attn_scale not in ("head", "total"):
            raise ValueError(f"attn_scale must be 'head' or 'total', got {attn_scale!r}")
        if embedding == "reference" and (num_probes or probe_shape is not None):
            raise ValueError("embedding='reference' has no probe features (num_probes=0)")
        if embedding == "graph" and input_stats is not None:
            raise ValueError("input_stats are read by embedding='reference' only")
        self.kernels = KernelGrid(kernel_shape)
        self.embed: GraphEmbedding | ConstructorEmbedding
        if embedding == "graph":
            self.embed = GraphEmbedding(node_dim, edge_dim, rff_dim, rff_sigma, max_layers,
                                        num_probes, probe_shape=probe_shape)
        else:
            self.embed = ConstructorEmbedding(node_dim, rff_dim, rff_sigma, max_layers,
                                              layer_stats=input_stats, edge_dim=edge_dim)
        self.node_in = _xavier_linear(node_dim, node_dim)
        self.edge_in = _xavier_linear(edge_dim, edge_dim)
        self.no_edge: nn.Parameter | None = (nn.Parameter(torch.randn(edge_dim))
                                             if embedding == "graph" else None)
        scale = None if attn_scale == "head" else 1 / attn_dim ** 0.5
        self.layers = nn.ModuleList(
            RelationalLayer(node_dim, edge_dim, attn_dim, node_hidden, edge_hidden, heads,
                            update_edges and index < num_layers - 1, modulate_v, scale,
                            edge_node_bias)
            for index in range(num_layers))
        self.readout = Readout(readout)
        self.head = head_mlp(head_hidden, out_dim, layers=1)
        self.compile_layers = compile_layers
        self.grad_checkpointing = False
        self.activation_budget = activation_budget
        self._pair_bytes: dict[torch.dtype, float] = {}

    def dense_edges(self, e: Tensor, graph: Tensor, src: Tensor, dst: Tensor, graphs: int,
                    size: int) -> Tensor:
        """Edge features ``e`` ``[E, D]`` at ``[graph, source, target]`` (local neuron
        numbers) of ``graphs`` graphs padded to ``size`` neurons; pairs without an edge get
        the no-edge features."""
        index = (graph, src, dst)
        dense = e.new_zeros(graphs, size, size, e.shape[-1])
        dense = dense.index_put(index, e, accumulate=True)
        count = torch.zeros(graphs, size, size, dtype=e.dtype, device=e.device)
        count = count.index_put(index, torch.ones_like(e[:, 0]), accumulate=True)
        if self.no_edge is None:  # the reference: the embedded weight 0
            no_edge = self.embed.no_edge(e, self.edge_in)  # type: ignore[union-attr]
        else:
            no_edge = self.no_edge
        return dense + (count == 0).unsqueeze(-1).to(e.dtype) * no_edge

    @property
    def pair_width(self) -> int:
        """Features per neuron pair of the widest ``[B, n, n, width]`` tensor of any layer
        (:attr:`RelationalLayer.pair_width`)."""
        return max(layer.pair_width for layer in self.layers)

    #: Graphs whose neuron counts round up to the same multiple of this pad to one size
    #: together (graphs of one size, every INR set, stay one chunk).
    SIZE_BUCKET = 8

    def size_chunks(self, sizes: Tensor) -> list[Tensor]:
        """The graphs of a batch in chunks that are padded separately: one chunk when all
        have ``sizes`` equal, else one per bucket of :attr:`SIZE_BUCKET` neurons (largest
        first). Attention and edge updates act within a graph, so chunks compute the same
        function while the ``[graphs, n, n, D]`` tensors shrink from the batch's largest
        ``n`` to each chunk's (a batch of 128 wild CNNs: 229 neurons against 101 on average)."""
        if bool((sizes == sizes[0]).all()):
            return [torch.arange(len(sizes), device=sizes.device)]
        bucket = (sizes + self.SIZE_BUCKET - 1) // self.SIZE_BUCKET
        return [(bucket == b).nonzero().squeeze(1) for b in bucket.unique().flip(0)]

    #: Largest ``[graphs, n, n, width]`` tensor of one run of the relational layers on CPU
    #: (:data:`utils.memory.CHUNK_BYTES`): larger ones are fresh pages that fault in on every
    #: step, which cost NG-T 80% of its step at reference size.
    CHUNK_BYTES = CHUNK_BYTES

    def graph_chunks(self, sizes: Tensor, dtype: torch.dtype,
                     device: torch.device) -> list[Tensor]:
        """:meth:`size_chunks`, each split further into chunks of graphs whose widest pair
        tensor (``[graphs, n, n, width]``, ``n`` the chunk's largest graph) stays within
        :attr:`CHUNK_BYTES` on CPU. Each chunk builds its own dense edges and runs the
        layers alone, so no tensor of a step holds more than a chunk's pairs; a graph too
        large for a chunk of its own runs its layers in row blocks (:meth:`pair_rows`)."""
        width, chunks = self.pair_width, []
        for chunk in self.size_chunks(sizes):
            n = int(sizes[chunk].max())
            step = graphs_per_chunk(n * n * width * dtype.itemsize, len(chunk), device.type,
                                    self.CHUNK_BYTES)
            chunks += list(chunk.split(step))
        return chunks

    def run_layers(self, h: Tensor, e: Tensor, mask: Tensor, recompute: bool = False,
                   symbolic_sizes: bool = False) -> Tensor:
        """The relational layers on one chunk of padded graphs (``h`` ``[B, n, D_n]``, ``e``
        ``[B, n, n, D_e]``, ``mask`` ``[B, n]``), compiled or not (``compile_layers``). With
        ``recompute`` (the chunk's entry of :meth:`_recomputed_chunks`) they are computed
        again in the backward pass instead of keeping their activations. With
        ``symbolic_sizes`` (a batch of several chunks) the compiled layers take ``B`` and
        ``n`` as symbols: one compilation for every chunk, where ``torch.compile`` would
        compile the first chunk's sizes, then compile again at the next (a batch of one
        chunk, every INR set, keeps the kernels specialised to its sizes)."""
        rows = self.pair_rows(*e.shape[:2], e.dtype, e.device)
        stack = relational_stack
        if self.compile_layers:
            stack = compiled_relational_stack()
            for tensor in (h, e, mask) if symbolic_sizes else ():
                for dim in range(tensor.dim() - (tensor is not mask)):
                    torch._dynamo.maybe_mark_dynamic(tensor, dim)
        if recompute and torch.is_grad_enabled():
            stack = functools.partial(checkpoint, stack, use_reentrant=False)
        # None where one block covers the chunk: a row count equal to n would be an
        # integer the compiled code specialises to, one compilation per n
        return stack(self.layers, h, e, mask, rows if rows < e.shape[1] else None)

    def pair_rows(self, graphs: int, n: int, dtype: torch.dtype, device: torch.device
                  ) -> int:
        """Rows of the pair tensors the relational layers compute at once on a chunk of
        ``graphs`` graphs padded to ``n`` neurons (:func:`~utils.memory.graphs_per_chunk`
        over rows): all ``n`` off the CPU or where the chunk's widest pair tensor fits
        :attr:`CHUNK_BYTES`, else as many as keep a block within it, at least one. Only a
        graph too large for a chunk of its own is split so (a ViT of 747 neurons at the zoo
        job's sizes: 214 MB a pair tensor, 13 blocks of 58 rows)."""
        return graphs_per_chunk(graphs * n * self.pair_width * dtype.itemsize, n,
                                device.type, self.CHUNK_BYTES)

    #: Neurons of the padded graph :meth:`pair_activation_bytes` measures on.
    PROBE_NEURONS = 32

    def pair_activation_bytes(self, dtype: torch.dtype) -> float:
        """Bytes the relational layers keep for the backward pass per neuron pair of a
        chunk, in ``dtype``: measured once (cached) on one eager forward pass over a graph
        of :attr:`PROBE_NEURONS` neurons, every distinct saved storage counted except the
        parameters, over its ``n * n`` pairs. An upper bound for larger graphs (the node
        tensors grow as ``n``, not ``n * n``) and for the compiled layers, which keep
        fewer intermediates."""
        if dtype not in self._pair_bytes:
            parameters = {p.untyped_storage().data_ptr() for p in self.layers.parameters()}
            saved: dict[int, int] = {}

            def pack(tensor: Tensor) -> Tensor:
                storage = tensor.untyped_storage()
                if storage.data_ptr() not in parameters:
                    saved[storage.data_ptr()] = storage.nbytes()
                return tensor

            n, layer = self.PROBE_NEURONS, self.layers[0]
            generator = torch.Generator().manual_seed(0)
            device = next(self.layers.parameters()).device
            h = torch.randn(1, n, layer.attn_out.in_features, dtype=dtype,
                            generator=generator).to(device).requires_grad_()
            e = torch.randn(1, n, n, layer.attention.edge_v.in_features, dtype=dtype,
                            generator=generator).to(device).requires_grad_()
            mask = torch.ones(1, n, dtype=torch.bool, device=device)
            with torch.enable_grad(), saved_tensors_hooks(pack, lambda tensor: tensor):
                out = relational_stack(self.layers, h, e, mask)
            del out
            self._pair_bytes[dtype] = sum(saved.values()) / (n * n)
        return self._pair_bytes[dtype]

    def _recomputed_chunks(self, chunks: list[Tensor], sizes: Tensor, dtype: torch.dtype,
                           device: torch.device) -> list[bool]:
        """Which chunks of graphs run again in the backward pass: those past
        ``activation_budget`` (in order) on CPU with gradients on; every one with
        :meth:`set_grad_checkpointing`."""
        if self.grad_checkpointing:
            return [True] * len(chunks)
        if (self.activation_budget is None or device.type != "cpu"
                or not torch.is_grad_enabled()):
            return [False] * len(chunks)
        per_pair, kept, recompute = self.pair_activation_bytes(dtype), 0.0, []
        for chunk in chunks:
            cost = len(chunk) * int(sizes[chunk].max()) ** 2 * per_pair
            recompute.append(kept + cost > self.activation_budget)
            kept += 0.0 if recompute[-1] else cost
        return recompute

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the relational layers of each chunk of graphs in the backward pass
        instead of keeping their ``[graphs, n, n, D]`` activations
        (:func:`torch.utils.checkpoint.checkpoint`): less memory for a second forward pass
        (one training step on 128 wild CNNs: see the README). Off by default, when only the
        chunks beyond ``activation_budget`` are recomputed."""
        self.grad_checkpointing = bool(enable)

    def forward(self, graphs: Batch | Data | list[Data]) -> Tensor:
        return self.head(self.features(graphs))

    def features(self, graphs: Batch | Data | list[Data]) -> Tensor:
        """What the output MLP reads: the readout of the final node states, ``[G, D]``."""
        return self.readout(*self.node_embeddings(graphs))

    def node_embeddings(self, graphs: Batch | Data | list[Data]) -> NodeEmbeddings:
        """The final state of every neuron, ``[N, node_dim]`` in the node order of the batch
        they follow (padding dropped; :class:`~neural_graphs.encoders.readouts.
        NodeEmbeddings`, ``.layer(l)`` for one layer's neurons)."""
        batch = self.kernels.collate(graphs)
        require_fields(batch, GRAPH_FIELDS, type(self).__name__)
        batch = self.kernels(batch)
        h = self.node_in(self.embed.nodes(batch))
        if isinstance(self.embed, ConstructorEmbedding):
            h = h + self.embed.position_embedding(batch)
        e = self.embed.edges(batch, self.edge_in)  # edge_in folded in
        graph_of_node, start = graph_ids(batch), node_ptr(batch)
        sizes = start[1:] - start[:-1]
        src, dst = batch.edge_index
        graph_of_edge = graph_of_node[src]
        chunks = self.graph_chunks(sizes, e.dtype, e.device)
        local, node_order, nodes_of, edges_of = _chunk_members(chunks, graph_of_node,
                                                               graph_of_edge)
        recompute = self._recomputed_chunks(chunks, sizes, e.dtype, e.device)
        parts = []
        for chunk, nodes, edges, again in zip(chunks, nodes_of, edges_of, recompute):
            h_c, mask = to_dense_batch(h[nodes], local[graph_of_node[nodes]],
                                       batch_size=len(chunk))
            g = graph_of_edge[edges]
            e_c = self.dense_edges(e[edges], local[g], src[edges] - start[g],
                                   dst[edges] - start[g], len(chunk), h_c.shape[1])
            h_c = self.run_layers(h_c, e_c, mask, again, len(chunks) > 1)
            parts.append(h_c[mask])
        if len(parts) == 1:
            return NodeEmbeddings(parts[0], batch)
        out = torch.cat(parts)
        return NodeEmbeddings(out.new_empty(out.shape).index_copy(0, node_order, out), batch)
