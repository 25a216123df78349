"""Swap a network's layers for their message-passing twins, and back.

``to_gnn`` replaces every information-mixing layer (Linear, Conv1d/2d, pooling,
MultiheadAttention, Transformer encoder/decoder modules) by its twin carrying the same
weights, and leaves node-wise modules (activations, normalization, dropout, reshapes)
as they are; state_dict keys are unchanged. ``to_native`` goes back.
"""

from __future__ import annotations

import copy

from torch import nn

from modules.base import MessagePassingModule
from modules.ConvAsGNN import Conv1dAsGNN, Conv2dAsGNN
from modules.MLPAsGNN import LinearAsGNN, MLPAsGNN
from modules.MultiHeadSelfAttentionAsGNN import (
    MultiHeadCrossAttentionAsGNN,
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

#: native type -> twin type. Exact types: a subclass of a native layer may change its
#: forward, so it is not swapped silently (it is reported as unsupported instead).
TWINS: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: LinearAsGNN,
    nn.Conv1d: Conv1dAsGNN,
    nn.Conv2d: Conv2dAsGNN,
    nn.MaxPool1d: MaxPool1dAsGNN,
    nn.MaxPool2d: MaxPool2dAsGNN,
    nn.AvgPool1d: AvgPool1dAsGNN,
    nn.AvgPool2d: AvgPool2dAsGNN,
    nn.AdaptiveAvgPool1d: AdaptiveAvgPool1dAsGNN,
    nn.AdaptiveAvgPool2d: AdaptiveAvgPool2dAsGNN,
    nn.AdaptiveMaxPool2d: AdaptiveMaxPool2dAsGNN,
    nn.MultiheadAttention: MultiHeadCrossAttentionAsGNN,
    nn.TransformerEncoderLayer: TransformerEncoderLayerAsGNN,
    nn.TransformerEncoder: TransformerEncoderAsGNN,
    nn.TransformerDecoderLayer: TransformerDecoderLayerAsGNN,
    nn.TransformerDecoder: TransformerDecoderAsGNN,
    nn.Transformer: TransformerAsGNN,
}

#: torch.nn modules that act on each node (position, token, neuron) on its own, or only
#: reshape: they stay native inside a twin.
NODE_WISE: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus,
    nn.Softsign, nn.Tanhshrink, nn.Threshold, nn.LogSigmoid, nn.Softmax, nn.LogSoftmax,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d,
    nn.InstanceNorm2d, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Flatten,
    nn.Unflatten, nn.Identity,
)

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _is_twin(module: nn.Module) -> bool:
    """A message-passing twin: one of this package's modules that converts back."""
    return isinstance(module, (MessagePassingModule, MLPAsGNN)) or (
        hasattr(module, "to_native") and type(module).__module__.startswith("modules."))


def _swap(model: nn.Module, path: str) -> nn.Module:
    twin_type = TWINS.get(type(model))
    if twin_type is not None:
        return twin_type.from_native(model)
    if _is_twin(model) or isinstance(model, NODE_WISE):
        return model
    is_torch_layer = type(model).__module__.startswith("torch.nn.")
    if is_torch_layer and not isinstance(model, _CONTAINERS):
        raise TypeError(f"to_gnn: no message-passing twin for {type(model).__name__} at "
                        f"'{path or '<root>'}'; supported: "
                        f"{sorted(t.__name__ for t in TWINS)} and node-wise modules")
    for name, child in model.named_children():
        setattr(model, name, _swap(child, f"{path}.{name}" if path else name))
    return model


def to_gnn(model: nn.Module, copy_model: bool = True) -> nn.Module:
    """The message-passing twin of ``model`` (a deep copy unless ``copy_model=False``).

    Raises ``TypeError`` naming the layer and its path when an information-mixing layer
    has no twin.
    """
    return _swap(copy.deepcopy(model) if copy_model else model, "")


def _back(model: nn.Module) -> nn.Module:
    if _is_twin(model):
        return model.to_native()
    for name, child in model.named_children():
        setattr(model, name, _back(child))
    return model


def to_native(model: nn.Module, copy_model: bool = True) -> nn.Module:
    """The torch.nn network of a twin: every twin layer back to its native type."""
    return _back(copy.deepcopy(model) if copy_model else model)
