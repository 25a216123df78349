"""``python -m modules.PoolingAsGNN``: the equivalence checks of the pooling twins."""

from __future__ import annotations

from modules.checks import main

if __name__ == "__main__":
    raise SystemExit(main("PoolingAsGNN"))
