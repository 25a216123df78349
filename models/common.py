"""Input checks and the self-check entry shared by the model files."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from modules.equivalence import Case, add_check_args, run_cases


def check_input(model: nn.Module, x: Tensor, sample_shape: tuple[int, ...]) -> None:
    """Raise ValueError unless ``x`` is a batch of samples of ``sample_shape``."""
    if x.dim() != len(sample_shape) + 1 or tuple(x.shape[1:]) != sample_shape:
        expected = ", ".join(["B", *map(str, sample_shape)])
        raise ValueError(f"{type(model).__name__} expects input of shape ({expected}), "
                         f"got {tuple(x.shape)}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_main(name: str, standard: Callable[[], nn.Module], twin: Callable[[], nn.Module],
               sample_shape: tuple[int, ...], samples: int, chunk: int,
               argv: Sequence[str] | None = None) -> int:
    """Print both networks' parameter counts, then check the pair with copied weights."""
    parser = add_check_args(argparse.ArgumentParser(
        prog=f"python -m models.{name}",
        description="Parameter counts of the standard network and its message-passing "
        "twin, then the equivalence check (random N(0,1) inputs, copied weights, eval "
        "mode); exit 1 if the MAE of the logits >= 1e-6."))
    parser.set_defaults(samples=samples)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    std, gnn = standard(), twin()
    print(f"{type(std).__name__}: {count_parameters(std):,} parameters; "
          f"twin {type(gnn).__name__} (message passing): {count_parameters(gnn):,} parameters")
    return run_cases([Case(f"{name} logits", standard, sample_shape, chunk=chunk)], args)
