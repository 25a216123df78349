"""Neural graphs (issue 10): exactness, round trip, symmetry, graph fields, errors.

Every network runs in float64 and eval mode; BatchNorm running statistics are randomised so
folding is exercised. ``run_neural_graph(to_neural_graph(m), x)`` must equal ``m(x)`` within
1e-10 for the five networks of the repository, a SIREN and 50 random architectures.
"""

from __future__ import annotations

import copy
import math
import os
import random
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from models import MODELS
from neural_graphs import (
    ACTIVATIONS,
    EDGE_TYPES,
    NODE_TYPES,
    SIREN,
    Sine,
    fold_batchnorm,
    from_neural_graph,
    layer_snapshots,
    permute_hidden,
    run_neural_graph,
    to_neural_graph,
)
from neural_graphs.permute import hidden_permutation, permute_graph

TOL = 1e-10
RANDOM_SEEDS = range(50)
FULL = os.environ.get("NEURAL_GRAPHS_FULL") == "1"
pytestmark = pytest.mark.filterwarnings(  # torch's own note on its conv kernel
    "ignore:Using padding='same' with even kernel lengths:UserWarning")


@pytest.fixture(autouse=True)
def _float64() -> None:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


# --------------------------------------------------------------------------- helpers


def randomize_batchnorm(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Give every BatchNorm non-trivial affine parameters and running statistics."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(n, generator=generator) * 0.5)
                m.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
    return model


def max_error(a: Tensor, b: Tensor) -> float:
    assert a.shape == b.shape, f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}"
    return (a - b).abs().max().item()


def assert_runs_exactly(model: nn.Module, x: Tensor, graph: Data | None = None) -> None:
    graph = to_neural_graph(model) if graph is None else graph
    with torch.no_grad():
        expected = model(x)
        got = run_neural_graph(graph, x)
    assert expected.abs().max() > 0, "degenerate test: the network outputs zeros"
    assert max_error(got, expected) <= TOL


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), f"{key} differs"


