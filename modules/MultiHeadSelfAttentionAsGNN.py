"""Multi-head attention and Transformer layers as message passing over the token graph.

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
"""

from __future__ import annotations

import copy
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.utils import softmax

from modules.base import MessagePassingModule, _copy_state
from modules.equivalence import Case, run_check
from modules.MLPAsGNN import LinearAsGNN

# torch's TransformerEncoder fast path (the native side of a check) warns on every call.
warnings.filterwarnings("ignore", message="The PyTorch API of nested tensors is in prototype")

_NEG_INF = float("-inf")
_FAST_PATH_DEVICES = ("cpu", "cuda", "xpu")


# -- masks and graphs ----------------------------------------------------------------------
def _float_mask(mask: Tensor | None, name: str, dtype: torch.dtype) -> Tensor | None:
    """torch's mask convention as edge biases: bool True -> -inf (no edge), float -> bias."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros_like(mask, dtype=dtype).masked_fill_(mask, _NEG_INF)
    if not torch.is_floating_point(mask):
        raise AssertionError(f"only bool and floating types of {name} are supported, "
                             f"got {mask.dtype}")
    return mask.to(dtype)


def _causal_bias(tgt_len: int, src_len: int, dtype: torch.dtype,
                 device: torch.device) -> Tensor:
    """(L, S) bias keeping the edges j <= i."""
    return torch.full((tgt_len, src_len), _NEG_INF, dtype=dtype, device=device).triu_(1)


@dataclass(frozen=True)
class TokenGraph:
    """Edge-list form of one attention graph.

    ``batch_size`` is 1 when the graph is shared by every sample (node ids are token
    positions), else the number of samples of a disjoint union (source node n*S + j,
    target node n*L + i). ``edge_bias`` (E, 1 or num_heads) holds the float mask values
    (and -inf for a head a 3-D mask hides the edge from).
    """

    edge_index: Tensor
    edge_bias: Tensor | None
    batch_size: int
    tgt_len: int
    src_len: int


def _edge_list(bias: Tensor | None, tgt_len: int, src_len: int,
               device: torch.device) -> TokenGraph:
    """Edges of a dense bias (B, H, L, S): those that are not -inf in every head."""
    if bias is None:
        dst, src = torch.meshgrid(torch.arange(tgt_len, device=device),
                                  torch.arange(src_len, device=device), indexing="ij")
        return TokenGraph(torch.stack([src.reshape(-1), dst.reshape(-1)]), None, 1,
                          tgt_len, src_len)
    bias = bias.expand(-1, -1, tgt_len, src_len)  # key padding broadcasts over targets
    keep = ~bias.isneginf().all(dim=1)  # (B, L, S)
    n, i, j = keep.nonzero(as_tuple=True)
    edge_bias = bias.permute(0, 2, 3, 1)[n, i, j]  # (E, H)
    edge_index = torch.stack([n * src_len + j, n * tgt_len + i])
    return TokenGraph(edge_index, edge_bias, bias.shape[0], tgt_len, src_len)


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
    r"""Twin of :class:`torch.nn.MultiheadAttention` (queries and keys may differ).

    Same arguments, parameters (``in_proj_weight``/``in_proj_bias`` or
    ``q_proj_weight``/``k_proj_weight``/``v_proj_weight`` when kdim/vdim differ,
    ``out_proj``, ``bias_k``/``bias_v``), initialization and forward as torch. The
    projections are :class:`LinearAsGNN`; attention is one propagate over the token graph
    (see the module docstring); ``bias_k``/``bias_v`` and ``add_zero_attn`` are extra
    source nodes connected to every target.

    Fully masked rows follow torch: NaN where torch's math path or its native fast path
    runs (``need_weights=True``, or eval-mode batch-first self-attention), zero attention
    where torch runs ``scaled_dot_product_attention``.
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
        nan_rows = need_weights or self._native_fast_path(query, key, value,
                                                          key_padding_mask, attn_mask)
        return self.attend(query, key, value, key_padding_mask, need_weights, attn_mask,
                           average_attn_weights, is_causal, nan_rows=nan_rows)

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
        key_padding_mask = _float_mask(key_padding_mask, "key_padding_mask", dtype)
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint. You may use "
                               "the Transformer module method "
                               "`generate_square_subsequent_mask` to create this mask.")
        # torch trusts the hint (and skips attn_mask) exactly in this case.
        causal = is_causal and key_padding_mask is None and not need_weights
        attn_mask = None if causal else _float_mask(attn_mask, "attn_mask", dtype)
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
        if not torch.backends.mha.get_fastpath_enabled() or query.dim() != 3:
            return False
        if query is not key or key is not value or self.training or not self.batch_first:
            return False
        if (self.in_proj_weight is None or self.in_proj_bias is None
                or query.dtype != self.in_proj_weight.dtype or self.num_heads % 2 != 0
                or self.bias_k is not None or self.add_zero_attn
                or torch.is_autocast_enabled()):
            return False
        args = (query, self.in_proj_weight, self.in_proj_bias, self.out_proj.weight,
                self.out_proj.bias)
        if any(a is not None and a.device.type not in _FAST_PATH_DEVICES for a in args):
            return False
        return not (torch.is_grad_enabled()
                    and any(a is not None and a.requires_grad for a in args))

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
                               lambda: _causal_bias(tgt_len, src_len, dtype, device))[None, None]
        extra = src_len - (key_padding_mask.shape[-1] if key_padding_mask is not None
                           else attn_mask.shape[-1] if attn_mask is not None else src_len)
        bias = None
        if attn_mask is not None:
            bias = (attn_mask.view(1, 1, *attn_mask.shape) if attn_mask.dim() == 2
                    else attn_mask.reshape(bsz, self.num_heads, *attn_mask.shape[1:]))
            bias = F.pad(bias, (0, extra)) if extra else bias
        if key_padding_mask is not None:
            padding = key_padding_mask.view(bsz, 1, 1, -1)
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
            key_padding_mask = _float_mask(key_padding_mask, "key_padding_mask", dtype)
            key_padding_mask = key_padding_mask.to(device).reshape(-1, src_len)
        if attn_mask is not None:
            attn_mask = _float_mask(attn_mask, "attn_mask", dtype).to(device)
        causal = is_causal and attn_mask is None
        total = src_len + (self.bias_k is not None) + self.add_zero_attn
        bias = self._dense_bias(attn_mask, key_padding_mask, causal, bsz, tgt_len, total,
                                dtype, device)
        g = _edge_list(bias, tgt_len, total, device)
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
            g = (_edge_list(bias, tgt_len, src_len, q.device) if bias is not None else
                 self.cached(("edges", tgt_len, src_len, q.device),
                             lambda: _edge_list(None, tgt_len, src_len, q.device)))
            if g.batch_size > 1:
                q, k, v = (x.reshape(1, -1, heads, x.shape[-1]) for x in (q, k, v))
            rows = None
            if empty is not None:
                rows = empty.permute(0, 2, 1)  # (B, L, H), as the node features
                rows = rows.reshape(1, -1, rows.shape[-1]) if g.batch_size > 1 else rows
            out = self.propagate(g.edge_index, q=q, k=k, v=v, edge_bias=g.edge_bias,
                                 empty_rows=rows, fill_value=fill,
                                 size=(g.batch_size * src_len, g.batch_size * tgt_len))
            out = out.view(bsz, tgt_len, heads, -1)
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
    """Self-attention twin of :class:`torch.nn.MultiheadAttention`: ``forward(x, ...)``.

    Key and value default to the query, the token graph then connects the tokens of a
    sequence among themselves and q, k, v come from one packed GEMM. Passing key and
    value gives the general (cross-attention) behaviour.
    """

    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None,
                key_padding_mask: Tensor | None = None, need_weights: bool = True,
                attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        key = query if key is None else key
        value = key if value is None else value
        return super().forward(query, key, value, key_padding_mask, need_weights, attn_mask,
                               average_attn_weights, is_causal)


