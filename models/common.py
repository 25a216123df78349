"""Input checks, parameter counts and the self-check entry shared by the model files."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from modules.equivalence import Case, run_cases
from utils.cli import HelpFormatter, checked_device, positive_int


def check_input(model: nn.Module, x: Tensor, sample_shape: tuple[int, ...]) -> None:
    """Raise ValueError unless ``x`` is a batch of samples of ``sample_shape``."""
    if x.dim() != len(sample_shape) + 1 or tuple(x.shape[1:]) != sample_shape:
        expected = ", ".join(["B", *map(str, sample_shape)])
        raise ValueError(f"{type(model).__name__} expects input of shape ({expected}), "
                         f"got {tuple(x.shape)}")


def parameter_count(module: nn.Module) -> int:
    """Number of parameter elements of ``module`` (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters())


def build_parser(name: str, sample_shape: tuple[int, ...], samples: int,
                 chunk: int) -> argparse.ArgumentParser:
    """Command line of ``python -m models.<name>``."""
    shape = ", ".join(map(str, sample_shape))
    parser = argparse.ArgumentParser(
        prog=f"python -m models.{name}",
        description=f"Print the parameter counts of the standard network and of its "
        f"message-passing twin, then check the pair with the original protocol: random "
        f"N(0, 1) inputs of shape ({shape}), the twin's weights copied from the standard "
        f"network, eval mode, {chunk} samples per batch; print the mean absolute error "
        f"(MAE) and the largest error of the logits.",
        epilog="Exit status 0 when the MAE is below 1e-6, 1 otherwise.",
        formatter_class=HelpFormatter)
    parser.add_argument("--samples", type=positive_int, default=samples,
                        help="random N(0, 1) inputs")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                        help="parameter and input dtype")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed of the weights and the inputs")
    return parser


def model_main(name: str, standard: Callable[[], nn.Module], twin: Callable[[], nn.Module],
               sample_shape: tuple[int, ...], samples: int, chunk: int,
               argv: Sequence[str] | None = None) -> int:
    """Print both networks' parameter counts, then check the pair with copied weights;
    0 when the MAE of the logits is below 1e-6, else 1."""
    parser = build_parser(name, sample_shape, samples, chunk)
    args = parser.parse_args(argv)
    args.device = checked_device(parser, args.device)
    torch.manual_seed(args.seed)
    std, gnn = standard(), twin()
    print(f"{type(std).__name__}: {parameter_count(std):,} parameters; "
          f"twin {type(gnn).__name__} (message passing): {parameter_count(gnn):,} parameters")
    return run_cases([Case(f"{name} logits", standard, sample_shape, chunk=chunk)], args)
