"""Model twins: exact equality, identical gradients and training, conversions, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from models import MODELS
from modules import set_fused, to_gnn, to_native
from modules.base import MessagePassingModule
from modules.equivalence import compare

MIXING = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d,
          nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
          nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerEncoder,
          nn.TransformerDecoderLayer, nn.TransformerDecoder, nn.Transformer)
BATCH = {"mlp": 8, "cwru": 8, "vgg11": 4, "resnet18": 4, "vit": 4}


def _pair(key: str, dtype: torch.dtype = torch.float64) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    standard = MODELS[key].standard().to(dtype)
    try:
        twin = to_gnn(standard)
    except TypeError as err:
        pytest.skip(f"no twin for {key} yet: {err}")
    return standard, twin


def _batch(key: str, dtype: torch.dtype, n: int | None = None) -> torch.Tensor:
    return torch.randn(n or BATCH[key], *MODELS[key].input_shape, dtype=dtype)


@pytest.mark.parametrize("key", MODELS)
def test_twin_has_no_native_mixing_layer(key: str) -> None:
    _, twin = _pair(key)
    native = [f"{name}: {type(m).__name__}" for name, m in twin.named_modules()
              if type(m) in MIXING]
    assert not native, f"native information-mixing layers left in the twin: {native}"
    assert any(isinstance(m, MessagePassingModule) for m in twin.modules())


@pytest.mark.parametrize("key", MODELS)
def test_state_dict_keys_identical(key: str) -> None:
    standard, twin = _pair(key)
    assert list(standard.state_dict()) == list(twin.state_dict())
    twin.load_state_dict(standard.state_dict(), strict=True)
    standard.load_state_dict(twin.state_dict(), strict=True)


@pytest.mark.parametrize("key", MODELS)
def test_eval_logits_and_gradients_float64(key: str) -> None:
    standard, twin = _pair(key)
    standard.eval()
    twin.eval()
    x = _batch(key, torch.float64)
    err = compare(standard, twin, (x,))
    assert err.max <= 1e-9, err
    assert err.grad_max <= 1e-8, err


@pytest.mark.parametrize("key", MODELS)
def test_eval_logits_float32(key: str) -> None:
    standard, twin = _pair(key, torch.float32)
    standard.eval()
    twin.eval()
    err = compare(standard, twin, (_batch(key, torch.float32),), backward=False)
    assert err.mae <= 1e-5, err


@pytest.mark.parametrize("key", MODELS)
def test_cross_entropy_gradients_float64(key: str) -> None:
    standard, twin = _pair(key)
    standard.eval()
    twin.eval()
    x = _batch(key, torch.float64)
    y = torch.randint(0, MODELS[key].num_classes, (x.shape[0],))
    grads = []
    for model in (standard, twin):
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        grads.append({k: p.grad for k, p in model.named_parameters()})
    for name, g in grads[0].items():
        assert (g - grads[1][name]).abs().max() <= 1e-8, name


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("key", MODELS)
def test_identical_training(key: str, optimizer: str) -> None:
    """20 steps from the same initialization and random state, train mode (BatchNorm
    batch statistics, dropout drawing the same masks on both sides): parameters stay
    equal."""
    standard, twin = _pair(key)
    for model in (standard, twin):
        model.train()
    # ResNet-18 ends on 1x1 maps: with fewer than 8 samples its BatchNorm divides by
    # near-zero batch variances and amplifies rounding (the native network alone then
    # diverges from a reordered copy of itself). VGG11 ends on 2x2 maps.
    steps, batch = 20, {"vgg11": 4, "resnet18": 8}.get(key, 8)
    gen = torch.Generator().manual_seed(1)
    data = [(torch.randn(batch, *MODELS[key].input_shape, dtype=torch.float64, generator=gen),
             torch.randint(0, MODELS[key].num_classes, (batch,), generator=gen))
            for _ in range(steps)]
    params = []
    for model in (standard, twin):
        torch.manual_seed(2)
        if optimizer == "sgd":
            opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
        else:
            opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        for x, y in data:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        params.append(dict(model.state_dict()))
    for name, p in params[0].items():
        if p.is_floating_point():
            assert (p - params[1][name]).abs().max() <= 1e-8, name
        else:
            assert torch.equal(p, params[1][name]), name


@pytest.mark.parametrize("key", MODELS)
def test_to_native_gives_back_the_original(key: str) -> None:
    standard, twin = _pair(key)
    back = to_native(twin)
    assert [type(m) for m in back.modules()] == [type(m) for m in standard.modules()]
    for (k, a), (_, b) in zip(standard.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("key", ["mlp", "cwru", "resnet18"])
def test_reference_path_equals_fused(key: str) -> None:
    standard, twin = _pair(key)
    twin.eval()
    x = _batch(key, torch.float64, 2)
    fused = twin(x)
    reference = set_fused(copy.deepcopy(twin), False)(x)
    assert (fused - reference).abs().max() <= 1e-10


@pytest.mark.parametrize(("key", "shape"), [
    ("vgg11", (2, 3, 28, 28)), ("resnet18", (2, 1, 32, 32)), ("vit", (2, 3, 28, 28)),
    ("mlp", (2, 3, 28, 28)), ("cwru", (2, 1, 1024)),
])
def test_wrong_input_shape_names_the_expected_shape(key: str, shape: tuple[int, ...]) -> None:
    _, twin = _pair(key, torch.float32)
    expected = ", ".join(["B", *map(str, MODELS[key].input_shape)])
    with pytest.raises(ValueError, match=rf"expects input of shape \({expected}\), "
                                         rf"got \({', '.join(map(str, shape))}\)"):
        twin(torch.randn(shape))


def test_unsupported_layer_is_named_with_its_path() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), nn.LSTM(4, 4)))
    with pytest.raises(TypeError, match=r"no message-passing twin for LSTM at '1\.1'"):
        to_gnn(model)


def test_original_cwru_module_names() -> None:
    keys = set(MODELS["cwru"].standard().state_dict())
    assert {"conv.0.weight", "conv.3.weight", "fc.0.weight", "fc.3.weight"} <= keys


def test_resnet18_has_torchvision_keys() -> None:
    keys = list(MODELS["resnet18"].standard().state_dict())
    for key in ("conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight",
                "layer2.0.downsample.0.weight", "layer4.1.bn2.weight", "fc.bias"):
        assert key in keys
    assert len([k for k in keys if k.endswith("weight")]) == 41
