"""Multi-head attention as message passing over the token graph.

Tokens are nodes. A target node i (a query position) receives one edge from every source
node j (a key/value position) it may attend to; a boolean mask removes edges, a float
mask puts a bias on them, key padding removes the padded sources and causal attention
keeps j <= i. The message of edge (j -> i) is the value v_j, the aggregation is the edge
softmax of the scores <q_i, k_j> / sqrt(head_dim) + bias_ij followed by a weighted sum.
All heads run in one propagate: node features are (batch, tokens, heads, head_dim) with
the token axis as the node dimension, so the batch and the heads ride along as features.

A graph shared by every sample (no mask, a 2-D mask, causal) is built once per call,
not per sample (and cached when it depends on the lengths only); per-sample masks (key
padding, 3-D masks) make the disjoint union of the per-sample graphs.

Two execution paths: the reference path sends one message per edge of the edge list and
normalizes with PyG's segment softmax; the fused path (default) treats the graph as a
dense adjacency, scores every (target, source) pair with one batched GEMM, masks the
missing edges with -inf and aggregates with a second GEMM.

The token graphs and masks are built by :mod:`modules.token_graph`; the Transformer
layers and stacks built from these twins live in :mod:`modules.transformer`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.utils import softmax

from modules.base import MessagePassingModule
from modules.linear import LinearAsGNN
from modules.token_graph import (
    TokenGraph,
    causal_bias,
    edge_list,
    float_mask,
    native_fast_path_possible,
)


# -- projections ---------------------------------------------------------------------------
class _ProjectionAsGNN(LinearAsGNN):
    """A parameter-free LinearAsGNN given its weight rows at call time.

    ``nn.MultiheadAttention`` packs the q, k, v projections into one parameter
    (``in_proj_weight``); the twin keeps that parameter, so the state_dict is the same,
    and runs each projection (or the packed one, for self-attention) as this layer.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        MessagePassingModule.__init__(self, aggr="sum", node_dim=-1)
        self.in_features = in_features
        self.out_features = out_features
        self.weight: Tensor | None = None
        self.bias: Tensor | None = None

    def forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        self.weight, self.bias = weight, bias
        try:
            return super().forward(input)
        finally:
            self.weight = self.bias = None

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


