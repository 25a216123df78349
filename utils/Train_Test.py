"""The training loop shared by every ``*_Train.py`` script.

A script declares a :class:`JobConfig` and calls :func:`main`; ``main`` parses the flags
once and trains one *run* per seed and *side*, named ``<script>_<side>_seed<k>``, writing

* ``LOG_DIR/<run>.txt``    a header line, readable epoch lines (``Epoch 1/10 | train loss
  ... | val loss ... | ...``), and a final ``Test ...`` line when the job has a test split
  (:class:`utils.run_log.RunLog`),
* ``LOG_DIR/<run>.jsonl``  one JSON record per epoch (metrics ``train_<m>``, ``val_<m>``,
  ``best_val_<best metric>``; accuracies in percent) and, after a test, a last record with
  ``"final": true`` and the task's test metrics,
* ``CHECKPOINT_DIR/<run>_last.pt`` every epoch and ``<run>_best.pt`` at the best validation
  metric, written atomically, holding everything ``--resume`` needs to continue exactly
  (:class:`utils.checkpoints.Checkpoints`).

A job names its sides and their flag (e.g. ``--encoder ngnn``), builds the model with
``build_model(args, seed, side)``, its loaders with ``loaders(args, seed, distributed) ->
(train, val, test or None)``, adds its own flags with ``extra_arguments(parser)``, and says
with a :class:`utils.tasks.Task` what it minimises and measures. Batches may be ``(x, y)``
tuples or PyG ``Batch`` objects. With a test loader, the best checkpoint is evaluated on it
after the last epoch and the result appended as the final record. Default epochs may differ
per side (``epochs={"ngnn": 9, "dng": 14}``), and ``configure(args)`` adapts the job to the
parsed flags (an optimizer built from them, a data set checked and read before any run)::

    from functools import partial
    from torch.optim import AdamW
    from utils.tasks import classification
    from utils.Train_Test import JobConfig, SideFlag, main

    JOB = JobConfig(
        script="MNIST_INR_Classification_Train", title="MNIST INR classification",
        epochs={"ngnn": 9, "dng": 14}, batch_size=128, lr=1e-3,
        optimizer=partial(AdamW, weight_decay=5e-4),
        sides=SideFlag("--encoder", ("ngnn", "dng"), default="ngnn", every="all",
                       help="weight-space encoder"),
        build_model=build_encoder,            # (args, seed, side) -> nn.Module
        loaders=inr_loaders,                  # (args, seed, distributed) -> (train, val, test)
        task=classification(),                # final record: test_acc
        extra_arguments=add_inr_flags, resume_keys=("hidden",), seeds=(0, 1, 2),
        reads_data_dir=False)                 # no --data-dir flag
    sys.exit(main(JOB))

The twins (a network of :data:`models.MODELS` and its message-passing twin) are declared
in :mod:`jobs.twins`; their ``TrainConfig.job()`` is such a job, and :func:`main` also takes
any declaration with a ``job()`` method. ``utils.job_data.split_loaders(datasets,
batch_size, seed, distributed)`` builds loaders. Stock tasks are ``classification()`` and
``scalar_regression("bce" | "mse")`` (Kendall's tau, R^2, MSE); a job with its own measure
writes its task, e.g. a regression whose best checkpoint has the lowest validation MSE and
whose final record carries ``test_mse`` and ``identity_mse``::

    DILATION = Task(
        loss=pixel_mse,                                         # (output, batch) -> [B]
        collect=lambda output, batch: {"identity": identity_mse(batch)},      # [B]
        metrics=lambda v: {"mse": float(v["loss"].mean()),      # v: the whole split
                           "identity_mse": float(v["identity"].mean())},
        best_metric="mse", higher_is_better=False,
        test_metrics={"test_mse": "mse", "identity_mse": "identity_mse"})

Every run: seeded (model initialization, data order, dropout), resumable with ``--resume``
(bit-exact on CPU), stopped with a clear message when a training or validation loss turns
non-finite (the last good checkpoint is kept; exit status :data:`NON_FINITE` after the other
runs), interruptible (SIGINT/SIGTERM: the epoch in progress is discarded and the resume
command printed). Progress bars are drawn on a terminal only; redirected output gets one
line per epoch. Launched by ``torchrun --nproc_per_node=N -m SCRIPT ...`` the loop trains
with DistributedDataParallel (NCCL on CUDA, Gloo on CPU); rank 0 alone logs, shows progress
and writes checkpoints, and metrics are computed over the samples of all ranks, each
counted once (:mod:`utils.train_pass`).
"""

from __future__ import annotations

