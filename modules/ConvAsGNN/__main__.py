"""``python -m modules.ConvAsGNN``: the equivalence checks of the Conv1d and Conv2d twins."""

from __future__ import annotations

from modules.checks import main

if __name__ == "__main__":
    raise SystemExit(main("ConvAsGNN"))
