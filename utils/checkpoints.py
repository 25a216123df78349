"""The checkpoints of a training run: ``<run>_last.pt`` (every epoch) and ``<run>_best.pt``
(best validation metric), written atomically, and the RNG states they carry."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.swa_utils import AveragedModel

from utils.atomic import atomic_write

__all__ = ["Checkpoints", "RunState", "rng_state", "set_rng_state", "validated_weights"]


def rng_state(device: torch.device) -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's generators (and of ``device`` when
    it is a CUDA device)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore the generators from a :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)



def validated_weights(checkpoint: dict[str, Any]) -> dict[str, Tensor]:
    """The weights that a checkpoint's run validated: the moving average of its weights
    when it kept one (``--ema-decay``), else the model's own."""
    averaged = checkpoint.get("averaged")
    if averaged is None:
        return checkpoint["model"]
    return {key.removeprefix("module."): value for key, value in averaged.items()
            if key.startswith("module.")}


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
        """The best epoch's :func:`validated_weights`."""
        return validated_weights(self._load(self.best))

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


@dataclass
class RunState:
    """The state of one run that a checkpoint holds: model, optimizer, scheduler, scaler,
    the moving average of the weights (``averaged``, when kept: :mod:`utils.averaging`),
    epochs done, best validation value and the records so far."""

    model: nn.Module
    optimizer: Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    epoch: int = 0
    best: float | None = None
    best_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    averaged: AveragedModel | None = None

    def after_step(self) -> None:
        """Move the moving average (if kept) after an optimizer step."""
        if self.averaged is not None:
            self.averaged.update_parameters(self.model)

    def state(self, best_metric: str, rng: list[dict[str, Any]],
              config: dict[str, Any]) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "epoch": self.epoch,
            "best_metric": best_metric, "best_value": self.best,
            "best_epoch": self.best_epoch, "rng": rng, "config": config,
            "history": self.history, "torch_version": torch.__version__,
            "averaged": None if self.averaged is None else self.averaged.state_dict(),
        }

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Everything but the RNG states (set per rank by the caller)."""
        self.model.load_state_dict(checkpoint["model"])
        if self.averaged is not None and checkpoint.get("averaged") is not None:
            self.averaged.load_state_dict(checkpoint["averaged"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scheduler is not None and checkpoint.get("scheduler") is not None:
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.epoch = int(checkpoint["epoch"])
        best = checkpoint.get("best_value", checkpoint.get("best_acc"))  # older checkpoints
        self.best = None if best is None else float(best)
        self.best_epoch = int(checkpoint["best_epoch"])
        self.history = list(checkpoint.get("history", []))
