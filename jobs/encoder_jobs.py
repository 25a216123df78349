"""What the weight-space training jobs share: the SPEC 4.1 optimizer recipe, encoders as
sides of the training loop, per-encoder defaults, argparse types for ranged numbers, and
running a job whose inputs are checked before any run.

Used by ``MNIST_INR_Classification_Train``, ``MNIST_INR_Dilation_Train``,
``MNIST_INR_CNN_Ceiling`` and ``CNN_Generalization_Train``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import torch
from torch import nn
from torch.utils.data import DataLoader

from utils.cli import non_negative_float, non_negative_int
from utils.job_data import split_loaders
from utils.optim import LR_SCHEDULES, WarmupClipAdamW
from utils.Train_Test import JobConfig, JobRefused, SideUnavailable
from utils.Train_Test import main as train_main

__all__ = [
    "split_loaders_of",
    "RECIPE_DEFAULTS",
    "add_output_dropout",
    "BATCH_SIZE_HELP",
    "batch_size_for",
    "EncoderDefaults",
    "encoder_side",
    "load_or_refuse",
    "materialize",
    "output_mlp",
    "per_encoder",
    "recipe_arguments",
    "recipe_optimizer",
    "reverse_edges_argument",
    "run_job",
    "with_dropout",
    "with_recipe",
]

T = TypeVar("T")


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


def per_encoder(defaults: Mapping[str, EncoderDefaults], key: str,
                sides: Sequence[str] | None = None) -> str:
    """``"per encoder: ngnn 32, dng 64"``: the ``key`` field of ``defaults`` for ``sides``
    (all of them by default), for a flag's help."""
    names = list(defaults) if sides is None else list(sides)
    return "per encoder: " + ", ".join(f"{k} {getattr(defaults[k], key)}" for k in names)


# --------------------------------------------------------------------------- recipe


RECIPE_DEFAULTS = argparse.Namespace(weight_decay=5e-4, warmup_steps=None, max_grad_norm=10.0,
                                     lr_schedule="constant")
#: Without --warmup-steps the warm-up is this share of the run's optimizer steps, at most
#: the reference's 1,000 (a 5-epoch run on 1,000 INRs used to end inside a 100-step warm-up).
WARMUP_FRACTION = 0.05
REFERENCE_WARMUP_STEPS = 1000


#: The reference's batch, halved (down to MIN_BATCH_SIZE) while an epoch of the training
#: set would take fewer than MIN_STEPS_PER_EPOCH optimizer steps: on 700 training INRs,
#: batch 128 gives 6 steps an epoch and a 5-epoch NG-GNN run ends at 26% test accuracy,
#: batch 64 at 41% (3 seeds each); 7,000 INRs keep 128.
REFERENCE_BATCH_SIZE = 128
MIN_BATCH_SIZE = 16
MIN_STEPS_PER_EPOCH = 10
BATCH_SIZE_HELP = (f"batch size per process (default: {REFERENCE_BATCH_SIZE}, halved down to "
                   f"{MIN_BATCH_SIZE} while an epoch of the training set would take fewer than "
                   f"{MIN_STEPS_PER_EPOCH} optimizer steps)")


def batch_size_for(train_size: int, world_size: int = 1) -> int:
    """The default batch per process for ``train_size`` training samples split over
    ``world_size`` processes (:data:`BATCH_SIZE_HELP`)."""
    if train_size < 0 or world_size < 1:
        raise ValueError(f"expected train_size >= 0 and world_size >= 1, got {train_size} and "
                         f"{world_size}")
    batch = REFERENCE_BATCH_SIZE
    while batch > MIN_BATCH_SIZE and train_size < MIN_STEPS_PER_EPOCH * batch * world_size:
        batch //= 2
    return batch


def recipe_arguments(parser: argparse.ArgumentParser,
                     defaults: argparse.Namespace = RECIPE_DEFAULTS) -> None:
    """The optimizer flags of the INR jobs (SPEC 4.1 values unless a job's ``defaults``
    say otherwise)."""
    parser.add_argument("--weight-decay", type=non_negative_float,
                        default=defaults.weight_decay, help="AdamW weight decay")
    parser.add_argument("--warmup-steps", type=non_negative_int,
                        default=defaults.warmup_steps,
                        help="optimizer steps of the linear learning-rate warm-up "
                        f"(default: {WARMUP_FRACTION * 100:.0f}%% of the run's steps, at most the "
                        f"reference's {REFERENCE_WARMUP_STEPS:,})")
    parser.add_argument("--max-grad-norm", type=non_negative_float,
                        default=defaults.max_grad_norm,
                        help="clip the gradient norm to this (0: no clipping)")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=defaults.lr_schedule,
                        help="learning rate after the warm-up: held (constant, the reference "
                        "recipe) or a cosine down to zero at the run's last step (default: "
                        "%(default)s)")


