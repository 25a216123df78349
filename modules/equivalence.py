"""The one equivalence checker: a torch.nn module against its message-passing twin.

The original protocol: identical parameters, 10,000 random inputs x ~ N(0, 1), the mean
absolute error (MAE) of the outputs must stay below 1e-6. ``compare`` also checks
gradients, for the tests.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from modules.convert import to_gnn
from utils.cli import positive_int

MAE_LIMIT = 1e-6

InputMaker = Callable[[int, torch.Generator, torch.dtype, torch.device], tuple]


@dataclass
class Case:
    """One configuration: a native module builder and the shape of one sample.

    ``make_inputs(n, generator, dtype, device)`` may replace the default single
    N(0, 1) tensor of shape (n, *sample_shape), e.g. for attention's (query, key, value);
    ``call(module, inputs)`` may replace ``module(*inputs)`` and must return a tensor.
    """

    name: str
    build: Callable[[], nn.Module]
    sample_shape: tuple[int, ...] = ()
    make_inputs: InputMaker | None = None
    call: Callable[[nn.Module, tuple], Tensor] | None = None
    chunk: int = 500

    def inputs(self, n: int, gen: torch.Generator, dtype: torch.dtype,
               device: torch.device) -> tuple:
        if self.make_inputs is not None:
            return self.make_inputs(n, gen, dtype, device)
        x = torch.randn((n, *self.sample_shape), generator=gen, dtype=dtype)
        return (x.to(device),)

    def run(self, module: nn.Module, inputs: tuple) -> Tensor:
        if self.call is not None:
            return self.call(module, inputs)
        return module(*inputs)


def twin_of(native: nn.Module) -> nn.Module:
    """The message-passing twin of a native module, with copied weights."""
    return to_gnn(native)


@dataclass
class Errors:
    """Absolute errors of outputs (and gradients) between native and twin."""

    mae: float
    max: float
    grad_max: float = float("nan")
    count: int = 0


def _abs_err(a: Tensor, b: Tensor) -> Tensor:
    if a.shape != b.shape:
        raise AssertionError(f"output shapes differ: native {tuple(a.shape)}, "
                             f"twin {tuple(b.shape)}")
    a, b = a.detach().double(), b.detach().double()
    # Equal infinities (windows of padding only) and NaN on both sides count as agreement.
    same = (a == b) | (a.isnan() & b.isnan())
    return torch.where(same, torch.zeros_like(a), (a - b).abs())


def compare(native: nn.Module, twin: nn.Module, inputs: Sequence[Tensor],
            call: Callable[[nn.Module, tuple], Tensor] | None = None,
            backward: bool = True) -> Errors:
    """Outputs and, with ``backward``, gradients of inputs and parameters.

    Both modules get the same inputs (cloned, with requires_grad for floating inputs);
    the backward pass uses the same random output gradient on both sides. ``grad_max`` is
    the largest absolute error over every input and parameter gradient.
    """
    run = call or (lambda m, xs: m(*xs))

    def prepare() -> tuple:
        return tuple(x.detach().clone().requires_grad_(backward and x.is_floating_point())
                     if isinstance(x, Tensor) else x for x in inputs)

    xs_n, xs_t = prepare(), prepare()
    out_n, out_t = run(native, xs_n), run(twin, xs_t)
    err = _abs_err(out_n, out_t)
    result = Errors(mae=float(err.mean()) if err.numel() else 0.0,
                    max=float(err.max()) if err.numel() else 0.0, count=err.numel())
    if not backward:
        return result
    gen = torch.Generator().manual_seed(1234)
    grad_out = torch.randn(out_n.shape, generator=gen, dtype=torch.float64)
    grad_out = grad_out.to(device=out_n.device, dtype=out_n.dtype)
    params_n = dict(native.named_parameters())
    params_t = dict(twin.named_parameters())
    if params_n.keys() != params_t.keys():
        raise AssertionError(f"parameter names differ: {sorted(params_n)} vs {sorted(params_t)}")
    leaves_n = [x for x in xs_n if isinstance(x, Tensor) and x.requires_grad]
    leaves_t = [x for x in xs_t if isinstance(x, Tensor) and x.requires_grad]
    names = list(params_n)
    leaves_n += [params_n[k] for k in names]
    leaves_t += [params_t[k] for k in names]
    grads_n = torch.autograd.grad(out_n, leaves_n, grad_out, allow_unused=True)
    grads_t = torch.autograd.grad(out_t, leaves_t, grad_out, allow_unused=True)
    worst = 0.0
    for g_n, g_t in zip(grads_n, grads_t):
        if g_n is None and g_t is None:
            continue
        g_n = torch.zeros_like(g_t) if g_n is None else g_n
        g_t = torch.zeros_like(g_n) if g_t is None else g_t
        e = _abs_err(g_n, g_t)
        if e.numel():
            worst = max(worst, float(e.max()))
    result.grad_max = worst
    return result


def check_case(case: Case, samples: int, dtype: torch.dtype, device: torch.device,
               seed: int) -> tuple[Errors, float]:
    """The original protocol for one case: MAE and max error over ``samples`` inputs."""
    torch.manual_seed(seed)
    native = case.build().to(device=device, dtype=dtype).eval()
    twin = twin_of(native).eval()
    gen = torch.Generator().manual_seed(seed)
    total, worst, count = 0.0, 0.0, 0
    start = time.perf_counter()
    with torch.no_grad():
        for begin in range(0, samples, case.chunk):
            n = min(case.chunk, samples - begin)
            inputs = case.inputs(n, gen, dtype, device)
            err = _abs_err(case.run(native, inputs), case.run(twin, inputs))
            total += float(err.sum())
            worst = max(worst, float(err.max()) if err.numel() else 0.0)
            count += err.numel()
    return Errors(mae=total / max(count, 1), max=worst, count=count), time.perf_counter() - start


def add_check_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of every equivalence check: ``--samples``, ``--device``, ``--dtype``,
    ``--seed`` (their defaults are the original protocol's)."""
    parser.add_argument("--samples", type=positive_int, default=10_000,
                        help="random N(0,1) inputs per configuration")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                        help="parameter and input dtype")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    return parser


def run_cases(cases: Sequence[Case], args: argparse.Namespace) -> int:
    """Check every case, print one table, return 1 if any MAE >= 1e-6 else 0."""
    dtype = getattr(torch, args.dtype)
    device = torch.device(args.device)
    width = max([len(c.name) for c in cases] + [len("configuration")])
    header = f"{'configuration':<{width}}  {'MAE':>10}  {'max abs err':>11}  {'time':>7}  ok"
    print(header)
    print("-" * len(header))
    failed = 0
    for case in cases:
        errors, seconds = check_case(case, args.samples, dtype, device, args.seed)
        ok = errors.mae < MAE_LIMIT and math.isfinite(errors.max)
        failed += not ok
        print(f"{case.name:<{width}}  {errors.mae:10.3e}  {errors.max:11.3e}  "
              f"{seconds:6.2f}s  {'yes' if ok else 'NO'}", flush=True)
    print(f"{len(cases) - failed} of {len(cases)} configurations within MAE < {MAE_LIMIT:g} "
          f"({args.samples} samples each, {args.dtype}, {args.device})")
    return 1 if failed else 0
