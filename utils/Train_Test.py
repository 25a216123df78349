"""The training loop shared by every ``*_Train.py`` script.

A script declares a job and calls :func:`main`; ``main`` parses the flags and trains one
*run* per seed and *side*, named ``<script>_<side>_seed<k>``, writing

* ``LOG_DIR/<run>.txt``    a header line, readable epoch lines (``Epoch 1/10 | train loss
  ... | val loss ... | ...``), and a final ``Test ...`` line when the job has a test split,
* ``LOG_DIR/<run>.jsonl``  one JSON record per epoch (metrics ``train_<m>``, ``val_<m>``,
  ``best_val_<best metric>``; accuracies in percent) and, after a test, a last record with
  ``"final": true`` and the task's test metrics,
* ``CHECKPOINT_DIR/<run>_last.pt`` every epoch and ``<run>_best.pt`` at the best validation
  metric, written atomically, holding everything ``--resume`` needs to continue exactly.

Two kinds of job:

* :class:`TrainConfig`, the twins: a network of :data:`models.MODELS` and its
  message-passing twin (sides ``standard`` and ``gnn``, flag ``--model``), trained from the
  same initialization with cross-entropy on ``(x, y)`` batches of a :data:`DATASETS` entry.
* :class:`JobConfig`, any other job: it names its sides and their flag (e.g. ``--encoder
  ngnn``), builds the model with ``build_model(args, seed, side)``, its loaders with
  ``loaders(args, seed, distributed) -> (train, val, test or None)``, adds its own flags
  with ``extra_arguments(parser)``, and says with a :class:`utils.tasks.Task` what it
  minimises and measures. Batches may be ``(x, y)`` tuples or PyG ``Batch`` objects. With
  a test loader, the best checkpoint is evaluated on it after the last epoch and the
  result appended as the final record::

    from functools import partial
    from torch.optim import AdamW
    from utils.tasks import classification
    from utils.Train_Test import JobConfig, SideFlag, main

    JOB = JobConfig(
        script="MNIST_INR_Classification_Train", title="MNIST INR classification",
        epochs=200, batch_size=128, lr=1e-3, optimizer=partial(AdamW, weight_decay=5e-4),
        sides=SideFlag("--encoder", ("flatmlp", "statnn", "nfn", "ngnn", "ngt", "dng"),
                       default="ngnn", every="all", help="weight-space encoder"),
        build_model=build_encoder,            # (args, seed, side) -> nn.Module
        loaders=inr_loaders,                  # (args, seed, distributed) -> (train, val, test)
        task=classification(),                # final record: test_acc
        extra_arguments=add_inr_flags, resume_keys=("hidden",), seeds=(0, 1, 2))
    sys.exit(main(JOB))

``utils.job_data.split_loaders(datasets, batch_size, seed, distributed)`` builds such
loaders. Stock tasks are ``classification()`` and ``scalar_regression("bce" | "mse")``
(Kendall's tau, R^2, MSE); a job with its own measure writes its task, e.g. a regression
whose best checkpoint has the lowest validation MSE and whose final record carries
``test_mse`` and ``identity_mse``::

    DILATION = Task(
        loss=pixel_mse,                                         # (output, batch) -> [B]
        collect=lambda output, batch: {"identity": identity_mse(batch)},      # [B]
        metrics=lambda v: {"mse": float(v["loss"].mean()),      # v: the whole split
                           "identity_mse": float(v["identity"].mean())},
        best_metric="mse", higher_is_better=False,
        test_metrics={"test_mse": "mse", "identity_mse": "identity_mse"})

Every run, of either kind: seeded (model initialization, data order, dropout), resumable
with ``--resume`` (bit-exact on CPU), stopped with a clear message when a training or
validation loss turns non-finite (the last good checkpoint is kept; exit status
:data:`NON_FINITE` after the other runs), interruptible (SIGINT/SIGTERM: the epoch in
progress is discarded and the resume command printed). Progress bars are drawn on a
terminal only; redirected output gets one line per epoch. Launched by ``torchrun
--nproc_per_node=N -m SCRIPT ...`` the loop trains with DistributedDataParallel (NCCL on
CUDA, Gloo on CPU); rank 0 alone logs, shows progress and writes checkpoints, and metrics
are computed over the samples of all ranks, each counted once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from utils.atomic import atomic_write, write_text_atomic
from utils.cli import checked_device
from utils.DataLoader_GNN import (
    get_dataloaders_CIFAR100,
    get_dataloaders_CWRU,
    get_dataloaders_MNIST,
    set_epoch,
)
from utils.tasks import Task, batch_size, classification, to_device

__all__ = [
    "DATASETS",
    "INTERRUPTED",
    "NON_FINITE",
    "SIDES",
    "Checkpoints",
    "DatasetSpec",
    "JobConfig",
    "NonFiniteLoss",
    "RunLog",
    "SideFlag",
    "SideUnavailable",
    "TrainConfig",
    "TwinUnavailable",
    "build_parser",
    "main",
    "run_name",
    "train_run",
]

SIDES = ("standard", "gnn")
INTERRUPTED = 130  # exit status after SIGINT or SIGTERM, as a shell reports SIGINT
NON_FINITE = 3  # exit status when a run was stopped by a non-finite loss

# Settings that change the trajectory: a resumed run must use the checkpoint's values.
_RESUME_KEYS = ("batch_size", "lr", "amp", "max_train_batches")

# --------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class SideFlag:
    """The flag that picks the sides to train, e.g. ``--model standard|gnn|both``.

    Args:
        flag: the option, e.g. ``"--encoder"``.
        choices: the sides, in the order ``every`` trains them.
        default: the default value (a side, or ``every``).
        every: an extra choice meaning all sides (e.g. ``"both"``, ``"all"``), or None.
        help: help text of the flag (argparse appends the default).
    """

    flag: str
    choices: tuple[str, ...]
    default: str
    every: str | None = None
    help: str = ""

    def __post_init__(self) -> None:
        if not self.flag.startswith("--") or not self.choices:
            raise ValueError(f"SideFlag needs a '--flag' and at least one side, got "
                             f"{self.flag!r} and {self.choices!r}")
        allowed = self.choices + ((self.every,) if self.every else ())
        if self.default not in allowed:
            raise ValueError(f"SideFlag default {self.default!r} is not one of {allowed}")

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def help_text(self) -> str:
        if self.help:
            return self.help
        every = f", or '{self.every}' for all of them in this order" if self.every else ""
        return f"the side to train: {', '.join(self.choices)}{every}"

    def selected(self, args: argparse.Namespace) -> tuple[str, ...]:
        value = getattr(args, self.dest)
        return self.choices if value == self.every else (value,)


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    pass


@dataclass(frozen=True)
class JobConfig:
    """A training job: what the loop needs to train, log and test its runs.

    Args:
        script: module name of the script (runs are ``<script>_<side>_seed<k>``).
        title: what the network is called in the log header.
        epochs, batch_size, lr: defaults of ``--epochs``, ``--batch-size``, ``--lr``.
        optimizer: ``optimizer(params, lr=lr)``, e.g. ``functools.partial(SGD, momentum=0.9)``.
        build_model: ``(args, seed, side) -> nn.Module``; the loop seeds every generator
            with ``seed`` just before. May raise :class:`SideUnavailable`.
        loaders: ``(args, seed, distributed) -> (train, val)`` or ``(train, val, test)``;
            with ``distributed`` each loader must use a ``DistributedSampler``.
        sides: the flag choosing the sides.
        task: loss and metrics (default: classification of ``(x, y)`` batches).
        scheduler: ``scheduler(optimizer)``, stepped once per epoch, or None.
        seeds: default of ``--seeds``.
        description: first sentence of ``--help``.
        extra_arguments: adds the job's own flags to the parser.
        resume_keys: flags (dest names) that a resumed run must repeat unchanged.
        labels: constant fields added to every record and checkpoint config.
    """

    script: str
    title: str
    epochs: int
    batch_size: int
    lr: float
    optimizer: Callable[..., Optimizer]
    build_model: Callable[[argparse.Namespace, int, str], nn.Module]
    loaders: Callable[[argparse.Namespace, int, bool], tuple[DataLoader, ...]]
    sides: SideFlag
    task: Task = field(default_factory=classification)
    scheduler: Callable[[Optimizer], Any] | None = None
    seeds: tuple[int, ...] = tuple(range(10))
    description: str = ""
    extra_arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments
    resume_keys: tuple[str, ...] = ()
    labels: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetSpec:
    """How a twin script gets its data: extra flags, a loader factory, and the flags a
    resumed run must repeat.

    ``loaders(args, seed, distributed)`` returns ``(train_loader, val_loader)``.
    """

    add_arguments: Callable[[argparse.ArgumentParser], None]
    loaders: Callable[[argparse.Namespace, int, bool], tuple[DataLoader, DataLoader]]
    resume_keys: tuple[str, ...] = ()


def _pin(args: argparse.Namespace) -> bool:
    return str(args.device).startswith("cuda")


def _mnist_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mnist-source", choices=("train", "test-split"), default="train",
        help="'train': train on the 60,000 training images, validate on the 10,000 test "
        "images; 'test-split': use the test files only, the first 8,000 images to train and "
        "the last 2,000 to validate, for data folders holding only the test set such as "
        "../shared/data")


def _mnist_loaders(args: argparse.Namespace, seed: int,
                   distributed: bool) -> tuple[DataLoader, DataLoader]:
    return get_dataloaders_MNIST(args.data_dir, args.batch_size, seed, args.num_workers,
                                 _pin(args), distributed, source=args.mnist_source)


def _cwru_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--split", choices=("random", "time"), default="random",
        help="'random': the original seeded 80/20 split of all windows (windows overlap, "
        "so it leaks); 'time': each recording split 80/20 in time, no shared samples")


def _cwru_loaders(args: argparse.Namespace, seed: int,
                  distributed: bool) -> tuple[DataLoader, DataLoader]:
    return get_dataloaders_CWRU(args.data_dir, args.batch_size, seed, args.num_workers,
                                _pin(args), distributed, split=args.split)


def _cifar100_loaders(args: argparse.Namespace, seed: int,
                      distributed: bool) -> tuple[DataLoader, DataLoader]:
    return get_dataloaders_CIFAR100(args.data_dir, args.batch_size, seed, args.num_workers,
                                    _pin(args), distributed)


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(_mnist_arguments, _mnist_loaders, ("mnist_source",)),
    "cwru": DatasetSpec(_cwru_arguments, _cwru_loaders, ("split",)),
    "cifar100": DatasetSpec(_no_arguments, _cifar100_loaders),
}


class SideUnavailable(Exception):
    """``build_model`` cannot build this side (yet); with the flag's ``every`` choice the
    side is skipped, asked for alone it is an error."""


class TwinUnavailable(SideUnavailable):
    """The network has a layer without a message-passing twin (yet)."""


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # all CUDA devices too


def _build_twin(model_key: str, args: argparse.Namespace | None, seed: int,
                side: str) -> nn.Module:
    """The standard network of ``MODELS[model_key]`` and, for ``gnn``, its twin."""
    from models import MODELS
    from modules.convert import to_gnn

    model = MODELS[model_key].standard()
    if side == "gnn":
        # Building twin layers may draw random numbers (their own initialization, then
        # overwritten): restore the streams so dropout sees what the standard side sees.
        state = _rng_state(torch.device("cpu"))
        cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        try:
            model = to_gnn(model, copy_model=False)
        except TypeError as err:
            raise TwinUnavailable(str(err)) from err
        finally:
            _set_rng_state(state, torch.device("cpu"))
            if cuda_states is not None:
                torch.cuda.set_rng_state_all(cuda_states)
    return model


@dataclass(frozen=True)
class TrainConfig:
    """A twin script: a network of :data:`models.MODELS` and its message-passing twin,
    trained side by side with cross-entropy; the defaults of its flags come from here.

    ``optimizer(params, lr=lr)`` builds the optimizer (e.g. ``functools.partial(SGD,
    momentum=0.9)``); ``scheduler(optimizer)``, when given, is stepped once per epoch.
    :meth:`job` is the :class:`JobConfig` the loop runs.
    """

    script: str
    model: str
    dataset: str
    epochs: int
    batch_size: int
    lr: float
    optimizer: Callable[..., Optimizer]
    scheduler: Callable[[Optimizer], Any] | None = None
    seeds: tuple[int, ...] = tuple(range(10))
    description: str = ""

    def __post_init__(self) -> None:
        from models import MODELS

        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; known: {sorted(MODELS)}")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; known: {sorted(DATASETS)}")

    def job(self) -> JobConfig:
        from models import MODELS

        name = MODELS[self.model].name
        data = DATASETS[self.dataset]
        return JobConfig(
            script=self.script, title=name, epochs=self.epochs, batch_size=self.batch_size,
            lr=self.lr, optimizer=self.optimizer, scheduler=self.scheduler, seeds=self.seeds,
            build_model=partial(_build_twin, self.model), loaders=data.loaders,
            sides=SideFlag("--model", SIDES, default="both", every="both",
                           help="which side to train: the torch.nn network, its "
                           "message-passing twin (same initialization), or both, standard "
                           "first"),
            description=self.description or f"Train the {name} and its twin.",
            extra_arguments=data.add_arguments, resume_keys=data.resume_keys,
            labels={"arch": self.model, "dataset": self.dataset},
        )


def _as_job(setup: TrainConfig | JobConfig) -> JobConfig:
    return setup.job() if isinstance(setup, TrainConfig) else setup


# --------------------------------------------------------------------------- flags


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to a flag's help, except for switches and unset options."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.nargs == 0:
            return action.help
        return super()._get_help_string(action)


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def build_parser(setup: TrainConfig | JobConfig) -> argparse.ArgumentParser:
    """The command line of a training script: shared flags plus the job's own."""
    job = _as_job(setup)
    sides = job.sides
    parser = argparse.ArgumentParser(
        prog=f"python -m {job.script}",
        description=f"{job.description} Runs are named <script>_<side>_seed<k> "
        f"(sides: {', '.join(sides.choices)}); logs go to LOG_DIR/<run>.txt and "
        "LOG_DIR/<run>.jsonl, checkpoints to CHECKPOINT_DIR/<run>_{last,best}.pt. Without "
        "--resume a run starts over: its logs are rewritten from the start and its "
        "checkpoints replaced. For several GPUs launch "
        f"'torchrun --nproc_per_node=N -m {job.script} ...'.",
        formatter_class=_DefaultsFormatter,
    )
    choices = sides.choices + ((sides.every,) if sides.every else ())
    parser.add_argument(sides.flag, choices=choices, default=sides.default,
                        help=sides.help_text)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(job.seeds),
                        metavar="SEED", help="seeds to train, one run per seed and side")
    parser.add_argument("--epochs", type=int, default=job.epochs, help="training epochs")
    parser.add_argument("--batch-size", type=int, default=job.batch_size,
                        help="batch size per process")
    parser.add_argument("--lr", type=float, default=job.lr,
                        help="learning rate, a positive finite number")
    parser.add_argument("--device", default=_default_device(),
                        help="torch device; under torchrun each rank takes cuda:LOCAL_RANK")
    parser.add_argument("--data-dir", default="data", help="folder holding the datasets")
    parser.add_argument("--log-dir", default="log", help="folder for the .txt/.jsonl logs")
    parser.add_argument("--checkpoint-dir", default="checkpoint",
                        help="folder for the _last.pt and _best.pt checkpoints")
    parser.add_argument("--num-workers", type=int, default=0,
                        help="data loader worker processes; results do not depend on it")
    parser.add_argument("--resume", action="store_true",
                        help="continue each run from its _last.pt checkpoint (model, "
                        "optimizer, scheduler, scaler, RNG states), keeping the logs of its "
                        "finished epochs; finished runs are skipped")
    parser.add_argument("--max-train-batches", type=int, default=None, metavar="N",
                        help="stop each training epoch after N batches, for smoke runs")
    parser.add_argument("--max-val-batches", type=int, default=None, metavar="N",
                        help="validate and test on the first N batches only, for smoke "
                        "runs")
    parser.add_argument("--amp", action="store_true",
                        help="CUDA mixed precision: autocast to float16 with a GradScaler; "
                        "an error on CPU")
    job.extra_arguments(parser)
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got "
                         f"{getattr(args, name)}")
    for name in ("max_train_batches", "max_val_batches"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if not math.isfinite(args.lr) or args.lr <= 0:
        parser.error(f"--lr must be a positive finite number, got {args.lr}")
    if args.num_workers < 0:
        parser.error(f"--num-workers must be non-negative, got {args.num_workers}")
    if any(seed < 0 for seed in args.seeds):
        parser.error(f"--seeds must be non-negative, got {args.seeds}")
    device = checked_device(parser, args.device)
    if args.amp and device.type != "cuda":
        parser.error("--amp needs a CUDA device (automatic mixed precision is CUDA-only here)")


# --------------------------------------------------------------------------- processes


@dataclass
class _Dist:
    """The process's place in a (possibly one-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: str) -> tuple[_Dist, torch.device]:
    """Join the torchrun job described by the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return _Dist(), torch.device(device)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return _Dist(rank, world_size, local_rank), dev


def _from_main(value: Any, job: _Dist) -> Any:
    """Rank 0's ``value`` on every rank."""
    if not job.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def run_name(script: str, side: str, seed: int) -> str:
    """``<script>_<side>_seed<seed>``."""
    return f"{script}_{side}_seed{seed}"


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _gather_rng(device: torch.device, job: _Dist) -> list[dict[str, Any]]:
    state = _rng_state(device)
    if not job.enabled:
        return [state]
    states: list[Any] = [None] * job.world_size
    dist.all_gather_object(states, state)
    return states


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _resume_command(script: str, argv: Sequence[str]) -> str:
    args = list(argv)
    if "--resume" not in args:
        args.append("--resume")
    launcher = "python -m" if os.environ.get("WORLD_SIZE", "1") == "1" else (
        f"torchrun --nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE', '?')} -m")
    return f"{launcher} {script} {shlex.join(args)}".rstrip()


# --------------------------------------------------------------------------- run log


def _format_metrics(metrics: dict[str, float], task: Task) -> str:
    parts = []
    for key, value in metrics.items():
        parts.append(f"{key} {value:.2f}%" if key in task.percent else f"{key} {value:.4f}")
    return " ".join(parts)


def _record_epoch(line: str) -> int | None:
    """The epoch of a complete per-epoch record (not a final one), else None."""
    try:
        record = json.loads(line)
        return None if record.get("final") else int(record["epoch"])
    except (ValueError, KeyError, TypeError, AttributeError):  # e.g. a line cut by SIGKILL
        return None


def _epoch_of(line: str) -> int | None:
    """The epoch of a complete ``Epoch k/E | ...`` line, else None."""
    if not line.startswith("Epoch ") or "|" not in line:
        return None
    try:
        return int(line[6:].split("/", 1)[0])
    except ValueError:
        return None


class RunLog:
    """The two logs of one run: ``<run>.txt`` (readable) and ``<run>.jsonl`` (records).

    A fresh run :meth:`start` s both anew; a resumed run :meth:`resume` s them, keeping
    every epoch up to the checkpoint's and dropping later or cut-off lines. Only rank 0
    writes (the loop calls nothing here on other ranks).
    """

    def __init__(self, log_dir: Path, name: str) -> None:
        self.name = name
        self.text = log_dir / f"{name}.txt"
        self.jsonl = log_dir / f"{name}.jsonl"

    def start(self, header: str) -> None:
        """Begin both logs from scratch: the header line, no records."""
        write_text_atomic(self.text, header + "\n")
        write_text_atomic(self.jsonl, "")

    def resume(self, epoch: int, note: str) -> None:
        """Cut both logs back to the end of ``epoch`` (later records, a final record and
        any line a crash left incomplete are dropped), then add ``note``."""
        if self.jsonl.is_file():
            kept = [line for line in self.jsonl.read_text(encoding="utf-8").splitlines()
                    if (e := _record_epoch(line)) is not None and e <= epoch]
            write_text_atomic(self.jsonl, "".join(line + "\n" for line in kept))
        if self.text.is_file():
            lines = self.text.read_text(encoding="utf-8").splitlines()
            ends = [i for i, line in enumerate(lines) if _epoch_of(line) == epoch]
            cut = ends[-1] + 1 if ends else len(lines)
            write_text_atomic(self.text, "".join(line + "\n" for line in lines[:cut]))
        self.note(note)

    def has_final(self) -> bool:
        """Whether the jsonl ends with a final (test) record."""
        if not self.jsonl.is_file():
            return False
        lines = self.jsonl.read_text(encoding="utf-8").splitlines()
        try:
            return bool(lines) and bool(json.loads(lines[-1]).get("final"))
        except (ValueError, AttributeError):
            return False

    def record(self, record: dict[str, Any], line: str) -> None:
        """Append ``record`` to the jsonl and ``line`` to the text log."""
        self._append(self.jsonl, json.dumps(record))
        self._append(self.text, line)

    def note(self, text: str) -> None:
        """Append a ``# text`` comment line to the text log."""
        self._append(self.text, f"# {text}")

    @staticmethod
    def _append(path: Path, line: str) -> None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


# --------------------------------------------------------------------------- checkpoints


class Checkpoints:
    """``<run>_last.pt`` (every epoch) and ``<run>_best.pt`` (best validation metric) of one
    run, written atomically by rank 0."""

    def __init__(self, ckpt_dir: Path, name: str) -> None:
        self.dir, self.name = ckpt_dir, name
        self.last = ckpt_dir / f"{name}_last.pt"
        self.best = ckpt_dir / f"{name}_best.pt"

    def load_last(self) -> dict[str, Any] | None:
        return self._load(self.last) if self.last.is_file() else None

    def load_best_model(self) -> dict[str, Tensor]:
        return self._load(self.best)["model"]

    def clear(self) -> None:
        """Remove the checkpoints of an earlier run (a fresh run starts over)."""
        for stale in (self.last, self.best):
            stale.unlink(missing_ok=True)

    def remove_leftovers(self) -> None:
        """Remove the temporary files of a save that a SIGKILL cut short."""
        for leftover in self.dir.glob(f".{self.name}_*.pt.*.tmp*"):
            leftover.unlink(missing_ok=True)

    def save(self, state: dict[str, Any], improved: bool) -> None:
        """torch.save once, then rename into place: ``_best.pt`` first when ``improved``,
        so ``_last.pt`` never records a best epoch that ``_best.pt`` lacks."""
        paths = [self.best, self.last] if improved else [self.last]
        with atomic_write(paths[-1], also=paths[:-1]) as f:
            torch.save(state, f)

    @staticmethod
    def _load(path: Path) -> dict[str, Any]:
        # Our own files, holding RNG states (numpy arrays, tuples) that weights_only rejects.
        return torch.load(path, map_location="cpu", weights_only=False)


# --------------------------------------------------------------------------- one pass


class NonFiniteLoss(Exception):
    """A training or validation loss became NaN or infinite."""


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    if amp:
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _progress(total: int, desc: str, job: _Dist) -> tqdm:
    """A per-batch bar on a terminal; none when stderr is redirected (the epoch line is
    the one line per epoch there)."""
    shown = job.is_main and sys.stderr.isatty()
    return tqdm(total=total, desc=desc, leave=False, disable=not shown, dynamic_ncols=True)


def _padding_mask(loader: DataLoader, start: int, n: int, device: torch.device) -> Tensor:
    """True for the real samples of a batch: DistributedSampler pads its last round with
    repeated samples, which must not count twice in the metrics."""
    sampler = loader.sampler
    if not isinstance(sampler, DistributedSampler) or sampler.drop_last:
        return torch.ones(n, dtype=torch.bool, device=device)
    position = start + torch.arange(n, device=device)
    return sampler.rank + position * sampler.num_replicas < len(sampler.dataset)


def _gather_values(values: dict[str, list[Tensor]], job: _Dist) -> dict[str, Tensor]:
    """Concatenate the per-batch values, then those of every rank (rank order)."""
    local = {key: torch.cat(parts).cpu() if parts else torch.zeros(0)
             for key, parts in values.items()}
    if not job.enabled:
        return local
    every: list[Any] = [None] * job.world_size
    dist.all_gather_object(every, local)
    return {key: torch.cat([part[key] for part in every]) for key in local}


def _all_reduce_min(value: Tensor, job: _Dist) -> Tensor:
    if job.enabled:
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return value


@dataclass
class _Pass:
    """One pass over a loader: training when ``optimizer`` is given, else evaluation."""

    model: nn.Module
    task: Task
    device: torch.device
    amp: bool
    job: _Dist
    optimizer: Optimizer | None = None
    scaler: torch.amp.GradScaler | None = None

    def run(self, loader: DataLoader, max_batches: int | None,
            desc: str) -> tuple[dict[str, float], float]:
        """Returns (metrics over all samples of all ranks, seconds).

        Raises :class:`NonFiniteLoss` naming the first step whose loss is NaN or infinite.
        """
        training = self.optimizer is not None
        self.model.train(training)
        total = len(loader) if max_batches is None else min(len(loader), max_batches)
        if total == 0:
            raise ValueError(f"{desc}: the loader yields no batch (empty split?)")
        values: dict[str, list[Tensor]] = {"loss": []}
        running = torch.zeros(2, dtype=torch.float64, device=self.device)  # loss sum, count
        first_bad = torch.full((), math.inf, device=self.device)
        start, seen = time.perf_counter(), 0
        grad = contextlib.nullcontext() if training else torch.no_grad()
        with _progress(total, desc, self.job) as bar, grad:
            for step, batch in enumerate(loader):
                if step >= total:
                    break
                batch = to_device(batch, self.device)
                with _autocast(self.device, self.amp):
                    output = self.task.forward(self.model, batch)
                    losses = self.task.loss(output, batch)
                mean = losses.mean()
                # The first non-finite step, recorded without a host sync.
                first_bad = torch.where(torch.isfinite(mean.detach()) | (first_bad < math.inf),
                                        first_bad, float(step + 1))
                if training:
                    self._step(mean)
                n = batch_size(batch)
                mask = _padding_mask(loader, seen, n, self.device)
                seen += n
                values["loss"].append(losses.detach().double()[mask])
                for key, value in self.task.collect(output, batch).items():
                    values.setdefault(key, []).append(value.detach()[mask])
                running += torch.stack([values["loss"][-1].sum(), mask.sum().double()])
                bar.update(1)
                if step % 20 == 0 or step == total - 1:
                    self._check(first_bad, desc)
                    if not bar.disable:
                        bar.set_postfix(loss=f"{(running[0] / running[1].clamp(min=1)):.4f}")
        self._check(first_bad, desc)
        gathered = _gather_values(values, self.job)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        loss = gathered["loss"]
        metrics = {"loss": float(loss.sum()) / len(loss) if len(loss) else math.nan,
                   **self.task.metrics(gathered)}
        if not math.isfinite(metrics["loss"]):
            raise NonFiniteLoss(f"{desc}: the mean loss over the split is {metrics['loss']}")
        return metrics, seconds

    def _step(self, loss: Tensor) -> None:
        assert self.optimizer is not None and self.scaler is not None
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def _check(self, first_bad: Tensor, desc: str) -> None:
        step = _all_reduce_min(first_bad.clone(), self.job).item()
        if math.isfinite(step):
            raise NonFiniteLoss(f"{desc}: non-finite loss at step {int(step)} (1-based)")


# --------------------------------------------------------------------------- one run


class _Interrupted(Exception):
    """SIGINT/SIGTERM arrived during ``epoch`` of ``run``; ``saved`` epochs are on disk."""

    def __init__(self, run: str, epoch: int, saved: int, checkpoint: Path) -> None:
        super().__init__(run)
        self.run, self.epoch, self.saved, self.checkpoint = run, epoch, saved, checkpoint


def _describe_optimizer(optimizer: Optimizer) -> str:
    group = optimizer.param_groups[0]
    keys = ("lr", "momentum", "betas", "weight_decay")
    parts = [f"{k}={group[k]}" for k in keys if k in group and group[k] not in (0, 0.0)]
    return f"{type(optimizer).__name__}({', '.join(parts)})"


@dataclass
class _Training:
    """The state of one run that a checkpoint holds: model, optimizer, scheduler, scaler,
    epochs done, best validation value and the records so far."""

    model: nn.Module
    optimizer: Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    epoch: int = 0
    best: float | None = None
    best_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def state(self, best_metric: str, rng: list[dict[str, Any]],
              config: dict[str, Any]) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "epoch": self.epoch,
            "best_metric": best_metric, "best_value": self.best,
            "best_epoch": self.best_epoch, "rng": rng, "config": config,
            "history": self.history, "torch_version": torch.__version__,
        }

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Everything but the RNG states (set per rank by the caller)."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scheduler is not None and checkpoint.get("scheduler") is not None:
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.epoch = int(checkpoint["epoch"])
        best = checkpoint.get("best_value", checkpoint.get("best_acc"))  # older checkpoints
        self.best = None if best is None else float(best)
        self.best_epoch = int(checkpoint["best_epoch"])
        self.history = list(checkpoint.get("history", []))


