"""NGTransformer in its reference configuration computes the reference NG-T
(mkofinas/neural-graphs ``RelationalTransformer``, the configuration of its MNIST INR
notebook): the reference's state_dict mapped by ``from_reference_state_dict`` gives its
logits on the same SIRENs within 1e-5 in float32 (and to rounding in float64).

The fixture (reference parameters, SIRENs, logits) is written by
``python -m benchmarks.reference.ngt --reference-dir <neural-graphs checkout> --out
tests/fixtures/reference/ngt.pt``; the reference code is not needed here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch_geometric.data import Batch

from neural_graphs.encoders import NGTransformer
from neural_graphs.encoders.reference.ngt import REFERENCE_KWARGS, from_reference_state_dict
from tests.neural_graphs.reference_fixtures import siren_graphs

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "reference" / "ngt.pt"
TOLERANCE = 1e-5
NOTEBOOK_PARAMETERS = 376_586  # the notebook's count_parameters(model)


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(FIXTURE, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def graphs(fixture: dict) -> Batch:
    return siren_graphs(fixture["params"])


def logits(encoder: NGTransformer, graphs: Batch) -> torch.Tensor:
    encoder.eval()
    with torch.no_grad():
        return encoder(graphs)


def gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def test_mapped_state_dict_computes_the_reference(fixture: dict, graphs: Batch) -> None:
    encoder = from_reference_state_dict(fixture["state_dict"])
    out = logits(encoder, graphs)
    assert out.dtype == torch.float32
    assert out.shape == fixture["logits"].shape == (graphs.num_graphs, 10)
    assert gap(out, fixture["logits"]) < TOLERANCE
    assert fixture["logits"].std(0).min() > 1e-2  # the SIRENs give different logits
    count = sum(p.numel() for p in encoder.parameters())
    assert count == fixture["parameter_count"] == NOTEBOOK_PARAMETERS


def test_float64_agrees_to_rounding(fixture: dict) -> None:
    # the same function, not just a close one: float64 leaves only rounding
    state = {k: v.double() for k, v in fixture["state_dict"].items()}
    params = {k: v.double() for k, v in fixture["params"].items()}
    out = logits(from_reference_state_dict(state), siren_graphs(params))
    assert out.dtype == torch.float64
    assert gap(out, fixture["logits64"]) < 1e-12


def test_reference_kwargs_build_the_mapped_configuration(fixture: dict,
                                                         graphs: Batch) -> None:
    mapped = from_reference_state_dict(fixture["state_dict"])
    built = NGTransformer(10, **REFERENCE_KWARGS)
    built.load_state_dict(mapped.state_dict())
    assert sum(p.numel() for p in built.parameters()) == NOTEBOOK_PARAMETERS
    assert gap(logits(built, graphs), fixture["logits"]) < TOLERANCE


def test_perturbed_state_dict_does_not_match(fixture: dict, graphs: Batch) -> None:
    for key in ("construct_graph.pos_embed", "layers.1.self_attn.qkv_edge.weight",
                "layers.0.edge_updates.edge_mlp0.lin0_s.bias"):
        state = dict(fixture["state_dict"])
        generator = torch.Generator().manual_seed(1)
        state[key] = state[key] + 0.05 * torch.randn(state[key].shape, generator=generator)
        assert gap(logits(from_reference_state_dict(state), graphs),
                   fixture["logits"]) > 100 * TOLERANCE, key


def test_head_order_matters(fixture: dict, graphs: Batch) -> None:
    # swapping two heads of the node projection: the q/k/v row permutation is checked
    state = dict(fixture["state_dict"])
    key = "layers.0.self_attn.qkv_node.weight"
    rows = state[key].view(8, -1, 64)
    state[key] = rows[[1, 0, *range(2, 8)]].reshape(-1, 64)
    assert gap(logits(from_reference_state_dict(state), graphs),
               fixture["logits"]) > 100 * TOLERANCE


@pytest.mark.parametrize("change", [{"attn_scale": "head"}, {"input_stats": None}],
                         ids=["head-scale", "no-stats"])
def test_other_configurations_do_not_match(fixture: dict, graphs: Batch,
                                           change: dict) -> None:
    encoder = from_reference_state_dict(fixture["state_dict"], **change)
    assert gap(logits(encoder, graphs), fixture["logits"]) > 100 * TOLERANCE


def test_default_configuration_differs(fixture: dict, graphs: Batch) -> None:
    # the default embedding has other parameters: the reference's do not load into it
    default = NGTransformer(10)
    default(graphs)
    assert sum(p.numel() for p in default.parameters()) != NOTEBOOK_PARAMETERS
    with pytest.raises(RuntimeError):
        default.load_state_dict(from_reference_state_dict(fixture["state_dict"]).state_dict())


def test_not_a_reference_state_dict_raises(fixture: dict) -> None:
    state = dict(fixture["state_dict"])
    missing = {k: v for k, v in state.items() if k != "layers.2.lin0.bias"}
    with pytest.raises(ValueError, match=r"expected key 'layers\.2\.lin0\.bias' of shape "
                                         r"\[64\], got missing"):
        from_reference_state_dict(missing)
    with pytest.raises(ValueError, match=r"unexpected key 'cls_token' \[64\]"):
        from_reference_state_dict({**state, "cls_token": torch.zeros(64)})
    wrong = {**state, "layers.0.self_attn.qkv_edge.weight": torch.zeros(384, 32)}
    with pytest.raises(ValueError, match=r"expected key 'layers\.0\.self_attn\.qkv_edge\."
                                         r"weight' of shape \[512, 32\], got \[384, 32\]"):
        from_reference_state_dict(wrong)
    with pytest.raises(ValueError, match=r"'construct_graph\.pos_embed' of shape \[6, 64\], "
                                         r"got \[5, 64\]"):
        from_reference_state_dict(state, layer_layout=(3, 32, 32, 1))