def perturbed(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every parameter and float buffer changed."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        for t in [*other.parameters(), *other.buffers()]:
            if t.is_floating_point():
                t.add_(1.0)
    return other


def check_fields(graph: Data) -> None:
    """Shapes, dtypes and the consistency of every per-node and per-edge field."""
    n, e = graph.num_nodes, graph.edge_index.shape[1]
    width = math.prod(graph.kernel_shape)
    layout = list(graph.layer_layout)
    assert sum(layout) == n == graph.x.shape[0]
    assert graph.x.dtype == torch.float64 and graph.x.shape[1] in (1, 5)
    assert graph.edge_index.dtype == torch.long and graph.edge_index.shape == (2, e)
    assert graph.edge_attr.shape == (e, width) and graph.edge_attr.dtype == torch.float64
    assert graph.edge_mask.shape == (e, width) and graph.edge_mask.dtype == torch.bool
    for name in ("edge_type", "edge_layer"):
        t = getattr(graph, name)
        assert t.shape == (e,) and t.dtype == torch.long, name
    for name in ("node_layer", "node_position", "node_type", "node_activation"):
        t = getattr(graph, name)
        assert t.shape == (n,) and t.dtype == torch.long, name
    # Layers are contiguous node ranges in order, with indices 0..size-1.
    expected_layer = torch.repeat_interleave(torch.arange(len(layout)), torch.tensor(layout))
    assert torch.equal(graph.node_layer, expected_layer)
    assert torch.equal(graph.node_position, torch.cat([torch.arange(s) for s in layout]))
    last = len(layout) - 1
    expected_type = torch.where(graph.node_layer == 0, 0,
                                torch.where(graph.node_layer == last, 2, 1))
    assert torch.equal(graph.node_type, expected_type)
    assert NODE_TYPES == ("input", "hidden", "output")
    assert int(graph.node_activation.min()) >= 0
    assert int(graph.node_activation.max()) < len(ACTIVATIONS)
    assert (graph.node_activation[graph.node_type == 0] == 0).all()
    assert (graph.x[graph.node_type == 0] == torch.tensor(
        [0.0, 1.0, 0.0, 0.0, 1.0][: graph.x.shape[1]])).all()
    assert 0 <= int(graph.edge_type.min()) and int(graph.edge_type.max()) < len(EDGE_TYPES)
    # Edges go forward, and edge_layer is the target's layer.
    src, dst = graph.edge_index
    assert int(src.min()) >= 0 and int(dst.max()) < n
    assert torch.equal(graph.edge_layer, graph.node_layer[dst])
    assert (graph.node_layer[src] < graph.node_layer[dst]).all()
    assert (graph.node_type[dst] != 0).all()
    # Nothing outside the mask; the layer metadata matches the tensors.
    assert (graph.edge_attr[~graph.edge_mask] == 0).all()
    assert len(graph.layers) == len(layout)
    covered = torch.zeros(e, dtype=torch.long)
    for index, layer in enumerate(graph.layers):
        assert layer["size"] == layout[index]
        lo, hi = layer["nodes"]
        assert (graph.node_layer[lo:hi] == index).all() and hi - lo == layout[index]
        assert (graph.node_activation[lo:hi] == ACTIVATIONS.index(layer["activation"])).all()
        for group in layer["groups"]:
            start, stop = group["edges"]
            covered[start:stop] += 1
            assert group["source"] < index
            assert (graph.edge_layer[start:stop] == index).all()
            assert (graph.node_layer[src[start:stop]] == group["source"]).all()
            assert (graph.edge_type[start:stop] == EDGE_TYPES.index(group["kind"])).all()
    assert (covered == 1).all(), "edge groups must partition the edges"


def assert_mask_marks_kernels(graph: Data) -> None:
    """Each edge's mask is exactly its kernel's shape, centred in ``kernel_shape``."""
    grid = tuple(graph.kernel_shape)
    for layer in graph.layers:
        for group in layer["groups"]:
            start, stop = group["edges"]
            if group["kind"] == "conv":
                shape = tuple(group["params"]["kernel_size"])
            elif group["kind"] == "flatten":
                shape = tuple(group["params"]["map_shape"])
            else:
                shape = (1,) * len(grid)
            expected = torch.zeros(grid, dtype=torch.bool)
            lead = [(g - k) // 2 for g, k in zip(grid, shape)]
            expected[tuple(slice(a, a + k) for a, k in zip(lead, shape))] = True
            mask = graph.edge_mask[start:stop]
            assert (mask == expected.reshape(1, -1)).all(), layer["path"]


def canonical_layers(graph: Data) -> list[tuple]:
    """Per layer, the sorted node features and the sorted features of incoming edges."""
    out = []
    x = torch.cat([graph.x, graph.node_activation[:, None].double()], 1).numpy()
    src_layer = graph.node_layer[graph.edge_index[0]]
    e = torch.cat([graph.edge_attr, graph.edge_mask.double(), graph.edge_type[:, None].double(),
                   src_layer[:, None].double()], 1).numpy()
    for index in range(len(graph.layer_layout)):
        nodes = x[(graph.node_layer == index).numpy()]
        edges = e[(graph.edge_layer == index).numpy()]
        out.append((np.unique(nodes, axis=0, return_counts=True),
                    np.unique(edges, axis=0, return_counts=True) if len(edges) else None))
    return out


def assert_same_canonical(a: Data, b: Data) -> None:
    for index, (la, lb) in enumerate(zip(canonical_layers(a), canonical_layers(b))):
        for part, (pa, pb) in enumerate(zip(la, lb)):
            if pa is None or pb is None:
                assert pa is None and pb is None
                continue
            what = "nodes" if part == 0 else "edges"
            assert np.array_equal(pa[0], pb[0]) and np.array_equal(pa[1], pb[1]), \
                f"layer {index}: {what} differ"


def assert_relabelled(original: Data, permuted: Data, new_id: Tensor) -> None:
    """``permuted`` is ``original`` with node ``i`` renamed ``new_id[i]``, exactly: same
    node features at the new places, same (source, target, type) edges with same kernels."""
    assert torch.equal(permuted.x[new_id], original.x)
    assert torch.equal(permuted.node_activation[new_id], original.node_activation)
    n, types = original.num_nodes, len(EDGE_TYPES)

    def sorted_edges(index: Tensor, graph: Data) -> tuple[Tensor, Tensor]:
        key = (index[0] * n + index[1]) * types + graph.edge_type
        order = torch.argsort(key)
        return key[order], graph.edge_attr[order]

    key_a, attr_a = sorted_edges(new_id[original.edge_index], original)
    key_b, attr_b = sorted_edges(permuted.edge_index, permuted)
    assert (key_a[1:] != key_a[:-1]).all(), "test needs unique (source, target, type) edges"
    assert torch.equal(key_a, key_b)
    assert torch.equal(attr_a, attr_b)


def check_all(model: nn.Module, x: Tensor, check_permutation: bool = True,
              seed: int = 0) -> None:
    """Exactness (folded and node BatchNorm), fields, round trips, symmetry, snapshots."""
    model.eval()
    folded_graph = to_neural_graph(model)
    nodes_graph = to_neural_graph(model, batchnorm="nodes")
    for graph in (folded_graph, nodes_graph):
        check_fields(graph)
        assert_mask_marks_kernels(graph)
        assert_runs_exactly(model, x, graph)
    assert_snapshots(folded_graph)

    # Round trip: node BatchNorm gives the state_dict back bit for bit, also into a
    # template with other values; folding gives the folded network.
    back = from_neural_graph(nodes_graph, perturbed(model))
    assert_same_state(back, model)
    folded = fold_batchnorm(model)
    assert_same_state(from_neural_graph(folded_graph, model), folded)
    with torch.no_grad():
        assert max_error(folded(x), model(x)) <= TOL

    if check_permutation:
        generator = torch.Generator().manual_seed(seed)
        permuted = permute_hidden(model, generator)
        with torch.no_grad():
            assert max_error(permuted(x), model(x)) <= TOL
        new_id = hidden_permutation(nodes_graph, torch.Generator().manual_seed(seed))
        # The relabelled graph still runs the network (metadata needs no relabelling).
        relabelled = permute_graph(nodes_graph, torch.Generator().manual_seed(seed))
        assert_relabelled(nodes_graph, relabelled, new_id)
        assert_runs_exactly(model, x, relabelled)
        for kwargs in ({}, {"batchnorm": "nodes"}):
            graph = to_neural_graph(model, **kwargs)
            permuted_graph = to_neural_graph(permuted, **kwargs)
            assert_same_canonical(graph, permuted_graph)
            assert_relabelled(graph, permuted_graph, new_id)


def assert_snapshots(graph: Data) -> None:
    """layer_snapshots: one step per non-input layer, in order, every edge exactly once."""
    steps = list(layer_snapshots(graph))
    assert [s.step for s in steps] == list(range(1, len(graph.layer_layout)))
    seen = 0
    for snapshot in steps:
        k = snapshot.edge_index.shape[1]
        # Edges are stored grouped by target layer, so the snapshots tile them in order.
        assert torch.equal(snapshot.edge_index, graph.edge_index[:, seen:seen + k])
        assert torch.equal(snapshot.edge_attr, graph.edge_attr[seen:seen + k])
        assert torch.equal(snapshot.edge_mask, graph.edge_mask[seen:seen + k])
        assert torch.equal(snapshot.edge_type, graph.edge_type[seen:seen + k])
        assert torch.equal(snapshot.target, graph.node_layer == snapshot.step)
        assert (snapshot.target[snapshot.edge_index[1]]).all()
        seen += k
    assert seen == graph.edge_index.shape[1]


# --------------------------------------------------------------------------- random networks


class RandomNet(nn.Module):
    """A network run from a plan of steps (modules, functions, saves, additions)."""

    def __init__(self, plan: list[tuple], layers: list[nn.Module]) -> None:
        super().__init__()
        self.plan = plan
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> Tensor:
        saved = {}
        for step in self.plan:
            kind = step[0]
            if kind == "module":
                x = self.layers[step[1]](x)
            elif kind == "function":
                x = _FUNCTIONS[step[1]](x, step[2])
            elif kind == "save":
                saved[step[1]] = x
            elif kind == "add":
                shortcut = saved[step[1]]
                if step[2] is not None:
                    shortcut = self.layers[step[2]](shortcut)
                x = x + shortcut if step[3] else shortcut + x
            elif kind == "offset":
                x = x + step[1] if step[2] else step[1] + x
            elif kind == "flatten":
                x = {"torch": lambda t: torch.flatten(t, 1), "method": lambda t: t.flatten(1),
                     "view": lambda t: t.view(t.size(0), -1)}[step[1]](x)
        return x


_FUNCTIONS: dict[str, Callable[[Tensor, float], Tensor]] = {
    "relu": lambda x, _: torch.relu(x),
    "F.relu": lambda x, _: F.relu(x),
    "relu_method": lambda x, _: x.relu(),
    "leaky_relu": lambda x, slope: F.leaky_relu(x, slope),
    "gelu": lambda x, _: F.gelu(x),
    "silu": lambda x, _: F.silu(x),
    "tanh": lambda x, _: torch.tanh(x),
    "tanh_method": lambda x, _: x.tanh(),
    "sigmoid": lambda x, _: torch.sigmoid(x),
}
_ACTIVATION_MODULES: dict[str, Callable[[float], nn.Module]] = {
    "relu": lambda _: nn.ReLU(), "leaky_relu": lambda s: nn.LeakyReLU(s),
    "gelu": lambda _: nn.GELU(), "silu": lambda _: nn.SiLU(), "tanh": lambda _: nn.Tanh(),
    "sigmoid": lambda _: nn.Sigmoid(), "sine": lambda w: Sine(w),
}


class _NetBuilder:
    """Draws one random architecture; ``plan`` / ``layers`` feed :class:`RandomNet`."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.plan: list[tuple] = []
        self.layers: list[nn.Module] = []
        self.saves = 0

    def module(self, m: nn.Module) -> int:
        self.layers.append(m)
        self.plan.append(("module", len(self.layers) - 1))
        return len(self.layers) - 1

    def activation(self) -> None:
        rng = self.rng
        if rng.random() < 0.15:
            return
        if rng.random() < 0.5:
            name = rng.choice(sorted(_FUNCTIONS))
            self.plan.append(("function", name, round(rng.uniform(0.01, 0.5), 3)))
        else:
            name = rng.choice(sorted(_ACTIVATION_MODULES))
            param = rng.uniform(1.0, 6.0) if name == "sine" else round(rng.uniform(0.01, 0.5), 3)
            self.module(_ACTIVATION_MODULES[name](param))

    def extras(self) -> None:
        rng = self.rng
        if rng.random() < 0.15:
            self.module(nn.Dropout(0.3))
        if rng.random() < 0.1:
            self.plan.append(("offset", round(rng.uniform(-1, 1), 3), rng.random() < 0.5))

    def save(self) -> int:
        self.saves += 1
        self.plan.append(("save", self.saves))
        return self.saves

    def add(self, key: int, shortcut: nn.Module | None) -> None:
        index = None
        if shortcut is not None:
            self.layers.append(shortcut)
            index = len(self.layers) - 1
        self.plan.append(("add", key, index, self.rng.random() < 0.5))


def _conv_out(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _random_conv(rng: random.Random, dims: int, c_in: int, size: int) -> tuple[nn.Module, int]:
    """A random Conv{dims}d for ``c_in`` channels of side ``size``, and its output side."""
    conv_cls = nn.Conv1d if dims == 1 else nn.Conv2d
    while True:
        groups = rng.choice([1, 1, 1] + [g for g in (2, 3, 4) if c_in % g == 0])
        c_out = groups * rng.randint(1, 64 // groups)
        k, s, d = rng.randint(1, 7), rng.choice([1, 1, 2]), rng.choice([1, 1, 2])
        mode = rng.choice(["zeros", "zeros", "reflect", "replicate", "circular"])
        pad_kind = rng.choice(["int", "int", "same", "valid"])
        if pad_kind == "same":
            s, padding, p = 1, "same", (d * (k - 1)) // 2 + 1
        elif pad_kind == "valid":
            padding = p = 0
        else:
            padding = p = rng.randint(0, 3)
        out = size if pad_kind == "same" else _conv_out(size, k, s, p, d)
        if out < 1 or (mode == "reflect" and p >= size) or (mode == "circular" and p > size):
            continue
        return conv_cls(c_in, c_out, k, stride=s, padding=padding, dilation=d, groups=groups,
                        bias=rng.random() < 0.7, padding_mode=mode), out


def _random_pool(rng: random.Random, dims: int, size: int) -> tuple[nn.Module, int]:
    two = dims == 2
    kind = rng.choice(["max", "avg", "adaptive_avg", "adaptive_max"])
    if kind in ("max", "avg") and size >= 2:
        k = rng.choice([2, 3]) if size >= 3 else 2
        s, p = rng.choice([1, 2]), rng.choice([0, 1]) if k == 3 else 0
        cls = {("max", True): nn.MaxPool2d, ("max", False): nn.MaxPool1d,
               ("avg", True): nn.AvgPool2d, ("avg", False): nn.AvgPool1d}[kind, two]
        return cls(k, s, p), _conv_out(size, k, s, p, 1)
    out = rng.randint(1, size)
    cls = {("adaptive_avg", True): nn.AdaptiveAvgPool2d,
           ("adaptive_avg", False): nn.AdaptiveAvgPool1d,
           ("adaptive_max", True): nn.AdaptiveMaxPool2d,  # AdaptiveMaxPool1d has no twin
           ("adaptive_max", False): nn.AdaptiveAvgPool1d}[kind, two]
    return cls(out), out


def random_network(seed: int) -> tuple[nn.Module, Tensor, str]:
    """A random float64 eval-mode network, an input batch for it, and a description.

    Depth 2-6 weight layers, widths 1-64, kernels 1-7, strides, paddings (zeros, reflect,
    replicate, circular, 'same', 'valid'), dilation, groups, residual blocks (identity and
    1x1 projection shortcuts), BatchNorm with random statistics, pooling, Dropout,
    activation modules and functions, constant offsets; Conv1d, Conv2d or MLP.
    """
    rng = random.Random(seed)
    b = _NetBuilder(rng)
    family = rng.choice(["conv2d", "conv2d", "conv1d", "mlp"])
    depth = rng.randint(2, 6)
    if family == "mlp":
        flatten_input = rng.random() < 0.3
        features = rng.randint(1, 16)
        x_shape = (2, 1, 2, features // 2 or 1) if flatten_input else (2, features)
        if flatten_input:
            features = math.prod(x_shape[1:])
            b.module(nn.Flatten())
        convs = 0
    else:
        dims = 1 if family == "conv1d" else 2
        channels, size = rng.randint(1, 4), 8 if dims == 2 else 16
        x_shape = (2, channels) + (size,) * dims
        convs = rng.randint(1, depth) if rng.random() < 0.2 else rng.randint(1, depth - 1)
    done = 0
    while done < convs:
        if convs - done >= 2 and rng.random() < 0.35:  # residual block
            key = b.save()
            k = rng.choice([1, 3, 5])
            s = rng.choice([1, 2]) if size >= 4 else 1
            cls = nn.Conv1d if dims == 1 else nn.Conv2d
            c_out = rng.randint(1, 64)
            b.module(cls(channels, c_out, k, stride=s, padding=k // 2, bias=False,
                         padding_mode=rng.choice(["zeros", "reflect", "circular"])))
            if rng.random() < 0.7:
                b.module((nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(c_out))
            b.activation()
            k2 = rng.choice([1, 3])
            b.module(cls(c_out, c_out, k2, padding=k2 // 2, bias=rng.random() < 0.5))
            if rng.random() < 0.7:
                b.module((nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(c_out))
            shortcut = None
            if s != 1 or c_out != channels:
                projection = [cls(channels, c_out, 1, stride=s, bias=rng.random() < 0.3)]
                if rng.random() < 0.7:
                    projection.append((nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(c_out))
                shortcut = nn.Sequential(*projection)
            b.add(key, shortcut)
            channels, size = c_out, _conv_out(size, k, s, k // 2, 1)
            done += 2
        else:
            conv, size = _random_conv(rng, dims, channels, size)
            channels = conv.out_channels
            b.module(conv)
            if rng.random() < 0.5:
                b.module((nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(channels))
            done += 1
        b.activation()
        if rng.random() < 0.3:
            pool, size = _random_pool(rng, dims, size)
            b.module(pool)
        b.extras()
    if family == "mlp":
        done = 0
    elif convs < depth:
        if rng.random() < 0.5:  # global pooling before the head
            b.module((nn.AdaptiveAvgPool1d if dims == 1 else nn.AdaptiveAvgPool2d)(1))
            size = 1
        features = channels * size**dims
        how = rng.choice(["module", "torch", "method", "view"])
        if how == "module":
            b.module(nn.Flatten())
        else:
            b.plan.append(("flatten", how))
    while done < depth:
        last = done == depth - 1
        if not last and depth - done >= 3 and rng.random() < 0.25:  # residual Linear
            key = b.save()
            b.module(nn.Linear(features, features))
            if rng.random() < 0.5:
                b.module(nn.LayerNorm(features))
            b.activation()
            b.add(key, None)
            done += 1
            continue
        width = rng.randint(1, 10) if last else rng.randint(1, 64)
        b.module(nn.Linear(features, width, bias=rng.random() < 0.8))
        features = width
        done += 1
        if not last:
            if rng.random() < 0.3:
                b.module(nn.BatchNorm1d(width))
            b.activation()
            b.extras()
    torch.manual_seed(seed)
    model = RandomNet(b.plan, b.layers).double()
    randomize_batchnorm(model, torch.Generator().manual_seed(seed))
    x = torch.randn(x_shape, generator=torch.Generator().manual_seed(seed))
    return model.eval(), x, family


@pytest.mark.parametrize("seed", RANDOM_SEEDS)
def test_random_architecture(seed: int) -> None:
    model, x, _ = random_network(seed)
    check_all(model, x, seed=seed)


def test_random_architectures_cover_the_features() -> None:
    """The 50 random networks really mix what the issue lists."""
    seen: set[str] = set()
    for seed in RANDOM_SEEDS:
        model, _, family = random_network(seed)
        seen.add(family)
        graph = to_neural_graph(model)
        seen.update(g["kind"] for layer in graph.layers for g in layer["groups"])
        seen.update(layer["activation"] for layer in graph.layers)
        for m in model.modules():
            seen.add(type(m).__name__)
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                seen.add(f"padding_mode={m.padding_mode}")
                if m.groups > 1:
                    seen.add("groups>1")
                if max(m.stride) > 1:
                    seen.add("stride 2")
                if max(m.dilation) > 1:
                    seen.add("dilation 2")
                seen.add(f"kernel {m.kernel_size[0]}")
        seen.update(step[0] for step in model.plan)
        seen.update(f"function {step[1]}" for step in model.plan if step[0] == "function")
    wanted = {"conv1d", "conv2d", "mlp", "linear", "conv", "flatten", "residual", "layernorm",
              "BatchNorm1d", "BatchNorm2d", "Dropout", "MaxPool2d", "AvgPool2d",
              "AdaptiveAvgPool2d", "padding_mode=reflect", "padding_mode=circular",
              "padding_mode=replicate", "groups>1", "stride 2", "dilation 2", "offset", "add",
              "function leaky_relu", "function relu", "sine", "gelu", "silu", "tanh",
              "sigmoid", "leaky_relu", "relu", *(f"kernel {k}" for k in range(1, 8))}
    assert wanted <= seen, f"missing: {sorted(wanted - seen)}"


# --------------------------------------------------------------------------- small networks


class FunctionalNet(nn.Module):
    """Activations as functions and methods, keyword arguments, torch.add, offsets."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(5, 8), nn.Linear(8, 8)
        self.fc3, self.fc4 = nn.Linear(8, 6), nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.fc1(x))
        h = F.leaky_relu(torch.add(self.fc2(h), h), negative_slope=0.2)
        h = 0.25 + F.gelu(self.fc3(h)).tanh()
        return F.leaky_relu(self.fc4(h) + 0.5)


class ResidualNet(nn.Module):
    """ResNet BasicBlocks: identity shortcut, 1x1 projection with stride 2, BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        from models.CIFAR100_ResNet18 import BasicBlock

        self.stem = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.block1 = BasicBlock(4, 4)
        self.block2 = BasicBlock(4, 6, stride=2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn(self.stem(x)))
        return self.head(self.block2(self.block1(h)))


class OffsetNet(nn.Module):
    """Constants added after a Linear, after a BatchNorm and after an activation."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.bn, self.fc2 = nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 5)
        self.fc3 = nn.Linear(5, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.sigmoid(self.bn(self.fc1(x)) - 0.75)
        h = torch.tanh(self.fc2(h)) + 1.5
        return 0.5 + self.fc3(h)


def _conv_chain(dims: int, pool: bool = False, **kwargs: object) -> nn.Module:
    conv = nn.Conv1d if dims == 1 else nn.Conv2d
    head = [nn.AdaptiveAvgPool2d(2)] if pool else []  # for non-square maps
    return nn.Sequential(conv(2, 4, 5, **kwargs), nn.ReLU(), conv(4, 3, 3, **kwargs),
                         *head, nn.Flatten(), nn.LazyLinear(2))


SMALL_NETWORKS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "functional activations": (FunctionalNet, (2, 5)),
    "sequential with dropout": (lambda: nn.Sequential(
        nn.Linear(6, 7), nn.ReLU(), nn.Dropout(0.5), nn.Linear(7, 7), nn.Identity(),
        nn.SiLU(), nn.AlphaDropout(0.1), nn.Linear(7, 2)), (2, 6)),
    "residual blocks with 1x1 projection": (ResidualNet, (2, 3, 8, 8)),
    "grouped and depthwise convolutions": (lambda: nn.Sequential(
        nn.Conv2d(4, 6, 3, groups=2), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 6, 3, groups=3, padding=1), nn.Tanh(),
        nn.Conv2d(6, 6, 1, groups=6), nn.Flatten(), nn.Linear(6 * 36, 3)), (2, 4, 8, 8)),
    "conv1d with stride, dilation and pooling": (lambda: nn.Sequential(
        nn.Conv1d(2, 5, 7, stride=2, padding=3), nn.BatchNorm1d(5), nn.GELU(),
        nn.MaxPool1d(2), nn.Conv1d(5, 4, 3, dilation=2, padding=2, bias=False),
        nn.AvgPool1d(3, 1, 1), nn.Flatten(), nn.Linear(16, 3)), (2, 2, 16)),
    "padding mode reflect": (lambda: _conv_chain(2, padding=2, padding_mode="reflect",
                                                 stride=2), (2, 2, 8, 8)),
    "padding mode circular": (lambda: _conv_chain(2, padding=3, padding_mode="circular"),
                              (2, 2, 8, 8)),
    "padding mode replicate": (lambda: _conv_chain(2, padding=1, padding_mode="replicate",
                                                   dilation=2), (2, 2, 9, 9)),
    "conv1d padding modes": (lambda: _conv_chain(1, padding="same", padding_mode="reflect"),
                             (2, 2, 12)),
    "dilation and stride": (lambda: _conv_chain(2, True, dilation=(2, 1), stride=(1, 2),
                                                padding=2), (2, 2, 9, 9)),
    "leaky relu slopes": (lambda: nn.Sequential(
        nn.Linear(3, 8), nn.LeakyReLU(0.2), nn.Linear(8, 8), nn.LeakyReLU(0.01),
        nn.Linear(8, 8), nn.LeakyReLU(3.0), nn.Linear(8, 2)), (2, 3)),
    "constant offsets": (OffsetNet, (3, 4)),
}