# -- attention -----------------------------------------------------------------------------
class MultiHeadCrossAttentionAsGNN(MessagePassingModule):
    r"""Twin of :class:`torch.nn.MultiheadAttention`, message passing over the token graph
    (queries and keys may differ).

    Query tokens are the target nodes, key/value tokens the source nodes (the same nodes
    for self-attention); ``bias_k``/``bias_v`` and ``add_zero_attn`` add source nodes
    connected to every target. Target :math:`i` receives an edge from every source
    :math:`j` it may attend to: a boolean mask or key padding removes edges, a float mask
    puts the bias :math:`m_{ij}` on them. The message is the value :math:`\mathbf{v}_j`,
    the aggregation the edge softmax of the scores followed by a weighted sum, per head
    :math:`h` (heads ride along as a feature dimension), then the output projection:

    .. math::
        \alpha^{h}_{ij} = \operatorname{softmax}_{j \to i} \Big(
        \frac{\langle \mathbf{q}^h_i, \mathbf{k}^h_j \rangle}{\sqrt{d}}
        + m_{ij} \Big), \qquad
        \mathbf{y}_i = W_o \big\Vert_h \sum_{j \to i} \alpha^{h}_{ij} \,
        \mathbf{v}^h_j + \mathbf{b}_o

    with :math:`\mathbf{q}, \mathbf{k}, \mathbf{v}` the :class:`LinearAsGNN`
    projections of the inputs and :math:`d` the head dimension. Same arguments,
    parameters (``in_proj_weight``/``in_proj_bias`` or ``q_proj_weight``/
    ``k_proj_weight``/``v_proj_weight`` when kdim/vdim differ, ``out_proj``,
    ``bias_k``/``bias_v``), initialization and forward as torch. Fully masked rows follow
    torch: NaN where torch's math path or its native fast path runs
    (``need_weights=True``, or eval-mode batch-first self-attention), zero attention where
    torch runs ``scaled_dot_product_attention``.

    Args:
        embed_dim (int): Token features :math:`E`.
        num_heads (int): Attention heads :math:`H` (:math:`E` divisible by :math:`H`).
        dropout (float, optional): Dropout on the attention weights. (default: ``0.0``)
        bias (bool, optional): Biases of the projections. (default: ``True``)
        add_bias_kv (bool, optional): Learned extra key/value source node.
            (default: ``False``)
        add_zero_attn (bool, optional): Zero extra key/value source node.
            (default: ``False``)
        kdim (int, optional): Key features. (default: ``embed_dim``)
        vdim (int, optional): Value features. (default: ``embed_dim``)
        batch_first (bool, optional): Inputs and outputs as (batch, tokens, features).
            (default: ``False``)
        device (torch.device, optional): Device of the parameters.
        dtype (torch.dtype, optional): Data type of the parameters.

    Shapes:
        - **input:** query :math:`(L, N, E)`, key :math:`(S, N, E_k)`, value
          :math:`(S, N, E_v)` (batch first with ``batch_first``, or unbatched
          :math:`(L, E)`); optional ``key_padding_mask`` :math:`(N, S)`, ``attn_mask``
          :math:`(L, S)` or :math:`(N H, L, S)`
        - **output:** attention output :math:`(L, N, E)`, and with ``need_weights`` the
          weights :math:`(N, L, S)` (averaged over heads) or :math:`(N, H, L, S)`
    """

    native_type = nn.MultiheadAttention

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False,
                 kdim: int | None = None, vdim: int | None = None, batch_first: bool = False,
                 device: Any = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(aggr="sum", node_dim=-3)
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"embed_dim and num_heads must be greater than 0, got "
                             f"embed_dim={embed_dim} and num_heads={num_heads} instead")
        if embed_dim % num_heads != 0:
            raise AssertionError(f"embed_dim must be divisible by num_heads, got "
                                 f"embed_dim={embed_dim} and num_heads={num_heads}")
        factory = {"device": device, "dtype": dtype}
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.head_dim = embed_dim // num_heads
        e = embed_dim
        if self._qkv_same_embed_dim:
            self.in_proj_weight = nn.Parameter(torch.empty((3 * e, e), **factory))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = nn.Parameter(torch.empty((e, e), **factory))
            self.k_proj_weight = nn.Parameter(torch.empty((e, self.kdim), **factory))
            self.v_proj_weight = nn.Parameter(torch.empty((e, self.vdim), **factory))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * e, **factory))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = LinearAsGNN(e, e, bias=bias, **factory)
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.empty((1, 1, e), **factory))
            self.bias_v = nn.Parameter(torch.empty((1, 1, e), **factory))
        else:
            self.bias_k = self.bias_v = None
        self.add_zero_attn = add_zero_attn
        # Packed q/k/v GEMMs where inputs coincide, as torch's _in_projection_packed does.
        if self._qkv_same_embed_dim:
            self.in_proj = _ProjectionAsGNN(e, 3 * e)
            self.kv_proj = _ProjectionAsGNN(e, 2 * e)
        self.q_proj = _ProjectionAsGNN(e, e)
        self.k_proj = _ProjectionAsGNN(self.kdim, e)
        self.v_proj = _ProjectionAsGNN(self.vdim, e)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        nn.MultiheadAttention._reset_parameters(self)

    @staticmethod
    def native_kwargs(module: nn.Module) -> dict[str, Any]:
        return {"embed_dim": module.embed_dim, "num_heads": module.num_heads,
                "dropout": module.dropout, "bias": module.in_proj_bias is not None,
                "add_bias_kv": module.bias_k is not None,
                "add_zero_attn": module.add_zero_attn, "kdim": module.kdim,
                "vdim": module.vdim, "batch_first": module.batch_first}

    def extra_repr(self) -> str:
        s = f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.in_proj_bias is None:
            s += ", bias=False"
        if self.bias_k is not None:
            s += ", add_bias_kv=True"
        if self.add_zero_attn:
            s += ", add_zero_attn=True"
        if not self._qkv_same_embed_dim:
            s += f", kdim={self.kdim}, vdim={self.vdim}"
        if self.batch_first:
            s += ", batch_first=True"
        return s

    def __repr__(self) -> str:
        return nn.Module.__repr__(self)

    # -- forward -----------------------------------------------------------------------
    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                key_padding_mask: Tensor | None = None, need_weights: bool = True,
                attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        fast = self._native_fast_path(query, key, value, key_padding_mask, attn_mask)
        out, weights = self.attend(query, key, value, key_padding_mask, need_weights,
                                   attn_mask, average_attn_weights, is_causal,
                                   nan_rows=need_weights or fast)
        if fast and query.numel() == 0:
            weights = None  # torch's native kernel returns no weights for an empty input
        return out, weights

    def attend(self, query: Tensor, key: Tensor, value: Tensor,
               key_padding_mask: Tensor | None = None, need_weights: bool = True,
               attn_mask: Tensor | None = None, average_attn_weights: bool = True,
               is_causal: bool = False, nan_rows: bool = True) -> tuple[Tensor, Tensor | None]:
        """``forward`` with the fully-masked-row convention chosen by the caller.

        ``nan_rows``: a target with no edge gets NaN (torch's math and native paths) or
        zero attention (``scaled_dot_product_attention``).
        """
        batched = self._check_inputs(query, key, value, key_padding_mask, attn_mask)
        dtype = query.dtype
        key_padding_mask = float_mask(key_padding_mask, "key_padding_mask", dtype)
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint. You may use "
                               "the Transformer module method "
                               "`generate_square_subsequent_mask` to create this mask.")
        # torch trusts the hint (and skips attn_mask) exactly in this case.
        causal = is_causal and key_padding_mask is None and not need_weights
        attn_mask = None if causal else float_mask(attn_mask, "attn_mask", dtype)
        # Which inputs coincide decides the packed projections; read it before reshaping.
        packing = "qkv" if query is key and key is value else "kv" if key is value else ""
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        seq_first = not (batched and self.batch_first)
        q, k, v = self._project(query, key, value, packing)
        q, k, v = (self._heads(x, seq_first) for x in (q, k, v))
        k, v = self._extra_sources(k, v)
        bsz, tgt_len, src_len = q.shape[0], q.shape[1], k.shape[1]
        bias = self._dense_bias(attn_mask, key_padding_mask, causal, bsz, tgt_len, src_len,
                                q.dtype, q.device)
        out, weights = self._propagate(q, k, v, bias, nan_rows, need_weights)
        # (N, L, H, D) -> (L, N, E), the output projection, then batch-first as a transposed
        # view, as torch returns it: a following dropout draws its mask in memory order.
        out = self.out_proj(out.transpose(0, 1).reshape(tgt_len, bsz, self.embed_dim))
        if batched and self.batch_first:
            out = out.transpose(0, 1)
        if not batched:
            out = out.squeeze(1)
        if weights is not None:
            if average_attn_weights:
                weights = weights.mean(dim=1)
            if not batched:
                weights = weights.squeeze(0)
        return out, weights

    def _native_fast_path(self, query: Tensor, key: Tensor, value: Tensor,
                          key_padding_mask: Tensor | None, attn_mask: Tensor | None) -> bool:
        """Whether torch would run its native fast path (it gives NaN on fully masked rows)."""
        if ((attn_mask is not None and torch.is_floating_point(attn_mask))
                or (key_padding_mask is not None and torch.is_floating_point(key_padding_mask))):
            return False
        if query.dim() != 3 or query is not key or key is not value:
            return False
        if (self.training or not self.batch_first or self.in_proj_weight is None
                or self.in_proj_bias is None or query.dtype != self.in_proj_weight.dtype
                or self.num_heads % 2 != 0 or self.bias_k is not None or self.add_zero_attn):
            return False
        return native_fast_path_possible((query, self.in_proj_weight, self.in_proj_bias,
                                          self.out_proj.weight, self.out_proj.bias))

    def _check_inputs(self, query: Tensor, key: Tensor, value: Tensor,
                      key_padding_mask: Tensor | None, attn_mask: Tensor | None) -> bool:
        name = type(self).__name__
        if query.dim() not in (2, 3):
            raise AssertionError(f"{name}: query should be unbatched 2D or batched 3D tensor "
                                 f"but received {query.dim()}-D query tensor")
        batched = query.dim() == 3
        if key.dim() != query.dim() or value.dim() != query.dim():
            raise AssertionError(
                f"{name}: for {query.dim()}-D `query`, expected `key` and `value` to be "
                f"{query.dim()}-D but found {key.dim()}-D and {value.dim()}-D tensors")
        for tensor, what, dim in ((query, "query", self.embed_dim), (key, "key", self.kdim),
                                  (value, "value", self.vdim)):
            if tensor.shape[-1] != dim:
                raise AssertionError(f"{name}: was expecting embedding dimension of {dim} "
                                     f"for {what}, but got {tensor.shape[-1]} "
                                     f"({what} shape {tuple(tensor.shape)})")
        seq = 1 if batched and self.batch_first else 0
        if key.shape[:-1] != value.shape[:-1]:
            raise AssertionError(f"{name}: key's sequence and batch dims "
                                 f"{tuple(key.shape[:-1])} do not match value's "
                                 f"{tuple(value.shape[:-1])}")
        if batched and query.shape[1 - seq] != key.shape[1 - seq]:
            raise AssertionError(f"{name}: expected key and value of batch size "
                                 f"{query.shape[1 - seq]} (the query's), got "
                                 f"{key.shape[1 - seq]}")
        tgt_len, src_len = query.shape[seq], key.shape[seq]
        bsz = query.shape[1 - seq] if batched else 1
        if key_padding_mask is not None:
            expected = (bsz, src_len) if batched else (src_len,)
            if tuple(key_padding_mask.shape) != expected:
                raise AssertionError(f"{name}: expected key_padding_mask of shape {expected}, "
                                     f"got {tuple(key_padding_mask.shape)}")
        if attn_mask is not None:
            expected_2d = (tgt_len, src_len)
            expected_3d = (bsz * self.num_heads, tgt_len, src_len)
            if tuple(attn_mask.shape) not in (expected_2d, expected_3d):
                raise RuntimeError(f"{name}: expected attn_mask of shape {expected_2d} or "
                                   f"{expected_3d}, got {tuple(attn_mask.shape)}")
        return batched

    def _project(self, query: Tensor, key: Tensor, value: Tensor,
                 packing: str) -> tuple[Tensor, ...]:
        """q, k, v in the input layout: one packed GEMM for the inputs that coincide."""
        e = self.embed_dim
        b = self.in_proj_bias
        b_q, b_k, b_v = (None, None, None) if b is None else b.chunk(3)
        if not self._qkv_same_embed_dim:
            return (self.q_proj(query, self.q_proj_weight, b_q),
                    self.k_proj(key, self.k_proj_weight, b_k),
                    self.v_proj(value, self.v_proj_weight, b_v))
        w = self.in_proj_weight
        if packing == "qkv":
            return self.in_proj(query, w, b).unflatten(-1, (3, e)).unbind(-2)
        q = self.q_proj(query, w[:e], b_q)
        if packing == "kv":
            kv = self.kv_proj(key, w[e:], None if b is None else b[e:])
            return (q, *kv.unflatten(-1, (2, e)).unbind(-2))
        return q, self.k_proj(key, w[e:2 * e], b_k), self.v_proj(value, w[2 * e:], b_v)

    def _heads(self, x: Tensor, seq_first: bool) -> Tensor:
        """(T, N, E) or (N, T, E) -> node features (N, T, H, D), a view."""
        x = x.unflatten(-1, (self.num_heads, self.head_dim))
        return x.transpose(0, 1) if seq_first else x

    def _extra_sources(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """bias_k/bias_v, then a zero key/value: source nodes appended after the tokens."""
        n, _, h, d = k.shape
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.view(1, 1, h, d).expand(n, 1, h, d)], dim=1)
            v = torch.cat([v, self.bias_v.view(1, 1, h, d).expand(n, 1, h, d)], dim=1)
        if self.add_zero_attn:
            k = torch.cat([k, k.new_zeros(n, 1, h, d)], dim=1)
            v = torch.cat([v, v.new_zeros(n, 1, h, d)], dim=1)
        return k, v

    def _dense_bias(self, attn_mask: Tensor | None, key_padding_mask: Tensor | None,
                    causal: bool, bsz: int, tgt_len: int, src_len: int, dtype: torch.dtype,
                    device: torch.device) -> Tensor | None:
        """Edge biases of the graph as a dense (1 or N, 1 or H, L, S) tensor, -inf = no edge."""
        if causal:
            return self.cached(("causal", tgt_len, src_len, dtype, device),
                               lambda: causal_bias(tgt_len, src_len, dtype, device))[None, None]
        extra = src_len - (key_padding_mask.shape[-1] if key_padding_mask is not None
                           else attn_mask.shape[-1] if attn_mask is not None else src_len)
        bias = None
        if attn_mask is not None:
            bias = (attn_mask.view(1, 1, *attn_mask.shape) if attn_mask.dim() == 2
                    else attn_mask.reshape(bsz, self.num_heads, *attn_mask.shape[1:]))
            bias = F.pad(bias, (0, extra)) if extra else bias
        if key_padding_mask is not None:
            padding = key_padding_mask.view(bsz, 1, 1, key_padding_mask.shape[-1])
            padding = F.pad(padding, (0, extra)) if extra else padding
            bias = padding if bias is None else bias + padding
        return bias

    def graph(self, tgt_len: int, src_len: int | None = None,
              key_padding_mask: Tensor | None = None, attn_mask: Tensor | None = None,
              is_causal: bool = False) -> Data:
        """The token graph of one call: sources are keys/values, targets are queries.

        ``edge_index`` (2, E) holds (source, target) pairs; ``edge_attr`` (E, 1 or
        num_heads) the edge biases: the float mask values, and -inf for the heads a 3-D
        mask hides an edge from (absent when the masks are boolean and shared by heads).
        ``batch_size`` is 1 when the graph is shared by every sample, else N (a disjoint
        union: source node n*S + j, target node n*L + i). Extra sources (``bias_k``/
        ``bias_v``, ``add_zero_attn``) are the nodes S, S+1 after the tokens.
        """
        src_len = tgt_len if src_len is None else src_len
        device = self.out_proj.weight.device
        dtype = self.out_proj.weight.dtype
        bsz = 1
        if key_padding_mask is not None and key_padding_mask.dim() == 2:
            bsz = key_padding_mask.shape[0]
        elif attn_mask is not None and attn_mask.dim() == 3:
            bsz = attn_mask.shape[0] // self.num_heads
        has_float = any(m is not None and torch.is_floating_point(m)
                        for m in (key_padding_mask, attn_mask))
        if key_padding_mask is not None:
            key_padding_mask = float_mask(key_padding_mask, "key_padding_mask", dtype)
            key_padding_mask = key_padding_mask.to(device).reshape(-1, src_len)
        if attn_mask is not None:
            attn_mask = float_mask(attn_mask, "attn_mask", dtype).to(device)
        causal = is_causal and attn_mask is None
        total = src_len + (self.bias_k is not None) + self.add_zero_attn
        bias = self._dense_bias(attn_mask, key_padding_mask, causal, bsz, tgt_len, total,
                                dtype, device)
        g = edge_list(bias, tgt_len, total, device)
        per_head = bias is not None and bias.shape[1] > 1
        return Data(edge_index=g.edge_index,
                    edge_attr=g.edge_bias if has_float or per_head else None,
                    num_src_nodes=g.batch_size * total, num_dst_nodes=g.batch_size * tgt_len,
                    num_nodes=g.batch_size * total, batch_size=g.batch_size,
                    num_heads=self.num_heads)

    # -- message passing ---------------------------------------------------------------
    def _dense_adjacency(self, tgt_len: int, src_len: int, device: torch.device) -> Tensor:
        def build() -> Tensor:
            # Every target row holds one dense row of source edges (a hybrid sparse-dense
            # adjacency, values a stride-0 view); masked edges live in ``edge_bias``.
            return torch.sparse_coo_tensor(
                torch.arange(tgt_len, device=device)[None, :],
                torch.ones((), dtype=torch.bool, device=device).expand(tgt_len, src_len),
                size=(tgt_len, src_len), is_coalesced=True, check_invariants=False)
        return self.cached(("dense", tgt_len, src_len, device), build)

    def _propagate(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None,
                   nan_rows: bool, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """Attention over the token graph: node features (N, T, H, D) in and out."""
        bsz, tgt_len, heads, _ = q.shape
        src_len = k.shape[1]
        if bsz * tgt_len == 0:  # no target node: torch's empty result, zero gradients
            out = q.new_zeros(bsz, tgt_len, heads, self.head_dim) + (q.sum() + k.sum()
                                                                     + v.sum()) * 0
            return out, q.new_zeros(bsz, heads, tgt_len, src_len) if need_weights else None
        q = q * math.sqrt(1.0 / float(self.head_dim))
        empty = None
        if bias is not None:
            # (B, H, L): targets without any edge
            rows = bias.isneginf().all(dim=-1).expand(-1, -1, tgt_len)
            if bool(rows.any()):
                empty = rows
                if not nan_rows:  # keep the softmax finite; update() zeroes these rows
                    bias = bias.masked_fill(rows.unsqueeze(-1), 0.0)
        fill = float("nan") if nan_rows else 0.0
        if self.fused:
            out = self.propagate(self._dense_adjacency(tgt_len, src_len, q.device), q=q, k=k,
                                 v=v, edge_bias=bias,
                                 empty_rows=None if empty is None else empty.permute(0, 2, 1),
                                 fill_value=fill)
            weights = self._alpha
        else:
            g = (edge_list(bias, tgt_len, src_len, q.device) if bias is not None else
                 self.cached(("edges", tgt_len, src_len, q.device),
                             lambda: edge_list(None, tgt_len, src_len, q.device)))
            if g.batch_size > 1:
                q, k, v = (x.reshape(1, x.shape[0] * x.shape[1], heads, x.shape[-1])
                           for x in (q, k, v))
            rows = None
            if empty is not None:
                rows = empty.permute(0, 2, 1)  # (B, L, H), as the node features
                rows = (rows.reshape(1, bsz * tgt_len, rows.shape[-1]) if g.batch_size > 1
                        else rows)
            out = self.propagate(g.edge_index, q=q, k=k, v=v, edge_bias=g.edge_bias,
                                 empty_rows=rows, fill_value=fill,
                                 size=(g.batch_size * src_len, g.batch_size * tgt_len))
            out = out.view(bsz, tgt_len, heads, self.head_dim)
            weights = self._edge_weights(self._alpha, g, bsz, empty, fill) if need_weights \
                else None
        self._alpha = None
        return out, weights if need_weights else None

    def message(self, q_i: Tensor, k_j: Tensor, v_j: Tensor, edge_bias: Tensor | None,
                index: Tensor, size_i: int) -> Tensor:
        score = (q_i * k_j).sum(dim=-1)  # (B, E, H)
        if edge_bias is not None:
            score = score + edge_bias
        alpha = softmax(score, index, num_nodes=size_i, dim=-2)
        if self.training and self.dropout > 0:
            alpha = F.dropout(alpha, p=self.dropout)
        self._alpha = alpha
        return v_j * alpha.unsqueeze(-1)

    def message_and_aggregate(self, adj_t: Tensor, q: Tensor, k: Tensor, v: Tensor,
                              edge_bias: Tensor | None) -> Tensor:
        scores = torch.matmul(q.transpose(1, 2), k.permute(0, 2, 3, 1))  # (N, H, L, S)
        if edge_bias is not None:
            scores = scores + edge_bias
        alpha = scores.softmax(dim=-1)
        if self.training and self.dropout > 0:
            alpha = F.dropout(alpha, p=self.dropout)
        self._alpha = alpha
        return torch.matmul(alpha, v.transpose(1, 2)).transpose(1, 2)

    def update(self, inputs: Tensor, empty_rows: Tensor | None, fill_value: float) -> Tensor:
        if empty_rows is None:
            return inputs
        return inputs.masked_fill(empty_rows.unsqueeze(-1), fill_value)

    @staticmethod
    def _edge_weights(alpha: Tensor, g: TokenGraph, bsz: int, empty: Tensor | None,
                      fill: float) -> Tensor:
        """Per-edge attention (B, E, H) scattered to torch's dense (N, H, L, S) weights."""
        b, _, heads = alpha.shape
        src, dst = g.edge_index
        flat = dst * g.src_len + src % g.src_len
        dense = alpha.new_zeros(b, heads, bsz // b * g.tgt_len * g.src_len)
        dense = dense.index_copy(2, flat, alpha.transpose(1, 2))
        if b == 1 and bsz > 1:
            dense = dense.view(heads, bsz, g.tgt_len, g.src_len).transpose(0, 1)
        else:
            dense = dense.view(bsz, heads, g.tgt_len, g.src_len)
        if empty is not None:
            dense = dense.masked_fill(empty.unsqueeze(-1), fill)
        return dense


class MultiHeadSelfAttentionAsGNN(MultiHeadCrossAttentionAsGNN):
    r"""Self-attention twin of :class:`torch.nn.MultiheadAttention`: ``forward(x, ...)``.

    Key and value default to the query: the token graph then connects the tokens of a
    sequence among themselves (target :math:`i`, sources :math:`j` allowed by the masks)
    and q, k, v come from one packed GEMM; message and aggregation as in
    :class:`MultiHeadCrossAttentionAsGNN`:

    .. math::
        \mathbf{y}_i = W_o \big\Vert_h \sum_{j \to i}
        \operatorname{softmax}_{j \to i}\Big(
        \frac{\langle \mathbf{q}^h_i, \mathbf{k}^h_j \rangle}{\sqrt{d}} + m_{ij}\Big)
        \, \mathbf{v}^h_j + \mathbf{b}_o

    Passing key and value gives the general (cross-attention) behaviour.

    Args:
        embed_dim, num_heads, ...: As :class:`MultiHeadCrossAttentionAsGNN`.

    Shapes:
        - **input:** :math:`(L, N, E)` (or :math:`(N, L, E)` with ``batch_first``, or
          :math:`(L, E)`), masks as :class:`MultiHeadCrossAttentionAsGNN`
        - **output:** :math:`(L, N, E)` and the optional weights :math:`(N, L, L)`
    """

    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None,
                key_padding_mask: Tensor | None = None, need_weights: bool = True,
                attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        key = query if key is None else key
        value = key if value is None else value
        return super().forward(query, key, value, key_padding_mask, need_weights, attn_mask,
                               average_attn_weights, is_causal)
