"""Measurement helpers shared by every benchmark and by ``Memory_Inference_Analysis``.

What each figure means:

- time: wall-clock seconds of one call of ``fn``, after ``warmup`` untimed calls, each
  timed call closed by a device synchronisation (``torch.cuda.synchronize`` on CUDA; a
  CPU call is synchronous), so queued kernels are counted in the call that queued them.
- peak memory: the largest number of tensor bytes ``fn`` holds at once above the level at
  its entry (what it needs on top of what already exists). CUDA: the caching allocator's
  ``max_memory_allocated`` after ``reset_peak_memory_stats``, minus the allocation at
  entry. CPU: ``torch.profiler`` with ``profile_memory=True`` records every allocation and
  free of c10's CPU allocator (``[memory]`` events, +bytes / -bytes); the peak is the
  maximum of their running sum in time order. Memory that libraries allocate outside c10
  (oneDNN or BLAS scratch buffers, Python objects) is not seen: on CPU the figure is the
  tensor memory, exactly, and nothing else. (The process's resident-set high-water mark,
  ``ru_maxrss``, never decreases and includes the allocator's free lists, so it cannot
  measure one call; ``tracemalloc`` sees only Python's allocator, not tensors.)
- parameter count: the number of parameter elements (not tensors, not bytes).
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from models.common import parameter_count

__all__ = [
    "BenchCase",
    "Comparison",
    "MemoryUse",
    "Stats",
    "format_ratio",
    "format_ratio_table",
    "format_table",
    "memory_use",
    "parameter_count",
    "peak_memory",
    "profiled",
    "state_bytes",
    "synchronize",
    "time_call",
    "time_interleaved",
    "time_samples",
]

MIN_ITERS = 3


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


@dataclass
class Stats:
    """Summary of repeated measurements (a single value has std 0)."""

    mean: float
    std: float
    median: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        values = list(values)
        if not values:
            raise ValueError("Stats.of needs at least one value, got none")
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(statistics.fmean(values), std, statistics.median(values))


# --------------------------------------------------------------------------- time


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _check_counts(warmup: int, iters: int) -> None:
    if warmup < 0 or iters < 1:
        raise ValueError(f"expected warmup >= 0 and iters >= 1, got warmup={warmup}, "
                         f"iters={iters}")


def time_samples(fn: Callable[[], object], warmup: int, iters: int, device: torch.device,
                 time_budget: float = math.inf) -> list[float]:
    """Seconds of each timed call of ``fn``: ``warmup`` untimed calls, then ``iters`` timed
    calls (fewer once ``time_budget`` seconds have passed, but at least
    ``min(iters, 3)``), each closed by :func:`synchronize`."""
    _check_counts(warmup, iters)
    for _ in range(warmup):
        fn()
    synchronize(device)
    times: list[float] = []
    start_all = time.perf_counter()
    for i in range(iters):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
        if i + 1 >= MIN_ITERS and time.perf_counter() - start_all > time_budget:
            break
    return times


def time_call(fn: Callable[[], object], warmup: int, iters: int,
              device: torch.device) -> tuple[float, float]:
    """Mean and standard deviation (seconds) of ``iters`` timed calls of ``fn`` after
    ``warmup`` untimed ones; see :func:`time_samples`."""
    stats = Stats.of(time_samples(fn, warmup, iters, device))
    return stats.mean, stats.std


def time_interleaved(fn_a: Callable[[], object], fn_b: Callable[[], object],
                     device: torch.device, warmup: int, iters: int,
                     time_budget: float = math.inf) -> tuple[list[float], list[float]]:
    """Seconds per call of ``fn_a`` and ``fn_b``, measured alternately.

    Each iteration times one call of each, the order swapped every iteration, so drift on
    a shared machine hits both alike. Stops after ``iters`` iterations, or earlier once
    ``time_budget`` seconds have passed and at least ``min(iters, 3)`` iterations are done.
    """
    _check_counts(warmup, iters)
    for _ in range(warmup):
        fn_a()
        fn_b()
    synchronize(device)
    times_a: list[float] = []
    times_b: list[float] = []
    start_all = time.perf_counter()
    for i in range(iters):
        pairs = ((fn_a, times_a), (fn_b, times_b))
        for fn, times in (pairs if i % 2 == 0 else pairs[::-1]):
            start = time.perf_counter()
            fn()
            synchronize(device)
            times.append(time.perf_counter() - start)
        if i + 1 >= MIN_ITERS and time.perf_counter() - start_all > time_budget:
            break
    return times_a, times_b


# --------------------------------------------------------------------------- memory


@contextmanager
def quiet_stderr_fd() -> Iterator[None]:
    """Silence file descriptor 2 (Kineto's C++ logger writes there at every profiler start
    and stop)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def profiled(fn: Callable[[], object], profile_memory: bool = False) -> profile:
    """Run ``fn`` once under ``torch.profiler`` (CPU activity) and return the profiler."""
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=profile_memory)
    with quiet_stderr_fd():
        prof.start()
    try:
        fn()
    finally:
        with quiet_stderr_fd():
            prof.stop()
    return prof


