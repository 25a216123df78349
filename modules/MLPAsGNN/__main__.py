"""``python -m modules.MLPAsGNN``: the equivalence checks of the Linear and MLP twins."""

from __future__ import annotations

from modules.checks import main

if __name__ == "__main__":
    raise SystemExit(main("MLPAsGNN"))
