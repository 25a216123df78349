"""``to_neural_graph`` on networks written in the usual ways (issue 17): what is supported
in module form is supported in functional and method form, containers nest, and what stays
unsupported says what, where and what is supported."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neural_graphs import run_neural_graph, to_neural_graph
from neural_graphs.activations import (
    ACTIVATION_FACTORIES,
    ACTIVATIONS,
    Sine,
    activate,
    activation_id,
)

TOL = 1e-10


@pytest.fixture(autouse=True)
def _float64() -> None:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


class Head(nn.Module):
    """A conv body and a Linear head, the step between them written as ``forward`` says."""

    def __init__(self, step, features: int = 4) -> None:
        super().__init__()
        self.step = step
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(features, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.step(self.conv(x)))


class Conv1dHead(Head):
    def __init__(self, step) -> None:
        super().__init__(step)
        self.conv = nn.Conv1d(3, 4, 3)


STEPS = {
    "x.mean((2, 3))": lambda h: h.mean((2, 3)),
    "x.mean(dim=(-2, -1))": lambda h: h.mean(dim=(-2, -1)),
    "x.mean([2, 3], keepdim=True).flatten(1)": lambda h: h.mean([2, 3], keepdim=True).flatten(1),
    "x.amax((2, 3))": lambda h: h.amax((2, 3)),
    "torch.mean(x, (2, 3))": lambda h: torch.mean(F.relu(h), (2, 3)),
    "torch.amax(x, dim=(2, 3))": lambda h: torch.amax(h.tanh(), dim=(2, 3)),
    "F.adaptive_avg_pool2d + torch.flatten": lambda h: torch.flatten(
        F.adaptive_avg_pool2d(F.silu(h), 1), 1),
    "F.adaptive_max_pool2d + view": lambda h: F.adaptive_max_pool2d(h, (1, 1)).view(
        h.size(0), -1),
    "F.relu(inplace) + reshape": lambda h: F.adaptive_avg_pool2d(
        F.relu(h, inplace=True), 1).reshape(h.shape[0], -1),
    "F.gelu, x.sigmoid(), x.relu_()": lambda h: F.gelu(h).sigmoid().relu_().mean((2, 3)),
    "F.leaky_relu slope": lambda h: F.leaky_relu(h, 0.3).amax((-2, -1)),
    "F.dropout": lambda h: F.dropout(h.mean((2, 3)), 0.5, training=False),
}
POOLED_STEPS = {  # 8x8 maps pooled to 2x2, then 16 features
    "F.max_pool2d + torch.flatten": lambda h: torch.flatten(F.max_pool2d(h, 3), 1),
    "F.avg_pool2d(stride) + view": lambda h: F.avg_pool2d(h, 4, stride=3).view(h.size(0), -1),
    "F.avg_pool2d + x.view": lambda h: F.avg_pool2d(h, kernel_size=4).view(h.size(0), -1),
}
STEPS_1D = {
    "x.mean(-1)": lambda h: h.mean(-1),
    "F.max_pool1d + F.adaptive_avg_pool1d": lambda h: F.adaptive_avg_pool1d(
        F.max_pool1d(torch.tanh(h), 2), 1).flatten(1),
    "F.avg_pool1d + torch.mean": lambda h: torch.mean(F.avg_pool1d(h, 2), dim=2),
}


def assert_runs_exactly(model: nn.Module, x: Tensor) -> None:
    graph = to_neural_graph(model.eval())
    with torch.no_grad():
        expected = model(x)
        got = run_neural_graph(graph, x)
    assert expected.abs().max() > 0
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= TOL


@pytest.mark.parametrize("name", list(STEPS))
def test_functional_and_method_forms(name: str) -> None:
    torch.manual_seed(0)
    assert_runs_exactly(Head(STEPS[name]), torch.randn(3, 3, 10, 10))


@pytest.mark.parametrize("name", list(POOLED_STEPS))
def test_functional_pooling_then_flatten(name: str) -> None:
    torch.manual_seed(0)
    assert_runs_exactly(Head(POOLED_STEPS[name], features=16), torch.randn(3, 3, 10, 10))


@pytest.mark.parametrize("name", list(STEPS_1D))
def test_functional_forms_on_sequences(name: str) -> None:
    torch.manual_seed(0)
    assert_runs_exactly(Conv1dHead(STEPS_1D[name]), torch.randn(3, 3, 10))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleDict({"fc": nn.Linear(6, 6), "act": nn.Identity()})

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.layers["act"](self.layers["fc"](x))) + x


class Nested(nn.Module):
    """Containers in containers, your own modules in them, nn.Identity everywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Sequential(nn.Linear(4, 6), nn.Identity(), nn.Tanh()),
            nn.ModuleList([Block(), nn.Sequential(Block(), nn.Identity())]),
        )
        self.head = nn.Sequential(nn.Sequential(nn.Identity(), nn.Linear(6, 3)))

    def forward(self, x: Tensor) -> Tensor:
        h = self.body[0](x)
        for block in self.body[1]:
            h = block(h)
        return self.head(h)


def test_nested_containers_and_identity() -> None:
    torch.manual_seed(0)
    assert_runs_exactly(Nested(), torch.randn(5, 4))


class Softmaxes(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.fc(x), 1)


class Exps(Softmaxes):
    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x).exp()


class PartialMean(Head):
    def __init__(self) -> None:
        super().__init__(lambda h: h.mean(2).flatten(1), features=32)


@pytest.mark.parametrize(("model", "match"), [
    (nn.Sequential(nn.Linear(3, 4), Softmaxes()), r"function softmax in '1' \(Softmaxes"),
    (nn.Sequential(nn.Sequential(nn.Linear(3, 4), Exps())),
     r"method \.exp\(\) in '0\.1' \(Exps.*fx node"),
    (PartialMean(), r"reduction \.mean\(dim=2\).*every spatial axis"),
    (nn.Sequential(nn.Linear(3, 4), nn.Softplus()), r"Softplus at '1'"),
    (Conv1dHead(lambda h: h.amax(-1)), "AdaptiveMaxPool1d has no"),
    (Head(lambda h: F.gelu(h, approximate="tanh").mean((2, 3))), "approximate"),
])
def test_unsupported_operations_say_what_where_and_what_is_supported(
        model: nn.Module, match: str) -> None:
    with pytest.raises(TypeError, match=match) as info:
        to_neural_graph(model)
    assert "supported: Linear, Conv1d/Conv2d" in str(info.value)


def test_activation_table_keeps_its_ids() -> None:
    """Graph caches store activation ids: the order never changes."""
    assert ACTIVATIONS == ("identity", "relu", "leaky_relu", "gelu", "silu", "tanh",
                           "sigmoid", "sine")
    assert activation_id("sine") == 7
    with pytest.raises(ValueError, match="unknown activation"):
        activation_id("softplus")
    z = torch.linspace(-2, 2, 9)
    for name, factory in ACTIVATION_FACTORIES.items():
        torch.testing.assert_close(activate(z, name), factory()(z), rtol=0, atol=0)
    torch.testing.assert_close(activate(z, "sine", 2.0), Sine(2.0)(z), rtol=0, atol=0)
    torch.testing.assert_close(activate(z, "leaky_relu", 0.2), nn.LeakyReLU(0.2)(z))
