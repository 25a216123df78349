"""``modules.ConvAsGNN``, the original release's file name: the Conv1d and Conv2d twins,
defined in :mod:`modules.conv`.

``python -m modules.ConvAsGNN`` (this package's ``__main__``) checks them against
torch.nn with the original protocol. A package rather than a file, so that
:mod:`modules` can import it with the package (keeping the class names it exports
bound to the classes) and runpy still finds nothing of ``__main__`` imported.
"""

from __future__ import annotations

from modules.conv import Conv1dAsGNN, Conv2dAsGNN

__all__ = [
    "Conv1dAsGNN",
    "Conv2dAsGNN",
]
