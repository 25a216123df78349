"""An exponential moving average of a model's weights, kept beside it while it trains
(``--ema-decay``): validation, the best checkpoint and the test then read the average.

At a held learning rate the weights keep moving around the minimum they have reached; their
average sits closer to it (Polyak averaging). The average after optimizer step :math:`t`
(counting from 1) is

.. math::
    \\bar\\theta_t = d_t\\,\\bar\\theta_{t-1} + (1 - d_t)\\,\\theta_t, \\qquad
    d_t = \\min\\Big(d, \\frac{t}{t + 9}\\Big), \\qquad \\bar\\theta_1 = \\theta_1,

the decay :math:`d` ramped up from the first steps (as TensorFlow's
``ExponentialMovingAverage`` with ``num_updates``) so that the untrained weights do not
linger in it. Built on :class:`torch.optim.swa_utils.AveragedModel` (parameters and
buffers averaged alike).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from utils.cli import probability

__all__ = ["ema_argument", "ema_decay_at", "moving_average"]


def ema_decay_at(decay: float, step: int) -> float:
    """:math:`d_t = \\min(d, t / (t + 9))` at optimizer step ``step`` (from 1)."""
    return min(decay, step / (step + 9.0))


def _ema_update(decay: float) -> Callable[[list[Tensor], list[Tensor], Tensor | int], None]:
    def update(averaged: list[Tensor], current: list[Tensor],
               num_averaged: Tensor | int) -> None:
        if not averaged[0].is_floating_point():  # counters among the buffers: the latest
            torch._foreach_copy_(averaged, current)
            return
        # AveragedModel copies the weights at its first update and counts from there.
        weight = 1.0 - ema_decay_at(decay, int(num_averaged) + 1)
        torch._foreach_lerp_(averaged, current, weight)

    return update


def moving_average(model: nn.Module, decay: float) -> AveragedModel | None:
    """A copy of ``model`` that :meth:`~torch.optim.swa_utils.AveragedModel.update_parameters`
    moves to the exponential moving average of its weights with ``decay`` (0: None, no
    average). Its ``state_dict`` holds ``module.<name>`` for every entry of the model's and
    ``n_averaged``."""
    if not 0 <= decay < 1:
        raise ValueError(f"the moving average's decay must be in [0, 1), got {decay}")
    if decay == 0:
        return None
    return AveragedModel(model, multi_avg_fn=_ema_update(decay), use_buffers=True)


def ema_argument(parser: argparse.ArgumentParser, default: float | Mapping[str, float] = 0.0,
                 sides: Sequence[str] = (), noun: str = "side") -> None:
    """``--ema-decay D``; a ``default`` per side (a mapping over ``sides``, each a ``noun``)
    leaves the flag's default None, for the training loop to fill in per run."""
    per_side = ""
    if isinstance(default, Mapping):
        per_side = f"; default per {noun}: " + ", ".join(f"{s} {default[s]}" for s in sides)
    parser.add_argument("--ema-decay", type=probability,
                        default=None if isinstance(default, Mapping) else default,
                        metavar="D", help="validate, keep and test an exponential moving "
                        "average of the weights, decay D per optimizer step (ramped up over "
                        f"the first steps); 0: the weights themselves{per_side}")
