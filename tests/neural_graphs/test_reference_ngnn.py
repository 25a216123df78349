"""NGGNN in its reference configuration computes the reference's function (issue 20).

The fixture ``tests/fixtures/reference/ngnn.pt`` was written by
``python -m benchmarks.reference.ngnn`` running mkofinas/neural-graphs'
``GNNForClassification`` (INR PNA config of scripts/mnist_cls_pna.sh) on 8 SIRENs: its
state_dict, the SIRENs' parameters and its logits in float32 and float64.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor
from torch_geometric.data import Batch

from neural_graphs.encoders import NGGNN
from neural_graphs.encoders.reference.ngnn import (
    REFERENCE_NGGNN_KWARGS,
    from_reference_state_dict,
    reference_degree_histogram,
)
from tests.neural_graphs.reference_fixtures import siren_graphs

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "reference" / "ngnn.pt"


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(FIXTURE, weights_only=True)


def logits(encoder: NGGNN, batch: Batch) -> Tensor:
    encoder.eval()
    with torch.no_grad():
        return encoder(batch)


def test_fixture_is_the_reference_config(fixture: dict) -> None:
    assert fixture["parameter_count"] == 92_010
    assert fixture["logits"].shape == (8, 10) and fixture["logits"].dtype == torch.float32
    assert "model.rev_edge_features=True" in fixture["config"]["overrides"]


def test_mapped_reference_matches_within_1e5_float32(fixture: dict) -> None:
    encoder = from_reference_state_dict(fixture["state_dict"])
    out = logits(encoder, siren_graphs(fixture["params"]))
    assert out.dtype == torch.float32
    assert (out - fixture["logits"]).abs().max().item() <= 1e-5
    assert sum(p.numel() for p in encoder.parameters()) == fixture["parameter_count"]


def test_mapped_reference_matches_in_float64(fixture: dict) -> None:
    encoder = from_reference_state_dict(fixture["state_dict"]).double()
    out = logits(encoder, siren_graphs(fixture["params"], torch.float64))
    assert (out - fixture["logits64"]).abs().max().item() <= 1e-12


def _swap_pre_halves(state: dict[str, Tensor]) -> None:
    w = state["gnn.convs.0.pre_nns.0.0.weight"]
    state["gnn.convs.0.pre_nns.0.0.weight"] = torch.cat([w[:, 32:], w[:, :32]], 1)


def _swap_input_positions(state: dict[str, Tensor]) -> None:
    state["construct_graph.pos_embed"] = state["construct_graph.pos_embed"][[1, 0, 2, 3, 4]]


def _shift_bias(state: dict[str, Tensor]) -> None:
    state["gnn.convs.2.post_nns.0.0.bias"] = state["gnn.convs.2.post_nns.0.0.bias"] + 0.05


@pytest.mark.parametrize("perturb", [_shift_bias, _swap_pre_halves, _swap_input_positions])
def test_perturbed_state_dict_does_not_match(fixture: dict, perturb) -> None:
    state = dict(fixture["state_dict"])
    perturb(state)
    out = logits(from_reference_state_dict(state), siren_graphs(fixture["params"]))
    assert (out - fixture["logits"]).abs().max().item() > 5e-5


@pytest.mark.parametrize("norm", ["node", "graph"])
def test_other_layer_norms_do_not_match(fixture: dict, norm: str) -> None:
    # The reference's LayerNorm normalizes over every node of the whole batch.
    out = logits(from_reference_state_dict(fixture["state_dict"], norm=norm),
                 siren_graphs(fixture["params"]))
    assert (out - fixture["logits"]).abs().max().item() > 5e-5


def test_default_configuration_is_not_the_reference(fixture: dict) -> None:
    ours = NGGNN(10)
    ours(siren_graphs(fixture["params"]))
    assert sum(p.numel() for p in ours.parameters()) == 93_226 != fixture["parameter_count"]
    reference = NGGNN(10, **REFERENCE_NGGNN_KWARGS)
    reference(siren_graphs(fixture["params"]))
    assert sum(p.numel() for p in reference.parameters()) == fixture["parameter_count"]
    with pytest.raises(RuntimeError):  # without the reversed edges: 1 weight column, not 3
        from_reference_state_dict(fixture["state_dict"], reverse_edges=False)


def test_reference_degree_histogram_gives_the_reference_scalers(fixture: dict) -> None:
    assert reference_degree_histogram((2, 32, 32, 1)).nonzero().flatten().tolist() == [0, 2, 32]
    encoder = NGGNN(10, **REFERENCE_NGGNN_KWARGS)
    for i, conv in enumerate(encoder.convs):
        for name in ("avg_deg_lin", "avg_deg_log"):
            theirs = fixture["state_dict"][f"gnn.convs.{i}.aggr_module.{name}"]
            assert torch.allclose(getattr(conv.aggr_module, name), theirs, rtol=1e-6)


def test_state_dict_of_another_model_raises_a_clear_error(fixture: dict) -> None:
    state = dict(fixture["state_dict"])
    del state["gnn.edge_update.1.lin_t.bias"]
    with pytest.raises(ValueError, match=r"expected key 'gnn\.edge_update\.1\.lin_t\.bias' "
                                         r"of shape \[32\], got missing"):
        from_reference_state_dict(state)
    state = dict(fixture["state_dict"])
    state["gnn.convs.3.lin.weight"] = state["gnn.convs.3.lin.weight"][:, :16]
    with pytest.raises(ValueError, match=r"expected key 'gnn\.convs\.3\.lin\.weight' of shape "
                                         r"\[32, 32\], got \[32, 16\]"):
        from_reference_state_dict(state)
    with pytest.raises(ValueError, match="not a state_dict of the reference "
                                         "GNNForClassification"):
        from_reference_state_dict(NGGNN(10, **REFERENCE_NGGNN_KWARGS).state_dict())


def test_checkpoint_prefixes_are_accepted(fixture: dict) -> None:
    state = {f"module.{k}": v for k, v in fixture["state_dict"].items()}
    out = logits(from_reference_state_dict(state), siren_graphs(fixture["params"]))
    assert (out - fixture["logits"]).abs().max().item() <= 1e-5