import argparse
import math
import random
import shlex
import signal
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from utils.averaging import ema_argument, moving_average
from utils.checkpoints import Checkpoints, RunState, set_rng_state
from utils.cli import HelpFormatter, checked_device, default_device
from utils.compiled import compile_argument, set_compiled_layers
from utils.DataLoader_GNN import set_epoch
from utils.job_config import (
    JobConfig,
    JobRefused,
    JobSource,
    SideFlag,
    SideUnavailable,
    job_of,
)
from utils.memory import allocator_setting, keep_freed_memory
from utils.optim import describe_optimizer, last_step_lr
from utils.run_log import RunLog
from utils.tasks import Task
from utils.torchrun import torchrun_place
from utils.train_pass import (
    EpochPass,
    NonFiniteLoss,
    World,
    from_main,
    gather_rng,
    init_distributed,
)

__all__ = [
    "INTERRUPTED",
    "NON_FINITE",
    "REFUSED",
    "Checkpoints",
    "JobConfig",
    "JobRefused",
    "JobSource",
    "NonFiniteLoss",
    "RunLog",
    "SideFlag",
    "SideUnavailable",
    "build_parser",
    "main",
    "run_name",
    "seed_everything",
    "train_run",
]

INTERRUPTED = 130  # exit status after SIGINT or SIGTERM, as a shell reports SIGINT
NON_FINITE = 3  # exit status when a run was stopped by a non-finite loss
REFUSED = 2  # exit status when the command line or the job's inputs are refused

# Settings that change the trajectory: a resumed run must use the checkpoint's values.
_RESUME_KEYS = ("batch_size", "lr", "amp", "max_train_batches", "ema_decay")

def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (all CUDA devices too)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- flags


def _epochs_help(job: JobConfig) -> str:
    if not isinstance(job.epochs, Mapping):
        return "training epochs"
    per_side = ", ".join(f"{side} {job.epochs[side]}" for side in job.sides.choices)
    return f"training epochs; default per {job.sides.noun}: {per_side}"


def build_parser(setup: JobConfig | JobSource) -> argparse.ArgumentParser:
    """The command line of a training script: shared flags plus the job's own."""
    job = job_of(setup)
    sides = job.sides
    parser = argparse.ArgumentParser(
        prog=f"python -m {job.script}",
        description=f"{job.description} Runs are named <script>_<side>_seed<k> "
        f"(sides: {', '.join(sides.choices)}); logs go to LOG_DIR/<run>.txt and "
        "LOG_DIR/<run>.jsonl, checkpoints to CHECKPOINT_DIR/<run>_{last,best}.pt. Without "
        "--resume a run starts over: its logs are rewritten from the start and its "
        "checkpoints replaced. For several GPUs launch "
        f"'torchrun --nproc_per_node=N -m {job.script} ...'.",
        formatter_class=HelpFormatter,
    )
    choices = sides.choices + ((sides.every,) if sides.every else ())
    parser.add_argument(sides.flag, choices=choices, default=sides.default,
                        help=sides.help_text)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(job.seeds),
                        metavar="SEED", help="seeds to train, one run per seed and side")
    parser.add_argument("--epochs", type=int,
                        default=None if isinstance(job.epochs, Mapping) else job.epochs,
                        help=_epochs_help(job))
    parser.add_argument("--batch-size", type=int, default=job.batch_size,
                        help=job.batch_size_help)
    parser.add_argument("--lr", type=float, default=job.lr,
                        help="learning rate, a positive finite number")
    parser.add_argument("--device", default=default_device(),
                        help="torch device; under torchrun each rank takes cuda:LOCAL_RANK")
    if job.reads_data_dir:
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
    compile_argument(parser)
    ema_argument(parser, job.ema_decay, job.sides.choices, job.sides.noun)
    job.extra_arguments(parser)
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("epochs", "batch_size", "max_train_batches", "max_val_batches"):
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


# --------------------------------------------------------------------------- helpers


def run_name(script: str, side: str, seed: int) -> str:
    """``<script>_<side>_seed<seed>``."""
    return f"{script}_{side}_seed{seed}"



def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _resume_command(script: str, argv: Sequence[str]) -> str:
    args = list(argv)
    if "--resume" not in args:
        args.append("--resume")
    place = torchrun_place()
    launcher = f"torchrun --nproc_per_node={place.local_world_size} -m" if place.enabled \
        else "python -m"
    return f"{launcher} {script} {shlex.join(args)}".rstrip()



def _format_metrics(metrics: dict[str, float], task: Task) -> str:
    parts = []
    for key, value in metrics.items():
        parts.append(f"{key} {value:.2f}%" if key in task.percent else f"{key} {value:.4f}")
    return " ".join(parts)



# --------------------------------------------------------------------------- one run


