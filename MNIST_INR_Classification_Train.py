"""Classify MNIST INRs from their weights: a weight-space encoder reads each SIREN's neural
graph and predicts the digit it draws.

``python -m MNIST_INR_Classification_Train --inr-dir DIR --encoder ngnn`` trains the encoder
(``flatmlp``, ``statnn``, ``nfn``, ``ngnn``, ``ngt``, ``dng``, or ``all`` one after the
other) on the ``train`` INRs of a set written by ``python -m MNIST_INR_Fit``, picks the
epoch with the best ``val`` accuracy and reports its ``test`` accuracy: the last record of
``LOG_DIR/<run>.jsonl`` has ``"final": true`` and ``test_acc`` (percent). Everything else
(logs, atomic checkpoints, ``--resume``, ``torchrun`` / DDP, progress) is the shared loop of
:mod:`utils.Train_Test`; ``python -m utils.summarize`` tabulates the encoders.

Training recipe (SPEC 4.1, the neural-graphs classifier): AdamW (amsgrad, weight decay
``--weight-decay``), linear learning-rate warm-up over ``--warmup-steps`` optimizer steps,
gradient norm clipped to ``--max-grad-norm``, dropout ``--dropout`` in the encoder's output
MLP, batch 128, ``--augment`` for the DWSNets augmentations of the training INRs. Epochs and
widths default per encoder (:data:`ENCODER_DEFAULTS`) so that one run on 7,000 training
INRs takes about 20 minutes on a 2-core CPU; ``--epochs`` and ``--hidden`` override them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn
from torch.utils.data import DataLoader
from torch_geometric.data import Batch

from neural_graphs.encoders.build import ENCODER_NAMES, GRAPH_ENCODER_NAMES
from neural_graphs.inr_data import (
    INRAugment,
    INRGraphDataset,
    InvalidINRSet,
    check_inr_dir,
    load_inr_splits,
)
from utils.encoder_jobs import (
    EncoderDefaults,
    encoder_side,
    materialize,
    recipe_arguments,
    recipe_optimizer,
    train_each_side,
)
from utils.job_data import split_loaders
from utils.tasks import classification
from utils.Train_Test import JobConfig, SideFlag
from utils.Train_Test import main as train_main

SCRIPT = "MNIST_INR_Classification_Train"
NUM_CLASSES = 10

# Sized for at most about 20 CPU-minutes per run on 7,000 training INRs (one thread, CPU
# seconds of one training step on a 128-INR batch of the fast set, forward + backward:
# flatmlp 0.05, statnn 0.05, nfn 0.34, ngnn 2.1, ngt 5.0, dng 1.35; an epoch is 55 such
# steps plus the forward passes over the 1,000 validation INRs, the test adds 2,000 more).
ENCODER_DEFAULTS: dict[str, EncoderDefaults] = {
    "flatmlp": EncoderDefaults(hidden=256, layers=2, epochs=100),
    "statnn": EncoderDefaults(hidden=256, layers=2, epochs=100),
    "nfn": EncoderDefaults(hidden=32, layers=3, epochs=50),
    "ngnn": EncoderDefaults(hidden=32, layers=4, epochs=9, probes=64),
    "ngt": EncoderDefaults(hidden=32, layers=2, epochs=4, probes=64),
    "dng": EncoderDefaults(hidden=64, layers=1, epochs=14, probes=64),
}


# --------------------------------------------------------------------------- encoders


def encoder_arguments(parser: argparse.ArgumentParser) -> None:
    """``--inr-dir`` and the encoder's size flags."""
    parser.add_argument("--inr-dir", required=True,
                        help="a finished INR set: the --out folder of python -m MNIST_INR_Fit")
    parser.add_argument("--hidden", type=int, default=None,
                        help="main width of the encoder (ngnn: hidden, ngt: node dim, dng: "
                        "embedding, nfn: channels, flatmlp/statnn: MLP width); default per "
                        "encoder: " + ", ".join(f"{k} {v.hidden}"
                                                for k, v in ENCODER_DEFAULTS.items()))
    parser.add_argument("--layers", type=int, default=None,
                        help="layers of the encoder (message-passing, attention, NFN or MLP "
                        "layers; dng has one step per network layer and ignores it)")
    parser.add_argument("--probes", type=int, default=None, metavar="K",
                        help="probe inputs of the graph encoders (ngnn, ngt, dng); default "
                        "64 for those, 0 for the others (which have none)")


