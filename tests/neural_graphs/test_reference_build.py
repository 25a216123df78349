"""``build_reference_encoder`` builds each encoder in its reference configuration (issue 20).

A freshly built encoder, given the parameters that :func:`from_reference_state_dict` maps
from the reference's ``state_dict`` (fixtures written by ``python -m benchmarks.reference
fixtures`` from the reference code), computes the reference's logits on the fixture's
SIRENs: so the training jobs' ``--encoder-config reference`` trains the published function.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch_geometric.data import Batch

from neural_graphs.encoders.reference import REFERENCE_ENCODER_NAMES, build_reference_encoder
from neural_graphs.encoders.reference import dng as reference_dng
from neural_graphs.encoders.reference import ngnn as reference_ngnn
from neural_graphs.encoders.reference import ngt as reference_ngt
from neural_graphs.encoders.reference.common import MNIST_LAYER_LAYOUT, MNIST_STATS
from neural_graphs.inr_data import SIREN_KEYS, siren_layer_stats
from tests.neural_graphs.reference_fixtures import siren_graphs

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "reference"
MAPPINGS = {"ngnn": reference_ngnn.from_reference_state_dict,
            "ngt": reference_ngt.from_reference_state_dict,
            "dng": reference_dng.from_reference_state_dict}


def logits(encoder: torch.nn.Module, graphs: Batch) -> torch.Tensor:
    encoder.eval()
    with torch.no_grad():
        return encoder(graphs)


@pytest.mark.parametrize("name", REFERENCE_ENCODER_NAMES)
def test_built_encoder_with_mapped_parameters_computes_the_reference(name: str) -> None:
    fixture = torch.load(FIXTURES / f"{name}.pt", map_location="cpu", weights_only=True)
    graphs = siren_graphs(fixture["params"])
    built = build_reference_encoder(name, 10, MNIST_LAYER_LAYOUT, MNIST_STATS)
    logits(built, graphs)  # lazy parts, as the jobs' materialize does
    built.load_state_dict(MAPPINGS[name](fixture["state_dict"]).state_dict())
    assert sum(p.numel() for p in built.parameters()) == fixture["parameter_count"]
    out = logits(built, graphs)
    assert (out - fixture["logits"]).abs().max().item() <= 1e-5
    assert fixture["logits"].abs().max().item() > 1e-2


@pytest.mark.parametrize("name", ("ngnn", "ngt"))
def test_layer_stats_standardise_the_inputs(name: str) -> None:
    """NG-GNN and NG-T read the weights through the statistics: other statistics, another
    function (so the jobs' statistics of their own training INRs are used)."""
    fixture = torch.load(FIXTURES / f"{name}.pt", map_location="cpu", weights_only=True)
    graphs = siren_graphs(fixture["params"])
    state = MAPPINGS[name](fixture["state_dict"]).state_dict()
    doubled = {key: [2 * v for v in values] if key.endswith("std") else values
               for key, values in MNIST_STATS.items()}
    built = build_reference_encoder(name, 10, MNIST_LAYER_LAYOUT, doubled)
    logits(built, graphs)
    built.load_state_dict(state)
    assert (logits(built, graphs) - fixture["logits"]).abs().max().item() > 1e-3


def test_unknown_encoder_and_wrong_stats_are_refused() -> None:
    with pytest.raises(ValueError, match="no reference configuration for the encoder 'statnn'"):
        build_reference_encoder("statnn", 10, MNIST_LAYER_LAYOUT, MNIST_STATS)
    short = {key: values[:2] for key, values in MNIST_STATS.items()}
    with pytest.raises(ValueError, match=r"one number per layer of weights \(3 for"):
        build_reference_encoder("ngnn", 10, MNIST_LAYER_LAYOUT, short)


def test_siren_layer_stats_are_each_layers_mean_and_std() -> None:
    generator = torch.Generator().manual_seed(0)
    shapes = {"net.0.weight": (5, 4, 2), "net.0.bias": (5, 4), "net.2.weight": (5, 4, 4),
              "net.2.bias": (5, 4), "net.4.weight": (5, 1, 4), "net.4.bias": (5, 1)}
    params = {key: torch.randn(shape, generator=generator) * (i + 1) + i
              for i, (key, shape) in enumerate(shapes.items())}
    stats = siren_layer_stats(params)
    for kind, keys in (("weights", SIREN_KEYS[::2]), ("biases", SIREN_KEYS[1::2])):
        values = [params[key].flatten().numpy().astype("float64") for key in keys]
        assert stats[f"{kind}_mean"] == pytest.approx([v.mean() for v in values], rel=1e-12)
        assert stats[f"{kind}_std"] == pytest.approx([v.std(ddof=1) for v in values],
                                                     rel=1e-12)
    with pytest.raises(ValueError, match=r"SIREN parameters lack \['net.4.bias'\]"):
        siren_layer_stats({k: v for k, v in params.items() if k != "net.4.bias"})
