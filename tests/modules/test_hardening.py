"""Empty inputs, invalid hyper-parameters and dtypes: the twins do what torch does.

Every case runs torch first; the twin must give the same result (shape, dtype, values,
gradient shapes) or raise the same error type with the same message at the same point
(construction or call).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

import modules.ConvAsGNN as conv
import modules.PoolingAsGNN as pool
from models.CWRU_1DCNN import CNN1DCWRU, INPUT_SHAPE, CNN1DCWRUAsGNN
from modules import LinearAsGNN, set_fused, to_gnn

pytestmark = [pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors"),
              pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")]

TWIN_OF = {nn.Conv1d: conv.Conv1dAsGNN, nn.Conv2d: conv.Conv2dAsGNN,
           nn.MaxPool1d: pool.MaxPool1dAsGNN, nn.MaxPool2d: pool.MaxPool2dAsGNN,
           nn.AvgPool1d: pool.AvgPool1dAsGNN, nn.AvgPool2d: pool.AvgPool2dAsGNN,
           nn.AdaptiveAvgPool1d: pool.AdaptiveAvgPool1dAsGNN,
           nn.AdaptiveAvgPool2d: pool.AdaptiveAvgPool2dAsGNN,
           nn.AdaptiveMaxPool2d: pool.AdaptiveMaxPool2dAsGNN}


def _first(out: Tensor | tuple) -> Tensor:
    return out[0] if isinstance(out, tuple) else out


def _outcome(build: Callable[[], nn.Module], x: Tensor,
             prepare: Callable[[nn.Module], nn.Module] = lambda m: m,
             ) -> tuple[str, object]:
    """('init', error), ('call', error) or ('ok', (output, input gradient))."""
    torch.manual_seed(0)  # twins initialize as torch does: same weights
    try:
        module = prepare(build())
    except Exception as err:  # noqa: BLE001 (the error itself is compared)
        return "init", err
    x = x.detach().clone().requires_grad_(x.is_floating_point())
    try:
        out = module(x)
    except Exception as err:  # noqa: BLE001
        return "call", err
    grad = None
    if x.requires_grad:
        try:
            _first(out).sum().backward()
            grad = x.grad
        except RuntimeError as err:  # torch's backward rejects some empty results
            grad = err
    return "ok", (out, grad)


def _assert_same(native_type: type[nn.Module], args: tuple, kwargs: dict, x: Tensor) -> None:
    """Build native and twin from the same arguments; same result or same error."""
    twin_type = TWIN_OF[native_type]
    def prepare(module: nn.Module) -> nn.Module:
        return module.to(x.dtype) if x.is_floating_point() else module

    where_n, native = _outcome(lambda: native_type(*args, **kwargs), x, prepare)
    where_t, twin = _outcome(lambda: twin_type(*args, **kwargs), x, prepare)
    assert where_t == where_n, (where_n, native, where_t, twin)
    if where_n != "ok":
        assert type(twin) is type(native) and str(twin) == str(native), (native, twin)
        return
    (out_n, grad_n), (out_t, grad_t) = native, twin
    for a, b in zip(out_n if isinstance(out_n, tuple) else (out_n,),
                    out_t if isinstance(out_t, tuple) else (out_t,)):
        assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
        if a.is_floating_point():
            assert torch.allclose(a, b, rtol=0, atol=1e-12, equal_nan=True), (a, b)
        else:
            assert torch.equal(a, b), (a, b)
    if isinstance(grad_n, Exception):
        return  # the twin's gradient (zeros) is where torch has none
    assert (grad_n is None) == (grad_t is None)
    if grad_n is not None:
        assert grad_t.shape == grad_n.shape
        assert torch.allclose(grad_n, grad_t, rtol=0, atol=1e-12), (grad_n, grad_t)


# -- empty inputs ----------------------------------------------------------------------------
@pytest.mark.parametrize(("native_type", "args", "kwargs", "shape"), [
    (nn.Conv1d, (3, 4, 3), {}, (0, 3, 10)),
    (nn.Conv1d, (2, 4, 3), {"groups": 2, "stride": 2}, (0, 2, 10)),
    (nn.Conv1d, (0, 4, 3), {}, (2, 0, 10)),
    (nn.Conv1d, (0, 4, 3), {}, (0, 10)),
    (nn.Conv2d, (3, 4, 3), {"padding": 1}, (0, 3, 6, 5)),
    (nn.Conv2d, (3, 4, 3), {"padding": 1, "padding_mode": "reflect"}, (0, 3, 5, 5)),
    (nn.Conv2d, (3, 4, 3), {"padding": 1, "padding_mode": "circular"}, (0, 3, 5, 5)),
    (nn.Conv2d, (0, 4, 3), {}, (0, 0, 10, 10)),
    (nn.Conv2d, (0, 4, 3), {"dilation": 2}, (2, 0, 10, 10)),
    (nn.Conv2d, (3, 4, 1), {"padding": 1}, (2, 3, 0, 10)),
    (nn.Conv2d, (3, 4, 3), {"dilation": 0}, (0, 3, 10, 10)),
    (nn.Conv2d, (3, 0, 3), {}, (0, 3, 10, 10)),
    (nn.MaxPool1d, (2,), {}, (0, 3, 10)),
    (nn.MaxPool1d, (2,), {"return_indices": True}, (0, 3, 10)),
    (nn.MaxPool1d, (2,), {}, (2, 0, 10)),
    (nn.MaxPool1d, (2,), {"return_indices": True}, (0, 10)),
    (nn.MaxPool2d, (3, 2, 1), {}, (0, 3, 10, 10)),
    (nn.MaxPool2d, (2,), {"return_indices": True}, (0, 3, 10, 10)),
    (nn.MaxPool2d, (2,), {}, (2, 0, 10, 10)),
    (nn.MaxPool2d, (2,), {}, (2, 3, 0, 10)),
    (nn.AvgPool1d, (2,), {}, (0, 3, 10)),
    (nn.AvgPool1d, (2,), {}, (2, 0, 10)),
    (nn.AvgPool2d, (3, 2, 1), {}, (0, 3, 10, 10)),
    (nn.AvgPool2d, (2,), {}, (3, 0, 4)),
    (nn.AdaptiveAvgPool1d, (3,), {}, (0, 3, 10)),
    (nn.AdaptiveAvgPool1d, (3,), {}, (3, 0, 10)),
    (nn.AdaptiveAvgPool2d, ((3, 2),), {}, (0, 3, 10, 10)),
    (nn.AdaptiveAvgPool2d, (3,), {}, (2, 3, 0, 10)),
    (nn.AdaptiveAvgPool2d, ((2, 0),), {}, (2, 3, 5, 5)),
    (nn.AdaptiveMaxPool2d, (3,), {}, (0, 3, 10, 10)),
    (nn.AdaptiveMaxPool2d, (3,), {"return_indices": True}, (0, 10, 10)),
    (nn.AdaptiveMaxPool2d, (3,), {}, (2, 0, 10, 10)),
    (nn.AdaptiveMaxPool2d, (0,), {}, (2, 3, 5, 5)),
])
def test_empty_inputs_like_torch(native_type, args, kwargs, shape) -> None:
    """A batch of 0 samples (or 0 channels where torch allows it) used to fail with
    'cannot reshape tensor of 0 elements'; torch returns an empty result."""
    _assert_same(native_type, args, kwargs, torch.randn(shape, dtype=torch.float64))


@pytest.mark.parametrize("fused", [True, False])
def test_empty_batch_through_linear_and_the_cwru_twin(fused: bool) -> None:
    layer = set_fused(LinearAsGNN(5, 3), fused)
    x = torch.randn(0, 2, 5, requires_grad=True)
    out = layer(x)
    out.sum().backward()
    assert out.shape == (0, 2, 3) and x.grad.shape == x.shape
    standard = CNN1DCWRU().eval()
    twin = set_fused(CNN1DCWRUAsGNN(), fused).eval()
    twin.load_state_dict(standard.state_dict())
    x = torch.randn(0, *INPUT_SHAPE)
    expected = standard(x)
    got = twin(x)
    assert got.shape == expected.shape and got.dtype == expected.dtype


def _attention_calls(batch_first: bool) -> list[tuple[str, Callable[[], nn.Module],
                                                     Callable[[nn.Module, Tensor], Tensor]]]:
    e, h = 8, 2
    no_padding = torch.zeros(0, 5, dtype=torch.bool)
    return [
        ("mha", lambda: nn.MultiheadAttention(e, h, batch_first=batch_first),
         lambda m, x: m(x, x, x)),
        ("mha no weights", lambda: nn.MultiheadAttention(e, h, batch_first=batch_first),
         lambda m, x: m(x, x, x, need_weights=False)),
        ("mha key padding", lambda: nn.MultiheadAttention(e, h, batch_first=batch_first),
         lambda m, x: m(x, x, x, key_padding_mask=no_padding)),
        ("encoder layer", lambda: nn.TransformerEncoderLayer(e, h, 16,
                                                             batch_first=batch_first),
         lambda m, x: m(x)),
        ("decoder layer", lambda: nn.TransformerDecoderLayer(e, h, 16,
                                                             batch_first=batch_first),
         lambda m, x: m(x, x)),
        ("transformer", lambda: nn.Transformer(e, h, 1, 1, 16, batch_first=batch_first),
         lambda m, x: m(x, x)),
    ]


@pytest.mark.parametrize(("batch_first", "training", "grad", "fused"), [
    (True, False, False, True),  # torch's native fast path (returns no weights)
    (True, False, False, False),
    (True, True, True, True),
    (False, False, True, False),
    (False, True, False, True),
    (False, True, True, False),
])
def test_attention_with_empty_batch(batch_first: bool, training: bool, grad: bool,
                                    fused: bool) -> None:
    shape = (0, 5, 8) if batch_first else (5, 0, 8)
    for name, build, call in _attention_calls(batch_first):
        native = build().train(training)
        twin = set_fused(to_gnn(native), fused)
        results = []
        for module in (native, twin):
            x = torch.randn(shape, requires_grad=grad)
            with torch.set_grad_enabled(grad):
                out = call(module, x)
            weights = out[1] if isinstance(out, tuple) else None
            out = _first(out)
            if out.requires_grad:
                out.sum().backward()
            results.append((out.shape, out.dtype, None if weights is None else weights.shape,
                            None if x.grad is None else x.grad.shape))
        assert results[0] == results[1], (name, results)


# -- invalid hyper-parameters ------------------------------------------------------------------
@pytest.mark.parametrize(("native_type", "args", "kwargs"), [
    (nn.Conv1d, (2, 3, 3), {"padding": -1}),
    (nn.Conv2d, (2, 3, 3), {"padding": (1, -1)}),
    (nn.Conv2d, (2, 3, 3), {"padding": -1, "padding_mode": "reflect"}),
    (nn.Conv2d, (2, 3, 3), {"padding": -1, "padding_mode": "replicate"}),
    (nn.Conv2d, (2, 3, 3), {"padding": (-1, 1), "padding_mode": "circular"}),
    (nn.Conv1d, (2, 3, 3), {"padding": -1, "padding_mode": "circular", "stride": 2}),
    (nn.Conv1d, (2, 3, 3), {"padding": -4, "padding_mode": "reflect"}),
    (nn.Conv1d, (2, 3, 3), {"dilation": 0}),
    (nn.Conv1d, (2, 3, 3), {"dilation": -1}),
    (nn.Conv2d, (2, 3, 3), {"dilation": (1, 0)}),
    (nn.Conv2d, (2, 3, 3), {"dilation": (-1, 0)}),
    (nn.Conv1d, (2, 3, 3), {"stride": 0}),
    (nn.Conv2d, (2, 3, 3), {"stride": (1, -2)}),
    (nn.Conv2d, (2, 3, 3), {"stride": 0, "padding": -1}),
    (nn.Conv1d, (2, 3, 0), {}),
    (nn.Conv2d, (2, 3, (0, 3)), {}),
    (nn.Conv2d, (2, 3, (0, 3)), {"dilation": 2}),
    (nn.Conv2d, (2, 3, 0), {"stride": 0}),
    (nn.Conv1d, (2, 3, 0), {"padding": "same"}),
    (nn.Conv2d, (2, 3, -1), {}),
    (nn.Conv2d, (-1, 3, 3), {}),
    (nn.Conv2d, (2, 0, 3), {}),
    (nn.Conv2d, (2, 3, 3), {"groups": 0}),
    (nn.Conv2d, (2, 4, 3), {"groups": 2, "dilation": 0}),
])
def test_conv_hyper_parameters_rejected_like_torch(native_type, args, kwargs) -> None:
    """Negative padding used to crop silently; dilation, stride and kernel size <= 0
    failed with unrelated errors. Compared in float64, torch's reference kernels (in
    float32 torch may route through oneDNN, whose messages differ)."""
    spatial = (10,) if native_type is nn.Conv1d else (10, 9)
    kernel = args[2] if isinstance(args[2], tuple) else (args[2],)
    # torch fails on an empty batch with a zero-size kernel with an internal IndexError
    # ('select(): index 0 out of range'); the twin returns the empty result there
    for batch in (2, 0) if all(kernel) else (2,):
        _assert_same(native_type, args, kwargs,
                     torch.randn(batch, 2, *spatial, dtype=torch.float64))


_POOL_BAD = [
    ((0,), {}), ((-1,), {}), ((2, 0), {}), ((2, -1), {}), ((2, 2, -1), {}), ((3, 2, 2), {}),
    ((0, 1), {}), ((-1, 1), {}), ((2, 0, -1), {}), ((4,), {}), ((5, 1), {}),
]
_MAX_BAD = [((2, 2, 0), {"dilation": 0}), ((2, 2, 0), {"dilation": -1}),
            ((2, 2, -1), {"dilation": 0}), ((3, 2, 2), {"dilation": 0}),
            ((3, 1, 2), {"dilation": 2}), ((0, 1, 0), {"dilation": 0})]
_2D_BAD = [(((2, 0),), {}), ((2, (1, 0)), {}), ((2, 2, (0, -1)), {})]


@pytest.mark.parametrize(("native_type", "args", "kwargs"), [
    *[(t, a, k) for t in (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)
      for a, k in _POOL_BAD],
    *[(t, a, k) for t in (nn.MaxPool1d, nn.MaxPool2d) for a, k in _MAX_BAD],
    *[(t, a, k | {"return_indices": True}) for t in (nn.MaxPool1d, nn.MaxPool2d)
      for a, k in _POOL_BAD[:6] + _MAX_BAD[:3]],
    *[(t, a, k) for t in (nn.MaxPool2d, nn.AvgPool2d) for a, k in _2D_BAD],
    (nn.AvgPool2d, (2,), {"divisor_override": 0}),
    (nn.AvgPool2d, (2,), {"divisor_override": -3}),
    (nn.AdaptiveAvgPool2d, ((2, -1),), {}),
    (nn.AdaptiveAvgPool1d, (-2,), {}),
    (nn.AdaptiveMaxPool2d, (-1,), {}),
])
def test_pooling_hyper_parameters_rejected_like_torch(native_type, args, kwargs) -> None:
    """torch checks pooling arguments when called; so does the twin, in torch's order."""
    n = 1 if "1d" in native_type.__name__ else 2
    for shape in ((2, 3, 3), (2, 3, 10)) if n == 1 else ((2, 3, 3, 3), (2, 3, 10, 9)):
        _assert_same(native_type, args, kwargs, torch.randn(shape, dtype=torch.float64))


