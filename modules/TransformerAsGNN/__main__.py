"""``python -m modules.TransformerAsGNN``: the equivalence checks of the Transformer
layer, stack and model twins."""

from __future__ import annotations

from modules.checks import main

if __name__ == "__main__":
    raise SystemExit(main("TransformerAsGNN"))
