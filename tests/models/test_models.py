"""Model twins: exact equality, identical gradients and training, conversions, errors."""

from __future__ import annotations

import copy
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import models.common
from models import MODELS, ModelSpec
from modules import set_fused, to_gnn, to_native
from modules.base import MessagePassingModule
from modules.equivalence import compare

MIXING = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d,
          nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
          nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerEncoder,
          nn.TransformerDecoderLayer, nn.TransformerDecoder, nn.Transformer)
REPO = Path(__file__).resolve().parents[2]
MODEL_FILES = {"mlp": "MNIST_MLP", "cwru": "CWRU_1DCNN", "vgg11": "CIFAR100_VGG",
               "resnet18": "CIFAR100_ResNet18", "vit": "CIFAR100_ViT"}
BATCH = {"mlp": 8, "cwru": 8, "vgg11": 4, "resnet18": 4, "vit": 4}


def _pair(key: str, dtype: torch.dtype = torch.float64) -> tuple[nn.Module, nn.Module]:
    """The standard network of ``MODELS[key]`` under seed 0 and its twin. A network that
    cannot be converted raises here, so its tests fail (they never skip)."""
    torch.manual_seed(0)
    standard = MODELS[key].standard().to(dtype)
    return standard, to_gnn(standard)


def _batch(key: str, dtype: torch.dtype, n: int | None = None) -> torch.Tensor:
    return torch.randn(n or BATCH[key], *MODELS[key].input_shape, dtype=dtype)


@pytest.mark.parametrize("key", MODELS)
def test_twin_has_no_native_mixing_layer(key: str) -> None:
    _, twin = _pair(key, torch.float32)
    native = [f"{name}: {type(m).__name__}" for name, m in twin.named_modules()
              if type(m) in MIXING]
    assert not native, f"native information-mixing layers left in the twin: {native}"
    assert any(isinstance(m, MessagePassingModule) for m in twin.modules())


@pytest.mark.parametrize("key", MODELS)
def test_state_dict_keys_identical(key: str) -> None:
    standard, twin = _pair(key, torch.float32)
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


# Steps and batch of the identical-training test. Three steps exercise the optimizer state
# (momentum, Adam's moments and bias correction) beyond the first update. ResNet-18 ends on
# 1x1 maps: with few samples its BatchNorm divides by near-zero batch variances and
# amplifies rounding (the native network alone then diverges from a reordered copy of
# itself), so it keeps 8 samples; VGG11's last BatchNorm sees 2x2 maps and holds at 2.
TRAINING = {"mlp": (20, 8), "cwru": (20, 8), "vgg11": (3, 2), "resnet18": (3, 8),
            "vit": (3, 2)}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("key", MODELS)
def test_identical_training(key: str, optimizer: str) -> None:
    """Steps from the same initialization and random state, train mode (BatchNorm batch
    statistics, dropout drawing the same masks on both sides): parameters and buffers
    stay equal, and the training has moved them."""
    standard, twin = _pair(key)
    initial = {k: v.clone() for k, v in standard.state_dict().items()}
    for model in (standard, twin):
        model.train()
    steps, batch = TRAINING[key]
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
    moved = [k for k, p in params[0].items() if p.is_floating_point()
             and not torch.equal(p, initial[k])]
    assert moved, "training changed no parameter: the comparison would prove nothing"


@pytest.mark.parametrize("key", MODELS)
def test_to_native_gives_back_the_original(key: str) -> None:
    standard, twin = _pair(key, torch.float32)
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


def test_unconvertible_model_fails_instead_of_skipping(monkeypatch: pytest.MonkeyPatch) -> None:
    """A network with a layer that has no twin must make its tests fail: a skip would turn
    a regression (e.g. an unsupported layer added to the ViT) into a green run."""
    build_vit = MODELS["vit"].standard

    def vit_with_lstm() -> nn.Module:
        model = build_vit()
        model.head.append(nn.LSTM(100, 100))
        return model

    monkeypatch.setitem(MODELS, "vit", ModelSpec("ViT with LSTM", vit_with_lstm,
                                                 vit_with_lstm, (3, 32, 32), 100))
    with pytest.raises(BaseException) as info:  # noqa: B017 (pytest.skip raises BaseException)
        _pair("vit", torch.float32)
    assert info.type is TypeError, f"expected TypeError, got {info.type.__name__}"
    assert "LSTM" in str(info.value)


def test_model_file_runs_without_runpy_warning() -> None:
    """``python -m models.<File>`` must not import the file twice (runpy's RuntimeWarning
    'found in sys.modules after import of package')."""
    done = subprocess.run([sys.executable, "-m", "models.MNIST_MLP", "--samples", "64"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr
    assert "1 of 1 configurations within MAE < 1e-06 (64 samples each" in done.stdout


@pytest.mark.parametrize("key", MODELS)
def test_model_file_help_is_complete(key: str, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module(f"models.{MODEL_FILES[key]}")
    used = {}

    def record(cases, args):  # the check itself is tested in tests/modules
        used["args"], used["cases"] = args, cases
        return 0

    monkeypatch.setattr(models.common, "run_cases", record)
    assert module.main([]) == 0
    assert f"{used['cases'][0].build().__class__.__name__}: " in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        module.main(["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"usage: python -m models.{MODEL_FILES[key]}" in text
    for flag in ("--samples", "--device", "--dtype", "--seed"):
        assert flag in text
    assert f"(default: {used['args'].samples})" in text  # the default it really uses
    assert f"of shape ({', '.join(map(str, MODELS[key].input_shape))})" in text
    assert "Exit status 0 when the MAE is below 1e-6, 1 otherwise" in text
