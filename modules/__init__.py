"""Components of deep neural networks as exact PyTorch Geometric message passing.

The twins are defined in PyG-style files (:mod:`modules.linear`, :mod:`modules.conv`,
:mod:`modules.pooling`, :mod:`modules.adaptive_pooling`, :mod:`modules.attention`,
:mod:`modules.transformer`, on :mod:`modules.base`, :mod:`modules.window_graph` and
:mod:`modules.token_graph`). The original release's file names (``modules.MLPAsGNN``,
``modules.ConvAsGNN``, ``modules.PoolingAsGNN``, ``modules.MultiHeadSelfAttentionAsGNN``,
``modules.TransformerAsGNN``) are small packages that re-export them, whose ``__main__``
runs their equivalence checks (``python -m modules.<File>``; ``python -m modules`` runs
all of them). The names below are imported from those packages, so that a class named
like its package (``MLPAsGNN``, ...) stays the class after ``import modules.MLPAsGNN``.
"""

from __future__ import annotations

from modules.base import MessagePassingModule, NativeTwin, set_fused
from modules.ConvAsGNN import Conv1dAsGNN, Conv2dAsGNN
from modules.convert import to_gnn, to_native
from modules.MLPAsGNN import LinearAsGNN, MLPAsGNN
from modules.MultiHeadSelfAttentionAsGNN import (
    MultiHeadCrossAttentionAsGNN,
    MultiHeadSelfAttentionAsGNN,
)
from modules.PoolingAsGNN import (
    AdaptiveAvgPool1dAsGNN,
    AdaptiveAvgPool2dAsGNN,
    AdaptiveMaxPool2dAsGNN,
    AvgPool1dAsGNN,
    AvgPool2dAsGNN,
    MaxPool1dAsGNN,
    MaxPool2dAsGNN,
)
from modules.TransformerAsGNN import (
    TransformerAsGNN,
    TransformerDecoderAsGNN,
    TransformerDecoderLayerAsGNN,
    TransformerEncoderAsGNN,
    TransformerEncoderLayerAsGNN,
)

__all__ = [
    "AdaptiveAvgPool1dAsGNN",
    "AdaptiveAvgPool2dAsGNN",
    "AdaptiveMaxPool2dAsGNN",
    "AvgPool1dAsGNN",
    "AvgPool2dAsGNN",
    "Conv1dAsGNN",
    "Conv2dAsGNN",
    "LinearAsGNN",
    "MLPAsGNN",
    "MaxPool1dAsGNN",
    "MaxPool2dAsGNN",
    "MessagePassingModule",
    "MultiHeadCrossAttentionAsGNN",
    "MultiHeadSelfAttentionAsGNN",
    "NativeTwin",
    "TransformerAsGNN",
    "TransformerDecoderAsGNN",
    "TransformerDecoderLayerAsGNN",
    "TransformerEncoderAsGNN",
    "TransformerEncoderLayerAsGNN",
    "set_fused",
    "to_gnn",
    "to_native",
]
