"""Attention twins against torch.nn: time and peak memory of the issue's configurations.

``cases()`` feeds benchmarks/components.py; ``python -m benchmarks.attention`` times the
same cases on its own (forward, forward+backward, peak memory) and prints the ratios.
Timing and memory: :mod:`benchmarks.common` (median of the timed runs; peak tensor
memory above the level at entry).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Sequence

import torch
from torch import nn
from tqdm import tqdm

from benchmarks.common import (
    BenchCase,
    format_ratio,
    format_table,
    peak_memory,
    time_samples,
)
from utils.cli import HelpFormatter, checked_device, non_negative_int, positive_int
from utils.memory import allocator_setting, keep_freed_memory


def _mha(batch: int, tokens: int, dim: int, heads: int, need_weights: bool) -> BenchCase:
    weights = "need_weights=True (default)" if need_weights else "need_weights=False"
    return BenchCase(
        name=f"MHA self-attn E={dim} h={heads} L={tokens} N={batch}, {weights}",
        build_native=lambda: nn.MultiheadAttention(dim, heads, batch_first=True).eval(),
        make_inputs=lambda: (torch.randn(batch, tokens, dim),),
        target=3.0,
        call=lambda m, xs: m(xs[0], xs[0], xs[0], need_weights=need_weights)[0],
    )


def cases() -> list[BenchCase]:
    """MHA of the original measurement (E=192, 3 heads, 65 tokens, batch 32), as torch.nn
    users call it (weights averaged by default) and without weights, and the ViT encoder
    layer (E=128, 8 heads, 17 tokens, batch 128) in eval mode."""
    return [
        _mha(32, 65, 192, 3, need_weights=True),
        _mha(32, 65, 192, 3, need_weights=False),
        BenchCase(
            name="ViT encoder layer E=128 h=8 ff=512 gelu L=17 N=128 (eval)",
            build_native=lambda: nn.TransformerEncoderLayer(
                128, 8, 512, dropout=0.1, activation="gelu", batch_first=True).eval(),
            make_inputs=lambda: (torch.randn(128, 17, 128),),
            target=3.0,
        ),
    ]


def _forward(case: BenchCase, module: nn.Module, inputs: tuple) -> Callable[[], object]:
    def run() -> object:
        with torch.no_grad():
            return case.run(module, inputs)
    return run


def _forward_backward(case: BenchCase, module: nn.Module,
                      inputs: tuple) -> Callable[[], object]:
    leaves = tuple(x.detach().requires_grad_() for x in inputs)

    def run() -> object:
        case.run(module, leaves).sum().backward()
        # Free the gradients inside the call: the memory profile sees their whole life.
        module.zero_grad(set_to_none=True)
        for x in leaves:
            x.grad = None
    return run


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ``python -m benchmarks.attention``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.attention", description=__doc__.splitlines()[0],
        epilog="Exit status 1 when a forward time ratio exceeds its target or a memory "
        "ratio exceeds 3, else 0.",
        formatter_class=HelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--iters", type=positive_int, default=10,
                        help="timed runs, of which the median is kept")
    parser.add_argument("--warmup", type=non_negative_int, default=3,
                        help="untimed runs first")
    parser.add_argument("--rounds", type=positive_int, default=3,
                        help="alternate torch.nn and twin this many times, keep each one's "
                        "best median (robust to a shared, loaded CPU)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Time and measure every case, print the table; 1 if a target is missed."""
    from modules.convert import to_gnn

    parser = build_parser()
    args = parser.parse_args(argv)
    device = checked_device(parser, args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # no page faults for the tensors each timed step reallocates
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}; "
          f"ratio = twin / torch.nn (best of {args.rounds} medians of {args.iters} runs); "
          f"{allocator_setting()}")
    rows, failed = [], 0
    for case in tqdm(cases(), desc="attention", unit="case", disable=args.no_progress,
                     file=sys.stderr):
        native = case.build_native().to(device)
        twin = to_gnn(native)
        inputs = tuple(x.to(device) for x in case.make_inputs())
        for label, make in (("forward", _forward), ("fwd+bwd", _forward_backward)):
            fns = [make(case, m, inputs) for m in (native, twin)]
            seconds = [float("inf")] * len(fns)
            for _ in range(args.rounds):
                for i, fn in enumerate(fns):
                    median = statistics.median(time_samples(fn, args.warmup, args.iters,
                                                            device))
                    seconds[i] = min(seconds[i], median)
            peaks = [peak_memory(fn, device) for fn in fns]
            ratio, mem_ratio = seconds[1] / seconds[0], peaks[1] / max(peaks[0], 1)
            ok = ratio <= case.target and mem_ratio <= 3.0
            failed += label == "forward" and not ok
            rows.append((case.name, label, f"{seconds[0] * 1e3:.2f} ms",
                         f"{seconds[1] * 1e3:.2f} ms", format_ratio(ratio),
                         f"{peaks[0] / 2**20:.1f} MiB", f"{peaks[1] / 2**20:.1f} MiB",
                         format_ratio(mem_ratio), f"<= {case.target:g}x",
                         "ok" if ok else "MISSED"))
    print(format_table(("configuration", "pass", "torch.nn", "twin", "ratio", "mem nn",
                        "mem twin", "ratio", "target", ""), rows,
                       right=(False, False, True, True, True, True, True, True, False,
                              False)))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
