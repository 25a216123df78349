"""What the weight-space training jobs share: the SPEC 4.1 optimizer recipe, encoders as
sides of the training loop, and one loop run per encoder with its own default epochs.

Used by ``MNIST_INR_Classification_Train``, ``MNIST_INR_Dilation_Train``,
``MNIST_INR_CNN_Ceiling`` and ``CNN_Generalization_Train``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from utils.optim import WarmupClipAdamW
from utils.Train_Test import JobConfig, SideUnavailable
from utils.Train_Test import main as train_main

__all__ = [
    "EncoderDefaults",
    "encoder_side",
    "materialize",
    "recipe_arguments",
    "recipe_optimizer",
    "replace_flag",
    "train_each_side",
]


@dataclass(frozen=True)
class EncoderDefaults:
    """A job's defaults for one encoder: main width (``--hidden``), layers (``--layers``),
    epochs, and for the graph encoders probe inputs (``--probes``) and Fourier frequencies
    of scalars (``--rff-dim``; 128, the encoders' own default)."""

    hidden: int
    layers: int
    epochs: int
    probes: int = 0
    rff_dim: int = 128


def recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """The optimizer flags of the INR jobs (SPEC 4.1 values)."""
    parser.add_argument("--weight-decay", type=float, default=5e-4, help="AdamW weight decay")
    parser.add_argument("--warmup-steps", type=int, default=100,
                        help="optimizer steps of the linear learning-rate warm-up (the "
                        "reference's 1,000 is longer than a whole 20-minute run here)")
    parser.add_argument("--max-grad-norm", type=float, default=10.0,
                        help="clip the gradient norm to this (0: no clipping)")


def recipe_optimizer(args: argparse.Namespace) -> Callable[..., torch.optim.Optimizer]:
    """``optimizer(params, lr=...)`` of the flags of :func:`recipe_arguments`: AdamW with
    amsgrad, warm-up and gradient clipping (:class:`~utils.optim.WarmupClipAdamW`)."""
    if args.weight_decay < 0 or args.warmup_steps < 0 or args.max_grad_norm < 0:
        raise SystemExit("error: --weight-decay, --warmup-steps and --max-grad-norm must be "
                         f"non-negative, got {args.weight_decay}, {args.warmup_steps}, "
                         f"{args.max_grad_norm}")
    return partial(WarmupClipAdamW, weight_decay=args.weight_decay, amsgrad=True,
                   warmup_steps=args.warmup_steps, max_grad_norm=args.max_grad_norm or None)


def encoder_side(side: str, out_dim: int, **sizes: Any) -> nn.Module:
    """:func:`neural_graphs.encoders.build.build_encoder` for the training loop: an encoder
    this installation cannot build (NFN without ``nfn``) raises
    :class:`~utils.Train_Test.SideUnavailable`."""
    try:
        from neural_graphs.encoders.build import build_encoder
    except ImportError as err:
        raise SideUnavailable(f"neural_graphs.encoders cannot be imported: {err}") from err
    try:
        return build_encoder(side, out_dim, **sizes)
    except ImportError as err:
        raise SideUnavailable(f"the {side} encoder needs a missing package: {err}") from err


def materialize(model: nn.Module, example: Any) -> nn.Module:
    """Run ``model`` once on ``example`` (eval mode, no gradients) so that its lazy parts
    (input widths, NG-GNN's degree calibration, NFN's layers) exist before the optimizer
    is built."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(example)
    model.train(was_training)
    return model


def replace_flag(argv: Sequence[str], flag: str, value: str) -> list[str]:
    """``argv`` without any ``flag VALUE`` / ``flag=VALUE``, then ``flag value``."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == flag:
            skip = True
        elif not item.startswith(flag + "="):
            out.append(item)
    return out + [flag, value]


def train_each_side(argv: Sequence[str], sides: Sequence[str], flag: str,
                    make_job: Callable[[str], JobConfig],
                    default_epochs: Callable[[str], int] | None) -> int:
    """Train each of ``sides`` through :func:`utils.Train_Test.main`, one at a time: the
    command line with ``flag`` set to the side and, when ``default_epochs`` is given (the
    user gave no ``--epochs``), that side's default epochs. Returns the first non-zero exit
    status, else 0."""
    status = 0
    for side in sides:
        side_argv = replace_flag(argv, flag, side)
        if default_epochs is not None:
            side_argv += ["--epochs", str(default_epochs(side))]
        code = train_main(make_job(side), side_argv)
        status = status or code
    return status
