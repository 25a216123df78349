"""`python -m benchmarks.components`: twin against torch.nn, per component, same run.

Prints forward and forward+backward median times of the native layer and its twin, their
ratios against the issue's targets (forward), and the time to build each VGG11 and
ResNet-18 layer's graph from scratch. Timing: :func:`benchmarks.common.time_samples`
(warm-up, device synchronisation), the median of the timed runs.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn
from tqdm import tqdm

from benchmarks.common import (
    BenchCase,
    Comparison,
    format_ratio_table,
    time_samples,
)
from modules.base import MessagePassingModule
from modules.convert import to_gnn
from utils.cli import HelpFormatter, checked_device, non_negative_int, positive_int
from utils.memory import allocator_setting, keep_freed_memory


def _tensor(*shape: int) -> tuple[torch.Tensor]:
    return (torch.randn(*shape),)


def component_cases() -> list[BenchCase]:
    cases = [
        BenchCase("Linear 784->250, batch 128", lambda: nn.Linear(784, 250),
                  lambda: _tensor(128, 784), 1.5),
        BenchCase("Conv2d 3->64 3x3, 32x32, batch 8", lambda: nn.Conv2d(3, 64, 3, padding=1),
                  lambda: _tensor(8, 3, 32, 32), 3.0),
        BenchCase("Conv2d 64->64 3x3, 32x32, batch 32",
                  lambda: nn.Conv2d(64, 64, 3, padding=1), lambda: _tensor(32, 64, 32, 32), 3.0),
        BenchCase("Conv2d 256->256 3x3, 8x8, batch 8",
                  lambda: nn.Conv2d(256, 256, 3, padding=1), lambda: _tensor(8, 256, 8, 8), 3.0),
        BenchCase("Conv1d 1->16 k64 s16, 2048, batch 128 (CWRU)",
                  lambda: nn.Conv1d(1, 16, 64, 16, 24), lambda: _tensor(128, 1, 2048), None),
        BenchCase("MaxPool2d 2, 64x32x32, batch 32", lambda: nn.MaxPool2d(2),
                  lambda: _tensor(32, 64, 32, 32), 3.0),
        BenchCase("MaxPool2d 3 s2 p1, 64x16x16, batch 32", lambda: nn.MaxPool2d(3, 2, 1),
                  lambda: _tensor(32, 64, 16, 16), 3.0),
        BenchCase("AvgPool2d 2, 64x32x32, batch 32", lambda: nn.AvgPool2d(2),
                  lambda: _tensor(32, 64, 32, 32), 3.0),
        BenchCase("AdaptiveAvgPool2d 1, 512x4x4, batch 32", lambda: nn.AdaptiveAvgPool2d(1),
                  lambda: _tensor(32, 512, 4, 4), 3.0),
    ]
    try:
        cases += importlib.import_module("benchmarks.attention").cases()
    except ModuleNotFoundError as err:
        if err.name != "benchmarks.attention":
            raise
    return cases


def median_seconds(fn: Callable[[], object], warmup: int, iters: int,
                   device: torch.device) -> float:
    """Median seconds of ``iters`` timed calls of ``fn`` after ``warmup`` untimed ones."""
    return statistics.median(time_samples(fn, warmup, iters, device))


def _layer_inputs(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module, tuple]]:
    """Every information-mixing layer of a model with the shape of its input."""
    seen: list[tuple[str, nn.Module, tuple]] = []
    hooks = [m.register_forward_pre_hook(
        lambda mod, args, name=name: seen.append((name, mod, tuple(args[0].shape))))
        for name, m in model.named_modules() if isinstance(m, MessagePassingModule)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def graph_build_times() -> list[tuple[str, float]]:
    """Seconds each VGG11 / ResNet-18 layer spends building its graph on first use: a
    forward with an empty cache minus a forward with the graph cached."""
    from models import ResNet18AsGNNCIFAR100, VGG11AsGNNCIFAR100

    rows = []
    for model_name, build in (("VGG11", VGG11AsGNNCIFAR100), ("ResNet-18", ResNet18AsGNNCIFAR100)):
        model = build().eval()
        for name, layer, shape in _layer_inputs(model, torch.randn(1, 3, 32, 32)):
            x = torch.randn(shape)
            with torch.no_grad():
                layer._graph_cache.clear()
                start = time.perf_counter()
                layer(x)
                first = time.perf_counter() - start
                cached = median_seconds(lambda layer=layer, x=x: layer(x), 1, 3,
                                        torch.device("cpu"))
            rows.append((f"{model_name} {name} {list(shape[1:])}", max(first - cached, 0.0)))
    return rows


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ``python -m benchmarks.components``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.components",
        description="Each component (Linear, Conv, pooling, attention) against its "
        "message-passing twin in the same run: median forward and forward+backward times, "
        "twin/torch.nn ratios against the targets (forward), then the time each VGG11 and "
        "ResNet-18 layer takes to build its graph from an empty cache.",
        epilog="Exit status 0 (missed targets are counted in the last line).",
        formatter_class=HelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--warmup", type=non_negative_int, default=3, help="untimed runs")
    parser.add_argument("--iters", type=positive_int, default=10,
                        help="timed runs, of which the median is reported")
    parser.add_argument("--only", default="",
                        help="run only the cases whose name contains this text, and skip "
                        "the graph-build timing")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Time every component case, print the ratio table and the graph-build times."""
    parser = build_parser()
    args = parser.parse_args(argv)
    device = checked_device(parser, args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # no page faults for the tensors each timed step reallocates
    torch.manual_seed(0)
    cases = [c for c in component_cases() if args.only in c.name]
    if not cases:
        parser.error(f"no case name contains {args.only!r}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}, float32, "
          f"median of {args.iters} runs, {allocator_setting()}")
    comparisons = []
    for case in tqdm(cases, desc="components", unit="case", disable=args.no_progress,
                     file=sys.stderr):
        native = case.build_native().to(device).eval()
        twin = to_gnn(native)
        inputs = tuple(x.to(device) for x in case.make_inputs())
        grads = tuple(x.detach().requires_grad_(x.is_floating_point()) for x in inputs)
        with torch.no_grad():
            fwd = [median_seconds(lambda m=m, c=case, xs=inputs: c.run(m, xs), args.warmup,
                                  args.iters, device) for m in (native, twin)]
        both = [median_seconds(lambda m=m, c=case, xs=grads: c.run(m, xs).sum().backward(),
                               args.warmup, args.iters, device) for m in (native, twin)]
        comparisons += [Comparison(f"{case.name}, forward", 1e3 * fwd[0], 1e3 * fwd[1],
                                   target=case.target),
                        Comparison(f"{case.name}, fwd+bwd", 1e3 * both[0], 1e3 * both[1])]
    print(format_ratio_table(comparisons, title="component"))
    missed = sum(c.met is False for c in comparisons)
    if not args.only:
        rows = graph_build_times()
        worst = max(rows, key=lambda r: r[1])
        print(f"\ngraph build, {len(rows)} VGG11 and ResNet-18 layers from an empty cache: "
              f"max {worst[1] * 1e3:.2f} ms ({worst[0]}), "
              f"total {sum(r[1] for r in rows) * 1e3:.1f} ms, target < 50 ms "
              f"per layer: {'yes' if worst[1] < 0.05 else 'NO'}")
        missed += worst[1] >= 0.05
    print(f"{missed} target(s) missed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
