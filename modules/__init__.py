"""Components of deep neural networks as exact PyTorch Geometric message passing.

Names are imported on first use (PEP 562): ``import modules`` loads no component, so
``python -m modules.<File>`` runs that file without it being imported twice.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

#: public name -> the submodule that defines it
_EXPORTS = {
    "MessagePassingModule": "base",
    "NativeTwin": "base",
    "set_fused": "base",
    "to_gnn": "convert",
    "to_native": "convert",
    "LinearAsGNN": "MLPAsGNN",
    "MLPAsGNN": "MLPAsGNN",
    "Conv1dAsGNN": "ConvAsGNN",
    "Conv2dAsGNN": "ConvAsGNN",
    "MaxPool1dAsGNN": "PoolingAsGNN",
    "MaxPool2dAsGNN": "PoolingAsGNN",
    "AvgPool1dAsGNN": "PoolingAsGNN",
    "AvgPool2dAsGNN": "PoolingAsGNN",
    "AdaptiveAvgPool1dAsGNN": "PoolingAsGNN",
    "AdaptiveAvgPool2dAsGNN": "PoolingAsGNN",
    "AdaptiveMaxPool2dAsGNN": "PoolingAsGNN",
    "MultiHeadCrossAttentionAsGNN": "MultiHeadSelfAttentionAsGNN",
    "MultiHeadSelfAttentionAsGNN": "MultiHeadSelfAttentionAsGNN",
    "TransformerEncoderLayerAsGNN": "TransformerAsGNN",
    "TransformerEncoderAsGNN": "TransformerAsGNN",
    "TransformerDecoderLayerAsGNN": "TransformerAsGNN",
    "TransformerDecoderAsGNN": "TransformerAsGNN",
    "TransformerAsGNN": "TransformerAsGNN",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    submodule = _EXPORTS.get(name)
    if submodule is None:
        raise AttributeError(f"module 'modules' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"modules.{submodule}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(types.ModuleType):
    """Importing the submodule ``X`` sets the package attribute ``X`` to it; where a class
    of the same name is exported (``MLPAsGNN``, ``TransformerAsGNN``, ...), the name stays
    the class's, as with eager imports."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
