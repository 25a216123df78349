"""The twin jobs: a network of :data:`models.MODELS` and its message-passing twin, trained
side by side from the same initialization with cross-entropy on ``(x, y)`` batches of a
:data:`DATASETS` entry (sides ``standard`` and ``gnn``, flag ``--model``).

A twin script declares a :class:`TrainConfig` and runs its :meth:`TrainConfig.job` through
the training loop::

    SETUP = TrainConfig(script="MNIST_MLP_Train", model="mlp", dataset="mnist",
                        epochs=100, batch_size=128, lr=1e-3, optimizer=SGD)
    sys.exit(main(SETUP.job()))    # utils.Train_Test.main
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from models import MODELS
from modules.convert import to_gnn
from utils.checkpoints import rng_state, set_rng_state
from utils.DataLoader_GNN import (
    get_dataloaders_CIFAR100,
    get_dataloaders_CWRU,
    get_dataloaders_MNIST,
)
from utils.Train_Test import JobConfig, SideFlag, SideUnavailable

__all__ = ["DATASETS", "SIDES", "DatasetSpec", "TrainConfig", "TwinUnavailable", "build_twin"]

SIDES = ("standard", "gnn")


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    pass


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


class TwinUnavailable(SideUnavailable):
    """The network has a layer without a message-passing twin (yet). Every network of
    :data:`models.MODELS` has a twin, so a missing one is an error even under ``--model
    both``."""

    skippable = False


def build_twin(model_key: str, args: argparse.Namespace | None, seed: int,
               side: str) -> nn.Module:
    """The standard network of ``MODELS[model_key]`` and, for ``gnn``, its twin."""
    model = MODELS[model_key].standard()
    if side == "gnn":
        # Building twin layers may draw random numbers (their own initialization, then
        # overwritten): restore the streams so dropout sees what the standard side sees.
        state = rng_state(torch.device("cpu"))
        cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        try:
            model = to_gnn(model, copy_model=False)
        except TypeError as err:
            raise TwinUnavailable(str(err)) from err
        finally:
            set_rng_state(state, torch.device("cpu"))
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
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; known: {sorted(MODELS)}")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; known: {sorted(DATASETS)}")

    def job(self) -> JobConfig:
        """The :class:`~utils.Train_Test.JobConfig` the training loop runs."""
        name = MODELS[self.model].name
        data = DATASETS[self.dataset]
        return JobConfig(
            script=self.script, title=name, epochs=self.epochs, batch_size=self.batch_size,
            lr=self.lr, optimizer=self.optimizer, scheduler=self.scheduler, seeds=self.seeds,
            build_model=partial(build_twin, self.model), loaders=data.loaders,
            sides=SideFlag("--model", SIDES, default="both", every="both",
                           help="which side to train: the torch.nn network, its "
                           "message-passing twin (same initialization), or both, standard "
                           "first"),
            description=self.description or f"Train the {name} and its twin.",
            extra_arguments=data.add_arguments, resume_keys=data.resume_keys,
            labels={"arch": self.model, "dataset": self.dataset},
        )