@dataclass
class _Run:
    """One run (one seed, one side) of a job: its settings, logs and checkpoints."""

    job: JobConfig
    args: argparse.Namespace
    seed: int
    side: str
    device: torch.device
    world: _Dist

    def __post_init__(self) -> None:
        self.name = run_name(self.job.script, self.side, self.seed)
        self.log = RunLog(Path(self.args.log_dir), self.name)
        self.ckpts = Checkpoints(Path(self.args.checkpoint_dir), self.name)
        self.config = {key: value for key, value in vars(self.args).items()
                       if isinstance(value, (str, int, float, bool, list, type(None)))}
        self.config.update(script=self.job.script, side=self.side, seed=self.seed,
                           world_size=self.world.world_size, **self.job.labels)

    @property
    def task(self) -> Task:
        return self.job.task

    def build(self) -> _Training:
        """Seed every generator with the run's seed, then build model and optimizer."""
        _seed_everything(self.seed)
        model = self.job.build_model(self.args, self.seed, self.side).to(self.device)
        if self.world.rank > 0:
            # Own dropout masks per rank; rank 0 keeps the single-device stream.
            torch.manual_seed(int(np.random.SeedSequence(
                [self.seed, self.world.rank]).generate_state(1)[0]))
        optimizer = self.job.optimizer(model.parameters(), lr=self.args.lr)
        scheduler = self.job.scheduler(optimizer) if self.job.scheduler else None
        return _Training(model, optimizer, scheduler,
                         torch.amp.GradScaler("cuda", enabled=self.args.amp))

    def check_resume(self, saved: dict[str, Any]) -> None:
        """Refuse a resume whose trajectory-changing flags differ from the checkpoint's."""
        for key in _RESUME_KEYS + self.job.resume_keys:
            if key in saved and key in self.config and saved[key] != self.config[key]:
                flag = "--" + key.replace("_", "-")
                raise SystemExit(f"{self.ckpts.last} was trained with {flag} {saved[key]!r}, "
                                 f"this command gives {self.config[key]!r}: use the same "
                                 "value to resume, or drop --resume to start over")
        if saved.get("world_size") != self.world.world_size:
            print(f"warning: {self.ckpts.last} was written by {saved.get('world_size')} "
                  f"process(es), this job has {self.world.world_size}: the resumed run will "
                  "not match an uninterrupted one exactly", file=sys.stderr)

    def open_logs(self, run: _Training, resumed: bool) -> None:
        """Rank 0: a resumed run keeps its finished epochs, a fresh one starts anew."""
        if not self.world.is_main:
            return
        self.ckpts.dir.mkdir(parents=True, exist_ok=True)
        self.ckpts.remove_leftovers()
        if resumed:
            self.log.resume(run.epoch, f"resumed from {self.ckpts.last} after epoch "
                            f"{run.epoch} at {_now()}")
            print(f"{self.name}: resuming after epoch {run.epoch}")
            return
        self.ckpts.clear()
        params = sum(p.numel() for p in run.model.parameters())
        self.log.start(
            f"# {self.name}: {self.job.title}, {self.side} side, seed {self.seed}, "
            f"{params:,} parameters | {_describe_optimizer(run.optimizer)} | epochs "
            f"{self.args.epochs}, batch {self.args.batch_size} x {self.world.world_size} "
            f"process(es) | device {self.device}{' amp' if self.args.amp else ''} | "
            f"started {_now()}")

    def _wrap(self, model: nn.Module) -> nn.Module:
        if not self.world.enabled:
            return model
        return DistributedDataParallel(
            model, device_ids=[self.device] if self.device.type == "cuda" else None)

    def train_epochs(self, run: _Training, train_loader: DataLoader,
                     val_loader: DataLoader) -> None:
        """Epochs ``run.epoch + 1 .. --epochs``: train, validate, log, checkpoint."""
        args, task = self.args, self.task
        net = self._wrap(run.model)
        trainer = _Pass(net, task, self.device, args.amp, self.world, run.optimizer,
                        run.scaler)
        evaluator = _Pass(net, task, self.device, args.amp, self.world)
        epoch = saved = run.epoch
        try:
            for epoch in range(run.epoch + 1, args.epochs + 1):
                set_epoch(train_loader, epoch - 1)
                set_epoch(val_loader, epoch - 1)
                lr = float(run.optimizer.param_groups[0]["lr"])
                tag = f"{self.name} {epoch}/{args.epochs}"
                train, train_time = trainer.run(train_loader, args.max_train_batches,
                                                f"{tag} train")
                val, val_time = evaluator.run(val_loader, args.max_val_batches, f"{tag} val")
                if task.best_metric not in val:
                    raise KeyError(f"the task's best_metric {task.best_metric!r} is not among "
                                   f"its metrics {sorted(val)}")
                if run.scheduler is not None:
                    run.scheduler.step()
                improved = task.better(val[task.best_metric], run.best)
                if improved:
                    run.best, run.best_epoch = val[task.best_metric], epoch
                record = self._record(epoch, train, val, run.best)
                record.update(lr=lr, epoch_time=train_time, val_time=val_time,
                              batch_size=args.batch_size, world_size=self.world.world_size,
                              time=_now())
                run.history.append(record)
                run.epoch = epoch
                rng = _gather_rng(self.device, self.world)
                if not self.world.is_main:
                    continue
                # Logs before checkpoints: a crash in between leaves logs ahead of _last.pt,
                # which --resume cuts back, never a checkpoint ahead of the logs.
                line = (f"Epoch {epoch}/{args.epochs} | train {_format_metrics(train, task)} "
                        f"| val {_format_metrics(val, task)} | lr {lr:.3g} | time "
                        f"{train_time:.1f}s (val {val_time:.1f}s)")
                self.log.record(record, line)
                tqdm.write(f"{self.name} {line}")
                self.ckpts.save(run.state(f"val_{task.best_metric}", rng, self.config),
                                improved)
                saved = epoch
        except KeyboardInterrupt:
            raise _Interrupted(self.name, max(epoch, saved + 1), saved,
                               self.ckpts.last) from None

    def _record(self, epoch: int, train: dict[str, float], val: dict[str, float],
                best: float | None) -> dict[str, Any]:
        best_key = f"val_{self.task.best_metric}"
        return {
            "script": self.job.script, "run": self.name, "model": self.side,
            **self.job.labels, "seed": self.seed, "epoch": epoch,
            "epochs": self.args.epochs, **{f"train_{k}": v for k, v in train.items()},
            **{f"val_{k}": v for k, v in val.items()}, f"best_{best_key}": best,
            "best_metric": best_key,
        }

    def test(self, run: _Training, loader: DataLoader) -> dict[str, Any]:
        """Evaluate the best checkpoint on ``loader``; append the final record and line."""
        task = self.task
        if self.world.enabled:
            dist.barrier()  # rank 0 has written _best.pt
        run.model.load_state_dict(self.ckpts.load_best_model())
        set_epoch(loader, 0)
        try:
            metrics, seconds = _Pass(self._wrap(run.model), task, self.device, self.args.amp,
                                     self.world).run(loader, self.args.max_val_batches,
                                                     f"{self.name} test")
        except KeyboardInterrupt:
            raise _Interrupted(self.name, run.epoch, run.epoch, self.ckpts.last) from None
        missing = sorted(set(task.test_metrics.values()) - set(metrics))
        if missing:
            raise KeyError(f"test metrics {missing} of the task are not among the metrics "
                           f"it computes: {sorted(metrics)}")
        record = {**self._record(run.epoch, {}, {}, run.best), "final": True,
                  "best_epoch": run.best_epoch, **{f"test_{k}": v for k, v in metrics.items()},
                  **{key: metrics[name] for key, name in task.test_metrics.items()},
                  "final_metrics": list(task.test_metrics), "test_time": seconds,
                  "time": _now()}
        if self.world.is_main:
            line = (f"Test (best checkpoint, epoch {run.best_epoch}) | "
                    f"{_format_metrics(metrics, task)} | time {seconds:.1f}s")
            self.log.record(record, line)
            tqdm.write(f"{self.name} {line}")
        return record


