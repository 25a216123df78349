"""Neural graphs of SimpleViT (lucidrains' vit_pytorch, on torch.nn modules): a fixed
sin-cos position embedding held as a buffer, and the mean over the tokens as pooling.

The graph must run the network exactly (float64 within 1e-10, float32 within 1e-5), read
the buffer's values, keep the ViT's round trip and hidden-permutation symmetry, reject the
reductions of token-major states it cannot hold, and feed the graph encoders.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torch_geometric.data import Batch

from neural_graphs import permute_hidden, run_neural_graph, to_neural_graph
from neural_graphs.encoders import NGGNN, DNGEncoder, NGTransformer
from tests.neural_graphs.test_graph import check_all, max_error

TOL64, TOL32 = 1e-10, 1e-5


def sincos_2d(h: int, w: int, dim: int, temperature: float = 10000.0) -> Tensor:
    """vit_pytorch's ``posemb_sincos_2d``: ``(h * w, dim)``."""
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    omega = torch.arange(dim // 4) / (dim // 4 - 1)
    omega = 1.0 / (temperature ** omega)
    y = y.flatten()[:, None] * omega[None, :]
    x = x.flatten()[:, None] * omega[None, :]
    return torch.cat((x.sin(), x.cos(), y.sin(), y.cos()), dim=1)


# How the tokens are pooled: every form of the mean over the tokens that is supported.
POOLS: dict[str, Callable[[Tensor], Tensor]] = {
    "x.mean(1)": lambda h: h.mean(1),
    "x.mean(dim=1)": lambda h: h.mean(dim=1),
    "x.mean(-2)": lambda h: h.mean(-2),
    "torch.mean(x, 1)": lambda h: torch.mean(h, 1),
    "torch.mean(x, dim=(1,))": lambda h: torch.mean(h, dim=(1,)),
    "x.mean(1, keepdim=True)": lambda h: h.mean(1, keepdim=True),  # one token left
}


class SimpleViT(nn.Module):
    def __init__(self, image_size: int = 28, patch_size: int = 4, in_channels: int = 1,
                 num_classes: int = 10, dim: int = 32, depth: int = 2, heads: int = 4,
                 mlp_dim: int = 64, pool: str = "x.mean(1)") -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        g = image_size // patch_size
        self.register_buffer("pos_embed", sincos_2d(g, g, dim)[None])
        layer = nn.TransformerEncoderLayer(dim, heads, mlp_dim, 0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(dim),
                                             enable_nested_tensor=False)
        self.head = nn.Linear(dim, num_classes)
        self.pool = pool

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        return self.head(POOLS[self.pool](self.encoder(tokens)))


SMALL = {"image_size": 8, "patch_size": 4, "dim": 8, "heads": 2, "mlp_dim": 16,
         "num_classes": 3}


def simple_vit(dtype: torch.dtype = torch.float64, seed: int = 0, **kwargs: object
               ) -> nn.Module:
    """A SimpleViT with random weights, LayerNorms and position buffer (none trivial)."""
    torch.manual_seed(seed)
    model = SimpleViT(**kwargs).to(dtype).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.5)
        noise = torch.randn(model.pos_embed.shape, generator=generator)
        model.pos_embed.add_(0.3 * noise.to(dtype))
    return model


def inputs(model: SimpleViT, batch: int = 3, dtype: torch.dtype = torch.float64) -> Tensor:
    conv = model.patch_embed
    size = int(model.pos_embed.shape[1] ** 0.5) * conv.kernel_size[0]
    return torch.randn(batch, conv.in_channels, size, size, dtype=dtype)


def graph_error(model: nn.Module, x: Tensor) -> float:
    with torch.no_grad():
        expected = model(x)
        assert expected.abs().max() > 0, "degenerate test: the network outputs zeros"
        return max_error(run_neural_graph(to_neural_graph(model), x), expected)


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, TOL64), (torch.float32, TOL32)])
def test_small_simple_vit_runs_exactly(depth: int, in_channels: int, dtype: torch.dtype,
                                       tol: float) -> None:
    model = simple_vit(dtype, depth=depth, in_channels=in_channels, **SMALL)
    assert graph_error(model, inputs(model, dtype=dtype)) <= tol


def test_default_simple_vit_runs_exactly() -> None:
    model = simple_vit()
    graph = to_neural_graph(model)
    assert graph.layer_layout[0] == 1 and graph.layer_layout[-1] == 10
    assert graph.kernel_shape == (4, 4)
    assert graph_error(model, inputs(model, batch=2)) <= TOL64


@pytest.mark.parametrize("pool", list(POOLS))
def test_every_form_of_the_mean_over_tokens(pool: str) -> None:
    model = simple_vit(pool=pool, depth=1, **SMALL)
    assert graph_error(model, inputs(model)) <= TOL64


def test_mean_over_tokens_is_a_pooling_step() -> None:
    """The head reads the final LayerNorm through an average pooling of the tokens."""
    model = simple_vit(depth=1, **SMALL)
    graph = to_neural_graph(model)
    head = graph.layers[-1]
    assert head["path"] == "head" and [g["kind"] for g in head["groups"]] == ["linear"]
    assert graph.layers[head["groups"][0]["source"]]["path"] == "encoder.norm"
    assert head["groups"][0]["pre"] == [("pool", "AdaptiveAvgPool1d", {"output_size": 1}),
                                        ("select_token", 0)]


