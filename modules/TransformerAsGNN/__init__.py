"""``modules.TransformerAsGNN``, the original release's file name: the Transformer
layer, stack and model twins, defined in :mod:`modules.transformer`.

``python -m modules.TransformerAsGNN`` (this package's ``__main__``) checks them against
torch.nn with the original protocol. A package rather than a file, so that
:mod:`modules` can import it with the package (keeping the class names it exports
bound to the classes) and runpy still finds nothing of ``__main__`` imported.
"""

from __future__ import annotations

from modules.transformer import (
    TransformerAsGNN,
    TransformerDecoderAsGNN,
    TransformerDecoderLayerAsGNN,
    TransformerEncoderAsGNN,
    TransformerEncoderLayerAsGNN,
)

__all__ = [
    "TransformerAsGNN",
    "TransformerDecoderAsGNN",
    "TransformerDecoderLayerAsGNN",
    "TransformerEncoderAsGNN",
    "TransformerEncoderLayerAsGNN",
]