def encoder_settings(args: argparse.Namespace, side: str) -> tuple[int, int, int]:
    """``(hidden, layers, probes)`` of ``side`` from the flags and :data:`ENCODER_DEFAULTS`."""
    defaults = ENCODER_DEFAULTS[side]
    hidden = defaults.hidden if args.hidden is None else args.hidden
    layers = defaults.layers if args.layers is None else args.layers
    probes = defaults.probes if args.probes is None else args.probes
    if hidden < 1 or layers < 1 or probes < 0:
        raise SystemExit(f"error: --hidden and --layers must be at least 1 and --probes "
                         f"non-negative, got {hidden}, {layers}, {probes}")
    if probes and side not in GRAPH_ENCODER_NAMES:
        raise SystemExit(f"error: --probes {probes}: the {side} encoder has no probe "
                         f"features (only {', '.join(GRAPH_ENCODER_NAMES)} do)")
    return hidden, layers, probes


def make_encoder(side: str, out_dim: int, hidden: int, layers: int, probes: int) -> nn.Module:
    """The encoder ``side`` of :data:`ENCODER_NAMES` with output size ``out_dim``
    (:func:`utils.encoder_jobs.encoder_side`)."""
    return encoder_side(side, out_dim, hidden=hidden, layers=layers, probes=probes)


def output_mlp(encoder: nn.Module) -> nn.Sequential:
    """The encoder's final MLP (``head`` of the graph encoders and NFN, ``mlp`` of FlatMLP
    and StatNN)."""
    for name in ("head", "mlp"):
        module = getattr(encoder, name, None)
        if isinstance(module, nn.Sequential):
            return module
    raise TypeError(f"{type(encoder).__name__} has no output MLP (an nn.Sequential 'head' or "
                    "'mlp') to put dropout in")


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


def first_graphs(dataset: INRGraphDataset, count: int) -> Batch:
    """The first ``count`` INRs of ``dataset`` as one batch, never augmented."""
    count = min(count, len(dataset))
    plain = INRGraphDataset({k: v[:count] for k, v in dataset.params.items()},
                            dataset.labels[:count])
    return Batch.from_data_list([plain[i] for i in range(count)])


# --------------------------------------------------------------------------- data


class INRSplits:
    """The datasets of ``--inr-dir``, read once per (folder, augmentation, seed)."""

    def __init__(self) -> None:
        self._cache: dict[tuple, dict[str, INRGraphDataset]] = {}

    def get(self, inr_dir: str, augment: bool, seed: int,
            targets: Callable[[dict[str, Any]], Tensor] | None = None
            ) -> dict[str, INRGraphDataset]:
        key = (inr_dir, augment, seed, targets)
        if key not in self._cache:
            self._cache.clear()
            manifest = check_inr_dir(inr_dir)
            self._cache[key] = load_inr_splits(
                inr_dir, INRAugment.default() if augment else None, seed,
                None if targets is None else targets(manifest))
        return self._cache[key]


SPLITS = INRSplits()


def inr_loaders(args: argparse.Namespace, seed: int,
                distributed: bool) -> tuple[DataLoader | None, ...]:
    data = SPLITS.get(args.inr_dir, args.augment, seed)
    return split_loaders([data["train"], data["val"], data["test"]], args.batch_size, seed,
                         distributed, args.num_workers, str(args.device).startswith("cuda"))


def build_classifier(args: argparse.Namespace, seed: int, side: str) -> nn.Module:
    hidden, layers, probes = encoder_settings(args, side)
    model = make_encoder(side, NUM_CLASSES, hidden, layers, probes)
    mlp = output_mlp(model)
    for name in ("head", "mlp"):
        if getattr(model, name, None) is mlp:
            setattr(model, name, with_dropout(mlp, args.dropout))
    train = SPLITS.get(args.inr_dir, args.augment, seed)["train"]
    return materialize(model, first_graphs(train, args.batch_size))


