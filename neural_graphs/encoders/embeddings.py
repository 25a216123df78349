"""Initial features of neural graphs: random Fourier features of scalars, index and
position embeddings, activation- and edge-type embeddings (:class:`GraphEmbedding`), and
the published graph constructor's features (:class:`ConstructorEmbedding`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter
from torch_geometric.data import Batch

from neural_graphs.activations import ACTIVATIONS
from neural_graphs.encoders.batch import _INPUT, _OUTPUT, layer_slot, local_node_position
from neural_graphs.encoders.probes import ProbeFeatures
from neural_graphs.graph import EDGE_TYPES

__all__ = ["FOURIER_KEEP_BYTES", "FOURIER_ROWS", "STATS_KEYS", "ConstructorEmbedding",
           "FourierFeatures", "GraphEmbedding", "IndexEmbedding", "folded_linear", "fourier_linear",
           "gaussian_encoding", "gaussian_projection"]

#: the per-layer statistics the reference normalizes weights and biases with (its
#: ``stats``): one number per layer of weights each
STATS_KEYS = ("weights_mean", "weights_std", "biases_mean", "biases_std")
#: rows whose Fourier features :func:`fourier_linear` makes at once: they stay in cache
FOURIER_ROWS = 4096
#: the most bytes of Fourier features :func:`fourier_linear` keeps for the backward pass
#: (keeping the 280 MiB of the edges of 128 SIRENs takes 2-16% off NG-GNN's training step,
#: in four measurements); larger inputs make each chunk's features again
FOURIER_KEEP_BYTES = 1 << 29


def _cos_sin(proj: Tensor) -> Tensor:
    """``[cos(proj), sin(proj)]`` along the last dimension."""
    return torch.cat([proj.cos(), proj.sin()], dim=-1)


def _feature_chunks(project: Callable[[Tensor], Tensor], v: Tensor, fresh: bool = False
                    ) -> Iterator[tuple[slice, Tensor]]:
    """``(rows, [cos p, sin p])`` of ``v`` :data:`FOURIER_ROWS` rows at a time, ``p =
    project(v[rows])``, as one ``[2, rows, F]`` tensor a chunk: the cosines and the sines
    each contiguous (written through a stride, each takes a fifth longer). One buffer is
    reused (valid until the next chunk) unless ``fresh``."""
    buffer = None
    for start in range(0, v.shape[0], FOURIER_ROWS):
        rows = slice(start, start + FOURIER_ROWS)
        proj = project(v[rows])
        if fresh or buffer is None or buffer.shape[1] != proj.shape[0]:
            buffer = proj.new_empty(2, *proj.shape)
        torch.cos(proj, out=buffer[0])
        torch.sin(proj, out=buffer[1])
        yield rows, buffer


class _FourierLinear(torch.autograd.Function):
    """``F.linear(cos_sin(project(v)), weight, bias)`` for rows of ``v`` that need no
    gradient, :data:`FOURIER_ROWS` rows at a time, the cosines' and the sines' halves of
    ``weight`` applied one after the other. The backward pass needs the features again
    for the weight's gradient: up to :data:`FOURIER_KEEP_BYTES` of them are kept from the
    forward pass, chunk by chunk (each a few MiB, which malloc serves from memory freed
    before, without page faults); beyond that each chunk is made again, so that the
    features of a large batch are never stored whole. Without a backward pass to come
    (``keep`` False: no gradient wanted) nothing is kept."""

    @staticmethod
    def forward(ctx: object, project: Callable[[Tensor], Tensor], v: Tensor,
                weight: Tensor, bias: Tensor | None, keep: bool) -> Tensor:
        out = v.new_empty(v.shape[0], weight.shape[0])
        half = weight.shape[1] // 2
        w_cos, w_sin = weight[:, :half].t(), weight[:, half:].t()
        keep = keep and v.shape[0] * weight.shape[1] * v.element_size() <= FOURIER_KEEP_BYTES
        kept = []
        for rows, features in _feature_chunks(project, v, fresh=keep):
            cos, sin = features
            if bias is None:
                torch.mm(cos, w_cos, out=out[rows])
            else:
                torch.addmm(bias, cos, w_cos, out=out[rows])
            out[rows].addmm_(sin, w_sin)
            if keep:
                kept.append((rows, features))
        ctx.project, ctx.kept = project, kept  # empty unless kept
        ctx.save_for_backward(v, weight, bias)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: object, grad: Tensor) -> tuple[Tensor | None, ...]:
        v, weight, bias = ctx.saved_tensors
        grad_weight = None
        if ctx.needs_input_grad[2]:
            half = weight.shape[1] // 2
            grad_cos, grad_sin = weight.new_zeros(weight.shape[0], half), \
                weight.new_zeros(weight.shape[0], half)
            for rows, (cos, sin) in ctx.kept or _feature_chunks(ctx.project, v):
                g = grad[rows].t()
                grad_cos.addmm_(g, cos)
                grad_sin.addmm_(g, sin)
            grad_weight = torch.cat((grad_cos, grad_sin), 1)
        ctx.kept = None
        grad_bias = grad.sum(0) if bias is not None and ctx.needs_input_grad[3] else None
        return None, None, grad_weight, grad_bias, None


def fourier_linear(project: Callable[[Tensor], Tensor], v: Tensor, linear: nn.Linear,
                   then: nn.Linear | None = None) -> Tensor:
    r""":math:`\text{linear}([\cos(p), \sin(p)])` with :math:`p` = ``project(v)`` (the
    phases of random Fourier features), computed :data:`FOURIER_ROWS` rows at a time when
    ``v`` needs no gradient (the scalars of a network's weights), the features kept for the
    backward pass in those chunks up to :data:`FOURIER_KEEP_BYTES` and made again beyond
    it, never as one whole tensor; otherwise through autograd as written.

    With ``then``, :math:`\text{then}(\text{linear}(\cdot))` as one affine map
    (:func:`folded_linear`): a product of the two small weights instead of a second pass,
    forward and backward, over every row.

    Shapes:
        - input: :math:`(*, \text{in})`
        - output: :math:`(*, \text{linear.out\_features})`, or
          :math:`(*, \text{then.out\_features})`
    """
    weight, bias = folded_linear(linear, then)
    if v.requires_grad or v.dtype != weight.dtype:
        return F.linear(_cos_sin(project(v)), weight, bias)
    keep = torch.is_grad_enabled() and weight.requires_grad  # a backward pass may follow
    if v.dim() == 2:
        return _FourierLinear.apply(project, v, weight, bias, keep)
    out = _FourierLinear.apply(project, v.reshape(-1, v.shape[-1]), weight, bias, keep)
    return out.view(*v.shape[:-1], out.shape[-1])


def folded_linear(linear: nn.Linear, then: nn.Linear | None = None
                  ) -> tuple[Tensor, Tensor | None]:
    r"""Weight and bias of :math:`\text{then} \circ \text{linear}`: :math:`W_t W_l` and
    :math:`W_t b_l + b_t` (those of ``linear`` without ``then``). Gradients reach both
    layers' parameters through the product."""
    if then is None:
        return linear.weight, linear.bias
    weight = then.weight @ linear.weight
    if linear.bias is None:
        return weight, then.bias
    return weight, F.linear(linear.bias, then.weight, then.bias)


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
        return _cos_sin(self.project(v))

    def project(self, v: Tensor) -> Tensor:
        r"""The phases :math:`2\pi v B` whose cosines and sines are the features (the
        factor on the small ``B``, not on every phase)."""
        return v @ (self.frequencies.to(v.dtype) * (2 * math.pi))

    def linear(self, v: Tensor, linear: nn.Linear, then: nn.Linear | None = None) -> Tensor:
        """``linear(self(v))`` (``then(linear(self(v)))`` with ``then``), the features in
        chunks, kept for the backward pass within a budget (:func:`fourier_linear`)."""
        if self.has_uninitialized_params():
            self(v[..., :1, :])  # draw the lazy frequencies from v's width
        return fourier_linear(self.project, v, linear, then)

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
        probe_shape (tuple, optional): ``(C, *S)`` of the probe images convolutional
            networks read (None: they get no probe features).
    """

    def __init__(self, node_dim: int, edge_dim: int, rff_dim: int = 128,
                 rff_sigma: float = 3.0, max_layers: int = 32, num_probes: int = 0,
                 position: bool = True, probe_shape: Sequence[int] | None = None) -> None:
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
        if probe_shape is not None and not num_probes:
            raise ValueError(f"probe_shape {tuple(probe_shape)} needs num_probes > 0")
        self.probes = ProbeFeatures(num_probes, node_dim, max_layers, probe_shape) \
            if num_probes else None
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

    def edges(self, batch: Batch, then: nn.Linear | None = None) -> Tensor:
        """:math:`e_{ij}` of every edge, or ``then`` of them, folded into the Fourier
        features' projection and the type table (:func:`folded_linear`)."""
        types = self.edge_type.weight if then is None else \
            F.linear(self.edge_type.weight, then.weight)
        return self.edge_rff.linear(batch.edge_attr, self.edge_proj, then) + \
            F.embedding(batch.edge_type, types)



def gaussian_encoding(v: Tensor, b: Tensor) -> Tensor:
    r"""The reference's Gaussian Fourier features (``rff.functional.gaussian_encoding``)
    in its order of operations, so that they agree to the bit, not to rounding.

    .. math::
        \gamma(v) = [\cos(2\pi v B^\top), \sin(2\pi v B^\top)]

    Args:
        v (Tensor): the scalars, :math:`(*, \text{in})`.
        b (Tensor): the frequencies in the reference's layout, :math:`(F, \text{in})`
            (:class:`FourierFeatures` holds the transpose).

    Returns:
        Tensor: :math:`(*, 2F)`.
    """
    return _cos_sin(gaussian_projection(v, b))


def gaussian_projection(v: Tensor, b: Tensor) -> Tensor:
    r"""The phases :math:`2\pi v B^\top` of :func:`gaussian_encoding`, in its order."""
    return (2 * math.pi * v) @ b.to(v.dtype).T


def _layer_stats(stats: Mapping[str, Sequence[float] | Tensor] | None
                 ) -> dict[str, tuple[float, ...]] | None:
    """``stats`` as Python floats, checked: the keys :data:`STATS_KEYS`, one number per
    layer of weights each."""
    if stats is None:
        return None
    if set(stats) != set(STATS_KEYS):
        raise ValueError(f"layer_stats needs exactly the keys {STATS_KEYS}, got "
                         f"{sorted(stats)}")
    out = {key: tuple(float(v) for v in torch.as_tensor(
        stats[key], dtype=torch.float64).flatten().tolist()) for key in STATS_KEYS}
    if len({len(v) for v in out.values()}) != 1:
        raise ValueError("layer_stats: every entry needs one number per layer, got "
                         f"{ {k: len(v) for k, v in out.items()} }")
    return out


class ConstructorEmbedding(nn.Module):
    r"""Initial node and edge features as the reference's graph constructor makes them
    (mkofinas/neural-graphs ``nn/graph_constructor.py``, shared by its NG-GNN and NG-T)
    for networks of Linear layers: scalars only, no activation or edge-type embeddings.

    .. math::
        h_i &= W_b\,\gamma_b(\hat b_i) + c_b, \qquad
        P(i) = \begin{cases} p^\text{in}_k & \text{input neuron } k \\
        p^\text{hid}_l & \text{hidden neuron of layer } l \\
        p^\text{out}_k & \text{output neuron } k \end{cases} \\
        e_{ij} &= W_e\,\gamma_e(v_{ij}) + c_e, \qquad v_{j \to i} = \hat w_{ij}
        \text{, or with reversed edges } [\hat w_{ij}, 0, \hat w_{ij}] \text{ and }
        v_{i \to j} = [0, \hat w_{ij}, \hat w_{ij}]

    with :math:`\gamma` :func:`gaussian_encoding` (fixed buffers ``node_b``
    ``[rff_dim, 1]`` and ``edge_b`` ``[rff_dim, 1]``, ``[rff_dim, 3]`` with
    ``reverse_edges``: the reference's ``b``), :math:`\hat b_i = (b_i - \mu^b_l) /
    \sigma^b_l` and :math:`\hat w_{ij} = (w_{ij} - \mu^w_l) / \sigma^w_l` normalized by
    the statistics of the layer :math:`l` the neuron (the edge's target) belongs to
    (none: :math:`\mu = 0, \sigma = 1`), and :math:`\hat b_i = 0` for input neurons. The
    reference writes the weights into a zero matrix: an unconnected pair reads
    :math:`v = 0` (:meth:`no_edge`). The position embedding :math:`P(i)`
    (:meth:`position_embedding`), which the reference adds after its input projection,
    has a vector per input neuron, per hidden layer and per output neuron; hidden layers
    deeper than ``max_layers - 2`` share the last vector. With ``reverse_edges`` every
    edge :math:`j \to i` also runs backwards, :math:`i \to j` (:meth:`edge_index`; NG-GNN
    passes messages along both, the reference's ``rev_edge_features``).

    Args:
        node_dim (int): node feature size.
        rff_dim (int): Fourier frequencies (features ``2 * rff_dim``).
        rff_sigma (float): their standard deviation (the reference's ``inp_factor``).
        max_layers (int): layers of the networks read (input, hidden layers, output):
            ``max_layers - 2`` hidden-layer position vectors.
        reverse_edges (bool): add the reversed edges.
        layer_stats (Mapping, optional): ``weights_mean``, ``weights_std``,
            ``biases_mean``, ``biases_std`` (:data:`STATS_KEYS`), one number per layer of
            weights each: the reference's ``stats``, configuration (kept as Python floats
            and made tensors of the input's dtype, as the reference's scalars), not in
            the state dict, as there.
        edge_dim (int, optional): edge feature size (default ``node_dim``).

    Shapes:
        - input: a :class:`~torch_geometric.data.Batch` of graphs of Linear layers
          (``x`` :math:`(N, 1)`, ``edge_attr`` :math:`(E, 1)`)
        - output: :meth:`nodes` and :meth:`position_embedding` :math:`(N,
          \text{node\_dim})`, :meth:`edges` :math:`(E', \text{edge\_dim})` for the
          :math:`E'` edges of :meth:`edge_index` (:math:`2E` with ``reverse_edges``),
          :meth:`no_edge` :math:`(\text{edge\_dim},)`
    """

    def __init__(self, node_dim: int, rff_dim: int = 128, rff_sigma: float = 3.0,
                 max_layers: int = 4, reverse_edges: bool = False,
                 layer_stats: Mapping[str, Sequence[float] | Tensor] | None = None,
                 edge_dim: int | None = None) -> None:
        super().__init__()
        if max_layers < 3:
            raise ValueError(f"max_layers must be at least 3 (input, hidden, output), got "
                             f"{max_layers}")
        self.max_layers, self.reverse_edges = max_layers, reverse_edges
        self.register_buffer("node_b", torch.randn(rff_dim, 1) * rff_sigma)
        self.register_buffer("edge_b", torch.randn(rff_dim, 3 if reverse_edges else 1)
                             * rff_sigma)
        self.node_proj = nn.Linear(2 * rff_dim, node_dim)
        self.edge_proj = nn.Linear(2 * rff_dim, node_dim if edge_dim is None else edge_dim)
        self.input_position = IndexEmbedding(node_dim, "input neuron")
        self.hidden_position = nn.Embedding(max_layers - 2, node_dim)
        self.output_position = IndexEmbedding(node_dim, "output neuron")
        #: the statistics as Python floats: configuration, not state
        self.layer_stats = _layer_stats(layer_stats)

    def _normalized(self, value: Tensor, layer: Tensor, kind: str) -> Tensor:
        """``(value - mean) / std`` of each row's layer (``kind``: weights or biases)."""
        if self.layer_stats is None:
            return value
        mean, std = (torch.tensor(self.layer_stats[f"{kind}_{what}"], dtype=value.dtype,
                                  device=value.device) for what in ("mean", "std"))
        if layer.numel() and int(layer.max()) > mean.numel():
            raise ValueError(f"layer_stats hold {mean.numel()} layers; a graph has "
                             f"{int(layer.max())} layers of weights")
        index = (layer - 1).clamp(min=0)
        return (value - mean[index].unsqueeze(-1)) / std[index].unsqueeze(-1)

    def nodes(self, batch: Batch) -> Tensor:
        r""":math:`W_b\,\gamma_b(\hat b_i) + c_b` of every neuron."""
        if batch.x.shape[-1] != 1:
            raise ValueError(f"the reference's graph constructor reads one bias per neuron "
                             f"(x [N, 1]), got x {tuple(batch.x.shape)}")
        x = self._normalized(batch.x, batch.node_layer, "biases")
        x = torch.where((batch.node_type == _INPUT).unsqueeze(-1), torch.zeros_like(x), x)
        return self.node_proj(gaussian_encoding(x, self.node_b))

    def position_embedding(self, batch: Batch) -> Tensor:
        """:math:`P(i)` of every neuron."""
        node_type, node_position = batch.node_type, local_node_position(batch)
        pos = self.hidden_position((batch.node_layer - 1).clamp(0, self.max_layers - 3))
        for kind, table in ((_INPUT, self.input_position), (_OUTPUT, self.output_position)):
            where = (node_type == kind).nonzero().squeeze(1)
            pos = pos.index_copy(0, where, table(node_position[where]).to(pos.dtype))
        return pos

    def edge_index(self, batch: Batch) -> Tensor:
        """The edges the features of :meth:`edges` belong to: the batch's, followed by
        them reversed with ``reverse_edges``."""
        edge_index = batch.edge_index
        return torch.cat([edge_index, edge_index.flip(0)], 1) if self.reverse_edges \
            else edge_index

    def edges(self, batch: Batch, then: nn.Linear | None = None) -> Tensor:
        r""":math:`W_e\,\gamma_e(v) + c_e` of the edges of :meth:`edge_index` (``then`` of
        them with ``then``: :meth:`edge_features`)."""
        return self.edge_features(self.edge_values(batch), then)

    def edge_values(self, batch: Batch) -> Tensor:
        """The vectors :math:`v` of the edges of :meth:`edge_index` (no parameters)."""
        if batch.edge_attr.shape[-1] != 1:
            raise ValueError(f"the reference's graph constructor reads networks of Linear "
                             f"layers (one weight per edge), got edge_attr "
                             f"{tuple(batch.edge_attr.shape)}")
        w = self._normalized(batch.edge_attr, batch.edge_layer, "weights")
        if self.reverse_edges:
            zero = torch.zeros_like(w)
            w = torch.cat([torch.cat([w, zero, w], -1), torch.cat([zero, w, w], -1)], 0)
        return w

    def edge_features(self, values: Tensor, then: nn.Linear | None = None) -> Tensor:
        r""":math:`W_e\,\gamma_e(v) + c_e` of :meth:`edge_values` rows, or ``then`` of
        them, the two maps folded into one (:func:`folded_linear`)."""
        return fourier_linear(self._edge_projection, values, self.edge_proj, then)

    def _edge_projection(self, values: Tensor) -> Tensor:
        return gaussian_projection(values, self.edge_b)

    def no_edge(self, like: Tensor, then: nn.Linear | None = None) -> Tensor:
        """The features of an unconnected pair, :math:`v = 0` (of ``like``'s dtype and
        device; ``then`` of them with ``then``)."""
        return self.edge_features(like.new_zeros(1, self.edge_b.shape[1]), then)[0]