# -- Transformer layers --------------------------------------------------------------------
def _activation_fn(activation: str | Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    if not isinstance(activation, str):
        return activation
    if activation == "relu":
        return F.relu
    if activation == "gelu":
        return F.gelu
    raise RuntimeError(f"activation should be relu/gelu, not {activation}")


def _relu_or_gelu(activation: Callable[[Tensor], Tensor]) -> int:
    if activation is F.relu or isinstance(activation, nn.ReLU):
        return 1
    if activation is F.gelu or isinstance(activation, nn.GELU):
        return 2
    return 0


def _activation_of(layer: nn.Module) -> Callable[[Tensor], Tensor]:
    # A deep-copied nn.TransformerDecoderLayer shadows its activation module with F.relu
    # (its __setstate__ looks for the module in the wrong place); the module is the truth.
    module = layer._modules.get("activation")
    return layer.activation if module is None else module


def _copy_node_wise(src: nn.Module, dst: nn.Module, names: Sequence[str]) -> None:
    """Node-wise modules (norms, dropouts, activation) are the native ones: copy them."""
    for name in names:
        setattr(dst, name, copy.deepcopy(getattr(src, name)))


def _detect_is_causal_mask(mask: Tensor | None, is_causal: bool | None, size: int | None) -> bool:
    """torch's rule: the hint if given, else whether ``mask`` is the causal float mask."""
    if is_causal is not None or mask is None:
        return is_causal is True
    size = size if size is not None else mask.size(-2)
    causal = _causal_bias(size, size, mask.dtype, mask.device)
    return mask.size() == causal.size() and bool((mask == causal).all())


def _seq_len(src: Tensor, batch_first: bool) -> int:
    return src.size(0) if src.dim() == 2 else src.size(1 if batch_first else 0)


def _fast_path_masks(attn_mask: Tensor | None, key_padding_mask: Tensor | None, src: Tensor,
                     num_heads: int) -> tuple[Tensor | None, Tensor | None]:
    """torch's fused encoder layer merges both masks and reads any non-zero as masked."""
    if attn_mask is None:
        return None, None if key_padding_mask is None else key_padding_mask != 0
    if key_padding_mask is None:
        return attn_mask != 0, None
    bsz, seq_len = src.shape[:2]
    merged = (attn_mask.reshape(bsz, num_heads, seq_len, seq_len) if attn_mask.dim() == 3
              else attn_mask.view(1, 1, seq_len, seq_len))
    merged = merged + key_padding_mask.view(bsz, 1, 1, seq_len)
    return (merged != 0).expand(bsz, num_heads, -1, -1).reshape(-1, seq_len, seq_len), None


class _TransformerLayerTwin(nn.Module):
    """Conversion shared by the encoder and decoder layer twins: the native layer's
    arguments, its node-wise modules (norms, dropouts, activation) and its weights."""

    native_type: ClassVar[type[nn.Module]]
    _node_wise: ClassVar[tuple[str, ...]]

    @classmethod
    def from_native(cls, module: nn.Module) -> nn.Module:
        """The twin of an existing torch.nn layer, with its weights, device and dtype."""
        _check_native(cls, module)
        twin = cls(**cls.native_kwargs(module))
        _copy_node_wise(module, twin, cls._node_wise)
        twin.activation = copy.deepcopy(_activation_of(module))
        _copy_state(module, twin)
        return twin

    def to_native(self) -> nn.Module:
        """The torch.nn layer this module twins, with the same weights."""
        native = self.native_type(**self.native_kwargs(self))
        _copy_node_wise(self, native, self._node_wise)
        native.activation = copy.deepcopy(_activation_of(self))
        _copy_state(self, native)
        return native


class TransformerEncoderLayerAsGNN(_TransformerLayerTwin):
    """Twin of :class:`torch.nn.TransformerEncoderLayer`.

    Self-attention is :class:`MultiHeadSelfAttentionAsGNN`, the feed-forward block two
    :class:`LinearAsGNN`; layer norms, activation, dropout and the residual additions are
    node-wise updates (native modules). Same arguments, state_dict and forward as torch,
    including its eval-mode fast path's treatment of masks (fully masked rows give NaN,
    float masks are read as boolean there).
    """

    native_type = nn.TransformerEncoderLayer

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048,
                 dropout: float = 0.1,
                 activation: str | Callable[[Tensor], Tensor] = F.relu,
                 layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, device: Any = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.self_attn = MultiHeadSelfAttentionAsGNN(d_model, nhead, dropout=dropout,
                                                     bias=bias, batch_first=batch_first,
                                                     **factory)
        self.linear1 = LinearAsGNN(d_model, dim_feedforward, bias=bias, **factory)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = LinearAsGNN(dim_feedforward, d_model, bias=bias, **factory)
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = _activation_fn(activation)
        self.activation_relu_or_gelu = _relu_or_gelu(self.activation)

    @staticmethod
    def native_kwargs(module: nn.Module) -> dict[str, Any]:
        return {"d_model": module.self_attn.embed_dim, "nhead": module.self_attn.num_heads,
                "dim_feedforward": module.linear1.out_features,
                "dropout": module.dropout.p, "activation": _activation_of(module),
                "layer_norm_eps": module.norm1.eps,
                "batch_first": module.self_attn.batch_first, "norm_first": module.norm_first,
                "bias": module.linear1.bias is not None}

    _node_wise = ("norm1", "norm2", "dropout", "dropout1", "dropout2")

    def forward(self, src: Tensor, src_mask: Tensor | None = None,
                src_key_padding_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        src_key_padding_mask = _float_mask(src_key_padding_mask, "src_key_padding_mask",
                                           src.dtype)
        src_mask = _float_mask(src_mask, "src_mask", src.dtype)
        fast = self._native_fast_path(src)
        if fast:
            src_mask, src_key_padding_mask = _fast_path_masks(
                src_mask, src_key_padding_mask, src, self.self_attn.num_heads)
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal,
                                   fast)
            x = x + self._ff_block(self.norm2(x), fast)
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal,
                                              fast))
            x = self.norm2(x + self._ff_block(x, fast))
        return x

    def _sa_block(self, x: Tensor, attn_mask: Tensor | None,
                  key_padding_mask: Tensor | None, is_causal: bool, fast: bool) -> Tensor:
        if fast:
            x = self.self_attn.attend(x, x, x, key_padding_mask, False, attn_mask,
                                      is_causal=False, nan_rows=True)[0]
        else:
            x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                               need_weights=False, is_causal=is_causal)[0]
        return self.dropout1(x)

    def _ff_block(self, x: Tensor, fast: bool = False) -> Tensor:
        activation = self.activation
        if fast:  # torch's fused layer knows only exact GELU and ReLU (e.g. no tanh GELU)
            activation = F.gelu if self.activation_relu_or_gelu == 2 else F.relu
        x = self.linear2(self.dropout(activation(self.linear1(x))))
        return self.dropout2(x)

    def _native_fast_path(self, src: Tensor) -> bool:
        """Whether torch would run its fused encoder layer here."""
        sa = self.self_attn
        if (not torch.backends.mha.get_fastpath_enabled() or src.dim() != 3 or self.training
                or not sa.batch_first or sa.in_proj_bias is None
                or not sa._qkv_same_embed_dim or not self.activation_relu_or_gelu
                or self.norm1.eps != self.norm2.eps or sa.num_heads % 2 == 1
                or torch.is_autocast_enabled()):
            return False
        if any(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in self.modules()):
            return False
        args = [src, sa.in_proj_weight, sa.in_proj_bias, sa.out_proj.weight, sa.out_proj.bias,
                self.norm1.weight, self.norm1.bias, self.norm2.weight, self.norm2.bias,
                self.linear1.weight, self.linear1.bias, self.linear2.weight, self.linear2.bias]
        args = [a for a in args if a is not None]
        if any(a.device.type not in _FAST_PATH_DEVICES for a in args):
            return False
        return not (torch.is_grad_enabled() and any(a.requires_grad for a in args))


