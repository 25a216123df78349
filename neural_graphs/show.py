"""`python -m neural_graphs.show MODEL --out FILE.png`: draw a network's neural graph.

Layout: layers left to right (x = layer index, input at 0); neuron ``i`` of a layer of
``n`` neurons at height ``y = (i + 0.5) / n``, so every layer spans the same height
whatever its width. A residual edge joins same-index neurons, so it is a horizontal line
skipping layers.

Colour: every edge is coloured by its weight on a diverging map centred on 0 (blue
negative, red positive), clipped at the 99th percentile of ``|w|`` over the drawn Linear,
conv and flatten edges (identity edges, residual 1s and LayerNorm scales, saturate). A
kernel edge (conv, flatten) is coloured by the **mean** of its kernel entries (the entries
of ``edge_mask``: its response to a constant input, over the kernel size), or with
``--kernel centre`` by its centre entry; a Linear, residual or LayerNorm edge by its
single weight; an attention edge (no weight) is 0. Neurons are coloured by their bias.
Strong edges are drawn last (on top).

Big networks: at most ``--max-edges`` edges are drawn, sampled uniformly at random inside
each layer; every layer gets an equal share of the budget (layers with fewer edges keep
them all, and hand what they do not use to the others), so a 16-million-edge classifier
does not crowd out the convolutions before it. The title says how many were drawn.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from neural_graphs.graph import EDGE_TYPES, to_neural_graph
from neural_graphs.inr import SIREN
from utils.atomic import atomic_write
from utils.cli import HelpFormatter, positive_int

__all__ = ["draw_neural_graph", "edge_colour_values", "main", "model_by_name", "sample_edges"]

MODEL_NAMES = ("mlp", "cwru", "vgg11", "resnet18", "vit", "siren")
_LEARNED = ("linear", "conv", "flatten")


def model_by_name(name: str) -> nn.Module:
    """A freshly initialised network: one of the repository's five, or a SIREN 2-32-32-1."""
    if name == "siren":
        return SIREN()
    from models import MODELS

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")
    return MODELS[name].standard()


