"""The training loop shared by every ``*_Train.py`` script.

A script declares its setup as a :class:`TrainConfig` and calls :func:`main`. For each seed
and each side (``standard``, then ``gnn``) the loop seeds everything, builds the standard
network, and for the ``gnn`` side swaps its layers with :func:`modules.to_gnn`, so both
sides start from the same initialization. It trains with cross-entropy and writes, per run
``<script>_<side>_seed<k>``:

* ``LOG_DIR/<run>.txt``    readable epoch lines (``Epoch 1/10 | train loss ... | ...``),
* ``LOG_DIR/<run>.jsonl``  one JSON record per epoch (accuracies in percent),
* ``CHECKPOINT_DIR/<run>_last.pt`` every epoch and ``<run>_best.pt`` at the best val
  accuracy, written atomically, holding everything ``--resume`` needs to continue exactly.

Launched by ``torchrun --nproc_per_node=N -m SCRIPT ...`` the loop trains with
DistributedDataParallel (NCCL on CUDA, Gloo on CPU); rank 0 alone logs, shows progress and
writes checkpoints, and the metrics are summed over all ranks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from models import MODELS
from modules.convert import to_gnn
from utils.atomic import atomic_write, write_text_atomic
from utils.DataLoader_GNN import (
    get_dataloaders_CIFAR100,
    get_dataloaders_CWRU,
    get_dataloaders_MNIST,
    set_epoch,
)

__all__ = [
    "DATASETS",
    "SIDES",
    "DatasetSpec",
    "TrainConfig",
    "build_parser",
    "main",
    "run_name",
    "train_run",
]

SIDES = ("standard", "gnn")
INTERRUPTED = 130  # exit status after SIGINT or SIGTERM, as a shell reports SIGINT

# Settings that change the trajectory: a resumed run must use the checkpoint's values.
_RESUME_KEYS = ("batch_size", "lr", "amp", "max_train_batches", "mnist_source", "split")


# --------------------------------------------------------------------------- setups


@dataclass(frozen=True)
class DatasetSpec:
    """How a script gets its data: extra flags and a loader factory.

    ``loaders(args, seed, distributed)`` returns ``(train_loader, val_loader)``.
    """

    add_arguments: Callable[[argparse.ArgumentParser], None]
    loaders: Callable[[argparse.Namespace, int, bool], tuple[DataLoader, DataLoader]]


def _pin(args: argparse.Namespace) -> bool:
    return str(args.device).startswith("cuda")


def _mnist_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mnist-source", choices=("train", "test-split"), default="train",
        help="'train': train on the 60,000 training images, validate on the 10,000 test "
        "images; 'test-split': only the test files, first 8,000 train, last 2,000 validate "
        "(for data folders holding only the test set, e.g. ../shared/data)")


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


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def _cifar100_loaders(args: argparse.Namespace, seed: int,
                      distributed: bool) -> tuple[DataLoader, DataLoader]:
    return get_dataloaders_CIFAR100(args.data_dir, args.batch_size, seed, args.num_workers,
                                    _pin(args), distributed)


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(_mnist_arguments, _mnist_loaders),
    "cwru": DatasetSpec(_cwru_arguments, _cwru_loaders),
    "cifar100": DatasetSpec(_no_arguments, _cifar100_loaders),
}


@dataclass(frozen=True)
class TrainConfig:
    """What a training script declares; the defaults of its flags come from here.

    ``optimizer(params, lr=lr)`` builds the optimizer (e.g. ``functools.partial(SGD,
    momentum=0.9)``); ``scheduler(optimizer)``, when given, is stepped once per epoch.
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


