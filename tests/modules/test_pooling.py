"""Pooling twins against torch.nn on random hyper-parameters."""

from __future__ import annotations

import random
import re

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from modules import (
    AdaptiveAvgPool1dAsGNN,
    AdaptiveAvgPool2dAsGNN,
    AdaptiveMaxPool2dAsGNN,
    AvgPool1dAsGNN,
    AvgPool2dAsGNN,
    MaxPool1dAsGNN,
    MaxPool2dAsGNN,
)
from modules.convert import to_gnn
from modules.equivalence import compare


def _random_pool(rng: random.Random, kind: str, n: int) -> tuple[nn.Module, tuple[int, ...]]:
    while True:
        k = tuple(rng.randint(1, 7) for _ in range(n))
        stride = rng.choice([None, tuple(rng.randint(1, 3) for _ in range(n))])
        dilation = tuple(rng.randint(1, 3) for _ in range(n))
        eff = dilation if kind == "max" else (1,) * n
        pad = tuple(rng.randint(0, (e * (kk - 1) + 1) // 2) for kk, e in zip(k, eff))
        ceil = rng.random() < 0.5
        spatial = tuple(rng.randint(1, 13) for _ in range(n))
        shape = (rng.choice([1, 3]), rng.randint(1, 4), *spatial)
        if kind == "max":
            native = (nn.MaxPool1d if n == 1 else nn.MaxPool2d)(
                k, stride, pad, dilation, ceil_mode=ceil, return_indices=rng.random() < 0.3)
        elif n == 1:
            native = nn.AvgPool1d(k, stride, pad, ceil, count_include_pad=rng.random() < 0.5)
        else:
            override = rng.choice([None, None, rng.randint(1, 5)])
            native = nn.AvgPool2d(k, stride, pad, ceil, rng.random() < 0.5, override)
        try:
            out = _first(native(torch.zeros(shape)))
        except RuntimeError:
            continue  # invalid combination for torch itself: draw again
        if out.isinf().any():
            continue  # a window of padding only: see test_window_of_padding_only
        return native, shape


def _first(out):
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("seed", range(12))
def test_random_sweep(kind: str, n: int, seed: int) -> None:
    rng = random.Random(f"{kind}{n}{seed}")
    native, shape = _random_pool(rng, kind, n)
    for fused in (True, False):
        twin = to_gnn(native)
        twin.fused = fused
        for dtype in (torch.float64, torch.float32):
            x = torch.randn(shape, dtype=dtype)
            err = compare(native, twin, (x,), call=lambda m, xs: _first(m(*xs)))
            assert err.max <= (1e-10 if dtype == torch.float64 else 1e-6), (native, shape, err)
            assert err.grad_max <= (1e-10 if dtype == torch.float64 else 1e-5), (native, err)
            if getattr(native, "return_indices", False):
                assert torch.equal(native(x)[1], twin(x)[1]), (native, shape, fused)


@pytest.mark.parametrize(("native", "spatial"), [
    (nn.AdaptiveAvgPool1d(5), (13,)),
    (nn.AdaptiveAvgPool1d(13), (5,)),
    (nn.AdaptiveAvgPool2d(1), (7, 6)),
    (nn.AdaptiveAvgPool2d((3, None)), (10, 4)),
    (nn.AdaptiveAvgPool2d((4, 5)), (9, 11)),
    (nn.AdaptiveMaxPool2d((2, 3)), (7, 8)),
    (nn.AdaptiveMaxPool2d(3, return_indices=True), (8, 5)),
])
def test_adaptive(native: nn.Module, spatial: tuple[int, ...]) -> None:
    for fused in (True, False):
        twin = to_gnn(native)
        twin.fused = fused
        x = torch.randn(2, 3, *spatial, dtype=torch.float64)
        err = compare(native, twin, (x,), call=lambda m, xs: _first(m(*xs)))
        assert err.max <= 1e-12 and err.grad_max <= 1e-12
        if getattr(native, "return_indices", False):
            assert torch.equal(native(x)[1], twin(x)[1])


def test_window_of_padding_only() -> None:
    """torch gives -inf for a max window that covers padding only; so does the twin (its
    window has no edge). torch's backward then credits an arbitrary input element, which
    the twin does not mirror."""
    native = nn.MaxPool2d(2, (3, 2), 1, (2, 3), ceil_mode=True)
    x = torch.randn(1, 1, 6, 2)
    assert torch.equal(native(x), to_gnn(native)(x))
    assert to_gnn(native).graph((1, 1, 6, 2)).edge_index.shape[1] == 0


def test_graph_by_hand() -> None:
    g = MaxPool1dAsGNN(2).graph((1, 5))
    assert g.output_size == (2,)
    assert g.edge_index.tolist() == [[0, 1, 2, 3], [0, 0, 1, 1]]
    g = AvgPool1dAsGNN(3, 2, padding=1, count_include_pad=False).graph((1, 5))
    assert g.edge_index.tolist() == [[0, 1, 1, 2, 3, 3, 4], [0, 0, 1, 1, 1, 2, 2]]
    assert g.divisor.view(-1).tolist() == [2.0, 3.0, 2.0]
    g = AdaptiveAvgPool2dAsGNN(1).graph((4, 2, 3))
    assert g.edge_index.tolist() == [list(range(6)), [0] * 6]
    g = AvgPool2dAsGNN(2, divisor_override=3).graph((1, 4, 4))
    assert float(g.divisor) == 3.0 and g.edge_index.shape[1] == 16


def test_round_trips_and_repr() -> None:
    for native in (nn.MaxPool2d(3, 2, 1), nn.AvgPool2d(3, 1, 1, True, False, 2),
                   nn.AvgPool1d(2), nn.MaxPool1d(3, dilation=2), nn.AdaptiveAvgPool2d((2, 2)),
                   nn.AdaptiveAvgPool1d(4), nn.AdaptiveMaxPool2d(1)):
        twin = to_gnn(native)
        back = twin.to_native()
        assert type(back) is type(native)
        assert {k: v for k, v in vars(back).items() if not k.startswith("_")} == \
            {k: v for k, v in vars(native).items() if not k.startswith("_")}
    assert repr(MaxPool2dAsGNN(3, 2, 1)) == repr(nn.MaxPool2d(3, 2, 1)).replace(
        "MaxPool2d", "MaxPool2dAsGNN")


@pytest.mark.parametrize(("native", "x"), [
    (nn.MaxPool2d(2), torch.randn(5)),
    (nn.MaxPool2d(3, padding=2), torch.randn(1, 1, 6, 6)),
    (nn.AvgPool2d(4), torch.randn(1, 1, 3, 3)),
    (nn.AdaptiveAvgPool2d((2, -1)), torch.randn(1, 1, 3, 3)),
])
def test_bad_input_raises_what_torch_raises(native: nn.Module, x: torch.Tensor) -> None:
    with pytest.raises(Exception) as expected:
        native(x)
    with pytest.raises(type(expected.value), match=re.escape(str(expected.value))):
        to_gnn(native)(x)


def test_never_calls_the_native_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("a native pooling kernel was called")

    for name in ("max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d",
                 "adaptive_avg_pool2d", "adaptive_max_pool2d", "max_pool2d_with_indices",
                 "unfold"):
        monkeypatch.setattr(F, name, forbidden)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    for twin in (MaxPool2dAsGNN(2), AvgPool2dAsGNN(3, 1, 1), AdaptiveAvgPool2dAsGNN(1),
                 AdaptiveMaxPool2dAsGNN(2)):
        twin(x).sum().backward()
    AdaptiveAvgPool1dAsGNN(3)(torch.randn(2, 3, 7))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision(dtype: torch.dtype) -> None:
    x = torch.randn(2, 3, 8, 8).to(dtype)
    for native in (nn.MaxPool2d(2), nn.AvgPool2d(3, 1, 1)):
        assert torch.allclose(native(x).float(), to_gnn(native)(x).float(), atol=1e-2)


@pytest.mark.parametrize(("native", "shape", "tiled"), [
    (nn.MaxPool1d(2), (3, 4, 8), True),
    (nn.AvgPool1d(4), (3, 4, 8), True),
    (nn.AdaptiveAvgPool2d(1), (3, 4, 5, 6), True),
    (nn.MaxPool1d(2), (3, 4, 9), False),
    (nn.MaxPool2d(2), (3, 4, 8, 8), False),
])
def test_tiled_windows_read_the_input_in_place(native, shape, tiled: bool) -> None:
    twin = to_gnn(native)
    x = torch.randn(shape, dtype=torch.float64)
    assert twin.graph(shape).input_size == shape[2:]
    assert twin._window_graph(shape[2:], twin._output_size(x), x.device).tiled is tiled
    err = compare(native, twin, (x,))
    assert err.max <= 1e-12 and err.grad_max <= 1e-12
    channels_last = x.movedim(1, -1).contiguous().movedim(-1, 1)  # nodes then contiguous
    assert torch.allclose(native(x), twin(channels_last), rtol=0, atol=1e-12)
