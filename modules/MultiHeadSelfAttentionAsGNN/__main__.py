"""``python -m modules.MultiHeadSelfAttentionAsGNN``: the equivalence checks of the self- and
cross-attention twins."""

from __future__ import annotations

from modules.checks import main

if __name__ == "__main__":
    raise SystemExit(main("MultiHeadSelfAttentionAsGNN"))
