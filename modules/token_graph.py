"""Token graphs of attention: torch's masks as edge biases, the edge list of a dense
bias, and the conditions of torch's native attention fast paths.

Tokens are nodes; target node i (a query position) receives an edge from every source
node j (a key/value position) it may attend to. A boolean mask removes edges, a float
mask puts a bias on them; these helpers are shared by :mod:`modules.attention` and
:mod:`modules.transformer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["TokenGraph", "causal_bias", "edge_list", "float_mask", "native_fast_path_possible"]

_NEG_INF = float("-inf")
_FAST_PATH_DEVICES = ("cpu", "cuda", "xpu")


def native_fast_path_possible(tensors: Sequence[Tensor | None]) -> bool:
    """The conditions torch's native attention fast paths share (``MultiheadAttention``,
    the fused ``TransformerEncoderLayer``, the nested-tensor ``TransformerEncoder``):
    fast paths enabled, no autocast, every tensor on a supported device, and no gradient
    to record. Each twin adds its layer's own conditions."""
    if not torch.backends.mha.get_fastpath_enabled() or torch.is_autocast_enabled():
        return False
    present = [t for t in tensors if t is not None]
    if any(t.device.type not in _FAST_PATH_DEVICES for t in present):
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in present))


def float_mask(mask: Tensor | None, name: str, dtype: torch.dtype) -> Tensor | None:
    """torch's mask convention as edge biases: bool True -> -inf (no edge), float -> bias."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros_like(mask, dtype=dtype).masked_fill_(mask, _NEG_INF)
    if not torch.is_floating_point(mask):
        raise AssertionError(f"only bool and floating types of {name} are supported, "
                             f"got {mask.dtype}")
    return mask.to(dtype)


def causal_bias(tgt_len: int, src_len: int, dtype: torch.dtype,
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


def edge_list(bias: Tensor | None, tgt_len: int, src_len: int,
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