def train_run(setup: TrainConfig | JobConfig, args: argparse.Namespace, seed: int,
              side: str, loaders: Sequence[DataLoader | None], device: torch.device,
              job: _Dist | None = None) -> list[dict[str, Any]]:
    """Train one run (one seed, one side); with a third, test loader, evaluate its best
    checkpoint on it and append the final record. Returns the per-epoch records.

    With ``args.resume`` it continues from ``<run>_last.pt`` when that exists; a finished
    run returns its saved records without training (and is tested if that had not been
    done). Raises :class:`NonFiniteLoss`, the last good checkpoint kept, when a training or
    validation loss turns NaN or infinite.
    """
    this = _Run(_as_job(setup), args, seed, side, device, job or _Dist())
    train_loader, val_loader = loaders[0], loaders[1]
    test_loader = loaders[2] if len(loaders) > 2 else None
    run = this.build()
    checkpoint = this.ckpts.load_last() if args.resume else None
    if checkpoint is not None:
        this.check_resume(checkpoint["config"])
        run.restore(checkpoint)
        if run.epoch >= args.epochs:
            if test_loader is not None and not _from_main(this.log.has_final(), this.world):
                this.test(run, test_loader)
            elif this.world.is_main:
                print(f"{this.name}: finished ({run.epoch} epochs in {this.ckpts.last}), "
                      "skipped")
            return run.history
        states = checkpoint["rng"]
        _set_rng_state(states[min(this.world.rank, len(states) - 1)], device)
    this.open_logs(run, resumed=checkpoint is not None)
    try:
        this.train_epochs(run, train_loader, val_loader)
    except NonFiniteLoss as err:
        kept = (f"{this.ckpts.last} keeps epoch {run.epoch}" if run.epoch
                else "no epoch was saved")
        message = f"{this.name} stopped: {err}; {kept}"
        if this.world.is_main:
            this.log.note(message)
        raise NonFiniteLoss(message) from None
    if this.world.is_main:
        best = f"val_{this.task.best_metric}"
        this.log.note(f"finished: best {best} {run.best:.6g} at epoch {run.best_epoch} "
                      f"({_now()})")
        print(f"{this.name}: best {best} {run.best:.6g} at epoch {run.best_epoch}")
    if test_loader is not None:
        this.test(run, test_loader)
    return run.history


