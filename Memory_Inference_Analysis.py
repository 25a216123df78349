"""``python -m Memory_Inference_Analysis``: every standard network against its
message-passing twin (parameters, inference latency, training-step time, peak memory),
a table of twin/standard ratios with their targets, and ``analysis.md``,
``analysis.csv`` and ``ratios.png`` in ``--out``. Run it with ``--help``.

The command lives in :mod:`benchmarks.model_pairs` and measures with
:mod:`benchmarks.common`, the helpers every benchmark shares.
"""

from __future__ import annotations

import sys

from benchmarks.model_pairs import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
