"""Optimizers of the training jobs beyond ``torch.optim``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import AdamW

__all__ = ["WarmupClipAdamW"]


class WarmupClipAdamW(AdamW):
    r"""AdamW whose every step first clips the global gradient norm to ``max_grad_norm``
    (:func:`torch.nn.utils.clip_grad_norm_`) and scales the learning rate by
    :math:`\min(1, t / T_\text{warm-up})` at step :math:`t = 1, 2, \dots`.

    The step count lives in the parameter groups (``"warmup_step"``), so it is saved in
    and restored from the optimizer's state dict with everything else (``--resume``).
    Under ``GradScaler`` the gradients are already unscaled when ``step`` runs.

    Args:
        params: parameters or parameter groups.
        lr (float): learning rate after the warm-up.
        warmup_steps (int): steps of the linear warm-up (0: none).
        max_grad_norm (float, optional): clip threshold (None: no clipping).
        **kwargs: :class:`torch.optim.AdamW` arguments (``weight_decay``, ``amsgrad``).
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, warmup_steps: int = 0,
                 max_grad_norm: float | None = None, **kwargs: Any) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be non-negative, got {warmup_steps}")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {max_grad_norm}")
        super().__init__(params, lr=lr, **kwargs)
        self.warmup_steps = warmup_steps
        self.max_grad_norm = max_grad_norm
        for group in self.param_groups:
            group.setdefault("warmup_step", 0)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        if self.max_grad_norm is not None:
            grads = [p for group in self.param_groups for p in group["params"]
                     if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(grads, self.max_grad_norm)
        saved = []
        for group in self.param_groups:
            group["warmup_step"] += 1
            saved.append(group["lr"])
            if self.warmup_steps:
                group["lr"] = group["lr"] * min(1.0, group["warmup_step"] / self.warmup_steps)
        try:
            return super().step(closure)
        finally:
            for group, lr in zip(self.param_groups, saved):
                group["lr"] = lr
