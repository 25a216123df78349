"""LinearAsGNN and MLPAsGNN against torch.nn."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from modules import LinearAsGNN, MLPAsGNN
from modules.equivalence import compare


def _pair(in_f: int, out_f: int, bias: bool, dtype: torch.dtype):
    native = nn.Linear(in_f, out_f, bias=bias).to(dtype)
    return native, LinearAsGNN.from_native(native)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("fused", [True, False])
def test_linear_random_sweep(seed: int, fused: bool) -> None:
    rng = random.Random(seed)
    in_f, out_f = rng.randint(1, 40), rng.randint(1, 40)
    lead = [rng.randint(1, 5) for _ in range(rng.randint(0, 2))]
    bias = rng.random() < 0.7
    for dtype, check in [(torch.float64, "tight"), (torch.float32, "mae")]:
        native, twin = _pair(in_f, out_f, bias, dtype)
        twin.fused = fused
        x = torch.randn(*lead, in_f, dtype=dtype)
        err = compare(native, twin, (x,))
        if check == "tight":
            assert err.max <= 1e-10 and err.grad_max <= 1e-10, err
        else:
            assert err.mae <= 1e-6 and err.grad_max <= 1e-4, err


def test_reference_equals_fused() -> None:
    twin = LinearAsGNN(7, 5).double()
    x = torch.randn(3, 7, dtype=torch.float64)
    fused = twin(x)
    twin.fused = False
    assert torch.allclose(fused, twin(x), rtol=0, atol=1e-12)


def test_graph_by_hand() -> None:
    layer = LinearAsGNN(2, 3)
    g = layer.graph((4, 2))
    assert g.edge_index.tolist() == [[0, 1, 0, 1, 0, 1], [0, 0, 1, 1, 2, 2]]
    assert torch.equal(g.edge_attr.view(-1), layer.weight.detach().view(-1))
    assert torch.equal(g.bias, layer.bias.detach())
    assert (g.num_src_nodes, g.num_dst_nodes) == (2, 3)


def test_state_dict_round_trip_and_conversion() -> None:
    native = nn.Linear(6, 4)
    twin = LinearAsGNN(6, 4)
    twin.load_state_dict(native.state_dict(), strict=True)
    native.load_state_dict(twin.state_dict(), strict=True)
    back = LinearAsGNN.from_native(native).to_native()
    assert type(back) is nn.Linear
    assert torch.equal(back.weight, native.weight) and torch.equal(back.bias, native.bias)
    assert "in_features=6, out_features=4, bias=True" in repr(twin)


def test_same_initialization_as_torch() -> None:
    torch.manual_seed(3)
    native = nn.Linear(9, 4)
    torch.manual_seed(3)
    twin = LinearAsGNN(9, 4)
    assert torch.equal(native.weight, twin.weight) and torch.equal(native.bias, twin.bias)


def test_bad_input_names_expected_and_actual() -> None:
    with pytest.raises(RuntimeError, match=r"expected input of shape \(\*, 5\), got \(2, 4\)"):
        LinearAsGNN(5, 3)(torch.randn(2, 4))


def test_mlp_matches_its_native_sequential() -> None:
    mlp = MLPAsGNN(10, [16, 8], 3, activation="gelu", dropout=0.2).double().eval()
    native = mlp.to_native()
    assert [type(m) for m in native] == [nn.Linear, nn.GELU, nn.Dropout, nn.Linear, nn.GELU,
                                         nn.Dropout, nn.Linear]
    assert mlp.state_dict().keys() == native.state_dict().keys()
    err = compare(native, mlp, (torch.randn(5, 10, dtype=torch.float64),))
    assert err.max <= 1e-12 and err.grad_max <= 1e-12
    with pytest.raises(ValueError, match="activation must be one of"):
        MLPAsGNN(3, 4, 5, activation="tanh")


def test_checker_detects_a_wrong_weight() -> None:
    native, twin = _pair(8, 4, True, torch.float64)
    with torch.no_grad():
        twin.weight[0, 0] += 1e-3
    err = compare(native, twin, (torch.randn(3, 8, dtype=torch.float64),))
    assert err.max > 1e-6 and err.grad_max > 1e-6


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision(dtype: torch.dtype) -> None:
    native, twin = _pair(16, 8, True, dtype)
    x = torch.randn(4, 16).to(dtype)
    assert torch.allclose(native(x).float(), twin(x).float(), atol=2e-2, rtol=2e-2)
