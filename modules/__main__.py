"""`python -m modules`: every component's equivalence check, one table."""

from __future__ import annotations

import argparse
import importlib
import sys

from modules.equivalence import add_check_args, run_cases

COMPONENT_FILES = ("MLPAsGNN", "ConvAsGNN", "PoolingAsGNN", "MultiHeadSelfAttentionAsGNN")


def main(argv: list[str] | None = None) -> int:
    parser = add_check_args(argparse.ArgumentParser(
        prog="python -m modules",
        description="Check every message-passing component against torch.nn with the "
        "original protocol (random N(0,1) inputs, identical parameters); exit 1 if any "
        "MAE >= 1e-6."))
    args = parser.parse_args(argv)
    cases = []
    for name in COMPONENT_FILES:
        try:
            module = importlib.import_module(f"modules.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"modules.{name}":
                raise
            continue
        cases += module.check_cases()
    return run_cases(cases, args)


if __name__ == "__main__":
    sys.exit(main())
