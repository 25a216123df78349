"""DNGEncoder in its reference configuration computes the official DNG classifier
(dddiowww/DNG ``DNG_Classifier``, MNIST INR classification): the reference's state_dict
mapped by ``from_reference_state_dict`` gives its outputs on the same SIRENs within 1e-5.

The fixture (reference parameters, SIRENs, outputs) is written by
``python -m benchmarks.reference.dng --reference-dir <DNG checkout> --out
tests/fixtures/reference/dng.pt``; the reference code is not needed here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch

from neural_graphs import SIREN, to_neural_graph
from neural_graphs.encoders import DNGEncoder
from neural_graphs.encoders.reference.dng import (
    REFERENCE_KWARGS,
    from_reference_state_dict,
)
from tests.neural_graphs.reference_fixtures import siren_graphs

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "reference" / "dng.pt"
TOLERANCE = 1e-5


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        return self.c(torch.relu(self.b(h)) + h)


NETWORKS = {
    "mlp": lambda: nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4), nn.Tanh(),
                                 nn.Linear(4, 2)),
    "cnn": lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 3),
                                 nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(3, 2)),
    "siren": lambda: SIREN(hidden_features=6),
    "residual": Residual,
}


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(FIXTURE, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def graphs(fixture: dict) -> Batch:
    return siren_graphs(fixture["params"])


def outputs(encoder: DNGEncoder, graphs: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    encoder.eval()
    with torch.no_grad():
        return encoder.features(graphs), encoder(graphs)


def gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def test_mapped_state_dict_computes_the_reference(fixture: dict, graphs: Batch) -> None:
    encoder = from_reference_state_dict(fixture["state_dict"])
    features, logits = outputs(encoder, graphs)
    assert features.dtype == torch.float32
    assert features.shape == fixture["features"].shape == (graphs.num_graphs, 128)
    assert logits.shape == fixture["logits"].shape == (graphs.num_graphs, 10)
    assert gap(features, fixture["features"]) < TOLERANCE
    assert gap(logits, fixture["logits"]) < TOLERANCE
    assert fixture["logits"].abs().max() > 1e-2  # not a trivially small output
    assert sum(p.numel() for p in encoder.parameters()) == fixture["parameter_count"]


def test_float64_agrees_to_rounding(fixture: dict) -> None:
    """The reference run in float64 on the same parameters: the same function, so the
    outputs agree to float64 rounding."""
    state = {key: value.double() for key, value in fixture["state_dict"].items()}
    encoder = from_reference_state_dict(state)
    params = {key: value.double() for key, value in fixture["params"].items()}
    features, logits = outputs(encoder, siren_graphs(params))
    assert features.dtype == torch.float64
    assert gap(features, fixture["features64"]) < 1e-12
    assert gap(logits, fixture["logits64"]) < 1e-12


def test_sparse_path_computes_the_reference_too(fixture: dict, graphs: Batch) -> None:
    """The general path (gathered and scattered edges, any architecture) gives what the
    dense path for batches of one layout gives."""
    encoder = from_reference_state_dict(fixture["state_dict"])
    assert encoder.dense and encoder._dense_layout(graphs) == [2, 32, 32, 1]
    encoder.dense = False
    features, logits = outputs(encoder, graphs)
    assert gap(features, fixture["features"]) < TOLERANCE
    assert gap(logits, fixture["logits"]) < TOLERANCE


@pytest.mark.parametrize("network", ["mlp", "cnn", "siren"])
def test_dense_path_equals_sparse_path_in_every_configuration(network: str) -> None:
    torch.manual_seed(1)
    nets = [NETWORKS[network]() for _ in range(3)]
    batch = Batch.from_data_list([to_neural_graph(net) for net in nets])
    assert DNGEncoder._dense_layout(batch) is not None
    for kwargs in ({}, {"num_layers": len(batch.layer_layout[0]) - 1, "readout": "mean",
                        "node_features": "bias", "message_mlp": False, "edge_types": False,
                        "source_bias": True}):
        torch.manual_seed(0)
        encoder = DNGEncoder(3, hidden=8, rff_dim=8, **kwargs)
        encoder.dense = False
        sparse = encoder(batch)
        encoder.dense = True
        dense = encoder(batch)
        assert gap(sparse, dense) < 1e-5, kwargs
        sparse.sum().backward()
        grads = {n: p.grad.clone() for n, p in encoder.named_parameters()}
        encoder.zero_grad()
        dense.sum().backward()
        for name, param in encoder.named_parameters():
            assert torch.allclose(param.grad, grads[name], atol=1e-5), name


@pytest.mark.parametrize("network", ["mlp", "cnn", "siren"])
def test_dense_path_in_chunks_of_graphs_equals_the_general_path(network: str) -> None:
    """Chunks keep each step's largest tensor under glibc's mmap threshold; a tiny budget
    forces one graph per chunk: the same outputs and gradients (float64)."""
    torch.manual_seed(1)
    batch = Batch.from_data_list([to_neural_graph(NETWORKS[network]().double())
                                  for _ in range(5)])
    torch.manual_seed(0)
    encoder = DNGEncoder(3, hidden=8, rff_dim=8, num_probes=2).double()
    results = {}
    for name, dense, budget in (("general", False, 16 << 20), ("whole", True, 16 << 20),
                                ("chunks", True, 1)):
        encoder.dense, encoder.CHUNK_BYTES = dense, budget
        encoder.zero_grad()
        out = encoder(batch)
        out.square().sum().backward()
        results[name] = (out.detach(), {n: q.grad.clone() for n, q in
                                        encoder.named_parameters() if q.grad is not None})
    for name in ("whole", "chunks"):
        assert gap(results[name][0], results["general"][0]) < 1e-10, name
        assert results[name][1].keys() == results["general"][1].keys()
        for key, grad in results["general"][1].items():
            assert gap(results[name][1][key], grad) < 1e-10, (name, key)


def test_dense_path_needs_one_layout_of_consecutive_layers() -> None:
    torch.manual_seed(1)
    resnet = [to_neural_graph(NETWORKS["residual"]()) for _ in range(2)]
    assert DNGEncoder._dense_layout(Batch.from_data_list(resnet)) is None  # residual edges
    depth = len(resnet[0].layer_layout) - 1
    per_layer = DNGEncoder(3, hidden=8, rff_dim=8, num_layers=depth, node_features="bias")
    assert per_layer(resnet).shape == (2, 3)  # read on the general path
    mixed = [to_neural_graph(SIREN(hidden_features=4)), to_neural_graph(SIREN())]
    assert DNGEncoder._dense_layout(Batch.from_data_list(mixed)) is None
    assert DNGEncoder._dense_layout(Batch.from_data_list(mixed[1:])) == [2, 32, 32, 1]


def test_reference_kwargs_build_the_mapped_configuration(fixture: dict) -> None:
    mapped = from_reference_state_dict(fixture["state_dict"])
    built = DNGEncoder(10, **REFERENCE_KWARGS)
    built.load_state_dict(mapped.state_dict())
    assert sum(p.numel() for p in built.parameters()) == fixture["parameter_count"]


def test_perturbed_state_dict_does_not_match(fixture: dict, graphs: Batch) -> None:
    for key in ("encoder.edge_lin_0_1.weight", "encoder.input_init_node",
                "encoder.rnn_0.hidden_map.bias"):
        state = dict(fixture["state_dict"])
        generator = torch.Generator().manual_seed(1)
        state[key] = state[key] + 0.05 * torch.randn(state[key].shape, generator=generator)
        features, _ = outputs(from_reference_state_dict(state), graphs)
        assert gap(features, fixture["features"]) > 100 * TOLERANCE, key


def test_features_order_matters(fixture: dict, graphs: Batch) -> None:
    """The reference's Fourier features are [sin, cos], ours [cos, sin]: mapped without
    swapping the columns, the encoder is off."""
    encoder = from_reference_state_dict(fixture["state_dict"])
    with torch.no_grad():
        for proj in list(encoder.edge_proj) + list(encoder.node_proj):
            proj.weight.copy_(torch.roll(proj.weight, proj.weight.shape[1] // 2, dims=1))
    features, _ = outputs(encoder, graphs)
    assert gap(features, fixture["features"]) > 100 * TOLERANCE


def test_shared_parameters_do_not_match(fixture: dict, graphs: Batch) -> None:
    """Layer 0's parameters used for every layer (our default sharing) is not the
    reference."""
    encoder = from_reference_state_dict(fixture["state_dict"])
    with torch.no_grad():
        for modules in (encoder.edge_proj, encoder.source_proj, encoder.node_proj,
                        encoder.norm):
            for module in modules[1:]:
                module.load_state_dict(modules[0].state_dict())
    features, _ = outputs(encoder, graphs)
    assert gap(features, fixture["features"]) > 100 * TOLERANCE


@pytest.mark.parametrize("change, message", [
    (lambda sd: sd.pop("encoder.norm_0_1.bias"),
     r"expected key 'encoder\.norm_0_1\.bias' of shape \[128\], got missing"),
    (lambda sd: sd.update({"encoder.node_lin_0_2.weight": torch.zeros(128, 64)}),
     r"expected key 'encoder\.node_lin_0_2\.weight' of shape \[128, 128\], got \[128, 64\]"),
    (lambda sd: sd.update({"encoder.rnn_1.input_map.weight": torch.zeros(384, 128)}),
     r"unexpected key 'encoder\.rnn_1\.input_map\.weight' \[384, 128\]: rnn_layer > 1"),
    (lambda sd: sd.update({"encoder.pos_emb": torch.zeros(3, 256)}),
     r"'encoder\.pos_emb' \[3, 256\]: positional_embedding=True"),
    (lambda sd: sd.update({"encoder.extra": torch.zeros(2)}),
     r"unexpected key 'encoder\.extra' \[2\]"),
    (lambda sd: [sd.pop(k) for k in list(sd) if k.startswith("classifier")],
     r"expected key 'classifier\.0\.weight' holding a 2-d tensor, got missing \(the "
     r"encoder without its classifier"),
    (lambda sd: [sd.update({k[len("encoder."):]: sd.pop(k)}) for k in list(sd)
                 if k.startswith("encoder.")],
     "got a bare DynamicNeuralGNN state_dict"),
])
def test_a_state_dict_not_of_the_reference_raises_a_clear_error(fixture: dict, change,
                                                                message: str) -> None:
    state = dict(fixture["state_dict"])
    change(state)
    with pytest.raises(ValueError, match=message):
        from_reference_state_dict(state)


def test_per_layer_encoder_reads_only_its_depth(fixture: dict) -> None:
    encoder = from_reference_state_dict(fixture["state_dict"])
    with pytest.raises(ValueError, match="exactly 3 layers, the batch holds networks of "
                                         r"\[4\] layers"):
        encoder(to_neural_graph(SIREN(hidden_layers=3)))


def test_default_configuration_is_not_the_reference() -> None:
    """Our default reads any architecture: shared parameters, graph features, a message
    MLP and edge types, none of which the reference has."""
    default = DNGEncoder(10, hidden=128)
    names = {name.split(".")[0] for name in default.state_dict()}
    assert {"embed", "edge_type", "message_mlp"} <= names
    assert not isinstance(default.edge_proj, torch.nn.ModuleList)