# --------------------------------------------------------------------------- flags


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def build_parser(setup: TrainConfig) -> argparse.ArgumentParser:
    """The command line of a training script: shared flags plus its dataset's flags."""
    spec = MODELS[setup.model]
    parser = argparse.ArgumentParser(
        prog=f"python -m {setup.script}",
        description=(setup.description or f"Train the {spec.name} and its twin.")
        + " Runs are named <script>_<standard|gnn>_seed<k>; logs go to LOG_DIR/<run>.txt "
        "and LOG_DIR/<run>.jsonl, checkpoints to CHECKPOINT_DIR/<run>_{last,best}.pt. "
        "Without --resume a run starts over and overwrites them. For several GPUs launch "
        f"'torchrun --nproc_per_node=N -m {setup.script} ...'.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", choices=("standard", "gnn", "both"), default="both",
                        help="which side to train: the torch.nn network, its message-passing "
                        "twin (same initialization), or both, standard first")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(setup.seeds),
                        metavar="SEED", help="seeds to train, one run per seed and side")
    parser.add_argument("--epochs", type=int, default=setup.epochs, help="training epochs")
    parser.add_argument("--batch-size", type=int, default=setup.batch_size,
                        help="batch size per process")
    parser.add_argument("--lr", type=float, default=setup.lr, help="learning rate")
    parser.add_argument("--device", default=_default_device(),
                        help="torch device; under torchrun each rank takes cuda:LOCAL_RANK")
    parser.add_argument("--data-dir", default="data",
                        help="folder holding MNIST/, CWRU/ and cifar-100-python/")
    parser.add_argument("--log-dir", default="log", help="folder for the .txt/.jsonl logs")
    parser.add_argument("--checkpoint-dir", default="checkpoint",
                        help="folder for the _last.pt and _best.pt checkpoints")
    parser.add_argument("--num-workers", type=int, default=0,
                        help="data loader worker processes (results do not depend on it)")
    parser.add_argument("--resume", action="store_true",
                        help="continue each run from its _last.pt checkpoint (model, optimizer, "
                        "scheduler, scaler, RNG states); finished runs are skipped and logs "
                        "cut back to the checkpoint's epoch")
    parser.add_argument("--max-train-batches", type=int, default=None, metavar="N",
                        help="stop each training epoch after N batches (smoke runs)")
    parser.add_argument("--max-val-batches", type=int, default=None, metavar="N",
                        help="validate on the first N batches only (smoke runs)")
    parser.add_argument("--amp", action="store_true",
                        help="CUDA mixed precision (autocast float16 + GradScaler); "
                        "an error on CPU")
    DATASETS[setup.dataset].add_arguments(parser)
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("max_train_batches", "max_val_batches"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.lr <= 0:
        parser.error("--lr must be positive")
    if args.num_workers < 0:
        parser.error("--num-workers must be non-negative")
    if any(seed < 0 for seed in args.seeds):
        parser.error("--seeds must be non-negative")
    try:
        device = torch.device(args.device)
    except RuntimeError as err:
        parser.error(f"--device: {err}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available on this machine")
    if args.amp and device.type != "cuda":
        parser.error("--amp needs a CUDA device (automatic mixed precision is CUDA-only here)")


# --------------------------------------------------------------------------- helpers


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


def run_name(script: str, side: str, seed: int) -> str:
    """``<script>_<side>_seed<seed>``."""
    return f"{script}_{side}_seed{seed}"


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # all CUDA devices too


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


def _atomic_save(obj: Any, paths: Sequence[Path]) -> None:
    """torch.save once, then put the file in place at every path, in order, each by an
    atomic rename (hard links avoid writing it twice)."""
    with atomic_write(paths[-1], also=paths[:-1]) as f:
        torch.save(obj, f)


def _load_checkpoint(path: Path) -> dict[str, Any]:
    # Our own files, holding RNG states (numpy arrays, tuples) that weights_only rejects.
    return torch.load(path, map_location="cpu", weights_only=False)


def _padding_mask(loader: DataLoader, start: int, n: int, device: torch.device) -> torch.Tensor:
    """True for the real samples of a batch: DistributedSampler pads its last round with
    repeated samples, which must not count twice in the metrics."""
    sampler = loader.sampler
    if not isinstance(sampler, DistributedSampler) or sampler.drop_last:
        return torch.ones(n, dtype=torch.bool, device=device)
    position = start + torch.arange(n, device=device)
    return sampler.rank + position * sampler.num_replicas < len(sampler.dataset)


def _all_reduce(values: torch.Tensor, job: _Dist) -> torch.Tensor:
    if job.enabled:
        dist.all_reduce(values)
    return values


def _resume_command(setup: TrainConfig, argv: Sequence[str]) -> str:
    args = list(argv)
    if "--resume" not in args:
        args.append("--resume")
    launcher = "python -m" if os.environ.get("WORLD_SIZE", "1") == "1" else (
        f"torchrun --nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE', '?')} -m")
    return f"{launcher} {setup.script} {shlex.join(args)}".rstrip()


# --------------------------------------------------------------------------- logs


def _log_paths(log_dir: Path, name: str) -> tuple[Path, Path]:
    return log_dir / f"{name}.txt", log_dir / f"{name}.jsonl"


def _epoch_of(line: str) -> int | None:
    """The epoch of a complete ``Epoch k/E | ...`` line, else None."""
    if not line.startswith("Epoch ") or "|" not in line:
        return None
    try:
        return int(line[6:].split("/", 1)[0])
    except ValueError:
        return None


def _record_epoch(line: str) -> int | None:
    try:
        return int(json.loads(line)["epoch"])
    except (ValueError, KeyError, TypeError):  # e.g. a line cut short by SIGKILL
        return None


def _truncate_logs(text_path: Path, jsonl_path: Path, epoch: int) -> None:
    """Cut both logs back to the end of ``epoch``: later records and any line a crash left
    incomplete are dropped."""
    if jsonl_path.is_file():
        kept = [line for line in jsonl_path.read_text(encoding="utf-8").splitlines()
                if (e := _record_epoch(line)) is not None and e <= epoch]
        write_text_atomic(jsonl_path, "".join(line + "\n" for line in kept))
    if text_path.is_file():
        lines = text_path.read_text(encoding="utf-8").splitlines()
        ends = [i for i, line in enumerate(lines) if _epoch_of(line) == epoch]
        cut = ends[-1] + 1 if ends else len(lines)
        write_text_atomic(text_path, "".join(line + "\n" for line in lines[:cut]))


def _append(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def _epoch_line(r: dict[str, Any]) -> str:
    return (f"Epoch {r['epoch']}/{r['epochs']} | train loss {r['train_loss']:.4f} "
            f"acc {r['train_acc']:.2f}% | val loss {r['val_loss']:.4f} "
            f"acc {r['val_acc']:.2f}% | lr {r['lr']:.3g} | time {r['epoch_time']:.1f}s "
            f"(val {r['val_time']:.1f}s)")


# --------------------------------------------------------------------------- one epoch


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    if amp:
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _run_epoch(model: nn.Module, loader: DataLoader, criterion: nn.Module,
               optimizer: Optimizer | None, scaler: torch.amp.GradScaler, device: torch.device,
               amp: bool, max_batches: int | None, job: _Dist,
               desc: str) -> tuple[float, float, float]:
    """One pass over ``loader``: training when ``optimizer`` is given, else evaluation.

    Returns (mean loss, accuracy in percent, seconds), summed over all ranks.
    """
    training = optimizer is not None
    model.train(training)
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
    start, seen = time.perf_counter(), 0
    bar = tqdm(total=total, desc=desc, leave=False, disable=not job.is_main,
               dynamic_ncols=True)
    grad = contextlib.nullcontext() if training else torch.no_grad()
    with bar, grad:
        for batch, (x, y) in enumerate(loader):
            if batch >= total:
                break
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            with _autocast(device, amp):
                logits = model(x)
                losses = criterion(logits, y)
            if training:
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(losses.mean()).backward()
                scaler.step(optimizer)
                scaler.update()
            mask = _padding_mask(loader, seen, len(y), device)
            seen += len(y)
            sums[0] += losses.detach().double()[mask].sum()
            sums[1] += (logits.detach().argmax(1) == y)[mask].sum()
            sums[2] += mask.sum()
            bar.update(1)
            if job.is_main and (batch % 20 == 0 or batch == total - 1):
                bar.set_postfix(loss=f"{sums[0].item() / max(sums[2].item(), 1.0):.4f}")
    loss_sum, correct, count = _all_reduce(sums, job).tolist()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    count = max(count, 1.0)
    return loss_sum / count, 100.0 * correct / count, seconds


# --------------------------------------------------------------------------- one run


class _Interrupted(Exception):
    """SIGINT/SIGTERM arrived during ``epoch`` of ``run``; ``saved`` epochs are on disk."""

    def __init__(self, run: str, epoch: int, saved: int, checkpoint: Path) -> None:
        super().__init__(run)
        self.run, self.epoch, self.saved, self.checkpoint = run, epoch, saved, checkpoint


class TwinUnavailable(Exception):
    """The network has a layer without a message-passing twin (yet)."""


def _build_model(setup: TrainConfig, seed: int, side: str) -> nn.Module:
    """Seed everything, build the standard network and, for ``gnn``, swap in its twins."""
    _seed_everything(seed)
    model = MODELS[setup.model].standard()
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


def _config(setup: TrainConfig, args: argparse.Namespace, seed: int, side: str,
            job: _Dist) -> dict[str, Any]:
    config = {key: value for key, value in vars(args).items()
              if isinstance(value, (str, int, float, bool, list, type(None)))}
    config.update(script=setup.script, arch=setup.model, dataset=setup.dataset, side=side,
                  seed=seed, world_size=job.world_size)
    return config


def _check_resume(saved: dict[str, Any], config: dict[str, Any], path: Path) -> None:
    for key in _RESUME_KEYS:
        if key in saved and key in config and saved[key] != config[key]:
            flag = "--" + key.replace("_", "-")
            raise SystemExit(f"{path} was trained with {flag} {saved[key]!r}, this command "
                             f"gives {config[key]!r}: use the same value to resume, or drop "
                             "--resume to start over")
    if saved.get("world_size") != config["world_size"]:
        print(f"warning: {path} was written by {saved.get('world_size')} process(es), this "
              f"job has {config['world_size']}: the resumed run will not match an "
              "uninterrupted one exactly", file=sys.stderr)


def _gather_rng(device: torch.device, job: _Dist) -> list[dict[str, Any]]:
    state = _rng_state(device)
    if not job.enabled:
        return [state]
    states: list[Any] = [None] * job.world_size
    dist.all_gather_object(states, state)
    return states


def _describe_optimizer(optimizer: Optimizer) -> str:
    group = optimizer.param_groups[0]
    keys = ("lr", "momentum", "betas", "weight_decay")
    parts = [f"{k}={group[k]}" for k in keys if k in group and group[k] not in (0, 0.0)]
    return f"{type(optimizer).__name__}({', '.join(parts)})"


def train_run(setup: TrainConfig, args: argparse.Namespace, seed: int, side: str,
              loaders: tuple[DataLoader, DataLoader], device: torch.device,
              job: _Dist | None = None) -> list[dict[str, Any]]:
    """Train one run (one seed, one side) and return its per-epoch records.

    With ``args.resume`` it continues from ``<run>_last.pt`` when that exists; a finished
    run returns its saved records without training.
    """
    job = job or _Dist()
    name = run_name(setup.script, side, seed)
    log_dir, ckpt_dir = Path(args.log_dir), Path(args.checkpoint_dir)
    text_path, jsonl_path = _log_paths(log_dir, name)
    last_path, best_path = ckpt_dir / f"{name}_last.pt", ckpt_dir / f"{name}_best.pt"
    train_loader, val_loader = loaders

    model = _build_model(setup, seed, side).to(device)
    if job.rank > 0:
        # Own dropout masks per rank; rank 0 keeps the single-device stream.
        torch.manual_seed(int(np.random.SeedSequence([seed, job.rank]).generate_state(1)[0]))
    optimizer = setup.optimizer(model.parameters(), lr=args.lr)
    scheduler = setup.scheduler(optimizer) if setup.scheduler is not None else None
    scaler = torch.amp.GradScaler("cuda", enabled=args.amp)
    config = _config(setup, args, seed, side, job)

    start_epoch, best_acc, best_epoch, history = 0, -1.0, 0, []
    checkpoint = _load_checkpoint(last_path) if args.resume and last_path.is_file() else None
    if checkpoint is not None:
        _check_resume(checkpoint["config"], config, last_path)
        start_epoch = int(checkpoint["epoch"])
        history = list(checkpoint.get("history", []))
        if start_epoch >= args.epochs:
            if job.is_main:
                print(f"{name}: finished ({start_epoch} epochs in {last_path}), skipped")
            return history
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scheduler is not None and checkpoint.get("scheduler") is not None:
            scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        best_acc, best_epoch = float(checkpoint["best_acc"]), int(checkpoint["best_epoch"])
        states = checkpoint["rng"]
        _set_rng_state(states[min(job.rank, len(states) - 1)], device)

    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if job.is_main:
        log_dir.mkdir(parents=True, exist_ok=True)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if checkpoint is not None:
            _truncate_logs(text_path, jsonl_path, start_epoch)
            _append(text_path, f"# resumed from {last_path} after epoch {start_epoch} at {now}")
            print(f"{name}: resuming after epoch {start_epoch}")
        else:
            for stale in (last_path, best_path):
                stale.unlink(missing_ok=True)
        # Temporary files of a save that a SIGKILL cut short.
        for leftover in ckpt_dir.glob(f".{name}_*.pt.*.tmp*"):
            leftover.unlink(missing_ok=True)
            params = sum(p.numel() for p in model.parameters())
            write_text_atomic(text_path, (
                f"# {name}: {MODELS[setup.model].name}, {side} side, seed {seed}, "
                f"{params:,} parameters | {_describe_optimizer(optimizer)} | epochs "
                f"{args.epochs}, batch {args.batch_size} x {job.world_size} process(es) | "
                f"device {device}{' amp' if args.amp else ''} | started {now}\n"))
            write_text_atomic(jsonl_path, "")

    net: nn.Module = model
    if job.enabled:
        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda"
                                      else None)
    criterion = nn.CrossEntropyLoss(reduction="none")
    epoch = saved = start_epoch
    try:
        for epoch in range(start_epoch + 1, args.epochs + 1):
            set_epoch(train_loader, epoch - 1)
            set_epoch(val_loader, epoch - 1)
            lr = float(optimizer.param_groups[0]["lr"])
            tag = f"{name} {epoch}/{args.epochs}"
            train_loss, train_acc, train_time = _run_epoch(
                net, train_loader, criterion, optimizer, scaler, device, args.amp,
                args.max_train_batches, job, f"{tag} train")
            val_loss, val_acc, val_time = _run_epoch(
                net, val_loader, criterion, None, scaler, device, args.amp,
                args.max_val_batches, job, f"{tag} val")
            if scheduler is not None:
                scheduler.step()
            improved = val_acc > best_acc
            if improved:
                best_acc, best_epoch = val_acc, epoch
            record = {
                "script": setup.script, "run": name, "model": side, "arch": setup.model,
                "seed": seed, "epoch": epoch, "epochs": args.epochs,
                "train_loss": train_loss, "train_acc": train_acc,
                "val_loss": val_loss, "val_acc": val_acc, "best_val_acc": best_acc,
                "lr": lr, "epoch_time": train_time, "val_time": val_time,
                "batch_size": args.batch_size, "world_size": job.world_size,
                "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            history.append(record)
            rng = _gather_rng(device, job)
            if not job.is_main:
                continue
            # Logs before checkpoints: a crash in between leaves logs ahead of _last.pt,
            # which --resume cuts back, never a checkpoint ahead of the logs.
            line = _epoch_line(record)
            _append(jsonl_path, json.dumps(record))
            _append(text_path, line)
            tqdm.write(f"{name} {line}")
            state = {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": None if scheduler is None else scheduler.state_dict(),
                "scaler": scaler.state_dict(), "epoch": epoch, "best_acc": best_acc,
                "best_epoch": best_epoch, "rng": rng, "config": config, "history": history,
                "torch_version": torch.__version__,
            }
            # _best.pt first: _last.pt never records a best epoch _best.pt lacks.
            _atomic_save(state, [best_path, last_path] if improved else [last_path])
            saved = epoch
    except KeyboardInterrupt:
        raise _Interrupted(name, max(epoch, saved + 1), saved, last_path) from None
    if job.is_main:
        summary = (f"# finished: best val acc {best_acc:.2f}% at epoch {best_epoch} "
                   f"({datetime.now(timezone.utc).isoformat(timespec='seconds')})")
        _append(text_path, summary)
        print(f"{name}: best val acc {best_acc:.2f}% at epoch {best_epoch}")
    return history


# --------------------------------------------------------------------------- entry point


def main(setup: TrainConfig, argv: Sequence[str] | None = None) -> int:
    """Parse the flags, then train every requested seed and side; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(setup)
    args = parser.parse_args(argv)
    _check_args(parser, args)
    job, device = _init_distributed(args.device)
    deterministic = (torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled())
    if device.type == "cpu":
        # Bit-exact resume on CPU; on CUDA speed wins.
        torch.use_deterministic_algorithms(True, warn_only=True)
    sides: Iterable[str] = SIDES if args.model == "both" else (args.model,)
    skip_twin = False
    previous_sigterm = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (torchrun, schedulers) stops as cleanly as SIGINT does.
        previous_sigterm = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        for seed in args.seeds:
            loaders = DATASETS[setup.dataset].loaders(args, seed, job.enabled)
            for side in sides:
                if side == "gnn" and skip_twin:
                    continue
                try:
                    train_run(setup, args, seed, side, loaders, device, job)
                except TwinUnavailable as err:
                    if args.model != "both":
                        print(f"error: the twin cannot be built: {err}", file=sys.stderr)
                        return 2
                    skip_twin = True
                    if job.is_main:
                        print(f"note: the gnn side is skipped, the twin cannot be built yet: "
                              f"{err}", file=sys.stderr)
        return 0
    except _Interrupted as stop:
        if job.is_main:
            kept = (f"{stop.checkpoint} holds epoch {stop.saved}" if stop.saved
                    else "no epoch of it was saved")
            print(f"\nInterrupted during epoch {stop.epoch} of {stop.run}: that epoch is "
                  f"discarded, {kept}. Resume with:\n  {_resume_command(setup, argv)}",
                  file=sys.stderr)
        return INTERRUPTED
    except KeyboardInterrupt:
        if job.is_main:
            print(f"\nInterrupted between runs, no epoch in progress. Resume with:\n  "
                  f"{_resume_command(setup, argv)}", file=sys.stderr)
        return INTERRUPTED
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        if job.enabled and dist.is_initialized():
            dist.destroy_process_group()
