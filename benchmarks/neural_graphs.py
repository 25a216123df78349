"""`python -m benchmarks.neural_graphs`: what neural graphs cost, against issue 10's targets.

Measured in one run and printed as two tables:

- graph building: ``to_neural_graph`` of ResNet-18 (target < 2 s) and of the ViT, and
  ``Batch.from_data_list`` of 128 SIREN 2-32-32-1 graphs (target < 20 ms), with the time
  to build those 128 graphs for reference;
- execution: ``run_neural_graph(graph, x)`` against the network itself, ``m(x)``, for the
  five networks (target: at most 5x), with the largest difference of their outputs.

Timing: :mod:`benchmarks.common` (warm-up calls, device synchronisation); the figure is
the median. Network and graph run alternately (``time_interleaved``), so drift on a
shared machine hits both alike. Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence

import torch
from torch_geometric.data import Batch
from tqdm import tqdm

from benchmarks.common import (
    Comparison,
    format_ratio_table,
    format_table,
    time_interleaved,
    time_samples,
)
from models import MODELS
from neural_graphs import SIREN, run_neural_graph, to_neural_graph
from utils.cli import HelpFormatter, checked_device
from utils.memory import allocator_setting, keep_freed_memory

BUILD_TARGETS = {"resnet18": 2.0, "vit": None}  # seconds
COLLATE_TARGET = 0.020  # seconds for 128 SIREN graphs
RUN_TARGET = 5.0  # run_neural_graph / m(x)


def _median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def _seconds(value: float) -> str:
    return f"{value * 1e3:.1f} ms" if value < 1 else f"{value:.2f} s"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.neural_graphs",
        description="Time to_neural_graph (ResNet-18, ViT), the collation of SIREN graphs "
        "and run_neural_graph against the network itself (five networks), with issue 10's "
        "targets; exit 1 when one is missed.",
        formatter_class=HelpFormatter)
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS),
                        help="networks of the run_neural_graph comparison")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="inputs per call of m(x) and run_neural_graph")
    parser.add_argument("--sirens", type=int, default=128, help="SIREN graphs per batch")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per measurement")
    parser.add_argument("--iters", type=int, default=5, help="timed calls per measurement")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def measure_build(key: str, args: argparse.Namespace, device: torch.device,
                  dtype: torch.dtype) -> tuple[tuple[str, ...], bool | None]:
    """Median seconds of ``to_neural_graph`` of network ``key``: a table row, target met."""
    model = MODELS[key].standard().to(device, dtype).eval()
    seconds = _median(time_samples(lambda: to_neural_graph(model), args.warmup, args.iters,
                                   device))
    graph = to_neural_graph(model)
    target = BUILD_TARGETS[key]
    met = None if target is None else seconds < target
    return (f"to_neural_graph({MODELS[key].name})", _seconds(seconds),
            f"{graph.num_nodes:,} nodes, {graph.num_edges:,} edges",
            "" if target is None else f"< {_seconds(target)}",
            "" if met is None else ("yes" if met else "NO")), met


def measure_collate(args: argparse.Namespace, device: torch.device,
                    dtype: torch.dtype) -> tuple[list[tuple[str, ...]], bool]:
    """Building ``args.sirens`` SIREN graphs (once) and collating them (median)."""
    sirens = [SIREN().to(device, dtype) for _ in range(args.sirens)]
    start = time.perf_counter()
    graphs = [to_neural_graph(s) for s in sirens]
    build = time.perf_counter() - start
    collate = _median(time_samples(lambda: Batch.from_data_list(graphs), max(args.warmup, 1),
                                   max(args.iters, 10), device))
    batch = Batch.from_data_list(graphs)
    met = collate < COLLATE_TARGET
    return [(f"to_neural_graph of {args.sirens} SIRENs 2-32-32-1 (once)", _seconds(build),
             "one at a time", "", ""),
            (f"Batch.from_data_list of {args.sirens} SIREN graphs", _seconds(collate),
             f"{batch.num_nodes:,} nodes, {batch.num_edges:,} edges",
             f"< {_seconds(COLLATE_TARGET)}", "yes" if met else "NO")], met


def measure_run(key: str, args: argparse.Namespace, device: torch.device,
                dtype: torch.dtype) -> Comparison:
    """``m(x)`` against ``run_neural_graph(to_neural_graph(m), x)``, alternately timed."""
    spec = MODELS[key]
    model = spec.standard().to(device, dtype).eval()
    graph = to_neural_graph(model)
    x = torch.randn(args.batch_size, *spec.input_shape, device=device, dtype=dtype)
    with torch.no_grad():
        error = (run_neural_graph(graph, x) - model(x)).abs().max().item()
        native, graph_times = time_interleaved(lambda: model(x),
                                               lambda: run_neural_graph(graph, x),
                                               device, args.warmup, args.iters)
    return Comparison(f"{spec.name} (max |diff| {error:.1e})", 1e3 * _median(native),
                      1e3 * _median(graph_times), target=RUN_TARGET)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.sirens < 1 or args.iters < 1 or args.warmup < 0:
        parser.error("--batch-size, --sirens and --iters must be >= 1, --warmup >= 0")
    device = checked_device(parser, args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cpu":
        keep_freed_memory()
    dtype = getattr(torch, args.dtype)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}, "
          f"{args.dtype}, batch {args.batch_size}, median of {args.iters} runs, "
          f"{allocator_setting()}")

    steps = [*(("build", k) for k in BUILD_TARGETS), ("collate", "siren"),
             *(("run", k) for k in args.models)]
    build_rows, comparisons, missed = [], [], 0
    progress = tqdm(steps, desc="neural graphs", unit="step", disable=args.no_progress,
                    file=sys.stderr)
    for kind, key in progress:
        progress.set_postfix_str(f"{kind} {key}")
        torch.manual_seed(0)
        if kind == "build":
            row, met = measure_build(key, args, device, dtype)
            build_rows.append(row)
        elif kind == "collate":
            rows, met = measure_collate(args, device, dtype)
            build_rows += rows
        else:
            comparison = measure_run(key, args, device, dtype)
            comparisons.append(comparison)
            met = comparison.met
        missed += met is False
    progress.close()
    print("\nGraph building")
    print(format_table(("measurement", "median", "size", "target", "met"), build_rows,
                       right=(False, True, False, True, False)))
    print(f"\nExecution, batch {args.batch_size}: run_neural_graph(graph, x) against m(x)")
    print(format_ratio_table(comparisons, baseline="m(x)", candidate="graph",
                             title="network"))
    print(f"\n{missed} target(s) missed")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