@pytest.mark.filterwarnings("ignore:Lazy modules are a new feature")
@pytest.mark.parametrize("name", list(SMALL_NETWORKS))
def test_small_network(name: str) -> None:
    build, shape = SMALL_NETWORKS[name]
    model = build().double()
    x = torch.randn(shape)
    model(x)  # materialise lazy layers
    randomize_batchnorm(model, torch.Generator().manual_seed(1))
    check_all(model.eval(), x)


def test_leaky_relu_slopes_and_offsets_are_in_the_graph() -> None:
    model = SMALL_NETWORKS["leaky relu slopes"][0]().double()
    graph = to_neural_graph(model)
    slopes = [(layer["activation"], layer["activation_param"]) for layer in graph.layers[1:]]
    assert slopes == [("leaky_relu", 0.2), ("leaky_relu", 0.01), ("leaky_relu", 3.0),
                      ("identity", None)]
    graph = to_neural_graph(OffsetNet().double().eval())
    assert sorted(layer["offset"] for layer in graph.layers if layer["offset"]) == \
        [-0.75, 0.5, 1.5]


def test_siren() -> None:
    model = SIREN(2, 32, 2, 1).double()
    graph = to_neural_graph(model)
    assert graph.layer_layout == [2, 32, 32, 1]
    assert [layer["activation"] for layer in graph.layers] == \
        ["identity", "sine", "sine", "identity"]
    assert graph.layers[-1]["offset"] == 0.5 and graph.kernel_shape == (1,)
    check_all(model, torch.rand(64, 2) * 2 - 1)


