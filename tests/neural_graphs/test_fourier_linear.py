"""fourier_linear: Linear(random Fourier features) in chunks, the features kept for the
backward pass within a memory budget and made again beyond it; the same function and
gradients as writing it out."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch_geometric.data import Data

import neural_graphs.encoders.embeddings as embeddings
from neural_graphs.encoders.embeddings import (
    ConstructorEmbedding,
    FourierFeatures,
    fourier_linear,
    gaussian_encoding,
    gaussian_projection,
)


@pytest.mark.parametrize("keep_bytes", [1 << 29, 0], ids=["kept", "made-again"])
@pytest.mark.parametrize("rows", [1, 7, 20])
@pytest.mark.parametrize("bias", [True, False])
def test_fourier_linear_equals_linear_of_features_in_float64(monkeypatch, rows: int,
                                                             bias: bool, keep_bytes: int
                                                             ) -> None:
    monkeypatch.setattr(embeddings, "FOURIER_ROWS", 3)  # several chunks, a short last one
    monkeypatch.setattr(embeddings, "FOURIER_KEEP_BYTES", keep_bytes)
    torch.manual_seed(0)
    rff = FourierFeatures(5, 2.0, in_features=2).double()
    linear = nn.Linear(10, 4, bias=bias).double()
    v = torch.randn(rows, 2, dtype=torch.float64)
    grad = torch.randn(rows, 4, dtype=torch.float64)
    ours = fourier_linear(rff.project, v, linear)
    ours.backward(grad)
    ours_grads = [p.grad.clone() for p in linear.parameters()]
    linear.zero_grad()
    written = linear(rff(v))
    written.backward(grad)
    torch.testing.assert_close(ours, written, rtol=1e-12, atol=1e-12)
    for mine, theirs in zip(ours_grads, (p.grad for p in linear.parameters())):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)
    assert ours.grad_fn is not None and "FourierLinear" in type(ours.grad_fn).__name__


@pytest.mark.parametrize("keep_bytes, projections", [(7 * 10 * 8, 3), (7 * 10 * 8 - 1, 6)],
                         ids=["within-budget", "over-budget"])
def test_fourier_linear_keeps_features_within_its_budget(monkeypatch, keep_bytes: int,
                                                         projections: int) -> None:
    # 7 rows of 10 float64 features: kept at exactly their size, made again a byte below
    monkeypatch.setattr(embeddings, "FOURIER_ROWS", 3)
    monkeypatch.setattr(embeddings, "FOURIER_KEEP_BYTES", keep_bytes)
    torch.manual_seed(0)
    rff, linear = FourierFeatures(5, 2.0, in_features=2).double(), nn.Linear(10, 4).double()
    calls = []

    def project(v: torch.Tensor) -> torch.Tensor:
        calls.append(v.shape[0])
        return rff.project(v)

    fourier_linear(project, torch.randn(7, 2, dtype=torch.float64), linear).sum().backward()
    assert calls == [3, 3, 1] * (projections // 3)


def test_fourier_linear_keeps_nothing_without_gradients(monkeypatch) -> None:
    seen = []
    chunks = embeddings._feature_chunks

    def spy(project, v, fresh=False):
        seen.append(fresh)
        return chunks(project, v, fresh)

    monkeypatch.setattr(embeddings, "_feature_chunks", spy)
    rff, linear = FourierFeatures(5, 2.0, in_features=2), nn.Linear(10, 4)
    v = torch.randn(9, 2)
    with torch.no_grad():
        quiet = fourier_linear(rff.project, v, linear)
    assert seen == [False] and quiet.grad_fn is None  # one reused buffer, nothing kept
    fourier_linear(rff.project, v, linear.requires_grad_(False))
    assert seen == [False, False]
    torch.testing.assert_close(quiet, linear(rff(v)), rtol=1e-5, atol=1e-5)
    fourier_linear(rff.project, v, linear.requires_grad_(True)).sum().backward()
    assert seen == [False, False, True]


def test_fourier_linear_passes_gradients_to_inputs_that_need_them() -> None:
    torch.manual_seed(0)
    b = torch.randn(6, 3, dtype=torch.float64)
    linear = nn.Linear(12, 2).double()
    v = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(
        lambda x: fourier_linear(lambda y: gaussian_projection(y, b), x, linear), (v,))
    written = linear(gaussian_encoding(v, b))
    torch.testing.assert_close(
        fourier_linear(lambda y: gaussian_projection(y, b), v, linear), written)


def test_fourier_linear_keeps_leading_dimensions_and_float32_agrees() -> None:
    torch.manual_seed(0)
    rff, linear = FourierFeatures(8, 3.0, in_features=1), nn.Linear(16, 5)
    v = torch.randn(4, 6, 1)
    out = fourier_linear(rff.project, v, linear)
    assert out.shape == (4, 6, 5)
    torch.testing.assert_close(out, linear(rff(v)), rtol=1e-5, atol=1e-5)


def test_lazy_fourier_features_draw_their_frequencies_in_linear() -> None:
    torch.manual_seed(0)
    rff, linear = FourierFeatures(4, 1.0), nn.Linear(8, 3)
    v = torch.randn(5, 2)
    out = rff.linear(v, linear)
    assert rff.frequencies.shape == (2, 4)
    torch.testing.assert_close(out, linear(rff(v)))


def test_constructor_edge_features_keep_the_reference_function(monkeypatch) -> None:
    monkeypatch.setattr(embeddings, "FOURIER_ROWS", 4)
    torch.manual_seed(0)
    embed = ConstructorEmbedding(6, rff_dim=5, reverse_edges=True).double()
    values = torch.randn(11, 3, dtype=torch.float64)
    expected = embed.edge_proj(gaussian_encoding(values, embed.edge_b))
    torch.testing.assert_close(embed.edge_features(values), expected, rtol=1e-12, atol=1e-12)


def _grads(module: nn.Module) -> list[torch.Tensor]:
    grads = [p.grad.clone() for p in module.parameters()]
    module.zero_grad()
    return grads


@pytest.mark.parametrize("bias", [(True, True), (True, False), (False, True), (False, False)])
def test_fourier_linear_folds_a_following_linear_in_float64(monkeypatch, bias) -> None:
    monkeypatch.setattr(embeddings, "FOURIER_ROWS", 3)
    torch.manual_seed(0)
    rff = FourierFeatures(5, 2.0, in_features=2).double()
    layers = nn.Sequential(nn.Linear(10, 4, bias=bias[0]), nn.Linear(4, 3, bias=bias[1]))
    layers.double()
    v = torch.randn(8, 2, dtype=torch.float64)
    grad = torch.randn(8, 3, dtype=torch.float64)
    folded = fourier_linear(rff.project, v, layers[0], then=layers[1])
    folded.backward(grad)
    folded_grads = _grads(layers)
    written = layers(rff(v))
    written.backward(grad)
    torch.testing.assert_close(folded, written, rtol=1e-12, atol=1e-12)
    for mine, theirs in zip(folded_grads, _grads(layers)):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)
    assert "FourierLinear" in type(folded.grad_fn).__name__


def test_graph_embedding_edges_fold_the_encoders_input_projection() -> None:
    """``edges(batch, then)`` = ``then(edges(batch))``: the projection folded into the
    Fourier features' weights and the edge-type table, values and every gradient."""
    torch.manual_seed(0)
    embed = embeddings.GraphEmbedding(6, 5, rff_dim=4).double()
    then = nn.Linear(5, 7).double()
    batch = Data(edge_attr=torch.randn(9, 3, dtype=torch.float64),
                 edge_type=torch.tensor([0, 1, 2, 0, 1, 2, 0, 0, 1]))
    grad = torch.randn(9, 7, dtype=torch.float64)
    folded = embed.edges(batch, then)
    folded.backward(grad)
    trained = nn.ModuleList([embed.edge_proj, embed.edge_type, then])
    folded_grads = _grads(trained)
    written = then(embed.edges(batch))
    written.backward(grad)
    torch.testing.assert_close(folded, written, rtol=1e-12, atol=1e-12)
    for mine, theirs in zip(folded_grads, _grads(trained)):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


def test_constructor_edges_and_no_edge_fold_the_encoders_input_projection() -> None:
    torch.manual_seed(0)
    embed = ConstructorEmbedding(6, rff_dim=5, reverse_edges=True).double()
    then = nn.Linear(6, 4).double()
    values = torch.randn(11, 3, dtype=torch.float64)
    torch.testing.assert_close(embed.edge_features(values, then),
                               then(embed.edge_features(values)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(embed.no_edge(values, then), then(embed.no_edge(values)),
                               rtol=1e-12, atol=1e-12)
