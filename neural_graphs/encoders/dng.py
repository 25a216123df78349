"""DNG-Encoder: the network read layer by layer, like a forward pass, with a GRU as node
memory (dynamic neural graph; ../shared/SPEC.md 4.2)."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torch_geometric.data import Batch, Data
from torch_geometric.utils import scatter

from neural_graphs.encoders.batch import (
    _INPUT,
    _OUTPUT,
    GRAPH_FIELDS,
    KernelGrid,
    _graph_list,
    local_node_position,
    require_fields,
)
from neural_graphs.encoders.embeddings import FourierFeatures, GraphEmbedding, IndexEmbedding
from neural_graphs.encoders.readouts import NodeEmbeddings, Readout, head_mlp
from neural_graphs.graph import EDGE_TYPES, layer_snapshots
from utils.memory import CHUNK_BYTES, graphs_per_chunk

__all__ = ["DNGEncoder"]

NODE_FEATURES = ("graph", "bias")


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
    touches the neurons of that layer in each graph. The output is
    :math:`\text{MLP}(\text{readout}(s))`.

    The keyword-only options turn parts of this into the official DNG encoder
    (dddiowww/DNG ``DynamicNeuralGNN``), which reads one fixed architecture:
    ``num_layers=L`` gives :math:`W_1, W_2, \text{LN}` (and :math:`W_b`) their own
    parameters at each of the ``L`` steps (the GRU stays shared), and only networks of
    exactly ``L`` layers are read; ``node_features="bias"`` makes
    :math:`u_i = W_b\,\gamma(b_i)` (no position, activation or probe features) and starts
    input neuron :math:`k` from a learned vector :math:`s_k = P[k]`;
    ``message_mlp=False`` makes :math:`m_i = \sum_k m_i^{(k)}` (``head_dim`` must equal
    ``hidden``); ``edge_types=False`` drops :math:`T`; ``source_bias=True`` gives
    :math:`W_2` a bias. With ``readout="cat"`` the readout is the last layer's states
    flattened, the reference's encoder output. The reference configuration of the MNIST
    INR classifier is ``neural_graphs.encoders.reference.dng.REFERENCE_KWARGS``.

    Args:
        out_dim (int): output size.
        hidden (int): node state and message size (128 in the paper).
        head_dim (int, optional): size of each kernel-element head (default ``hidden``).
        readout (str): ``"cat"``, ``"mean"``, ``"max"`` or ``"mean_max"``.
        head_hidden (int, optional): output MLP width (default ``hidden``).
        rff_dim (int): Fourier frequencies of scalars (128).
        rff_sigma (float): their standard deviation (3 for INRs, 1 for CNNs in the paper).
        num_probes (int): probe inputs (0: none, the paper): Linear chains read
            coordinates, convolutional networks images (``probe_shape``).
        max_layers (int): hidden-layer slots of the position embedding.
        kernel_shape (tuple, optional): the kernel grid weights are read on (default:
            the first batch's largest; :class:`~neural_graphs.encoders.batch.KernelGrid`).
        num_layers (int, optional): own edge, source, bias projections and LayerNorm for
            each of this many layers (None: shared by all layers, any depth).
        node_features (str): ``"graph"`` (bias, position, activation embeddings and
            probes) or ``"bias"`` (bias only; input neurons from learned vectors).
        message_mlp (bool): pass the kernel heads' messages through an MLP (else sum them).
        edge_types (bool): add the edge-type embedding :math:`T` to the edge heads.
        source_bias (bool): give the source projection :math:`W_2` a bias.
        dropout (float): dropout on the node states after each step's LayerNorm.
        head_dropout (float): dropout after each hidden layer of the output MLP.
        dense (bool, optional): compute batches of one layout whose every step reads all
            pairs of two consecutive layers (MLPs, plain CNNs) on dense
            ``[graphs, n_t, n_{t-1}, ...]`` tensors, as the reference, instead of gathering
            and scattering edges: the same function, summed in another order (None: on;
            one training step of the default encoder on 128 SIRENs takes 0.68 of the
            general path's time).
        probe_shape (tuple, optional): ``(C, *S)`` of the learned probe images that
            convolutional networks read with ``num_probes`` (None: they get no probes;
            :class:`~neural_graphs.encoders.probes.ProbeFeatures`).

    Shapes:
        - input: a :class:`~torch_geometric.data.Batch` of graphs from
          :func:`~neural_graphs.to_neural_graph` (or one graph)
        - output: :math:`(G, \text{out\_dim})`
    """

    def __init__(self, out_dim: int, hidden: int = 128, head_dim: int | None = None,
                 readout: str = "cat", head_hidden: int | None = None, rff_dim: int = 128,
                 rff_sigma: float = 3.0, num_probes: int = 0, max_layers: int = 32,
                 kernel_shape: tuple[int, ...] | None = None, *,
                 num_layers: int | None = None, node_features: str = "graph",
                 message_mlp: bool = True, edge_types: bool = True,
                 source_bias: bool = False, dropout: float = 0.0,
                 head_dropout: float = 0.0, dense: bool | None = None,
                 probe_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        head_dim = head_dim or hidden
        if node_features not in NODE_FEATURES:
            raise ValueError(f"node_features must be one of {NODE_FEATURES}, got "
                             f"{node_features!r}")
        if num_layers is not None and num_layers < 1:
            raise ValueError(f"num_layers must be None (shared) or at least 1, got "
                             f"{num_layers}")
        if not message_mlp and head_dim != hidden:
            raise ValueError(f"message_mlp=False feeds the summed heads to the GRU: head_dim "
                             f"({head_dim}) must equal hidden ({hidden})")
        if node_features == "bias" and (num_probes or probe_shape is not None):
            raise ValueError("node_features='bias' reads biases only: num_probes must be 0")
        self.num_layers = num_layers
        self.dropout = float(dropout)
        self.dense = True if dense is None else bool(dense)
        self.grad_checkpointing = False

        def own(make: Callable[[], nn.Module]) -> nn.Module:
            return make() if num_layers is None else \
                nn.ModuleList(make() for _ in range(num_layers))

        self.kernels = KernelGrid(kernel_shape)
        if node_features == "graph":
            self.embed: GraphEmbedding | None = GraphEmbedding(
                hidden, 0, rff_dim, rff_sigma, max_layers, num_probes, probe_shape=probe_shape)
        else:
            self.embed = None
            self.node_rff = FourierFeatures(rff_dim, rff_sigma)
            self.node_proj = own(lambda: nn.Linear(2 * rff_dim, hidden))
            self.input_state = IndexEmbedding(hidden, "input neuron")
        self.edge_rff = FourierFeatures(rff_dim, rff_sigma, in_features=1)
        self.edge_proj = own(lambda: nn.Linear(2 * rff_dim, head_dim))
        self.edge_type = nn.Embedding(len(EDGE_TYPES), head_dim) if edge_types else None
        self.source_proj = own(lambda: nn.Linear(hidden, head_dim, bias=source_bias))
        self.message_mlp = nn.Sequential(nn.LazyLinear(hidden), nn.SiLU(),
                                         nn.Linear(hidden, hidden)) if message_mlp else None
        self.gru = nn.GRUCell(hidden, hidden)
        self.norm = own(lambda: nn.LayerNorm(hidden))
        self.readout = Readout(readout)
        self.head = _head(head_hidden or hidden, out_dim, head_dropout)

    @staticmethod
    def _at(module: nn.Module, layer: int) -> nn.Module:
        """``module`` itself (shared) or its entry for ``layer`` (``num_layers``)."""
        return module[layer] if isinstance(module, nn.ModuleList) else module

    def edge_heads(self, batch: Batch | Data, layer: int = 0) -> Tensor:
        """Per edge and kernel element, :math:`W_1 \\gamma(w) + T[\\text{type}]` (zero at
        padding entries): ``[E, K, head_dim]`` (:math:`W_1` of ``layer`` when per layer)."""
        return self._heads(batch.edge_attr, batch.edge_mask, batch.edge_type, layer)

    def _heads(self, attr: Tensor, mask: Tensor, types: Tensor, layer: int) -> Tensor:
        """:meth:`edge_heads` of edges ``[*, K]`` (``types`` ``[*]``): ``[*, K, head_dim]``."""
        heads = self._at(self.edge_proj, layer)(self.edge_rff(attr.unsqueeze(-1)))
        if self.edge_type is not None:
            heads = heads + self.edge_type(types).unsqueeze(-2)
        if bool(mask.all()):
            return heads  # nothing padded: the mask would multiply by one
        return heads * mask.unsqueeze(-1).to(heads.dtype)

    def _update(self, inner: Tensor, memory: Tensor, layer: int) -> Tensor:
        """:math:`\\text{LN}(\\text{GRU}(u, m))` (and dropout) of states ``[*, hidden]``."""
        width = memory.shape[-1]
        updated = self.gru(inner.reshape(-1, width), memory.reshape(-1, width))
        updated = self._at(self.norm, layer)(updated)
        if self.dropout:
            updated = F.dropout(updated, self.dropout, self.training)
        return updated.view(memory.shape)

    def forward(self, graphs: Batch | Data | list[Data]) -> Tensor:
        return self.head(self.features(graphs))

    def features(self, graphs: Batch | Data | list[Data]) -> Tensor:
        """What the output MLP reads: the readout of the final node states, ``[G, D]``
        (``readout="cat"``: the output neurons' states flattened)."""
        return self.readout(*self.node_embeddings(graphs))

    def node_embeddings(self, graphs: Batch | Data | list[Data]) -> NodeEmbeddings:
        """The final state of every neuron (input neurons: their start states), ``[N,
        hidden]``, with the batch they follow (:class:`~neural_graphs.encoders.readouts.
        NodeEmbeddings`; ``.layer(l)`` for one layer's neurons): what the readout, the
        dilation heads and INR2JLS read."""
        batch = self.kernels.collate(graphs)
        require_fields(batch, GRAPH_FIELDS, type(self).__name__)
        batch = self.kernels(batch)
        if self.num_layers is not None:
            self._check_depth(batch)
        inputs = (batch.node_type == _INPUT).nonzero().squeeze(1)
        own = self.embed.nodes(batch) if self.embed is not None else None
        start = own[inputs] if own is not None else \
            self.input_state(local_node_position(batch)[inputs])
        layout = self._dense_layout(batch) if self.dense else None
        if layout is not None:
            return NodeEmbeddings(self._dense_chunks(batch, layout, own, start), batch)
        state = start.new_zeros(batch.num_nodes, start.shape[-1])
        state = state.index_copy(0, inputs, start)
        for snapshot in layer_snapshots(batch):
            layer = snapshot.step - 1
            targets = snapshot.target.nonzero().squeeze(1)
            memory = self._step_memory(snapshot, state, targets, layer)  # [T, hidden]
            if own is not None:
                inner = own[targets]
            else:
                inner = self._at(self.node_proj, layer)(self.node_rff(batch.x[targets]))
            state = state.index_copy(0, targets, self._update(inner, memory, layer))
        return NodeEmbeddings(state, batch)

    def _step_memory(self, snapshot: Data, state: Tensor, targets: Tensor,
                     layer: int) -> Tensor:
        """:math:`m_i` of every target of a step, ``[T, hidden]``: the message MLP of the
        heads' sums :math:`m_i^{(k)}` (:meth:`_group_sums`; or their sum over heads), from
        the valid entries only (:meth:`_valid_entries`). On CPU the targets go in groups
        whose heads and sums stay within :attr:`CHUNK_BYTES`: a batch of 128 wild CNNs on
        7x7 kernels has 3.5 million valid entries, whose ``[entries, width]`` tensors would
        otherwise be mapped afresh each step and fault in page by page (one training step:
        2.2 million page faults, 5 s of system time against 2.2 s of arithmetic; in groups,
        none). With :meth:`set_grad_checkpointing` each group is recomputed in the backward
        pass instead of kept."""
        entries = self._valid_entries(snapshot, targets)
        sources = self._at(self.source_proj, layer)(state)
        kernel = snapshot.edge_mask.shape[1]
        groups = self._target_groups(entries[-1], len(targets), kernel, state)
        recompute = self.grad_checkpointing and torch.is_grad_enabled()
        pieces = []
        for (lo, hi), (first, last) in groups:
            group = [part[first:last] for part in entries[:-1]] + [entries[-1][first:last] - lo]
            if recompute:
                pieces.append(checkpoint(self._group_memory, *group, sources, hi - lo, kernel,
                                         layer, use_reentrant=False))
            else:
                pieces.append(self._group_memory(*group, sources, hi - lo, kernel, layer))
        return torch.cat(pieces)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each group of messages of the general path in the backward pass
        instead of keeping its tensors (:func:`torch.utils.checkpoint.checkpoint`): less
        memory for more arithmetic (one training step on 128 wild CNNs, one thread: peak
        tensor memory 327 MiB instead of 2,916, 3.3 s of user CPU instead of 2.2;
        ``python -m benchmarks.zoo_encoders --encoders dng --grad-checkpointing``). Off by
        default."""
        self.grad_checkpointing = bool(enable)

    def _valid_entries(self, snapshot: Data, targets: Tensor) -> tuple[Tensor, ...]:
        """The valid (edge, kernel element) entries into ``targets``, ordered by target:
        their weight, kernel element, edge type, source neuron and target slot (the
        target's index in ``targets``), each ``[V]``. A padding entry sends nothing, so a
        Linear edge on a grid of ``K`` elements costs one head, not ``K`` (a ViT's graph on
        its 4x4 patch grid, or a wild CNN's on 7x7, would otherwise carry ``[E, K, d]``
        heads, nearly all zero)."""
        src, dst = snapshot.edge_index
        edge, element = snapshot.edge_mask.nonzero(as_tuple=True)
        slot = torch.full((snapshot.num_nodes,), -1, dtype=torch.long, device=src.device)
        slot[targets] = torch.arange(len(targets), device=src.device)
        slots = slot[dst[edge]]
        keep = slots >= 0
        if not bool(keep.all()):  # edges into neurons this step does not update
            edge, element, slots = edge[keep], element[keep], slots[keep]
        slots, order = torch.sort(slots, stable=True)
        edge, element = edge[order], element[order]
        return (snapshot.edge_attr[edge, element], element, snapshot.edge_type[edge],
                src[edge], slots)

    def _target_groups(self, slots: Tensor, count: int, kernel: int,
                       state: Tensor) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        """Groups of consecutive target slots, as ``((first target, end), (first entry,
        end))``, whose valid entries' Fourier features and heads (``[entries, width]``) and
        summed heads (``[targets, K, head_dim]``) each stay within :attr:`CHUNK_BYTES` on
        CPU (one group elsewhere; a group holds at least one target)."""
        if state.device.type != "cpu" or count == 0:
            return [((0, count), (0, len(slots)))]
        size = state.element_size()
        head_dim = self._at(self.edge_proj, 0).out_features
        max_entries = max(1, self.CHUNK_BYTES // (max(self.edge_rff.out_features, head_dim)
                                                  * size))
        max_targets = max(1, self.CHUNK_BYTES // (kernel * head_dim * size))
        ends = torch.bincount(slots, minlength=count).cumsum(0).tolist()
        groups, lo = [], 0
        while lo < count:
            start = ends[lo - 1] if lo else 0
            hi = bisect.bisect_right(ends, start + max_entries, lo)
            hi = min(max(hi, lo + 1), lo + max_targets, count)
            groups.append(((lo, hi), (start, ends[hi - 1])))
            lo = hi
        return groups

    def _group_sums(self, values: Tensor, element: Tensor, types: Tensor, src: Tensor,
                    slots: Tensor, sources: Tensor, count: int, kernel: int,
                    layer: int) -> Tensor:
        """:math:`m_i^{(k)}` ``[count, K, head_dim]`` from valid entries (weights ``values``
        into target slots ``slots``) and the projected states ``sources`` ``[N, d]``."""
        heads = self._at(self.edge_proj, layer)(self.edge_rff(values.unsqueeze(-1)))
        if self.edge_type is not None:
            heads = heads + self.edge_type(types)
        summed = scatter(heads * sources[src], slots * kernel + element, 0, count * kernel,
                         "sum")
        return summed.view(count, kernel, -1)

    def _group_memory(self, values: Tensor, element: Tensor, types: Tensor, src: Tensor,
                      slots: Tensor, sources: Tensor, count: int, kernel: int,
                      layer: int) -> Tensor:
        """:math:`m_i` ``[count, hidden]`` of one group of targets (:meth:`_group_sums`)."""
        summed = self._group_sums(values, element, types, src, slots, sources, count, kernel,
                                  layer)
        return self.message_mlp(summed.flatten(1)) if self.message_mlp is not None \
            else summed.sum(1)

    @staticmethod
    def _dense_layout(batch: Batch) -> list[int] | None:
        """The neurons per layer when every graph of ``batch`` has the same, and step
        :math:`t` of each holds exactly all (layer :math:`t-1`, layer :math:`t`) pairs, target
        by target, as ``to_neural_graph`` writes an MLP or a plain CNN; else None."""
        if getattr(batch, "layer_layout", None) is None:
            return None
        layouts = _graph_list(batch, "layer_layout")
        sizes = [int(n) for n in layouts[0]]
        if any([int(n) for n in layout] != sizes for layout in layouts[1:]):
            return None
        graphs, per = batch.num_graphs, sum(sizes)
        pairs = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
        if batch.num_nodes != graphs * per or batch.edge_index.shape[1] != graphs * pairs:
            return None
        device, offsets = batch.edge_index.device, [0, *itertools.accumulate(sizes)]
        local = []
        for t in range(1, len(sizes)):
            source = torch.arange(sizes[t - 1], device=device).repeat(sizes[t])
            target = torch.arange(sizes[t], device=device).repeat_interleave(sizes[t - 1])
            local.append(torch.stack([source + offsets[t - 1], target + offsets[t]]))
        shift = torch.arange(graphs, device=device).view(1, -1, 1) * per
        expected = (torch.cat(local, 1).unsqueeze(1) + shift).reshape(2, -1)
        return sizes if torch.equal(batch.edge_index, expected) else None

    #: Largest intermediate tensor of one chunk of graphs (dense path) or group of targets
    #: (general path) on CPU (:data:`utils.memory.CHUNK_BYTES`; 128 SIRENs at once: a
    #: step's Fourier features alone are 134 MB).
    CHUNK_BYTES = CHUNK_BYTES

    def _dense_chunks(self, batch: Batch, sizes: list[int], own: Tensor | None,
                      start: Tensor) -> Tensor:
        """:meth:`_dense_states` over chunks of graphs whose largest tensor (a step's
        Fourier features or heads, ``[graphs, n_t, n_{t-1}, K, width]``) stays within
        :attr:`CHUNK_BYTES`: the same states, computed without page faults."""
        pairs = max(a * b for a, b in zip(sizes[:-1], sizes[1:]))
        width = max(self.edge_rff.out_features, self._at(self.source_proj, 0).out_features)
        per_graph = pairs * batch.edge_attr.shape[-1] * width * batch.edge_attr.element_size()
        graphs = batch.num_graphs
        step = graphs_per_chunk(per_graph, graphs, batch.edge_attr.device.type,
                                self.CHUNK_BYTES)
        if step >= graphs:
            return self._dense_states(batch, sizes, own, start, slice(0, graphs))
        return torch.cat([self._dense_states(batch, sizes, own, start,
                                             slice(g, min(g + step, graphs)))
                          for g in range(0, graphs, step)])

    def _dense_states(self, batch: Batch, sizes: list[int], own: Tensor | None,
                      start: Tensor, chunk: slice) -> Tensor:
        """The final node states ``[n, hidden]`` of the graphs ``chunk`` of a batch of one
        layout (:meth:`_dense_layout`), each step on ``[graphs, n_t, n_{t-1}, ...]``
        tensors: no gather or scatter of edges (the reference's dense computation)."""
        total, per = batch.num_graphs, sum(sizes)
        graphs = chunk.stop - chunk.start
        offsets = [0, *itertools.accumulate(sizes)]
        attr = batch.edge_attr.view(total, -1, batch.edge_attr.shape[-1])[chunk]
        mask = batch.edge_mask.view(total, -1, batch.edge_mask.shape[-1])[chunk]
        types = batch.edge_type.view(total, -1)[chunk]
        x = batch.x.view(total, per, -1)[chunk]
        if own is not None:
            own = own.view(total, per, -1)[chunk]
        states, first = [start.view(total, sizes[0], -1)[chunk]], 0
        for t in range(1, len(sizes)):
            n_t, n_s, layer = sizes[t], sizes[t - 1], t - 1
            last = first + n_t * n_s
            width = attr.shape[-1]
            heads = self._heads(attr[:, first:last].reshape(-1, width),
                                mask[:, first:last].reshape(-1, width),
                                types[:, first:last].reshape(-1), layer)
            heads = heads.view(graphs, n_t, n_s, *heads.shape[-2:])  # [G, n_t, n_s, K, d]
            first = last
            sources = self._at(self.source_proj, layer)(states[-1])  # [G, n_s, d]
            summed = (heads * sources[:, None, :, None, :]).sum(2)  # [G, n_t, K, d]
            memory = self.message_mlp(summed.flatten(2)) if self.message_mlp is not None \
                else summed.sum(2)
            nodes = slice(offsets[t], offsets[t + 1])
            if own is not None:
                inner = own[:, nodes]
            else:
                inner = self._at(self.node_proj, layer)(self.node_rff(x[:, nodes]))
            states.append(self._update(inner, memory, layer))
        return torch.cat(states, 1).reshape(graphs * per, -1)

    def _check_depth(self, batch: Batch) -> None:
        """``ValueError`` unless every network of ``batch`` has ``num_layers`` layers."""
        depths = batch.node_layer[batch.node_type == _OUTPUT].unique().tolist()
        if depths != [self.num_layers]:
            raise ValueError(f"this DNGEncoder has its own parameters for each of "
                             f"{self.num_layers} layers (num_layers={self.num_layers}): it "
                             f"reads networks of exactly {self.num_layers} layers, the "
                             f"batch holds networks of {depths} layers")


def _head(hidden: int, out_dim: int, dropout: float) -> nn.Sequential:
    """:func:`~neural_graphs.encoders.readouts.head_mlp` with two hidden layers, with
    ``Dropout(dropout)`` after each ReLU when ``dropout`` is not zero (the layout of the
    reference classifier: Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear)."""
    if not dropout:
        return head_mlp(hidden, out_dim)
    return nn.Sequential(nn.LazyLinear(hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden, out_dim))