# --------------------------------------------------------------------------- the five networks


def _model(name: str) -> tuple[nn.Module, Tensor]:
    spec = MODELS[name]
    torch.manual_seed(0)
    model = spec.standard().double()
    randomize_batchnorm(model, torch.Generator().manual_seed(0))
    return model.eval(), torch.randn(2, *spec.input_shape)


def test_mnist_mlp() -> None:
    model, x = _model("mlp")
    graph = to_neural_graph(model)
    assert graph.layer_layout == [784, 250, 100, 10] and graph.layers[0]["flatten_input"]
    check_all(model, x)


def test_cwru_1dcnn() -> None:
    model, x = _model("cwru")
    graph = to_neural_graph(model)
    assert graph.layer_layout == [1, 16, 32, 32, 10]
    assert graph.kernel_shape == (64,)  # the largest kernel: conv.0's 64 taps
    assert [g["kind"] for layer in graph.layers for g in layer["groups"]] == \
        ["conv", "conv", "flatten", "linear"]
    check_all(model, x)


def check_large(model: nn.Module, x: Tensor, seed: int = 0) -> None:
    """For big networks: the node round trip, and the permuted network and its graph
    (exactly the original's, relabelled)."""
    nodes_graph = to_neural_graph(model, batchnorm="nodes")
    assert_runs_exactly(model, x, nodes_graph)
    assert_same_state(from_neural_graph(nodes_graph, model), model)
    permuted = permute_hidden(model, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        assert max_error(permuted(x), model(x)) <= TOL
    new_id = hidden_permutation(nodes_graph, torch.Generator().manual_seed(seed))
    assert not torch.equal(new_id, torch.arange(new_id.numel()))
    assert_relabelled(nodes_graph, to_neural_graph(permuted, batchnorm="nodes"), new_id)


def _vgg11_reduced() -> tuple[nn.Module, Tensor]:
    """VGG11's 8 convolutions (BatchNorm, max pools) with its classifier's structure at
    width 64 instead of 4096 (the full classifier alone is 20 M edges)."""
    model, x = _model("vgg11")
    model.classifier = nn.Sequential(
        nn.Linear(512, 64), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(64, 64), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(64, 100)).double()
    return model.eval(), x


def small_vit() -> nn.Module:
    from models.CIFAR100_ViT import ViTCIFAR100

    return ViTCIFAR100(num_classes=5, image_size=8, patch_size=4, embed_dim=8, depth=2,
                       num_heads=2, mlp_ratio=2).double()


def test_resnet18() -> None:
    model, x = _model("resnet18")
    assert_runs_exactly(model, x)


def test_vit() -> None:
    model, x = _model("vit")
    assert_runs_exactly(model, x)


def test_vgg11_reduced_classifier() -> None:
    model, x = _vgg11_reduced()
    graph = to_neural_graph(model)
    assert graph.layer_layout == [3, 64, 128, 256, 256, 512, 512, 512, 512, 64, 64, 100]
    assert_runs_exactly(model, x, graph)


def test_small_vit() -> None:
    """Round trip and symmetry of the ViT's structure at a small size (the full-size ViT,
    ResNet-18 and VGG11: NEURAL_GRAPHS_FULL=1)."""
    model = small_vit().eval()
    check_all(model, torch.randn(2, 3, 8, 8))


@pytest.mark.skipif(not FULL, reason="2-3 s of graph building each on this CPU; set "
                    "NEURAL_GRAPHS_FULL=1 to run")
@pytest.mark.parametrize("name", ["resnet18", "vit", "vgg11 reduced classifier"])
def test_large_round_trip_and_symmetry(name: str) -> None:
    model, x = _vgg11_reduced() if name.startswith("vgg11") else _model(name)
    check_large(model, x)


@pytest.mark.skipif(not FULL, reason="full VGG11 graph: 20 M edges, ~5 GB; set "
                    "NEURAL_GRAPHS_FULL=1 to run")
def test_vgg11_full() -> None:
    model, x = _model("vgg11")
    graph = to_neural_graph(model)
    assert_runs_exactly(model, x, graph)
    del graph
    assert_same_state(from_neural_graph(to_neural_graph(model, batchnorm="nodes"), model),
                      model)


# --------------------------------------------------------------------------- graph fields


def _edges_of(graph: Data, layer: int) -> tuple[Tensor, Tensor, Tensor]:
    """(local source, local target, edge_attr) of the edges into ``layer``."""
    keep = graph.edge_layer == layer
    src, dst = graph.edge_index[:, keep]
    src_lo = graph.layers[layer]["groups"][0]["source"]
    return (src - graph.layers[src_lo]["nodes"][0], dst - graph.layers[layer]["nodes"][0],
            graph.edge_attr[keep])


def test_linear_edges_hold_the_weights() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2, bias=False)).double()
    graph = to_neural_graph(model)
    assert graph.layer_layout == [3, 4, 2] and graph.kernel_shape == (1,)
    assert graph.edge_index.shape[1] == 3 * 4 + 4 * 2
    for layer, m in ((1, model[0]), (2, model[2])):
        src, dst, attr = _edges_of(graph, layer)
        assert torch.equal(attr[:, 0], m.weight.detach()[dst, src])
    assert torch.equal(graph.x[3:7, 0], model[0].bias.detach())
    assert (graph.x[7:, 0] == 0).all() and (graph.x[:3] == 0).all()
    assert graph.node_activation.tolist() == [0] * 3 + [ACTIVATIONS.index("relu")] * 4 + [0] * 2


