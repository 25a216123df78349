"""The original release's ``models/MNIST_MLP.py``: the networks of :mod:`models.mnist_mlp`
(which :mod:`models` imports), re-exported, and the command ``python -m models.MNIST_MLP``
(parameter counts and the equivalence check of the pair). Not imported by the package, so
runpy runs it once, as ``__main__``."""

from __future__ import annotations

import sys

from models.mnist_mlp import INPUT_SHAPE, MLPMNIST, MLPAsGNNMNIST, main

__all__ = ["INPUT_SHAPE", "MLPAsGNNMNIST", "MLPMNIST", "main"]

if __name__ == "__main__":
    sys.exit(main())
