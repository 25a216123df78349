"""Components of deep neural networks as exact PyTorch Geometric message passing."""

from modules.base import MessagePassingModule, set_fused
from modules.ConvAsGNN import Conv1dAsGNN, Conv2dAsGNN
from modules.convert import to_gnn, to_native
from modules.MLPAsGNN import LinearAsGNN, MLPAsGNN
from modules.MultiHeadSelfAttentionAsGNN import (
    MultiHeadCrossAttentionAsGNN,
    MultiHeadSelfAttentionAsGNN,
    TransformerAsGNN,
    TransformerDecoderAsGNN,
    TransformerDecoderLayerAsGNN,
    TransformerEncoderAsGNN,
    TransformerEncoderLayerAsGNN,
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
    "TransformerAsGNN",
    "TransformerDecoderAsGNN",
    "TransformerDecoderLayerAsGNN",
    "TransformerEncoderAsGNN",
    "TransformerEncoderLayerAsGNN",
    "set_fused",
    "to_gnn",
    "to_native",
]
