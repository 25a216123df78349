"""One pass of a training run over a loader (training or evaluation) and the process's
place in a ``torchrun`` job: what :mod:`utils.Train_Test` runs each epoch.

A pass collects the task's per-sample values of every sample of every rank (padding of a
``DistributedSampler`` counted once), stops with :class:`NonFiniteLoss` naming the first
step whose loss is NaN or infinite, and shows a progress bar on a terminal only.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from utils.checkpoints import rng_state
from utils.tasks import Task, batch_size, to_device
from utils.torchrun import TorchrunPlace, torchrun_place

__all__ = ["EpochPass", "NonFiniteLoss", "World", "from_main", "gather_rng",
           "init_distributed"]


#: the process's place in a (possibly one-process) job, once the training loop has joined it
World = TorchrunPlace


def init_distributed(device: str) -> tuple[World, torch.device]:
    """Join the torchrun job described by the environment, if any."""
    place = torchrun_place()
    if not place.enabled:
        return World(), torch.device(device)
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", place.local_rank)
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return place, dev


def from_main(value: Any, job: World) -> Any:
    """Rank 0's ``value`` on every rank."""
    if not job.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]



def gather_rng(device: torch.device, job: World) -> list[dict[str, Any]]:
    """The RNG states of every rank (rank order), for a checkpoint."""
    state = rng_state(device)
    if not job.enabled:
        return [state]
    states: list[Any] = [None] * job.world_size
    dist.all_gather_object(states, state)
    return states



class NonFiniteLoss(Exception):
    """A training or validation loss became NaN or infinite."""


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    if amp:
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _progress(total: int, desc: str, job: World) -> tqdm:
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


def _gather_values(values: dict[str, list[Tensor]], job: World) -> dict[str, Tensor]:
    """Concatenate the per-batch values, then those of every rank (rank order)."""
    local = {key: torch.cat(parts).cpu() if parts else torch.zeros(0)
             for key, parts in values.items()}
    if not job.enabled:
        return local
    every: list[Any] = [None] * job.world_size
    dist.all_gather_object(every, local)
    return {key: torch.cat([part[key] for part in every]) for key in local}


def _all_reduce_min(value: Tensor, job: World) -> Tensor:
    if job.enabled:
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return value


@dataclass
class EpochPass:
    """One pass over a loader: training when ``optimizer`` is given, else evaluation."""

    model: nn.Module
    task: Task
    device: torch.device
    amp: bool
    job: World
    optimizer: Optimizer | None = None
    scaler: torch.amp.GradScaler | None = None
    #: Called after every optimizer step (a moving average of the weights follows them).
    after_step: Callable[[], None] | None = None
    #: Seconds the last :meth:`run` spent waiting for batches (loading, collating, moving
    #: to the device); the rest of its time is computation.
    data_seconds: float = 0.0

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
        self.data_seconds = 0.0
        grad = contextlib.nullcontext() if training else torch.no_grad()
        with _progress(total, desc, self.job) as bar, grad:
            batches = iter(loader)
            for step in range(total):
                fetch = time.perf_counter()
                batch = to_device(next(batches), self.device)
                self.data_seconds += time.perf_counter() - fetch
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
        if self.after_step is not None:
            self.after_step()

    def _check(self, first_bad: Tensor, desc: str) -> None:
        step = _all_reduce_min(first_bad.clone(), self.job).item()
        if math.isfinite(step):
            raise NonFiniteLoss(f"{desc}: non-finite loss at step {int(step)} (1-based)")