def test_kernel_centred_in_the_largest_kernel() -> None:
    """A 3x3 kernel sits in the middle of the 7x7 grid set by the network's 7x7 kernel."""
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 2, 7)).double()
    graph = to_neural_graph(model)
    assert graph.kernel_shape == (7, 7) and graph.edge_attr.shape[1] == 49
    src, dst, attr = _edges_of(graph, 1)
    assert len(src) == 2 * 3
    centre = [16, 17, 18, 23, 24, 25, 30, 31, 32]  # rows 2-4, columns 2-4 of 7x7
    mask = graph.edge_mask[graph.edge_layer == 1]
    assert mask[0].nonzero().view(-1).tolist() == centre and (mask == mask[0]).all()
    assert torch.equal(attr[:, centre], model[0].weight.detach()[dst, src].reshape(-1, 9))
    src, dst, attr = _edges_of(graph, 2)
    assert graph.edge_mask[graph.edge_layer == 2].all()
    assert torch.equal(attr, model[2].weight.detach()[dst, src].reshape(-1, 49))


@pytest.mark.parametrize(("kernel", "grid", "places"), [
    (3, 7, [2, 3, 4]), (2, 7, [2, 3]), (4, 7, [1, 2, 3, 4]), (1, 4, [1]), (5, 5, [0, 1, 2, 3, 4]),
])
def test_kernel_placement_1d(kernel: int, grid: int, places: list[int]) -> None:
    """Kernel k in a grid g starts at (g - k) // 2 (even sizes: one more cell after it)."""
    model = nn.Sequential(nn.Conv1d(1, 2, kernel), nn.Conv1d(2, 1, 1)).double()
    graph = to_neural_graph(model, kernel_shape=(grid,))
    src, dst, attr = _edges_of(graph, 1)
    mask = graph.edge_mask[graph.edge_layer == 1]
    assert mask[0].nonzero().view(-1).tolist() == places and (mask == mask[0]).all()
    assert torch.equal(attr[:, places], model[0].weight.detach()[dst, src])
    assert graph.edge_mask[graph.edge_layer == 2][0].nonzero().view(-1).tolist() == \
        [(grid - 1) // 2]


def test_kernel_shape_argument() -> None:
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                          nn.Flatten(), nn.Linear(12, 2)).double().eval()
    x = torch.randn(2, 2, 6, 6)
    graph = to_neural_graph(model)
    assert graph.kernel_shape == (3, 3)  # the conv's kernel; the flatten map is 2x2
    wide = to_neural_graph(model, kernel_shape=(5, 5))
    assert wide.kernel_shape == (5, 5) and wide.edge_attr.shape == (graph.num_edges, 25)
    check_fields(wide)
    assert_mask_marks_kernels(wide)
    # The same entries, moved one cell in: a 3x3 grid sits at rows/columns 1-3 of 5x5.
    inner = wide.edge_attr.view(-1, 5, 5)[:, 1:4, 1:4].reshape(-1, 9)
    assert torch.equal(inner, graph.edge_attr)
    assert_runs_exactly(model, x, wide)
    assert_same_state(from_neural_graph(to_neural_graph(model, batchnorm="nodes",
                                                        kernel_shape=(5, 5)), model), model)
    mlp = to_neural_graph(nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1)), kernel_shape=(3, 3))
    assert mlp.edge_mask.nonzero()[:, 1].unique().tolist() == [4]  # the centre of 3x3
    for bad in [(2, 2), (3,), (3, 3, 3)]:
        with pytest.raises(ValueError, match="kernel_shape"):
            to_neural_graph(model, kernel_shape=bad)