@dataclass(frozen=True)
class MemoryUse:
    """Tensor bytes of one call: ``peak`` above the level at entry, ``net`` left behind."""

    peak: int
    net: int


def _cpu_memory_use(fn: Callable[[], None]) -> MemoryUse:
    prof = profiled(fn, profile_memory=True)
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == DeviceType.CPU]
    events.sort(key=lambda e: e.start_ns())
    level = peak = 0
    for event in events:
        level += event.nbytes()
        peak = max(peak, level)
    return MemoryUse(peak, level)


def memory_use(fn: Callable[[], object], device: torch.device) -> MemoryUse:
    """Peak and net tensor bytes of one call of ``fn`` on ``device`` (see the module's
    docstring for what is counted).

    ``fn``'s result is dropped inside the measured region, so ``net`` is what ``fn``
    leaves allocated elsewhere (caches, lists it appends to).
    """
    def call() -> None:
        fn()

    device = torch.device(device)
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        call()
        synchronize(device)
        return MemoryUse(torch.cuda.max_memory_allocated(device) - before,
                         torch.cuda.memory_allocated(device) - before)
    if device.type != "cpu":
        raise ValueError(f"memory is measured on 'cpu' or 'cuda' devices, got {device}")
    return _cpu_memory_use(call)


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Bytes of tensor memory one call of ``fn`` needs above the level at its entry."""
    return memory_use(fn, device).peak


# --------------------------------------------------------------------------- size


def state_bytes(module: nn.Module) -> int:
    """Bytes of ``module``'s parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


# --------------------------------------------------------------------------- tables


def format_ratio(value: float | None) -> str:
    """``1.234`` -> ``'1.23x'``; ``None`` -> ``''``."""
    return "" if value is None else f"{value:.2f}x"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                 right: Sequence[bool] | None = None) -> str:
    """Fixed-width text table: the header, a rule of dashes, one line per row.

    Args:
        header: column titles.
        rows: cells as strings, each row as long as ``header``.
        right: per column, True to right-align (numbers); default left-aligned.
    """
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"row {i} has {len(row)} cells, expected {len(header)} "
                             f"(header {list(header)})")
    right = list(right) if right is not None else [False] * len(header)
    widths = [max(len(str(c[i])) for c in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).rjust(w) if r else str(c).ljust(w)
                         for c, w, r in zip(cells, widths, right)).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths),
                      *(line(row) for row in rows)])


@dataclass
class Comparison:
    """One measured figure of a baseline (``torch.nn``, the standard network) and a
    candidate (the twin): ``ratio = candidate / baseline``, met when ``ratio <= target``."""

    name: str
    baseline: float
    candidate: float
    unit: str = "ms"
    target: float | None = None

    @property
    def ratio(self) -> float | None:
        return None if self.baseline == 0 else self.candidate / self.baseline

    @property
    def met(self) -> bool | None:
        ratio = self.ratio
        if self.target is None or ratio is None:
            return None
        return ratio <= self.target


def format_ratio_table(comparisons: Sequence[Comparison], baseline: str = "torch.nn",
                       candidate: str = "twin", title: str = "case") -> str:
    """Fixed-width table of comparisons: values, ratio, target and whether it is met."""
    rows = []
    for c in comparisons:
        met = "" if c.met is None else ("yes" if c.met else "NO")
        rows.append((c.name, f"{c.baseline:.4g} {c.unit}", f"{c.candidate:.4g} {c.unit}",
                     format_ratio(c.ratio), "" if c.target is None else f"<= {c.target:g}x",
                     met))
    header = (title, baseline, candidate, f"{candidate}/{baseline}", "target", "met")
    return format_table(header, rows, right=(False, True, True, True, True, False))
