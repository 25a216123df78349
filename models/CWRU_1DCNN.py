"""The original release's ``models/CWRU_1DCNN.py``: the networks of :mod:`models.cwru_1dcnn`
(which :mod:`models` imports), re-exported, and the command ``python -m models.CWRU_1DCNN``
(parameter counts and the equivalence check of the pair). Not imported by the package, so
runpy runs it once, as ``__main__``."""

from __future__ import annotations

import sys

from models.cwru_1dcnn import CNN1DCWRU, INPUT_SHAPE, CNN1DCWRUAsGNN, main

__all__ = ["CNN1DCWRU", "CNN1DCWRUAsGNN", "INPUT_SHAPE", "main"]

if __name__ == "__main__":
    sys.exit(main())