def reverse_edges_argument(parser: argparse.ArgumentParser, default: bool = False) -> None:
    """``--reverse-edges`` / ``--no-reverse-edges``: NG-GNN's messages also run from each
    neuron back to the neurons that feed it."""
    parser.add_argument("--reverse-edges", action=argparse.BooleanOptionalAction,
                        default=default, help="NG-GNN also passes messages along the reversed "
                        "edges, output to input, as the neural-graphs reference's INR scripts; "
                        "about 1.5 times its step time; the other encoders ignore it "
                        f"(default: {'on' if default else 'off'})")


def recipe_optimizer(args: argparse.Namespace) -> Callable[..., torch.optim.Optimizer]:
    """``optimizer(params, lr=...)`` of the flags of :func:`recipe_arguments`: AdamW with
    amsgrad, warm-up, learning-rate schedule and gradient clipping
    (:class:`~utils.optim.WarmupClipAdamW`)."""
    warmup = args.warmup_steps
    if args.weight_decay < 0 or (warmup is not None and warmup < 0) or args.max_grad_norm < 0:
        raise SystemExit("error: --weight-decay, --warmup-steps and --max-grad-norm must be "
                         f"non-negative, got {args.weight_decay}, {warmup}, "
                         f"{args.max_grad_norm}")
    return partial(WarmupClipAdamW, weight_decay=args.weight_decay, amsgrad=True,
                   warmup_steps=warmup, warmup_fraction=WARMUP_FRACTION,
                   max_warmup_steps=REFERENCE_WARMUP_STEPS,
                   max_grad_norm=args.max_grad_norm or None,
                   lr_schedule=getattr(args, "lr_schedule", RECIPE_DEFAULTS.lr_schedule))


def with_recipe(job: JobConfig, args: argparse.Namespace) -> JobConfig:
    """``job`` with the optimizer of the recipe flags in ``args``."""
    return job.replace(optimizer=recipe_optimizer(args))


# --------------------------------------------------------------------------- encoders


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


def _output_mlp_name(encoder: nn.Module) -> str:
    for name in ("head", "mlp"):
        if isinstance(getattr(encoder, name, None), nn.Sequential):
            return name
    raise TypeError(f"{type(encoder).__name__} has no output MLP (an nn.Sequential 'head' or "
                    "'mlp') to put dropout in")


def output_mlp(encoder: nn.Module) -> nn.Sequential:
    """The encoder's final MLP (``head`` of the graph encoders and NFN, ``mlp`` of FlatMLP,
    StatNN and a graph encoder with StatNN's statistics appended)."""
    return getattr(encoder, _output_mlp_name(encoder))


def with_dropout(mlp: nn.Sequential, p: float) -> nn.Sequential:
    """``mlp`` with ``Dropout(p)`` after each of its ReLUs (before each further Linear)."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout must be in [0, 1), got {p}")
    if p == 0:
        return mlp
    modules: list[nn.Module] = []
    for module in mlp:
        modules.append(module)
        if isinstance(module, nn.ReLU):
            modules.append(nn.Dropout(p))
    return nn.Sequential(*modules)


def add_output_dropout(encoder: nn.Module, p: float) -> nn.Module:
    """``encoder`` with :func:`with_dropout` applied to its :func:`output_mlp`, in place
    (``p`` 0: unchanged, also an encoder without an output MLP)."""
    if p:
        name = _output_mlp_name(encoder)
        setattr(encoder, name, with_dropout(getattr(encoder, name), p))
    return encoder


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


# --------------------------------------------------------------------------- running


def load_or_refuse(flag: str, load: Callable[[], T]) -> T:
    """``load()``, its failure to read a data set (a :class:`utils.store.StoreError` or
    another ``ValueError``, a missing file) turned into :class:`~utils.Train_Test.JobRefused`
    naming ``flag``: the loop prints one ``error:`` line and exits with status 2."""
    try:
        return load()
    except (ValueError, OSError) as err:
        raise JobRefused(f"{flag}: {err}") from None


def run_job(job: JobConfig, argv: Sequence[str] | None = None) -> int:
    """:func:`utils.Train_Test.main` for a script's ``main``: the exit status, also when
    argparse ends the command (``--help``: 0, a refused flag: 2, its message printed)."""
    try:
        return train_main(job, argv)
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return int(stop.code or 0)
        raise


def split_loaders_of(data: Mapping[str, Any], args: argparse.Namespace, seed: int,
                     distributed: bool) -> tuple[DataLoader | None, ...]:
    """``(train, val, test)`` loaders of a job's splits, a mapping with those keys
    (:func:`utils.job_data.split_loaders` with the job's batch size, workers and pinning)."""
    return split_loaders([data["train"], data["val"], data["test"]], args.batch_size, seed,
                         distributed, args.num_workers, str(args.device).startswith("cuda"))
