"""``modules.MLPAsGNN``, the original release's file name: the Linear and MLP twins, defined in
:mod:`modules.linear`.

``python -m modules.MLPAsGNN`` (this package's ``__main__``) checks them against
torch.nn with the original protocol. A package rather than a file, so that
:mod:`modules` can import it with the package (keeping the class names it exports
bound to the classes) and runpy still finds nothing of ``__main__`` imported.
"""

from __future__ import annotations

from modules.linear import LinearAsGNN, MLPAsGNN

__all__ = [
    "LinearAsGNN",
    "MLPAsGNN",
]
