"""The original release's ``models/CIFAR100_VGG.py``: the networks of
:mod:`models.cifar100_vgg` (which :mod:`models` imports), re-exported, and the command
``python -m models.CIFAR100_VGG`` (parameter counts and the equivalence check of the pair).
Not imported by the package, so runpy runs it once, as ``__main__``."""

from __future__ import annotations

import sys

from models.cifar100_vgg import CONFIG_A, INPUT_SHAPE, VGG11CIFAR100, VGG11AsGNNCIFAR100, main

__all__ = ["CONFIG_A", "INPUT_SHAPE", "VGG11AsGNNCIFAR100", "VGG11CIFAR100", "main"]

if __name__ == "__main__":
    sys.exit(main())
