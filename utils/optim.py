"""Optimizers of the training jobs beyond ``torch.optim``."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import AdamW, Optimizer

__all__ = ["LR_SCHEDULES", "WarmupClipAdamW", "describe_optimizer", "last_step_lr"]

#: What follows the warm-up: the learning rate held (the reference recipe), or a cosine
#: from it down to zero at the run's last step.
LR_SCHEDULES = ("constant", "cosine")


class WarmupClipAdamW(AdamW):
    r"""AdamW whose every step first clips the global gradient norm to ``max_grad_norm``
    (:func:`torch.nn.utils.clip_grad_norm_`) and scales the learning rate by
    :math:`\min(1, t / T_\text{warm-up})` at step :math:`t = 1, 2, \dots`; with
    ``lr_schedule="cosine"`` the rate after the warm-up is further scaled by
    :math:`\tfrac12 (1 + \cos(\pi (t - T_\text{warm-up}) / (T - T_\text{warm-up})))`,
    reaching zero at the run's last step :math:`T`.

    The step count lives in the parameter groups (``"warmup_step"``), so it is saved in
    and restored from the optimizer's state dict with everything else (``--resume``).
    Under ``GradScaler`` the gradients are already unscaled when ``step`` runs.

    The warm-up is either a number of steps (``warmup_steps``) or a fraction of the run
    (``warmup_steps=None``): the training loop calls :meth:`plan_run` with the run's
    number of optimizer steps, and the warm-up becomes ``warmup_fraction`` of them, at most
    ``max_warmup_steps``. A short run then reaches its learning rate early, and a run as
    long as the reference's gets the reference's warm-up. A cosine schedule needs the run's
    length, so it needs :meth:`plan_run` as well.

    Args:
        params: parameters or parameter groups.
        lr (float): learning rate after the warm-up.
        warmup_steps (int, optional): steps of the linear warm-up (0: none; None: a
            fraction of the run, set by :meth:`plan_run`).
        warmup_fraction (float): with ``warmup_steps=None``, the warm-up's share of the run.
        max_warmup_steps (int, optional): with ``warmup_steps=None``, the longest warm-up.
        max_grad_norm (float, optional): clip threshold (None: no clipping).
        lr_schedule (str): after the warm-up, ``"constant"`` or ``"cosine"`` (:data:`LR_SCHEDULES`).
        **kwargs: :class:`torch.optim.AdamW` arguments (``weight_decay``, ``amsgrad``).
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, warmup_steps: int | None = 0,
                 max_grad_norm: float | None = None, warmup_fraction: float = 0.0,
                 max_warmup_steps: int | None = None, lr_schedule: str = "constant",
                 **kwargs: Any) -> None:
        if warmup_steps is not None and warmup_steps < 0:
            raise ValueError(f"warmup_steps must be non-negative or None, got {warmup_steps}")
        if not 0 <= warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
        if max_warmup_steps is not None and max_warmup_steps < 0:
            raise ValueError(f"max_warmup_steps must be non-negative or None, got "
                             f"{max_warmup_steps}")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {max_grad_norm}")
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
        super().__init__(params, lr=lr, **kwargs)
        self.lr_schedule = lr_schedule
        self.total_steps: int | None = None
        self.warmup_fraction = warmup_fraction
        self.max_warmup_steps = max_warmup_steps
        self.warmup_steps = 0 if warmup_steps is None else warmup_steps
        self._warmup_of_run = warmup_steps is None
        self.max_grad_norm = max_grad_norm
        for group in self.param_groups:
            group.setdefault("warmup_step", 0)

    def plan_run(self, total_steps: int) -> None:
        """Told by the training loop how many optimizer steps the run will take: a warm-up
        given as a fraction of the run becomes a number of steps (a fixed one stays), and a
        cosine schedule ends at ``total_steps``."""
        if total_steps < 0:
            raise ValueError(f"total_steps must be non-negative, got {total_steps}")
        self.total_steps = total_steps
        if self._warmup_of_run:
            steps = round(self.warmup_fraction * total_steps)
            if self.max_warmup_steps is not None:
                steps = min(steps, self.max_warmup_steps)
            self.warmup_steps = steps

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        if self.lr_schedule == "cosine" and self.total_steps is None:
            raise RuntimeError("a cosine learning-rate schedule needs the run's length: "
                               "call plan_run(total_steps) before the first step")
        if self.max_grad_norm is not None:
            grads = [p for group in self.param_groups for p in group["params"]
                     if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(grads, self.max_grad_norm)
        saved = []
        for group in self.param_groups:
            group["warmup_step"] += 1
            saved.append(group["lr"])
            group["lr"] = group["lr"] * self.lr_factor(group["warmup_step"])
        try:
            return super().step(closure)
        finally:
            for group, lr in zip(self.param_groups, saved):
                group["lr"] = lr

    def lr_factor(self, step: int) -> float:
        """The factor on the base learning rate at optimizer step ``step`` (from 1); a
        cosine schedule not yet told the run's length counts as constant."""
        factor = min(1.0, step / self.warmup_steps) if self.warmup_steps else 1.0
        if self.lr_schedule == "cosine" and self.total_steps is not None:
            span = self.total_steps - self.warmup_steps
            if span > 0 and step > self.warmup_steps:
                done = min(1.0, (step - self.warmup_steps) / span)
                factor *= 0.5 * (1.0 + math.cos(math.pi * done))
        return factor


def describe_optimizer(optimizer: Optimizer) -> str:
    """``"WarmupClipAdamW(lr=0.001, betas=(0.9, 0.999), ..., lr_schedule=cosine)"``: the
    optimizer's class and its settings that are not zero, for a run's header."""
    group = optimizer.param_groups[0]
    keys = ("lr", "momentum", "betas", "weight_decay")
    parts = [f"{k}={group[k]}" for k in keys if k in group and group[k] not in (0, 0.0)]
    if getattr(optimizer, "warmup_steps", 0):
        parts.append(f"warmup_steps={optimizer.warmup_steps}")
    if getattr(optimizer, "lr_schedule", "constant") != "constant":
        parts.append(f"lr_schedule={optimizer.lr_schedule}")
    return f"{type(optimizer).__name__}({', '.join(parts)})"


def last_step_lr(optimizer: Optimizer) -> float:
    """The learning rate of the optimizer's last step: a warm-up or schedule kept inside
    the optimizer (:meth:`WarmupClipAdamW.lr_factor`) scales the group's base rate."""
    group = optimizer.param_groups[0]
    if isinstance(optimizer, WarmupClipAdamW) and group.get("warmup_step", 0) > 0:
        return float(group["lr"]) * optimizer.lr_factor(group["warmup_step"])
    return float(group["lr"])