def test_round_trip_and_hidden_permutation_symmetry() -> None:
    """test_graph's checks: fields, both BatchNorm forms, round trips (the buffer comes
    back from the graph), hidden-neuron permutations of the network and of the graph."""
    model = simple_vit(depth=2, in_channels=3, **SMALL)
    check_all(model, inputs(model, batch=2))


# --------------------------------------------------------------------------- the buffer


def test_position_buffer_enters_the_graph() -> None:
    model = simple_vit(depth=1, **SMALL)
    x = inputs(model)
    graph = to_neural_graph(model)
    stored = next(layer["tokens"]["position"] for layer in graph.layers
                  if "position" in layer["tokens"])
    assert stored[0] == "pos_embed" and torch.equal(stored[1], model.pos_embed)
    with torch.no_grad():
        before = run_neural_graph(graph, x)
        model.pos_embed.mul_(-2.0).add_(0.5)
        after = run_neural_graph(to_neural_graph(model), x)
        expected = model(x)
    assert max_error(after, expected) <= TOL64
    assert max_error(before, expected) > 1e-3  # the old graph held the old buffer


class _BufferToken(nn.Module):
    """A class token and a position embedding, both fixed buffers."""

    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, 8, 4, stride=4)
        self.register_buffer("cls_token", torch.randn(1, 1, 8))
        self.register_buffer("pos_embed", torch.randn(1, 5, 8))
        self.encoder = nn.TransformerEncoderLayer(8, 2, 16, 0.0, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return self.head(self.encoder(torch.cat([cls, tokens], dim=1) + self.pos_embed)[:, 0])


def test_class_token_buffer() -> None:
    model = _BufferToken().double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    assert graph_error(model, x) <= TOL64
    check_all(model, x)


class _PlainAttribute(_BufferToken):
    """A position embedding that is neither a parameter nor a buffer."""

    def __init__(self) -> None:
        super().__init__()
        del self.pos_embed
        self.pos_embed = torch.randn(1, 5, 8)


def test_plain_tensor_attribute_is_rejected() -> None:
    with pytest.raises(TypeError, match="'pos_embed' must be a parameter or a registered "
                       "buffer"):
        to_neural_graph(_PlainAttribute())


# --------------------------------------------------------------------------- errors


class _Reduces(SimpleViT):
    def __init__(self, reduce: Callable[[Tensor], Tensor]) -> None:
        super().__init__(**SMALL, depth=1)
        self.reduce = reduce

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        return self.head(self.reduce(self.encoder(tokens)))


@pytest.mark.parametrize(("reduce", "match"), [
    (lambda h: h.mean(2), r"reduction \.mean\(dim=2\) of token-major states.*only the mean "
                          "over the tokens"),
    (lambda h: h.mean(-1), r"\.mean\(dim=-1\) of token-major.*only the mean over the tokens"),
    (lambda h: h.mean((1, 2)), r"\.mean\(dim=\(1, 2\)\) of token-major"),
    (lambda h: h.mean(), r"\.mean\(dim=None\) of token-major"),
    (lambda h: h.amax(1), r"\.amax\(dim=1\) of token-major.*only the mean over the tokens"),
    (lambda h: torch.amax(h, 1), r"\.amax\(dim=1\) of token-major"),
    (lambda h: h.sum(1), r"unsupported method \.sum\(\)"),
])
def test_unsupported_reduction_over_tokens(reduce: Callable[[Tensor], Tensor],
                                           match: str) -> None:
    with pytest.raises(TypeError, match=match):
        to_neural_graph(_Reduces(reduce))


# --------------------------------------------------------------------------- encoders

ENCODERS = {
    "NGGNN": lambda: NGGNN(3, hidden=8, num_layers=3, rff_dim=8),
    "NGTransformer": lambda: NGTransformer(3, node_dim=8, edge_dim=4, num_layers=2, heads=2,
                                           attn_dim=8, node_hidden=8, edge_hidden=8,
                                           head_hidden=8, rff_dim=8),
    "DNGEncoder": lambda: DNGEncoder(3, hidden=8, rff_dim=8),
}


@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_encoders_read_simple_vit_graphs(encoder: str) -> None:
    """A batch of two SimpleViT graphs (depth 1 and 2) gives finite outputs, and the
    hidden-permuted network's graph the same output as the original's."""
    models = [simple_vit(torch.float32, seed=seed, depth=depth, **SMALL)
              for seed, depth in ((0, 1), (1, 2))]
    permuted = permute_hidden(models[1], torch.Generator().manual_seed(7))
    graphs = [to_neural_graph(m) for m in (*models, permuted)]
    assert not torch.equal(graphs[1].edge_attr, graphs[2].edge_attr)
    enc = ENCODERS[encoder]()
    with torch.no_grad():
        pair = enc(Batch.from_data_list(graphs[:2]))
        out = enc(Batch.from_data_list(graphs))
    assert pair.shape == (2, 3) and pair.dtype == torch.float32
    assert torch.isfinite(pair).all()
    torch.testing.assert_close(out[:2], pair, rtol=0, atol=1e-5)
    torch.testing.assert_close(out[2], out[1], rtol=0, atol=1e-5)
