"""Attention twins against torch.nn: time and peak memory of the issue's configurations.

``cases()`` feeds benchmarks/components.py; ``python -m benchmarks.attention`` times the
same cases on its own (forward, forward+backward, peak memory) and prints the ratios.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from benchmarks.common import BenchCase, time_call


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


def peak_bytes(fn: Callable[[], object]) -> int:
    """Peak of the bytes allocated by ``fn`` and still alive, from the profiler's events."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


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


def main(argv: list[str] | None = None) -> int:
    from modules.convert import to_gnn

    parser = argparse.ArgumentParser(prog="python -m benchmarks.attention",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=10, help="timed runs (median)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternate torch.nn and twin this many times, keep each one's "
                        "best median (robust to a shared, loaded CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          "ratio = twin / torch.nn (median of {} runs)".format(args.iters))
    header = (f"{'configuration':<62} {'pass':<8} {'torch.nn':>9} {'twin':>9} {'ratio':>6} "
              f"{'mem nn':>8} {'mem twin':>8} {'ratio':>6}  target")
    print(header)
    print("-" * len(header))
    failed = 0
    for case in cases():
        native = case.build_native()
        twin = to_gnn(native)
        inputs = case.make_inputs()
        for label, make in (("forward", _forward), ("fwd+bwd", _forward_backward)):
            fns = [make(case, m, inputs) for m in (native, twin)]
            seconds = [float("inf")] * len(fns)
            for _ in range(args.rounds):
                for i, fn in enumerate(fns):
                    seconds[i] = min(seconds[i], time_call(fn, device, args.warmup, args.iters))
            peaks = [peak_bytes(fn) for fn in fns]
            ratio, mem_ratio = seconds[1] / seconds[0], peaks[1] / max(peaks[0], 1)
            ok = ratio <= case.target and mem_ratio <= 3.0
            failed += label == "forward" and not ok
            print(f"{case.name:<62} {label:<8} {seconds[0] * 1e3:7.2f}ms {seconds[1] * 1e3:7.2f}ms "
                  f"{ratio:5.2f}x {peaks[0] / 2**20:6.1f}MB {peaks[1] / 2**20:6.1f}MB "
                  f"{mem_ratio:5.2f}x  <= {case.target:g}x {'ok' if ok else 'MISSED'}",
                  flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
