"""The original release's ``models/CIFAR100_ViT.py``: the networks of
:mod:`models.cifar100_vit` (which :mod:`models` imports), re-exported, and the command
``python -m models.CIFAR100_ViT`` (parameter counts and the equivalence check of the pair).
Not imported by the package, so runpy runs it once, as ``__main__``."""

from __future__ import annotations

import sys

from models.cifar100_vit import INPUT_SHAPE, ViTAsGNNCIFAR100, ViTCIFAR100, main

__all__ = ["INPUT_SHAPE", "ViTAsGNNCIFAR100", "ViTCIFAR100", "main"]

if __name__ == "__main__":
    sys.exit(main())
