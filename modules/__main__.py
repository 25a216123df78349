"""`python -m modules`: every component's equivalence check, one table."""

from __future__ import annotations

from collections.abc import Sequence

from modules import checks


def main(argv: Sequence[str] | None = None) -> int:
    return checks.main(None, argv)


if __name__ == "__main__":
    raise SystemExit(main())
