"""Conv1dAsGNN and Conv2dAsGNN against torch.nn on random hyper-parameters."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from modules import Conv1dAsGNN, Conv2dAsGNN
from modules.equivalence import compare

MODES = ["zeros", "reflect", "replicate", "circular"]


def _random_conv(rng: random.Random, n: int) -> tuple[dict, tuple[int, ...]]:
    """Random valid nn.Conv{n}d arguments and input shape (batch, channels, *spatial)."""
    while True:
        groups = rng.choice([1, 1, 2, 3])
        kwargs = {
            "in_channels": groups * rng.randint(1, 3),
            "out_channels": groups * rng.randint(1, 3),
            "kernel_size": tuple(rng.randint(1, 7) for _ in range(n)),
            "stride": tuple(rng.randint(1, 3) for _ in range(n)),
            "dilation": tuple(rng.randint(1, 2) for _ in range(n)),
            "groups": groups,
            "bias": rng.random() < 0.7,
            "padding_mode": rng.choice(MODES),
        }
        pad_kind = rng.choice(["int", "tuple", "same", "valid"])
        if pad_kind == "same":
            kwargs["stride"] = 1
            kwargs["padding"] = "same"
        elif pad_kind == "valid":
            kwargs["padding"] = "valid"
        elif pad_kind == "int":
            kwargs["padding"] = rng.randint(0, 3)
        else:
            kwargs["padding"] = tuple(rng.randint(0, 3) for _ in range(n))
        spatial = tuple(rng.randint(1, 12) for _ in range(n))
        shape = (rng.choice([1, 2, 3]), kwargs["in_channels"], *spatial)
        native = (nn.Conv1d if n == 1 else nn.Conv2d)(**kwargs)
        try:
            native(torch.zeros(shape))
        except (RuntimeError, NotImplementedError):
            continue  # invalid combination for torch itself: draw again
        return kwargs, shape


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("seed", range(20))
def test_random_sweep_float64_and_float32(n: int, seed: int) -> None:
    rng = random.Random(1000 * n + seed)
    kwargs, shape = _random_conv(rng, n)
    twin_type = Conv1dAsGNN if n == 1 else Conv2dAsGNN
    for fused in (True, False):
        native = (nn.Conv1d if n == 1 else nn.Conv2d)(**kwargs).double()
        twin = twin_type.from_native(native)
        twin.fused = fused
        x = torch.randn(shape, dtype=torch.float64)
        err = compare(native, twin, (x,))
        assert err.max <= 1e-10 and err.grad_max <= 1e-10, (kwargs, shape, fused, err)
        native32, twin32 = native.float(), twin.float()
        err = compare(native32, twin32, (x.float(),))
        assert err.mae <= 1e-6, (kwargs, shape, fused, err)


@pytest.mark.parametrize("k", range(1, 8))
def test_every_kernel_size_2d(k: int) -> None:
    native = nn.Conv2d(4, 6, k, stride=2 if k % 2 else 1, padding=k // 2).double()
    err = compare(native, Conv2dAsGNN.from_native(native),
                  (torch.randn(2, 4, 11, 9, dtype=torch.float64),))
    assert err.max <= 1e-10 and err.grad_max <= 1e-10


@pytest.mark.parametrize("groups", [1, 2])
def test_per_offset_accumulation_path(groups: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large inputs take the one-GEMM-per-offset fused branch; it must be exact too."""
    import modules.conv as conv_module

    monkeypatch.setattr(conv_module, "_IM2COL_MAX_BYTES", 0)
    native = nn.Conv2d(8, 6, 3, padding=1, groups=groups).double()
    err = compare(native, Conv2dAsGNN.from_native(native),
                  (torch.randn(2, 8, 5, 6, dtype=torch.float64),))
    assert err.max <= 1e-10 and err.grad_max <= 1e-10
    native = nn.Conv1d(4, 6, 5, padding=2, groups=groups, padding_mode="circular").double()
    err = compare(native, Conv1dAsGNN.from_native(native),
                  (torch.randn(2, 4, 9, dtype=torch.float64),))
    assert err.max <= 1e-10 and err.grad_max <= 1e-10


def test_weights_are_stored_offset_major() -> None:
    """Same shape as torch's weight, offset-major memory: the GEMMs read it in place."""
    conv = Conv2dAsGNN(4, 6, 3)
    assert conv.weight.shape == (6, 4, 3, 3) and conv.weight.stride() == (36, 1, 12, 4)
    conv.load_state_dict(nn.Conv2d(4, 6, 3).state_dict())
    assert conv.double().weight.stride() == (36, 1, 12, 4)


def test_unbatched_input() -> None:
    native = nn.Conv2d(3, 5, 3, padding=1).double()
    x = torch.randn(3, 6, 7, dtype=torch.float64)
    err = compare(native, Conv2dAsGNN.from_native(native), (x,))
    assert err.max <= 1e-10


def test_graph_by_hand_zero_padding() -> None:
    g = Conv1dAsGNN(1, 1, 3, padding=1).graph((1, 1, 4))
    # target t receives offsets 0, 1, 2 from t-1, t, t+1; the two padded ones are absent
    assert g.edge_index.tolist() == [[0, 1, 0, 1, 2, 1, 2, 3, 2, 3],
                                     [0, 0, 1, 1, 1, 2, 2, 2, 3, 3]]
    assert g.kernel_offset.tolist() == [1, 2, 0, 1, 2, 0, 1, 2, 0, 1]
    assert (g.num_src_nodes, g.num_dst_nodes) == (4, 4)