class _Interrupted(Exception):
    """SIGINT/SIGTERM arrived during ``epoch`` of ``run``; ``saved`` epochs are on disk."""

    def __init__(self, run: str, epoch: int, saved: int, checkpoint: Path) -> None:
        super().__init__(run)
        self.run, self.epoch, self.saved, self.checkpoint = run, epoch, saved, checkpoint


@dataclass
class _Run:
    """One run (one seed, one side) of a job: its settings, logs and checkpoints."""

    job: JobConfig
    args: argparse.Namespace
    seed: int
    side: str
    device: torch.device
    world: World

    def __post_init__(self) -> None:
        self.name = run_name(self.job.script, self.side, self.seed)
        self.log = RunLog(Path(self.args.log_dir), self.name)
        self.ckpts = Checkpoints(Path(self.args.checkpoint_dir), self.name)
        self.compiled = ""  # what the header says of compiled layers (set by build)
        self.config = {key: value for key, value in vars(self.args).items()
                       if isinstance(value, (str, int, float, bool, list, type(None)))}
        self.config.update(script=self.job.script, side=self.side, seed=self.seed,
                           world_size=self.world.world_size, **self.job.labels)

    @property
    def task(self) -> Task:
        return self.job.task_for(self.side)

    def build(self, total_steps: int) -> RunState:
        """Seed every generator with the run's seed, then build model and optimizer; an
        optimizer whose schedule depends on the run's length (``plan_run``) is told the
        run's ``total_steps``."""
        seed_everything(self.seed)
        model = self.job.build_model(self.args, self.seed, self.side).to(self.device)
        self.compiled = set_compiled_layers(
            model, getattr(self.args, "compile", "off"), total_steps,
            getattr(self.args, "grad_checkpointing", False))
        if self.world.rank > 0:
            # Own dropout masks per rank; rank 0 keeps the single-device stream.
            torch.manual_seed(int(np.random.SeedSequence(
                [self.seed, self.world.rank]).generate_state(1)[0]))
        optimizer = self.job.optimizer_for(self.side)(model.parameters(), lr=self.args.lr)
        if hasattr(optimizer, "plan_run"):
            optimizer.plan_run(total_steps)
        scheduler = self.job.scheduler(optimizer) if self.job.scheduler else None
        return RunState(model, optimizer, scheduler,
                        torch.amp.GradScaler("cuda", enabled=self.args.amp),
                        averaged=moving_average(model, getattr(self.args, "ema_decay", 0.0)))

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

    def open_logs(self, run: RunState, resumed: bool) -> None:
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
            f"{params:,} parameters | {describe_optimizer(run.optimizer)} | epochs "
            f"{self.args.epochs}, batch {self.args.batch_size} x {self.world.world_size} "
            f"process(es) | device {self.device}{' amp' if self.args.amp else ''} | "
            f"{allocator_setting()}{f' | {self.compiled}' if self.compiled else ''}"
            f"{'' if run.averaged is None else f' | EMA {self.args.ema_decay}'} | "
            f"started {_now()}")

    def _wrap(self, model: nn.Module) -> nn.Module:
        if not self.world.enabled:
            return model
        return DistributedDataParallel(
            model, device_ids=[self.device] if self.device.type == "cuda" else None)

    def train_epochs(self, run: RunState, train_loader: DataLoader,
                     val_loader: DataLoader) -> None:
        """Epochs ``run.epoch + 1 .. --epochs``: train, validate, log, checkpoint."""
        args, task = self.args, self.task
        net = self._wrap(run.model)
        trainer = EpochPass(net, task, self.device, args.amp, self.world, run.optimizer,
                            run.scaler, run.after_step)
        evaluator = EpochPass(net if run.averaged is None else run.averaged.module, task,
                              self.device, args.amp, self.world)
        epoch = saved = run.epoch
        try:
            for epoch in range(run.epoch + 1, args.epochs + 1):
                set_epoch(train_loader, epoch - 1)
                set_epoch(val_loader, epoch - 1)
                tag = f"{self.name} {epoch}/{args.epochs}"
                train, train_time = trainer.run(train_loader, args.max_train_batches,
                                                f"{tag} train")
                val, val_time = evaluator.run(val_loader, args.max_val_batches, f"{tag} val")
                if task.best_metric not in val:
                    raise KeyError(f"the task's best_metric {task.best_metric!r} is not among "
                                   f"its metrics {sorted(val)}")
                lr = last_step_lr(run.optimizer)
                if run.scheduler is not None:
                    run.scheduler.step()
                improved = task.better(val[task.best_metric], run.best)
                if improved:
                    run.best, run.best_epoch = val[task.best_metric], epoch
                record = self._record(epoch, train, val, run.best)
                record.update(lr=lr, epoch_time=train_time, data_time=trainer.data_seconds,
                              val_time=val_time,
                              batch_size=args.batch_size, world_size=self.world.world_size,
                              time=_now())
                run.history.append(record)
                run.epoch = epoch
                rng = gather_rng(self.device, self.world)
                if not self.world.is_main:
                    continue
                # Logs before checkpoints: a crash in between leaves logs ahead of _last.pt,
                # which --resume cuts back, never a checkpoint ahead of the logs.
                line = (f"Epoch {epoch}/{args.epochs} | train {_format_metrics(train, task)} "
                        f"| val {_format_metrics(val, task)} | lr {lr:.3g} | time "
                        f"{train_time:.1f}s (data {trainer.data_seconds:.1f}s, "
                        f"val {val_time:.1f}s)")
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

    def test(self, run: RunState, loader: DataLoader) -> dict[str, Any]:
        """Evaluate the best checkpoint on ``loader``; append the final record and line."""
        task = self.task
        if self.world.enabled:
            dist.barrier()  # rank 0 has written _best.pt
        run.model.load_state_dict(self.ckpts.load_best_model())
        set_epoch(loader, 0)
        try:
            metrics, seconds = EpochPass(self._wrap(run.model), task, self.device, self.args.amp,
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
            if task.picture is not None:
                path = Path(self.args.log_dir) / f"{self.name}.png"
                with torch.no_grad():
                    task.picture(run.model.eval(), loader, path)
                tqdm.write(f"{self.name}: wrote {path}")
        return record


def train_run(setup: JobConfig | JobSource, args: argparse.Namespace, seed: int,
              side: str, loaders: Sequence[DataLoader | None], device: torch.device,
              job: World | None = None) -> list[dict[str, Any]]:
    """Train one run (one seed, one side); with a third, test loader, evaluate its best
    checkpoint on it and append the final record. Returns the per-epoch records.

    With ``args.resume`` it continues from ``<run>_last.pt`` when that exists; a finished
    run returns its saved records without training (and is tested if that had not been
    done). Raises :class:`NonFiniteLoss`, the last good checkpoint kept, when a training or
    validation loss turns NaN or infinite.
    """
    config = job_of(setup)
    args = config.with_side_defaults(args, side)
    this = _Run(config, args, seed, side, device, job or World())
    train_loader, val_loader = loaders[0], loaders[1]
    test_loader = loaders[2] if len(loaders) > 2 else None
    steps_per_epoch = len(train_loader)
    if args.max_train_batches is not None:
        steps_per_epoch = min(steps_per_epoch, args.max_train_batches)
    run = this.build(args.epochs * steps_per_epoch)
    checkpoint = this.ckpts.load_last() if args.resume else None
    if checkpoint is not None:
        this.check_resume(checkpoint["config"])
        run.restore(checkpoint)
        if run.epoch >= args.epochs:
            if test_loader is not None and not from_main(this.log.has_final(), this.world):
                this.test(run, test_loader)
            elif this.world.is_main:
                print(f"{this.name}: finished ({run.epoch} epochs in {this.ckpts.last}), "
                      "skipped")
            return run.history
        states = checkpoint["rng"]
        set_rng_state(states[min(this.world.rank, len(states) - 1)], device)
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


def main(setup: JobConfig | JobSource, argv: Sequence[str] | None = None) -> int:
    """Parse the flags, then train every requested seed and side; returns the exit status:
    0, :data:`NON_FINITE` when a run stopped on a non-finite loss (the others still ran),
    :data:`REFUSED` (2) when the job's ``configure`` refuses its inputs or an explicitly
    requested side cannot be built, :data:`INTERRUPTED`. A command line argparse refuses
    raises its ``SystemExit(2)``, as ``--help`` raises ``SystemExit(0)``."""
    job = job_of(setup)
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(job)
    args = parser.parse_args(argv)
    _check_args(parser, args)
    if job.configure is not None:
        try:
            job = job.configure(args)
        except JobRefused as err:
            print(f"error: {err}", file=sys.stderr)
            return REFUSED
    if args.batch_size is None:
        raise TypeError(f"{job.script}: batch_size=None needs a configure that sets "
                        "args.batch_size")
    world, device = init_distributed(args.device)
    deterministic = (torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled())
    if device.type == "cpu":
        keep_freed_memory()  # the same tensors every step: no page faults for each of them
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
                    if asked_alone or not err.skippable:
                        print(f"error: the {side} side cannot be built: {err}",
                              file=sys.stderr)
                        return REFUSED
                    unavailable.add(side)
                    if world.is_main:
                        print(f"note: the {side} {job.sides.noun} is skipped, it cannot be "
                              f"built yet: {err}", file=sys.stderr)
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