def test_grouped_convolution_edges() -> None:
    """Groups: channel j feeds channel i only inside a group; a depthwise conv is a
    matching of channels."""
    model = nn.Sequential(nn.Conv2d(4, 6, 3, groups=2), nn.Conv2d(6, 6, 1, groups=6)).double()
    graph = to_neural_graph(model)
    src, dst, attr = _edges_of(graph, 1)
    assert len(src) == 6 * 2 and (src // 2 == dst // 3).all()
    assert torch.equal(attr.view(-1, 3, 3), model[0].weight.detach()[dst, src % 2])
    src, dst, _ = _edges_of(graph, 2)
    assert torch.equal(src, dst) and len(src) == 6


def test_flatten_edges_cover_the_map() -> None:
    """A Linear after flattening a 2x2 map: one edge per (channel, output) with the
    weight's 2x2 block as a kernel."""
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(), nn.Linear(12, 4)).double()
    graph = to_neural_graph(model)
    assert graph.layer_layout == [1, 3, 4]
    src, dst, attr = _edges_of(graph, 2)
    assert len(src) == 3 * 4
    assert graph.edge_type[graph.edge_layer == 2].unique().tolist() == \
        [EDGE_TYPES.index("flatten")]
    weight = model[2].weight.detach().view(4, 3, 2, 2)
    block = attr.view(-1, 3, 3)[:, :2, :2]  # a 2x2 kernel in a 3x3 grid starts at 0
    assert torch.equal(block, weight[dst, src])