def test_graph_by_hand_padding_modes() -> None:
    def sources(mode: str) -> list[int]:
        g = Conv1dAsGNN(1, 1, 3, padding=2, padding_mode=mode).graph((1, 3))
        return g.edge_index[0, g.edge_index[1] == 0].tolist()  # first output window

    # the first window covers padded positions -2, -1, 0 of an input of length 3
    assert sources("zeros") == [0]
    assert sources("reflect") == [2, 1, 0]
    assert sources("replicate") == [0, 0, 0]
    assert sources("circular") == [1, 2, 0]
    g = Conv2dAsGNN(2, 4, (2, 3), stride=(1, 2), groups=2).graph((2, 3, 5))
    assert g.output_size == (2, 2) and g.edge_index.shape[1] == 4 * 6
    assert g.kernel_position.tolist()[:3] == [[0, 0], [0, 1], [0, 2]]


def test_graph_is_cached_and_not_replicated_per_sample() -> None:
    conv = Conv2dAsGNN(2, 3, 3, padding=1)
    conv(torch.randn(1, 2, 5, 5))
    conv(torch.randn(7, 2, 5, 5))
    assert len(conv._graph_cache) == 1
    conv(torch.randn(7, 2, 6, 5))
    assert len(conv._graph_cache) == 2
    assert conv.graph((1, 2, 5, 5)).edge_index.shape == conv.graph((9, 2, 5, 5)).edge_index.shape


def test_state_dict_round_trip() -> None:
    native = nn.Conv2d(4, 6, 3, groups=2, bias=False)
    twin = Conv2dAsGNN(4, 6, 3, groups=2, bias=False)
    twin.load_state_dict(native.state_dict(), strict=True)
    native.load_state_dict(twin.state_dict(), strict=True)
    back = Conv2dAsGNN.from_native(native).to_native()
    assert type(back) is nn.Conv2d and torch.equal(back.weight, native.weight)
    assert repr(twin) == repr(native).replace("Conv2d", "Conv2dAsGNN")


def test_same_initialization_as_torch() -> None:
    torch.manual_seed(5)
    native = nn.Conv1d(3, 4, 5)
    torch.manual_seed(5)
    twin = Conv1dAsGNN(3, 4, 5)
    assert torch.equal(native.weight, twin.weight) and torch.equal(native.bias, twin.bias)


@pytest.mark.parametrize(("make", "x", "error", "match"), [
    (lambda: Conv2dAsGNN(3, 4, 3), torch.randn(3, 5), RuntimeError,
     r"Expected 3D \(unbatched\) or 4D \(batched\) input to conv2d, but got input of size: "
     r"\[3, 5\]"),
    (lambda: Conv2dAsGNN(3, 4, 3), torch.randn(1, 2, 5, 5), RuntimeError,
     r"expected input\[1, 2, 5, 5\] to have 3 channels, but got 2 channels instead"),
    (lambda: Conv2dAsGNN(3, 4, 5), torch.randn(1, 3, 4, 4), RuntimeError,
     r"Calculated padded input size per channel: \(4 x 4\). Kernel size: \(5 x 5\)"),
    (lambda: Conv1dAsGNN(1, 1, 3, padding=3, padding_mode="reflect"), torch.randn(1, 1, 3),
     RuntimeError, r"reflect padding of \(3, 3\) is too large"),
])
def test_bad_input(make, x, error, match) -> None:
    with pytest.raises(error, match=match):
        make()(x)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"padding": "same", "stride": 2}, "padding='same' is not supported for strided"),
    ({"padding": "full"}, "Invalid padding string 'full'"),
    ({"groups": 2}, "in_channels must be divisible by groups"),
    ({"padding_mode": "mirror"}, "padding_mode must be one of"),
])
def test_bad_hyper_parameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Conv2dAsGNN(3, 4, 3, **kwargs)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision(dtype: torch.dtype) -> None:
    native = nn.Conv2d(4, 8, 3, padding=1).to(dtype)
    x = torch.randn(2, 4, 6, 6).to(dtype)
    try:
        expected = native(x)
    except RuntimeError:
        pytest.skip(f"torch has no CPU conv2d for {dtype}")
    got = Conv2dAsGNN.from_native(native)(x)
    assert torch.allclose(expected.float(), got.float(), atol=5e-2, rtol=5e-2)


def test_never_calls_the_native_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("a native convolution kernel was called")

    for name in ("conv1d", "conv2d", "unfold", "linear"):
        monkeypatch.setattr(F, name, forbidden)
    monkeypatch.setattr(torch, "conv1d", forbidden)
    monkeypatch.setattr(torch, "conv2d", forbidden)
    Conv2dAsGNN(3, 4, 3, padding=1)(torch.randn(2, 3, 6, 6)).sum().backward()
    Conv1dAsGNN(3, 4, 3, padding=1, padding_mode="reflect")(torch.randn(2, 3, 6))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda() -> None:
    native = nn.Conv2d(4, 8, 3, padding=1, padding_mode="reflect").cuda().double()
    err = compare(native, Conv2dAsGNN.from_native(native),
                  (torch.randn(2, 4, 9, 7, dtype=torch.float64, device="cuda"),))
    assert err.max <= 1e-10 and err.grad_max <= 1e-10