@pytest.mark.parametrize(("native_type", "args", "kwargs"), [
    (nn.MaxPool1d, (2,), {}), (nn.MaxPool1d, (3, 2, 1), {"return_indices": True}),
    (nn.MaxPool2d, (3, 1, 1), {}), (nn.MaxPool2d, (2,), {"return_indices": True}),
    (nn.AvgPool1d, (3, 2, 1), {}), (nn.AvgPool1d, (3, 2, 1), {"count_include_pad": False}),
    (nn.AvgPool2d, (2,), {"divisor_override": -3}), (nn.AvgPool2d, (3, 2, 1), {}),
    (nn.AdaptiveAvgPool1d, (1,), {}), (nn.AdaptiveAvgPool2d, ((2, 3),), {}),
    (nn.AdaptiveMaxPool2d, (2,), {}),
])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool,
                                   torch.complex64])
def test_pooling_dtypes_like_torch(native_type, args, kwargs, dtype: torch.dtype) -> None:
    """Integer inputs: max pooling accepts every integer type (max_pool1d without indices
    none), average pooling int64 only (rounding toward zero); bool and complex none."""
    n = 1 if "1d" in native_type.__name__ else 2
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(-9, 10, (2, 3, 7) if n == 1 else (2, 3, 7, 6), generator=gen)
    x = (x > 0) if dtype == torch.bool else (x.abs() if dtype == torch.uint8 else x).to(dtype)
    _assert_same(native_type, args, kwargs, x)
    native = native_type(*args, **kwargs)
    try:
        expected = native(x)
    except (RuntimeError, NotImplementedError):
        return
    for fused in (True, False):
        got = set_fused(to_gnn(native), fused)(x)
        for a, b in zip(expected if isinstance(expected, tuple) else (expected,),
                        got if isinstance(got, tuple) else (got,)):
            assert a.dtype == b.dtype and torch.equal(a, b), (native, fused, a, b)