def test_residual_edges_are_identity_kernels() -> None:
    model = ResidualNet().double().eval()
    graph = to_neural_graph(model)
    residual = graph.edge_type == EDGE_TYPES.index("residual")
    assert residual.any()
    src, dst = graph.edge_index[:, residual]
    assert torch.equal(graph.node_position[src], graph.node_position[dst])
    centre = math.prod(graph.kernel_shape) // 2
    expected = torch.zeros(int(residual.sum()), 9)
    expected[:, centre] = 1
    assert torch.equal(graph.edge_attr[residual], expected)


def test_batchnorm_as_node_features() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, eps=1e-3), nn.ReLU(),
                          nn.Linear(4, 2)).double()
    randomize_batchnorm(model, torch.Generator().manual_seed(3))
    model.eval()
    graph = to_neural_graph(model, batchnorm="nodes")
    bn = model[1]
    assert graph.x.shape == (9, 5)
    assert torch.equal(graph.x[3:7], torch.stack([model[0].bias, bn.weight, bn.bias,
                                                  bn.running_mean, bn.running_var], 1))
    assert torch.equal(graph.x[7:, 1:], torch.tensor([[1.0, 0.0, 0.0, 1.0]] * 2))
    assert graph.layers[1]["batchnorm"] == {"path": "1", "eps": 1e-3, "folded": False}
    folded = to_neural_graph(model)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    assert torch.allclose(folded.x[3:7, 0], (model[0].bias - bn.running_mean) * scale
                          + bn.bias, rtol=0, atol=1e-14)