# --------------------------------------------------------------------------- entry point


def main(setup: TrainConfig | JobConfig, argv: Sequence[str] | None = None) -> int:
    """Parse the flags, then train every requested seed and side; returns the exit status:
    0, :data:`NON_FINITE` when a run stopped on a non-finite loss (the others still ran),
    2 when an explicitly requested side cannot be built, :data:`INTERRUPTED`."""
    job = _as_job(setup)
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(job)
    args = parser.parse_args(argv)
    _check_args(parser, args)
    world, device = _init_distributed(args.device)
    deterministic = (torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled())
    if device.type == "cpu":
        # Bit-exact resume on CPU; on CUDA speed wins.
        torch.use_deterministic_algorithms(True, warn_only=True)
    sides: Iterable[str] = job.sides.selected(args)
    asked_alone = getattr(args, job.sides.dest) != job.sides.every
    unavailable: set[str] = set()
    failed: list[str] = []
    previous_sigterm = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (torchrun, schedulers) stops as cleanly as SIGINT does.
        previous_sigterm = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        for seed in args.seeds:
            loaders = tuple(job.loaders(args, seed, world.enabled))
            if len(loaders) not in (2, 3):
                raise ValueError(f"{job.script}: loaders() must return (train, val) or "
                                 f"(train, val, test), got {len(loaders)} item(s)")
            for side in sides:
                if side in unavailable:
                    continue
                try:
                    train_run(job, args, seed, side, loaders, device, world)
                except SideUnavailable as err:
                    # Every network of models/ has a twin: a missing one is a regression.
                    if asked_alone or isinstance(err, TwinUnavailable):
                        print(f"error: the {side} side cannot be built: {err}",
                              file=sys.stderr)
                        return 2
                    unavailable.add(side)
                    if world.is_main:
                        print(f"note: the {side} side is skipped, it cannot be built yet: "
                              f"{err}", file=sys.stderr)
                except NonFiniteLoss as err:
                    failed.append(str(err))
                    if world.is_main:
                        print(f"error: {err}", file=sys.stderr)
        if failed:
            if world.is_main:
                print(f"{len(failed)} run(s) stopped on a non-finite loss; lower --lr or "
                      "check the data", file=sys.stderr)
            return NON_FINITE
        return 0
    except _Interrupted as stop:
        if world.is_main:
            kept = (f"{stop.checkpoint} holds epoch {stop.saved}" if stop.saved
                    else "no epoch of it was saved")
            print(f"\nInterrupted during epoch {stop.epoch} of {stop.run}: that epoch is "
                  f"discarded, {kept}. Resume with:\n  {_resume_command(job.script, argv)}",
                  file=sys.stderr)
        return INTERRUPTED
    except KeyboardInterrupt:
        if world.is_main:
            print(f"\nInterrupted between runs, no epoch in progress. Resume with:\n  "
                  f"{_resume_command(job.script, argv)}", file=sys.stderr)
        return INTERRUPTED
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        if world.enabled and dist.is_initialized():
            dist.destroy_process_group()