def classification_arguments(parser: argparse.ArgumentParser) -> None:
    encoder_arguments(parser)
    recipe_arguments(parser)
    parser.add_argument("--augment", action="store_true",
                        help="augment the training INRs (INRAugment.default(): rotations up "
                        "to 45 degrees, translations 0.5, rescale 0.2, weight dropout 0.1)")
    parser.add_argument("--dropout", type=float, default=0.2,
                        help="dropout in the encoder's output MLP")


# --------------------------------------------------------------------------- entry point


def pre_parse(argv: Sequence[str], add_arguments: Callable[[argparse.ArgumentParser], None],
              sides: Sequence[str], every: str | None, default_side: str, prog: str
              ) -> tuple[argparse.Namespace, list[str]]:
    """The flags a job needs before the loop parses them (the recipe, the side, whether
    ``--epochs`` was given), and the sides to train. ``--help`` is left to the loop."""
    parser = argparse.ArgumentParser(prog=prog, add_help=False)
    add_arguments(parser)
    choices = list(sides) + ([every] if every else [])
    parser.add_argument("--encoder", choices=choices, default=default_side)
    parser.add_argument("--epochs", type=int, default=None)
    known, _ = parser.parse_known_args(argv)
    chosen = list(sides) if known.encoder == every else [known.encoder]
    return known, chosen


def run_job(argv: Sequence[str] | None, make_job: Callable[[argparse.Namespace, str], JobConfig],
            add_arguments: Callable[[argparse.ArgumentParser], None],
            sides: Sequence[str], every: str | None, default_side: str,
            default_epochs: Callable[[str], int]) -> int:
    """Train each chosen side through :func:`utils.Train_Test.main`, one side at a time so
    that each gets its own default epochs; ``--inr-dir`` is checked first. Returns the
    first non-zero exit status, else 0."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        return train_main(make_job(_HELP_RECIPE, default_side), argv)
    try:
        known, chosen = pre_parse(argv, add_arguments, sides, every, default_side,
                                  f"python -m {make_job(_HELP_RECIPE, default_side).script}")
    except SystemExit as stop:  # argparse printed the problem
        return int(stop.code or 2)
    try:
        check_inr_dir(known.inr_dir)
    except InvalidINRSet as err:
        print(f"error: --inr-dir: {err}", file=sys.stderr)
        return 2
    return train_each_side(argv, chosen, "--encoder", lambda side: make_job(known, side),
                           None if known.epochs is not None else default_epochs)


_HELP_RECIPE = argparse.Namespace(weight_decay=5e-4, warmup_steps=0, max_grad_norm=0.0)


def make_job(known: argparse.Namespace, side: str) -> JobConfig:
    return JobConfig(
        script=SCRIPT, title="MNIST INR classifier",
        epochs=ENCODER_DEFAULTS[side].epochs, batch_size=128, lr=1e-3,
        optimizer=recipe_optimizer(known), build_model=build_classifier, loaders=inr_loaders,
        sides=SideFlag("--encoder", ENCODER_NAMES, default="ngnn", every="all",
                       help="weight-space encoder, or 'all' for each in turn (each with its "
                       "default epochs unless --epochs is given)"),
        task=classification(), seeds=(0, 1, 2),
        description="Classify the MNIST digit drawn by each INR of --inr-dir from its "
        "weights; the final record carries test_acc (percent).",
        extra_arguments=classification_arguments,
        resume_keys=("inr_dir", "hidden", "layers", "probes", "augment", "dropout",
                     "weight_decay", "warmup_steps", "max_grad_norm"),
        labels={"dataset": "mnist_inr"})


def main(argv: Sequence[str] | None = None) -> int:
    return run_job(argv, make_job, classification_arguments, ENCODER_NAMES, "all", "ngnn",
                   lambda side: ENCODER_DEFAULTS[side].epochs)


if __name__ == "__main__":
    sys.exit(main())
