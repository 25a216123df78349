"""``modules.MultiHeadSelfAttentionAsGNN``, the original release's file name: the self- and
cross-attention twins, defined in :mod:`modules.attention`.

``python -m modules.MultiHeadSelfAttentionAsGNN`` (this package's ``__main__``) checks them against
torch.nn with the original protocol. A package rather than a file, so that
:mod:`modules` can import it with the package (keeping the class names it exports
bound to the classes) and runpy still finds nothing of ``__main__`` imported.
"""

from __future__ import annotations

from modules.attention import MultiHeadCrossAttentionAsGNN, MultiHeadSelfAttentionAsGNN
from modules.token_graph import TokenGraph, native_fast_path_possible

__all__ = [
    "MultiHeadCrossAttentionAsGNN",
    "MultiHeadSelfAttentionAsGNN",
    "TokenGraph",
    "native_fast_path_possible",
]