class TransformerDecoderLayerAsGNN(_TransformerLayerTwin):
    """Twin of :class:`torch.nn.TransformerDecoderLayer`.

    Self-attention over the target tokens (:class:`MultiHeadSelfAttentionAsGNN`), then
    attention from the target tokens to the memory tokens
    (:class:`MultiHeadCrossAttentionAsGNN`, a bipartite token graph), then the
    feed-forward block of :class:`LinearAsGNN`; norms, activation, dropout and residual
    additions are node-wise.
    """

    native_type = nn.TransformerDecoderLayer

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048,
                 dropout: float = 0.1,
                 activation: str | Callable[[Tensor], Tensor] = F.relu,
                 layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, device: Any = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.self_attn = MultiHeadSelfAttentionAsGNN(d_model, nhead, dropout=dropout,
                                                     batch_first=batch_first, bias=bias,
                                                     **factory)
        self.multihead_attn = MultiHeadCrossAttentionAsGNN(d_model, nhead, dropout=dropout,
                                                           batch_first=batch_first, bias=bias,
                                                           **factory)
        self.linear1 = LinearAsGNN(d_model, dim_feedforward, bias=bias, **factory)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = LinearAsGNN(dim_feedforward, d_model, bias=bias, **factory)
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.norm3 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = _activation_fn(activation)

    native_kwargs = staticmethod(TransformerEncoderLayerAsGNN.native_kwargs)

    _node_wise = ("norm1", "norm2", "norm3", "dropout", "dropout1", "dropout2", "dropout3")

    def forward(self, tgt: Tensor, memory: Tensor, tgt_mask: Tensor | None = None,
                memory_mask: Tensor | None = None, tgt_key_padding_mask: Tensor | None = None,
                memory_key_padding_mask: Tensor | None = None, tgt_is_causal: bool = False,
                memory_is_causal: bool = False) -> Tensor:
        x = tgt
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal)
            x = x + self._mha_block(self.norm2(x), memory, memory_mask,
                                    memory_key_padding_mask, memory_is_causal)
            x = x + self._ff_block(self.norm3(x))
        else:
            x = self.norm1(x + self._sa_block(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal))
            x = self.norm2(x + self._mha_block(x, memory, memory_mask, memory_key_padding_mask,
                                               memory_is_causal))
            x = self.norm3(x + self._ff_block(x))
        return x

    def _sa_block(self, x: Tensor, attn_mask: Tensor | None,
                  key_padding_mask: Tensor | None, is_causal: bool) -> Tensor:
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                           is_causal=is_causal, need_weights=False)[0]
        return self.dropout1(x)

    def _mha_block(self, x: Tensor, mem: Tensor, attn_mask: Tensor | None,
                   key_padding_mask: Tensor | None, is_causal: bool) -> Tensor:
        x = self.multihead_attn(x, mem, mem, attn_mask=attn_mask,
                                key_padding_mask=key_padding_mask, is_causal=is_causal,
                                need_weights=False)[0]
        return self.dropout2(x)

    def _ff_block(self, x: Tensor) -> Tensor:
        x = self.linear2(self.dropout(self.activation(self.linear1(x))))
        return self.dropout3(x)


