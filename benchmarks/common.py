"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class BenchCase:
    """A native module, the inputs of one call, and the target twin/native time ratio."""

    name: str
    build_native: Callable[[], nn.Module]
    make_inputs: Callable[[], tuple]
    target: float | None = None
    call: Callable[[nn.Module, tuple], torch.Tensor] | None = None

    def run(self, module: nn.Module, inputs: tuple) -> torch.Tensor:
        out = self.call(module, inputs) if self.call is not None else module(*inputs)
        return out[0] if isinstance(out, tuple) else out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, warmup: int = 3,
              iters: int = 10) -> float:
    """Median seconds of ``fn`` over ``iters`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