def test_batch_of_different_architectures() -> None:
    """Graphs of different networks padded to one kernel_shape collate into a Batch whose
    examples are the graphs, run exactly, and whose snapshots cover every edge once."""
    nets = [SIREN().double(), SMALL_NETWORKS["grouped and depthwise convolutions"][0]().double(),
            ResidualNet().double(), FunctionalNet().double()]
    inputs = [torch.rand(4, 2), torch.randn(2, 4, 8, 8), torch.randn(2, 3, 8, 8),
              torch.randn(2, 5)]
    graphs = [to_neural_graph(net.eval(), kernel_shape=(7, 7)) for net in nets]
    batch = Batch.from_data_list(graphs)
    assert batch.num_graphs == 4 and batch.edge_attr.shape[1] == 49
    assert batch.num_nodes == sum(g.num_nodes for g in graphs)
    assert torch.equal(batch.batch, torch.repeat_interleave(
        torch.arange(4), torch.tensor([g.num_nodes for g in graphs])))
    offsets = torch.tensor([0] + [g.num_nodes for g in graphs[:-1]]).cumsum(0)
    assert torch.equal(batch.edge_index, torch.cat(
        [g.edge_index + o for g, o in zip(graphs, offsets)], 1))
    assert batch.layer_layout == [g.layer_layout for g in graphs]
    for i, (net, x, graph) in enumerate(zip(nets, inputs, graphs)):
        example = batch.get_example(i)
        for key in ("x", "edge_index", "edge_attr", "edge_mask", "edge_type", "edge_layer",
                    "node_layer", "node_type", "node_activation"):
            assert torch.equal(example[key], graph[key]), key
        assert_runs_exactly(net, x, example)
    steps = list(layer_snapshots(batch))
    assert len(steps) == max(len(g.layer_layout) for g in graphs) - 1
    assert sum(s.edge_index.shape[1] for s in steps) == batch.edge_index.shape[1]
    for snapshot in steps:
        assert (batch.node_layer[snapshot.edge_index[1]] == snapshot.step).all()
        assert (batch.node_layer[snapshot.edge_index[0]] < snapshot.step).all()


# --------------------------------------------------------------------------- errors


class _Softmaxed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), nn.Softmax(1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class _Concatenates(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.a(x), self.b(x)], 1)


class _ScaledAdd(_Concatenates):
    def forward(self, x: Tensor) -> Tensor:
        return torch.add(self.a(x), self.b(x), alpha=2.0)


class _OffsetBeforeBatchNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.bn = nn.Linear(3, 4), nn.BatchNorm1d(4)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.fc(x) + 1.0)


@pytest.mark.parametrize(("model", "match"), [
    (_Softmaxed(), r"Softmax at 'body\.1\.1'"),
    (nn.Sequential(nn.Conv3d(1, 2, 3), nn.Flatten()), r"Conv3d at '0'"),
    (nn.Sequential(nn.Conv1d(1, 2, 3), nn.AdaptiveMaxPool1d(2)), r"AdaptiveMaxPool1d at '1'"),
    (nn.Sequential(nn.Linear(2, 2), nn.GELU(approximate="tanh")), r"GELU.*'1'"),
    (_Concatenates(), "cat"),
    (_ScaledAdd(), "alpha"),
    (nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), r"BatchNorm at '1' is in training"),
    (nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False)).eval(),
     r"BatchNorm at '1' needs running statistics"),
    (nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, affine=False)).eval(),
     r"BatchNorm at '1' needs running statistics and affine"),
    (nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.BatchNorm1d(4)).eval(),
     r"BatchNorm at '2' must directly follow"),
    (_OffsetBeforeBatchNorm().eval(), r"BatchNorm at 'bn' follows a constant"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 3 * 5, 2)),
     "only square maps"),
])
def test_unsupported_model_raises_type_error(model: nn.Module, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        to_neural_graph(model)


def test_template_mismatch_raises_value_error() -> None:
    graph = to_neural_graph(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)))
    for template in (nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)),
                     nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(),
                                   nn.Linear(4, 2)),
                     nn.Sequential(nn.Linear(3, 2))):
        with pytest.raises(ValueError, match="from_neural_graph"):
            from_neural_graph(graph, template)
    with pytest.raises(ValueError, match="batchnorm"):
        to_neural_graph(SIREN(), batchnorm="keep")


def test_run_rejects_a_wrong_input() -> None:
    graph = to_neural_graph(SIREN())
    with pytest.raises(ValueError, match="input layer has 2 neurons"):
        run_neural_graph(graph, torch.rand(5, 3))


def test_batch_keeps_node_position_local() -> None:
    """``Batch`` offsets attributes named ``*index*``; a neuron's position inside its layer
    must stay local in a batch."""
    graphs = [to_neural_graph(SIREN()), to_neural_graph(nn.Sequential(nn.Linear(3, 2)))]
    batch = Batch.from_data_list(graphs)
    assert torch.equal(batch.node_position, torch.cat([g.node_position for g in graphs]))
