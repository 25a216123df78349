"""``modules.PoolingAsGNN``, the original release's file name: the pooling twins, defined in
:mod:`modules.pooling` and :mod:`modules.adaptive_pooling`.

``python -m modules.PoolingAsGNN`` (this package's ``__main__``) checks them against
torch.nn with the original protocol. A package rather than a file, so that
:mod:`modules` can import it with the package (keeping the class names it exports
bound to the classes) and runpy still finds nothing of ``__main__`` imported.
"""

from __future__ import annotations

from modules.adaptive_pooling import (
    AdaptiveAvgPool1dAsGNN,
    AdaptiveAvgPool2dAsGNN,
    AdaptiveMaxPool2dAsGNN,
)
from modules.pooling import AvgPool1dAsGNN, AvgPool2dAsGNN, MaxPool1dAsGNN, MaxPool2dAsGNN

__all__ = [
    "AdaptiveAvgPool1dAsGNN",
    "AdaptiveAvgPool2dAsGNN",
    "AdaptiveMaxPool2dAsGNN",
    "AvgPool1dAsGNN",
    "AvgPool2dAsGNN",
    "MaxPool1dAsGNN",
    "MaxPool2dAsGNN",
]
