"""The original release's ``models/CIFAR100_ResNet18.py``: the networks of
:mod:`models.cifar100_resnet18` (which :mod:`models` imports), re-exported, and the command
``python -m models.CIFAR100_ResNet18`` (parameter counts and the equivalence check of the
pair). Not imported by the package, so runpy runs it once, as ``__main__``."""

from __future__ import annotations

import sys

from models.cifar100_resnet18 import (
    INPUT_SHAPE,
    BasicBlock,
    ResNet18AsGNNCIFAR100,
    ResNet18CIFAR100,
    main,
)

__all__ = ["INPUT_SHAPE", "BasicBlock", "ResNet18AsGNNCIFAR100", "ResNet18CIFAR100", "main"]

if __name__ == "__main__":
    sys.exit(main())