def _check_native(cls: type, module: nn.Module) -> None:
    if not isinstance(module, cls.native_type):
        raise TypeError(f"{cls.__name__}.from_native expects {cls.native_type.__name__}, "
                        f"got {type(module).__name__}")


def _layer_twin(layer: nn.Module, twin_type: type) -> nn.Module:
    """The twin of a sub-module: ``twin_type`` for its native type, else ``to_gnn``."""
    if type(layer) is twin_type.native_type:
        return twin_type.from_native(layer)
    from modules.convert import to_gnn  # modules.convert imports this file

    return to_gnn(layer)


def _layer_native(layer: nn.Module) -> nn.Module:
    from modules.convert import to_native  # modules.convert imports this file

    return to_native(layer)


class TransformerEncoderAsGNN(nn.Module):
    """Twin of :class:`torch.nn.TransformerEncoder`: a stack of encoder layer twins.

    Mirrors torch's nested-tensor fast path (eval mode, batch-first, key padding
    only): the outputs at padded positions are zero before the final norm.
    """

    native_type = nn.TransformerEncoder

    def __init__(self, encoder_layer: nn.Module, num_layers: int, norm: nn.Module | None = None,
                 enable_nested_tensor: bool = True, mask_check: bool = True) -> None:
        super().__init__()
        encoder_layer = _layer_twin(encoder_layer, TransformerEncoderLayerAsGNN)
        self.layers = nn.ModuleList([copy.deepcopy(encoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.norm = norm
        self.enable_nested_tensor = enable_nested_tensor
        self.use_nested_tensor = enable_nested_tensor and self._nested_tensor_capable(
            encoder_layer)
        self.mask_check = mask_check

    @staticmethod
    def _nested_tensor_capable(layer: nn.Module) -> bool:
        """torch's constructor test for using nested tensors."""
        if not isinstance(layer, TransformerEncoderLayerAsGNN):
            return False
        sa = layer.self_attn
        return (not layer.norm_first and sa.batch_first and sa._qkv_same_embed_dim
                and sa.in_proj_bias is not None and bool(layer.activation_relu_or_gelu)
                and layer.norm1.eps == layer.norm2.eps and sa.num_heads % 2 == 0)

    @classmethod
    def from_native(cls, module: nn.Module) -> TransformerEncoderAsGNN:
        """The twin of an existing torch.nn encoder, with its weights, device and dtype."""
        _check_native(cls, module)
        twin = cls(module.layers[0], module.num_layers, copy.deepcopy(module.norm),
                   module.enable_nested_tensor, getattr(module, "mask_check", True))
        twin.layers = nn.ModuleList([_layer_twin(m, TransformerEncoderLayerAsGNN)
                                     for m in module.layers])
        twin.use_nested_tensor = getattr(module, "use_nested_tensor", False)
        twin.train(module.training)
        return twin

    def to_native(self) -> nn.TransformerEncoder:
        """The torch.nn encoder this module twins, with the same weights."""
        layers = [_layer_native(m) for m in self.layers]
        native = nn.TransformerEncoder(layers[0], self.num_layers, copy.deepcopy(self.norm),
                                       enable_nested_tensor=False, mask_check=self.mask_check)
        native.layers = nn.ModuleList(layers)
        native.enable_nested_tensor = self.enable_nested_tensor
        native.use_nested_tensor = self.use_nested_tensor
        native.train(self.training)
        return native

    def forward(self, src: Tensor, mask: Tensor | None = None,
                src_key_padding_mask: Tensor | None = None,
                is_causal: bool | None = None) -> Tensor:
        src_key_padding_mask = _float_mask(src_key_padding_mask, "src_key_padding_mask",
                                           src.dtype)
        mask = _float_mask(mask, "mask", src.dtype)
        first = self.layers[0]
        batch_first = first.self_attn.batch_first
        padded = None
        if self._nested_fast_path(src, mask, src_key_padding_mask):
            padded = src_key_padding_mask != 0
        is_causal = _detect_is_causal_mask(mask, is_causal, _seq_len(src, batch_first))
        output = src
        for layer in self.layers:
            output = layer(output, src_mask=mask, is_causal=is_causal,
                           src_key_padding_mask=src_key_padding_mask)
        if padded is not None:
            # torch runs the layers on nested tensors and pads them back with zeros.
            output = output.masked_fill(padded.unsqueeze(-1), 0.0)
        if self.norm is not None:
            output = self.norm(output)
        return output

    def _nested_fast_path(self, src: Tensor, mask: Tensor | None,
                          key_padding_mask: Tensor | None) -> bool:
        first = self.layers[0]
        if (not torch.backends.mha.get_fastpath_enabled() or not self.use_nested_tensor
                or first.training or src.dim() != 3 or key_padding_mask is None
                or mask is not None or torch.is_autocast_enabled()):
            return False
        if self.mask_check:
            valid = key_padding_mask == 0
            if not bool((valid[:, 1:] <= valid[:, :-1]).all()):  # not left-aligned
                return False
        sa = first.self_attn
        args = [src, sa.in_proj_weight, sa.in_proj_bias, sa.out_proj.weight, sa.out_proj.bias,
                first.norm1.weight, first.norm1.bias, first.norm2.weight, first.norm2.bias,
                first.linear1.weight, first.linear1.bias, first.linear2.weight,
                first.linear2.bias]
        args = [a for a in args if a is not None]
        if src.device.type not in _FAST_PATH_DEVICES:
            return False
        return not (torch.is_grad_enabled() and any(a.requires_grad for a in args))


class TransformerDecoderAsGNN(nn.Module):
    """Twin of :class:`torch.nn.TransformerDecoder`: a stack of decoder layer twins."""

    native_type = nn.TransformerDecoder

    def __init__(self, decoder_layer: nn.Module, num_layers: int,
                 norm: nn.Module | None = None) -> None:
        super().__init__()
        decoder_layer = _layer_twin(decoder_layer, TransformerDecoderLayerAsGNN)
        self.layers = nn.ModuleList([copy.deepcopy(decoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.norm = norm

    @classmethod
    def from_native(cls, module: nn.Module) -> TransformerDecoderAsGNN:
        """The twin of an existing torch.nn decoder, with its weights, device and dtype."""
        _check_native(cls, module)
        twin = cls(module.layers[0], module.num_layers, copy.deepcopy(module.norm))
        twin.layers = nn.ModuleList([_layer_twin(m, TransformerDecoderLayerAsGNN)
                                     for m in module.layers])
        twin.train(module.training)
        return twin

    def to_native(self) -> nn.TransformerDecoder:
        """The torch.nn decoder this module twins, with the same weights."""
        layers = [_layer_native(m) for m in self.layers]
        native = nn.TransformerDecoder(layers[0], self.num_layers, copy.deepcopy(self.norm))
        native.layers = nn.ModuleList(layers)
        native.train(self.training)
        return native

    def forward(self, tgt: Tensor, memory: Tensor, tgt_mask: Tensor | None = None,
                memory_mask: Tensor | None = None, tgt_key_padding_mask: Tensor | None = None,
                memory_key_padding_mask: Tensor | None = None,
                tgt_is_causal: bool | None = None, memory_is_causal: bool = False) -> Tensor:
        seq_len = _seq_len(tgt, self.layers[0].self_attn.batch_first)
        tgt_is_causal = _detect_is_causal_mask(tgt_mask, tgt_is_causal, seq_len)
        output = tgt
        for layer in self.layers:
            output = layer(output, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                           tgt_key_padding_mask=tgt_key_padding_mask,
                           memory_key_padding_mask=memory_key_padding_mask,
                           tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)
        if self.norm is not None:
            output = self.norm(output)
        return output


class TransformerAsGNN(nn.Module):
    """Twin of :class:`torch.nn.Transformer`: encoder and decoder stacks of twins."""

    native_type = nn.Transformer

    def __init__(self, d_model: int = 512, nhead: int = 8, num_encoder_layers: int = 6,
                 num_decoder_layers: int = 6, dim_feedforward: int = 2048,
                 dropout: float = 0.1,
                 activation: str | Callable[[Tensor], Tensor] = F.relu,
                 custom_encoder: nn.Module | None = None,
                 custom_decoder: nn.Module | None = None, layer_norm_eps: float = 1e-5,
                 batch_first: bool = False, norm_first: bool = False, bias: bool = True,
                 device: Any = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        layer_args = (d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps,
                      batch_first, norm_first, bias)
        if custom_encoder is not None:
            self.encoder = custom_encoder
        else:
            self.encoder = TransformerEncoderAsGNN(
                TransformerEncoderLayerAsGNN(*layer_args, **factory), num_encoder_layers,
                nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory))
        if custom_decoder is not None:
            self.decoder = custom_decoder
        else:
            self.decoder = TransformerDecoderAsGNN(
                TransformerDecoderLayerAsGNN(*layer_args, **factory), num_decoder_layers,
                nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory))
        self._reset_parameters()
        self.d_model = d_model
        self.nhead = nhead
        self.batch_first = batch_first

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    generate_square_subsequent_mask = staticmethod(nn.Transformer.generate_square_subsequent_mask)

    @classmethod
    def from_native(cls, module: nn.Module) -> TransformerAsGNN:
        """The twin of an existing torch.nn Transformer, with its weights, device and dtype."""
        _check_native(cls, module)
        twin = cls.__new__(cls)
        nn.Module.__init__(twin)
        twin.encoder = _layer_twin(module.encoder, TransformerEncoderAsGNN)
        twin.decoder = _layer_twin(module.decoder, TransformerDecoderAsGNN)
        twin.d_model, twin.nhead, twin.batch_first = (module.d_model, module.nhead,
                                                      module.batch_first)
        twin.train(module.training)
        return twin

    def to_native(self) -> nn.Transformer:
        """The torch.nn Transformer this module twins, with the same weights."""
        native = nn.Transformer.__new__(nn.Transformer)
        nn.Module.__init__(native)
        native.encoder = _layer_native(self.encoder)
        native.decoder = _layer_native(self.decoder)
        native.d_model, native.nhead, native.batch_first = (self.d_model, self.nhead,
                                                            self.batch_first)
        native.train(self.training)
        return native

    def forward(self, src: Tensor, tgt: Tensor, src_mask: Tensor | None = None,
                tgt_mask: Tensor | None = None, memory_mask: Tensor | None = None,
                src_key_padding_mask: Tensor | None = None,
                tgt_key_padding_mask: Tensor | None = None,
                memory_key_padding_mask: Tensor | None = None,
                src_is_causal: bool | None = None, tgt_is_causal: bool | None = None,
                memory_is_causal: bool = False) -> Tensor:
        batch = 0 if self.batch_first else 1
        if src.dim() == 3 and src.size(batch) != tgt.size(batch):
            raise RuntimeError(f"the batch number of src and tgt must be equal, got "
                               f"{src.size(batch)} and {tgt.size(batch)}")
        if src.size(-1) != self.d_model or tgt.size(-1) != self.d_model:
            raise RuntimeError(f"the feature number of src and tgt must be equal to d_model="
                               f"{self.d_model}, got {src.size(-1)} and {tgt.size(-1)}")
        memory = self.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask,
                              is_causal=src_is_causal)
        return self.decoder(tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                            tgt_key_padding_mask=tgt_key_padding_mask,
                            memory_key_padding_mask=memory_key_padding_mask,
                            tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)


# -- the original protocol -----------------------------------------------------------------
def _tokens(n: int, length: int, dim: int, batch_first: bool, gen: torch.Generator,
            dtype: torch.dtype, device: torch.device) -> Tensor:
    x = torch.randn((n, length, dim), generator=gen, dtype=dtype)
    x = x if batch_first else x.transpose(0, 1).contiguous()
    return x.to(device)


def _padding(n: int, length: int, gen: torch.Generator, device: torch.device) -> Tensor:
    """Right padding, at least one real token per sample (no fully masked row)."""
    lengths = torch.randint(1, length + 1, (n, 1), generator=gen)
    return (torch.arange(length)[None, :] >= lengths).to(device)


def _one_thread(call: Callable[[nn.Module, tuple], Tensor]) -> Callable[[nn.Module, tuple], Tensor]:
    """Run a check call on one thread. The samples are tiny, and torch's nested-tensor
    encoder path (the native side) runs one small parallel region per sample: on a shared
    CPU, more threads made it up to 100x slower."""
    def run(module: nn.Module, inputs: tuple) -> Tensor:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return call(module, inputs)
        finally:
            torch.set_num_threads(threads)
    return run


def _with_weights(out: tuple[Tensor, Tensor | None]) -> Tensor:
    """Attention output and weights as one tensor, so both are checked."""
    y, w = out
    if w is None:
        return y
    return torch.cat([y.reshape(-1), w.reshape(-1)])


def check_cases() -> list[Case]:
    """Attention and Transformer setups for the original equivalence protocol."""
    e, h, L, S = 16, 4, 7, 5

    def self_inputs(batch_first: bool, padding: bool) -> Callable[..., tuple]:
        def make(n, gen, dtype, device):
            x = _tokens(n, L, e, batch_first, gen, dtype, device)
            return (x, _padding(n, L, gen, device) if padding else None)
        return make

    causal = nn.Transformer.generate_square_subsequent_mask(L).bool()

    def self_call(mask: bool, need_weights: bool = False) -> Callable:
        return lambda m, xs: _with_weights(m(
            xs[0], xs[0], xs[0], key_padding_mask=xs[1],
            attn_mask=causal.to(xs[0].device) if mask else None,
            is_causal=mask, need_weights=need_weights))

    def cross_inputs(n, gen, dtype, device):
        q = _tokens(n, L, e, False, gen, dtype, device)
        k = _tokens(n, S, 12, False, gen, dtype, device)
        v = _tokens(n, S, 10, False, gen, dtype, device)
        return q, k, v, _padding(n, S, gen, device)

    def seq2seq_inputs(batch_first: bool) -> Callable[..., tuple]:
        def make(n, gen, dtype, device):
            src = _tokens(n, S, e, batch_first, gen, dtype, device)
            tgt = _tokens(n, L, e, batch_first, gen, dtype, device)
            return src, tgt, _padding(n, S, gen, device)
        return make

    tgt_causal = nn.Transformer.generate_square_subsequent_mask(L)

    def mha(batch_first: bool = True) -> Callable[[], nn.Module]:
        return lambda: nn.MultiheadAttention(e, h, batch_first=batch_first)

    def enc_layer(norm_first: bool, batch_first: bool) -> Callable[[], nn.Module]:
        return lambda: nn.TransformerEncoderLayer(e, h, 32, dropout=0.1, activation="gelu",
                                                  batch_first=batch_first,
                                                  norm_first=norm_first)

    def dec_layer(norm_first: bool) -> Callable[[], nn.Module]:
        return lambda: nn.TransformerDecoderLayer(e, h, 32, dropout=0.1,
                                                  norm_first=norm_first)

    cases = [
        Case("MHA self-attn E16 h4 L7, no mask (+weights)", mha(),
             make_inputs=self_inputs(True, False), call=self_call(False, need_weights=True)),
        Case("MHA self-attn causal", mha(False), make_inputs=self_inputs(False, False),
             call=self_call(True)),
        Case("MHA self-attn key padding", mha(), make_inputs=self_inputs(True, True),
             call=self_call(False)),
        Case("MHA self-attn causal + key padding (+weights)", mha(False),
             make_inputs=self_inputs(False, True), call=self_call(True, need_weights=True)),
        Case("MHA cross-attn L7 S5 kdim12 vdim10 (+weights)",
             lambda: nn.MultiheadAttention(e, h, kdim=12, vdim=10),
             make_inputs=cross_inputs,
             call=lambda m, xs: _with_weights(m(*xs[:3], key_padding_mask=xs[3],
                                                 average_attn_weights=False))),
        Case("EncoderLayer post-norm gelu (batch-first)", enc_layer(False, True),
             make_inputs=self_inputs(True, True),
             call=lambda m, xs: m(xs[0], src_key_padding_mask=xs[1])),
        Case("EncoderLayer pre-norm gelu causal", enc_layer(True, False),
             make_inputs=self_inputs(False, False),
             call=lambda m, xs: m(xs[0], src_mask=tgt_causal.to(xs[0]), is_causal=True)),
        Case("DecoderLayer post-norm", dec_layer(False), make_inputs=seq2seq_inputs(False),
             call=lambda m, xs: m(xs[1], xs[0], tgt_mask=tgt_causal.to(xs[1]),
                                  memory_key_padding_mask=xs[2], tgt_is_causal=True)),
        Case("DecoderLayer pre-norm", dec_layer(True), make_inputs=seq2seq_inputs(False),
             call=lambda m, xs: m(xs[1], xs[0], memory_key_padding_mask=xs[2])),
        Case("Encoder x2 + norm, key padding (nested)",
             lambda: nn.TransformerEncoder(enc_layer(False, True)(), 2, nn.LayerNorm(e)),
             make_inputs=self_inputs(True, True),
             call=lambda m, xs: m(xs[0], src_key_padding_mask=xs[1])),
        Case("Transformer 2+2 layers, causal tgt",
             lambda: nn.Transformer(e, h, 2, 2, 32, batch_first=True),
             make_inputs=seq2seq_inputs(True),
             call=lambda m, xs: m(xs[0], xs[1], tgt_mask=tgt_causal.to(xs[1]),
                                  src_key_padding_mask=xs[2],
                                  memory_key_padding_mask=xs[2])),
    ]
    for case in cases:
        case.chunk = 2500  # tiny samples: fewer, larger batches
        case.call = _one_thread(case.call)
    return cases


if __name__ == "__main__":
    sys.exit(run_check(check_cases, "python -m modules.MultiHeadSelfAttentionAsGNN"))