def sample_edges(edge_layer: Tensor, max_edges: int,
                 generator: torch.Generator | None = None) -> Tensor:
    """Indices of at most ``max_edges`` edges, an equal share per layer (see the module
    docstring), sorted.

    Shapes:
        - edge_layer: :math:`(E,)`
        - output: :math:`(\\min(E, \\text{max\\_edges}),)`
    """
    if max_edges < 1:
        raise ValueError(f"max_edges must be at least 1, got {max_edges}")
    if edge_layer.numel() <= max_edges:
        return torch.arange(edge_layer.numel())
    layers, counts = torch.unique(edge_layer, return_counts=True)
    order = torch.argsort(counts)
    budget, left = max_edges, len(layers)
    keep = []
    for i in order.tolist():
        share = min(int(counts[i]), budget // left)
        budget, left = budget - share, left - 1
        where = (edge_layer == layers[i]).nonzero().view(-1)
        pick = torch.randperm(where.numel(), generator=generator)[:share]
        keep.append(where[pick])
    return torch.sort(torch.cat(keep)).values


def edge_colour_values(graph: Data, kernel: str = "mean") -> Tensor:
    """One value per edge: ``"mean"``, the mean of its kernel entries, or ``"centre"``,
    the entry at the centre of ``kernel_shape`` (both give the single weight of a Linear,
    residual or LayerNorm edge, which sits there)."""
    if kernel == "centre":  # where a 1-entry kernel sits: (g - 1) // 2 along each axis
        centre = 0
        for g in graph.kernel_shape:
            centre = centre * g + (g - 1) // 2
        return graph.edge_attr[:, centre]
    if kernel != "mean":
        raise ValueError(f"kernel must be 'mean' or 'centre', got {kernel!r}")
    mask = graph.edge_mask
    total = (graph.edge_attr * mask).sum(1)
    return total / mask.sum(1).clamp(min=1)


def _layer_label(layer: dict) -> str:
    name = layer["path"] or layer["kind"]
    if len(name) > 28:
        name = "..." + name[-25:]
    activation = "" if layer["activation"] == "identity" else f", {layer['activation']}"
    return f"{name} ({layer['kind']} {layer['size']}{activation})"


def draw_neural_graph(graph: Data, title: str = "", max_edges: int = 20_000,
                      seed: int = 0, kernel: str = "mean"):  # -> matplotlib Figure
    """A matplotlib figure of ``graph`` (layout and colours: see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize

    layout = list(graph.layer_layout)
    node_layer = graph.node_layer.cpu()
    size = torch.tensor(layout, dtype=torch.float64)[node_layer]
    node_y = (graph.node_position.cpu().double() + 0.5) / size
    node_x = node_layer.double()

    generator = torch.Generator().manual_seed(seed)
    edges = sample_edges(graph.edge_layer.cpu(), max_edges, generator)
    src, dst = graph.edge_index.cpu()[:, edges]
    values = edge_colour_values(graph, kernel)[edges].detach().cpu().double()
    # The colour scale comes from the learned weights (Linear, conv, flatten edges), not
    # from identity edges (residual 1s, LayerNorm scales near 1), which are clipped.
    learned = torch.isin(graph.edge_type.cpu()[edges],
                         torch.tensor([EDGE_TYPES.index(k) for k in _LEARNED]))
    scale = values[learned] if learned.any() else values
    limit = float(torch.quantile(scale.abs().float(), 0.99)) if scale.numel() else 1.0
    order = torch.argsort(values.abs())  # strong edges on top
    src, dst, values = src[order], dst[order], values[order]
    segments = torch.stack([torch.stack([node_x[src], node_y[src]], 1),
                            torch.stack([node_x[dst], node_y[dst]], 1)], 1)
    norm = Normalize(-(limit or 1.0), limit or 1.0)
    cmap = plt.get_cmap("coolwarm")

    width = min(max(3.0 + 0.45 * len(layout), 8.0), 40.0)
    fig, ax = plt.subplots(figsize=(width, 7.0), layout="constrained")
    alpha = min(0.9, max(0.08, 3000.0 / max(len(values), 1)))
    lines = LineCollection(segments.numpy(), array=values.numpy(), cmap=cmap, norm=norm,
                           linewidths=0.4, alpha=alpha)
    ax.add_collection(lines)
    bias = graph.x[:, 0].detach().cpu().double()
    marker = min(30.0, max(1.0, 3000.0 / max(layout)))
    ax.scatter(node_x.numpy(), node_y.numpy(), c=bias.numpy(), cmap=cmap,
               norm=Normalize(-float(bias.abs().max()) or -1.0, float(bias.abs().max()) or 1.0),
               s=marker, edgecolors="black", linewidths=0.2, zorder=3)
    ax.set_xlim(-0.5, len(layout) - 0.5)
    ax.set_ylim(0, 1)
    ax.set_xticks(range(len(layout)))
    ax.set_xticklabels([_layer_label(layer) for layer in graph.layers], rotation=90,
                       fontsize=7)
    ax.set_yticks([])
    ax.set_ylabel("neuron (index / layer width)")
    for spine in ("top", "right", "left"):
        ax.spines[spine].set_visible(False)
    colorbar = fig.colorbar(lines, ax=ax, shrink=0.8, pad=0.01)
    colorbar.solids.set_alpha(1.0)
    colorbar.set_label(f"edge weight (kernel edges: {kernel} of the kernel)")
    drawn = f"{len(values):,} of {graph.num_edges:,} edges drawn" \
        if len(values) < graph.num_edges else f"{graph.num_edges:,} edges"
    ax.set_title(f"{title}{': ' if title else ''}{graph.num_nodes:,} neurons in "
                 f"{len(layout)} layers, {drawn}; kernel grid "
                 f"{'x'.join(map(str, graph.kernel_shape))}; node colour: bias", fontsize=9)
    return fig


def _load_checkpoint(model: nn.Module, path: Path) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    model.load_state_dict(state)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m neural_graphs.show",
        description="Draw a network's neural graph: layers left to right, one dot per "
        "neuron (coloured by its bias), one line per weight or kernel (coloured by the "
        "weight; a kernel by the mean of its entries), subsampled per layer for big "
        "networks.",
        formatter_class=HelpFormatter)
    parser.add_argument("model", choices=MODEL_NAMES, metavar="MODEL",
                        help=f"the network: one of {', '.join(MODEL_NAMES)} (siren: 2-32-32-1)")
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--max-edges", type=positive_int, default=20_000,
                        help="draw at most this many edges (an equal share per layer)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the network's initialisation and of the edge sample")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="load the network's weights from this state_dict file (or a "
                        "training checkpoint holding one under 'model')")
    parser.add_argument("--kernel", choices=("mean", "centre"), default="mean",
                        help="the value that colours a kernel edge: the mean of its "
                        "entries, or its centre entry")
    parser.add_argument("--dpi", type=positive_int, default=150, help="resolution of the PNG")
    return parser


def main(argv: Sequence[str] | None = None,
         build: Callable[[str], nn.Module] = model_by_name) -> int:
    args = build_parser().parse_args(argv)
    torch.manual_seed(args.seed)
    model = build(args.model).eval()
    if args.checkpoint is not None:
        _load_checkpoint(model, args.checkpoint)
    try:
        graph = to_neural_graph(model)
    except TypeError as err:
        print(f"{args.model}: {err}", file=sys.stderr)
        return 1
    fig = draw_neural_graph(graph, title=args.model, max_edges=args.max_edges, seed=args.seed,
                            kernel=args.kernel)
    import matplotlib.pyplot as plt

    try:
        with atomic_write(args.out, "wb") as f:
            fig.savefig(f, format="png", dpi=args.dpi)
    finally:
        plt.close(fig)
    print(f"wrote {args.out} ({graph.num_nodes:,} neurons, {graph.num_edges:,} edges)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
