"""INR2JLS and INR-INR parts (neural_graphs.jls): the six views against hand-computed
flips and rotations, the latent generator against the paper's concatenation, shapes, the
official parameter counts, the frozen stage, and the symmetry of latents under
hidden-neuron permutations."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch

from neural_graphs.encoders import DNGEncoder
from neural_graphs.encoders.build import build_encoder
from neural_graphs.encoders.reference.dng import reference_kwargs
from neural_graphs.inr import SIREN, render, stack_siren_params
from neural_graphs.inr_data import INRGraphDataset
from neural_graphs.jls import (
    INR2INR,
    VIEW_NAMES,
    ConvDecoder,
    JLSAutoencoder,
    JLSClassifier,
    LatentGenerator,
    LatentMLP,
    SirenDecoder,
    SixViews,
    ViewClassifier,
    channels_first,
    graph_features,
    reconstruction_task,
)
from neural_graphs.jls.inr2inr import batch_layout, graph_parameters, siren_parameters
from neural_graphs.permute import hidden_permutation

#: Parameter counts of the official models at the official configuration (dddiowww/DNG
#: dng_models: Autoencoder(graph_spec of 2-32-32-1, 128, 3, 'gru', 1, 512, 128, 49,
#: ds='mnist') and Autoencoder_inr2inr(..., 512, 256, 1, 1120, 65)), counted with the
#: official code; and of classify_latent.py's ConvLatentClassifier(mnist, 128) and
#: MLPLatentClassifier('inr', 256, 256, mnist), counted by hand from their layers.
OFFICIAL_JLS = 5_017_473
OFFICIAL_INR2INR = 5_866_401
OFFICIAL_CONV_HEAD = 496_138
OFFICIAL_MLP_HEAD = 134_154


def _sirens(count: int, hidden: int = 32, seed: int = 1,
            dtype: torch.dtype = torch.float32) -> tuple[Batch, dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    params = stack_siren_params([SIREN(hidden_features=hidden) for _ in range(count)])
    for bias in ("net.0.bias", "net.2.bias", "net.4.bias"):  # not the init's near-zeros
        params[bias] = 0.5 * torch.randn(params[bias].shape)
    data = INRGraphDataset(params, torch.arange(count) % 10,
                           targets=torch.rand(count, 28, 28))
    batch = Batch.from_data_list([data[i] for i in range(count)])
    batch.x, batch.edge_attr = batch.x.to(dtype), batch.edge_attr.to(dtype)
    return batch, data.params


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _feature_encoder(name: str) -> nn.Module:
    encoder = build_encoder(name, 1, hidden=8, layers=2, probes=4)
    encoder.head = nn.Identity()
    return encoder


def test_six_views_are_the_hand_computed_flips_and_rotations() -> None:
    images = torch.rand(2, 3, 5, 5)
    views = SixViews()(images)
    assert views.shape == (2, 6, 3, 5, 5) and len(VIEW_NAMES) == 6
    n = 5
    for i in range(n):
        for j in range(n):
            expected = [images[..., i, j], images[..., i, n - 1 - j], images[..., n - 1 - i, j],
                        images[..., j, n - 1 - i], images[..., n - 1 - j, i],
                        images[..., n - 1 - i, n - 1 - j]]
            for v, value in enumerate(expected):
                assert torch.equal(views[:, v, :, i, j], value), (VIEW_NAMES[v], i, j)
    # +90 is counter-clockwise: the top-right corner goes to the top-left.
    corner = torch.zeros(1, 4, 4)
    corner[0, 0, 3] = 1
    assert SixViews()(corner)[0, 3, 0, 0, 0] == 1
    assert SixViews()(torch.rand(4, 28, 28)).shape == (4, 6, 1, 28, 28)
    with pytest.raises(ValueError, match="square"):
        SixViews()(torch.rand(2, 1, 4, 5))


def test_latent_generator_is_the_mlp_on_token_and_feature_concatenated() -> None:
    gen = LatentGenerator(10, 8, latent_size=49, views=6, hidden=32)
    features = torch.randn(3, 10)
    latent = gen(features)
    assert latent.shape == (3, 6, 8, 7, 7)
    tokens = gen.tokens.unsqueeze(0).expand(3, -1, -1)  # [B, 6 * 49, 10], view-major
    joined = torch.cat([tokens, features.unsqueeze(1).expand(-1, 294, -1)], -1)
    paper = gen.out(torch.relu(gen.fuse(joined)))  # 'b (v h w) c'
    torch.testing.assert_close(latent, paper.view(3, 6, 7, 7, 8).permute(0, 1, 4, 2, 3))
    with pytest.raises(ValueError, match="square"):
        LatentGenerator(10, 8, latent_size=50)


def test_decoder_and_view_classifier_shapes_and_the_official_pooling() -> None:
    latent = torch.randn(2, 6, 16, 7, 7)
    assert ConvDecoder(16, 1, 8)(latent).shape == (2, 6, 1, 28, 28)
    head = ViewClassifier(16, 10, 12).eval()
    logits = head(latent)
    assert logits.shape == (2, 6, 10)
    # On 7x7 maps our poolings are the official MaxPool2d(2) twice.
    official = nn.Sequential(*head.conv[:3], nn.MaxPool2d(2), head.conv[4], *head.conv[5:8],
                             nn.MaxPool2d(2))
    flat = latent.reshape(12, 16, 7, 7)
    torch.testing.assert_close(logits.reshape(12, 10), head.mlp(official(flat).flatten(1)))
    assert head(torch.randn(2, 6, 16, 2, 2)).shape == (2, 6, 10)  # small maps pool too
    assert LatentMLP(16 * 49 * 6, 10, 8)(latent).shape == (2, 1, 10)


def test_parameter_counts_equal_the_official_models_at_their_configuration() -> None:
    graphs, _ = _sirens(2)
    encoder = DNGEncoder(1, **reference_kwargs(num_layers=3, hidden=512))
    encoder.head = nn.Identity()
    jls = JLSAutoencoder(encoder, LatentGenerator(512, 128, 49, 6, 1024), ConvDecoder(128, 1, 256))
    with torch.no_grad():
        assert jls.eval()(graphs).shape == (2, 6, 1, 28, 28)
    assert _count(jls) == OFFICIAL_JLS
    assert _count(ViewClassifier(128, 10, 256)) == OFFICIAL_CONV_HEAD
    inr = INR2INR(encoder, LatentGenerator(512, 256, 1, 1, 1024), SirenDecoder(256, 1120, 65, 512),
                  [2, 32, 32, 1])
    assert _count(inr) == OFFICIAL_INR2INR
    assert _count(LatentMLP(256, 10, 256)) == OFFICIAL_MLP_HEAD


def test_colour_targets_are_drawn_channels_first_in_six_views() -> None:
    """Colour targets arrive as rendered, ``[B, H, W, 3]``; the reconstruction loss
    compares each view of each channel, so it equals the hand-computed MSE against the
    views of the permuted image; the mean-image baseline is per pixel and channel."""
    torch.manual_seed(3)
    target = torch.rand(2, 8, 8, 3, dtype=torch.float64)
    first = channels_first(target)
    assert first.shape == (2, 3, 8, 8) and torch.equal(first[1, 2], target[1, ..., 2])
    assert channels_first(target[..., 0]).shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"\[B, H, W\] or \[B, H, W, C\]"):
        channels_first(target[0, 0])
    decoded = torch.rand(2, 6, 3, 8, 8, dtype=torch.float64)
    views = [first, first.flip(-1), first.flip(-2), first.rot90(1, (-2, -1)),
             first.rot90(-1, (-2, -1)), first.rot90(2, (-2, -1))]
    expected = torch.stack([((decoded[:, v] - (2 * views[v] - 1)) ** 2).flatten(1).mean(1)
                            for v in range(6)], 1).mean(1)
    task = reconstruction_task(target.mean(0))
    batch = Batch(target=target)
    torch.testing.assert_close(task.loss(decoded, batch), expected, rtol=0, atol=1e-12)
    baseline = task.collect(decoded, batch)["baseline"]
    torch.testing.assert_close(baseline, ((target - target.mean(0)) * 2).pow(2).flatten(1)
                               .mean(1), rtol=0, atol=1e-12)
    decoder = ConvDecoder(4, 3, 8)
    assert decoder(torch.zeros(2, 6, 4, 8, 8)).shape == (2, 6, 3, 32, 32)


def test_the_classifier_stage_trains_its_head_only() -> None:
    graphs, _ = _sirens(4)
    auto = JLSAutoencoder(_feature_encoder("dng"), LatentGenerator(8, 4, 49, 6, 16),
                          ConvDecoder(4, 1, 8))
    with torch.no_grad():
        auto(graphs)
    before = {k: v.clone() for k, v in auto.state_dict().items()}
    model = JLSClassifier(auto.encoder, auto.latent, ViewClassifier(4, 10, 8)).train()
    assert not model.encoder.training and not model.latent.training and model.head.training
    frozen = [p for m in (model.encoder, model.latent) for p in m.parameters()]
    assert frozen and not any(p.requires_grad for p in frozen)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        model(graphs).sum().backward()
        optimizer.step()
    assert all(p.grad is None for p in frozen)
    after = auto.state_dict()
    for key, value in before.items():
        if not key.startswith("decoder."):
            assert torch.equal(after[key], value), key


def _permuted(graphs: Batch) -> tuple[Batch, torch.Tensor]:
    """The batch with the hidden neurons of each network relabelled, and where each node
    went (``new_id[old_id]`` in batch numbering)."""
    moved, new_ids = [], []
    for i, graph in enumerate(graphs.to_data_list()):
        new_id = hidden_permutation(graph, torch.Generator().manual_seed(i))
        copy = graph.clone()
        copy.x = torch.empty_like(graph.x).index_copy_(0, new_id, graph.x)
        copy.edge_index = new_id[graph.edge_index]
        moved.append(copy)
        new_ids.append(new_id + i * graph.num_nodes)
    ids = torch.cat(new_ids)
    assert not torch.equal(ids, torch.arange(len(ids)))  # something moved
    return Batch.from_data_list(moved), ids


@pytest.mark.parametrize("name", ["dng", "ngnn", "ngt"])
def test_latents_are_invariant_to_hidden_neuron_permutations(name: str) -> None:
    graphs, _ = _sirens(2, hidden=6, dtype=torch.float64)
    torch.manual_seed(2)
    encoder = _feature_encoder(name).double().eval()
    with torch.no_grad():
        width = graph_features(encoder, graphs).shape[1]  # sizes read from the first batch
    auto = JLSAutoencoder(encoder, LatentGenerator(width, 4, 4, 6, 16),
                          ConvDecoder(4, 1, 8)).double().eval()
    permuted, _ = _permuted(graphs)
    with torch.no_grad():
        latent = auto.encode(graphs)
        torch.testing.assert_close(auto.encode(permuted), latent, rtol=0, atol=1e-9)
        assert not torch.allclose(latent[0], latent[1])  # two INRs, two latents


def test_inr2inr_decodes_a_siren_of_the_input_architecture() -> None:
    graphs, params = _sirens(3)
    weights, biases = graph_parameters(graphs)
    assert batch_layout(graphs) == [2, 32, 32, 1]
    assert weights.shape == (3, 2 * 32 + 32 * 32 + 32) and biases.shape == (3, 65)
    own = siren_parameters(weights, biases, [2, 32, 32, 1])
    for key, value in params.items():
        assert torch.equal(own[key], value), key
    decoder = SirenDecoder(16, weights.shape[1], biases.shape[1], 32)
    decoder.set_statistics(weights, biases)
    torch.testing.assert_close(decoder.weight_mean, weights.mean(0))
    model = INR2INR(_feature_encoder("dng"), LatentGenerator(8, 16, 1, 1, 32), decoder,
                    [2, 32, 32, 1])
    out = model(graphs)
    assert out.image.shape == (3, 28, 28) and out.weights.shape == weights.shape
    torch.testing.assert_close(out.image, render(siren_parameters(out.weights, out.biases,
                                                                  [2, 32, 32, 1])))
    with pytest.raises(ValueError, match="statistics"):
        decoder.set_statistics(weights[:, :5], biases)
