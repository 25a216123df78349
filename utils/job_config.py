"""How a job of the training loop (:mod:`utils.Train_Test`) is declared: :class:`JobConfig`,
the flag choosing its sides (:class:`SideFlag`), and the exceptions a job raises to refuse a
side (:class:`SideUnavailable`) or a command (:class:`JobRefused`)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from utils.tasks import Task, classification

__all__ = ["JobConfig", "JobRefused", "JobSource", "SideFlag", "SideUnavailable", "job_of"]


@dataclass(frozen=True)
class SideFlag:
    """The flag that picks the sides to train, e.g. ``--model standard|gnn|both``.

    Args:
        flag: the option, e.g. ``"--encoder"``.
        choices: the sides, in the order ``every`` trains them.
        default: the default value (a side, or ``every``).
        every: an extra choice meaning all sides (e.g. ``"both"``, ``"all"``), or None.
        help: help text of the flag (argparse appends the default).
        noun: what a side is called in messages (``"the nfn encoder is skipped"``).
    """

    flag: str
    choices: tuple[str, ...]
    default: str
    every: str | None = None
    help: str = ""
    noun: str = "side"

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
        epochs: default of ``--epochs``: one number, or one per side (a mapping from every
            side to its epochs; ``--epochs`` then defaults to the run's side's).
        batch_size, lr: defaults of ``--batch-size`` and ``--lr``; ``batch_size=None`` leaves
            it to ``configure`` (which must then set ``args.batch_size``), with
            ``batch_size_help`` saying how it is chosen.
        optimizer: ``optimizer(params, lr=lr)``, e.g. ``functools.partial(SGD, momentum=0.9)``,
            or one per side (a mapping from every side to its factory).
        build_model: ``(args, seed, side) -> nn.Module``; the loop seeds every generator
            with ``seed`` just before. May raise :class:`SideUnavailable`.
        loaders: ``(args, seed, distributed) -> (train, val)`` or ``(train, val, test)``;
            with ``distributed`` each loader must use a ``DistributedSampler``.
        sides: the flag choosing the sides.
        task: loss and metrics (default: classification of ``(x, y)`` batches), or one per
            side (a mapping from every side to its task: stages of a job that learn
            different things, e.g. an autoencoder and a classifier on its latent).
        scheduler: ``scheduler(optimizer)``, stepped once per epoch, or None.
        seeds: default of ``--seeds``.
        description: first sentence of ``--help``.
        extra_arguments: adds the job's own flags to the parser.
        resume_keys: flags (dest names) that a resumed run must repeat unchanged.
        labels: constant fields added to every record and checkpoint config.
        configure: ``configure(args) -> JobConfig``, called once after parsing, before any
            run: the job to train under these flags (e.g. its optimizer built from them). It
            checks and may read the job's inputs; :class:`JobRefused` refuses the command
            (one ``error:`` line, exit status 2).
        reads_data_dir: whether the job reads ``--data-dir`` (otherwise the flag is absent).
        ema_decay: default of ``--ema-decay`` (0: validate and test the weights themselves,
            not a moving average of them; :mod:`utils.averaging`), one number or one per
            side, as ``epochs``.
    """

    script: str
    title: str
    epochs: int | Mapping[str, int]
    batch_size: int | None
    lr: float
    optimizer: Callable[..., Optimizer] | Mapping[str, Callable[..., Optimizer]]
    build_model: Callable[[argparse.Namespace, int, str], nn.Module]
    loaders: Callable[[argparse.Namespace, int, bool], tuple[DataLoader, ...]]
    sides: SideFlag
    task: Task | Mapping[str, Task] = field(default_factory=classification)
    scheduler: Callable[[Optimizer], Any] | None = None
    seeds: tuple[int, ...] = tuple(range(10))
    description: str = ""
    extra_arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments
    resume_keys: tuple[str, ...] = ()
    labels: dict[str, Any] = field(default_factory=dict)
    configure: Callable[[argparse.Namespace], JobConfig] | None = None
    reads_data_dir: bool = True
    batch_size_help: str = "batch size per process"
    ema_decay: float | Mapping[str, float] = 0.0

    def __post_init__(self) -> None:
        for name in ("epochs", "task", "optimizer", "ema_decay"):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                missing = [side for side in self.sides.choices if side not in value]
                if missing:
                    raise ValueError(f"{self.script}: {name} has no entry for {missing}")

    def default_epochs(self, side: str) -> int:
        """The epochs of a run of ``side`` when ``--epochs`` is not given."""
        return int(self.epochs[side] if isinstance(self.epochs, Mapping) else self.epochs)

    def with_side_defaults(self, args: argparse.Namespace, side: str) -> argparse.Namespace:
        """``args`` with the per-side defaults of ``--epochs`` and ``--ema-decay`` filled
        in for a run of ``side`` where the command line left them out (None)."""
        filled = {}
        if args.epochs is None:
            filled["epochs"] = self.default_epochs(side)
        if getattr(args, "ema_decay", 0.0) is None:
            filled["ema_decay"] = float(self.ema_decay[side] if isinstance(
                self.ema_decay, Mapping) else self.ema_decay)
        return argparse.Namespace(**{**vars(args), **filled}) if filled else args

    def task_for(self, side: str) -> Task:
        """The task of a run of ``side``."""
        return self.task[side] if isinstance(self.task, Mapping) else self.task

    def optimizer_for(self, side: str) -> Callable[..., Optimizer]:
        """The optimizer factory of a run of ``side``."""
        return self.optimizer[side] if isinstance(self.optimizer, Mapping) else self.optimizer

    def replace(self, **changes: Any) -> JobConfig:
        """This job with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


class JobSource(Protocol):
    """A job declared otherwise (e.g. :class:`jobs.twins.TrainConfig`): ``job()`` gives the
    :class:`JobConfig` the loop runs."""

    def job(self) -> JobConfig: ...


class SideUnavailable(Exception):
    """``build_model`` cannot build this side (yet); with the flag's ``every`` choice the
    side is skipped, asked for alone it is an error. A subclass with ``skippable = False``
    is an error under ``every`` too."""

    skippable: bool = True


class JobRefused(Exception):
    """The job cannot run with these flags or inputs (raised by ``configure``): ``main``
    prints ``error: <message>`` and returns 2 before any run starts."""


def job_of(setup: JobConfig | JobSource) -> JobConfig:
    """``setup`` itself when it is a :class:`JobConfig`, else ``setup.job()``."""
    if isinstance(setup, JobConfig):
        return setup
    job = getattr(setup, "job", None)
    if not callable(job):
        raise TypeError(f"expected a JobConfig or a declaration with a job() method, got "
                        f"{type(setup).__name__}")
    return job()