# -- import hygiene ----------------------------------------------------------------------------
def test_importing_installs_no_warnings_filter() -> None:
    """The attention file used to silence torch's nested-tensor warning for everyone."""
    import importlib
    import sys

    before = list(warnings.filters)
    names = [m for m in sys.modules if m == "modules" or m.startswith("modules.")]
    saved = {m: sys.modules.pop(m) for m in names}
    try:
        importlib.import_module("modules.convert")
        importlib.import_module("modules.checks")
        assert warnings.filters == before
    finally:
        for m in [m for m in sys.modules if m == "modules" or m.startswith("modules.")]:
            del sys.modules[m]
        sys.modules.update(saved)


def test_the_comparison_can_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    """A twin that raises elsewhere, or computes something else, is caught."""
    monkeypatch.setitem(TWIN_OF, nn.MaxPool2d, pool.AvgPool2dAsGNN)
    with pytest.raises(AssertionError):  # AvgPool2d has no dilation: TypeError at init
        _assert_same(nn.MaxPool2d, (2,), {"dilation": 0}, torch.randn(1, 1, 4, 4))
    with pytest.raises(AssertionError):  # average instead of max
        _assert_same(nn.MaxPool2d, (2,), {}, torch.randn(1, 1, 4, 4, dtype=torch.float64))
