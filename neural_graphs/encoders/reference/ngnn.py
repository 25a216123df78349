"""The reference NG-GNN (``GNNForClassification`` of mkofinas/neural-graphs, ``nn/gnn.py``
with ``nn/graph_constructor.py``) as our :class:`~neural_graphs.encoders.NGGNN`.

:data:`REFERENCE_NGGNN_KWARGS` is the configuration of ours that computes the reference's
function in its INR PNA configuration: ``experiments/inr_classification/configs/model/
pna.yaml`` with ``data=mnist`` and the overrides of ``scripts/mnist_cls_pna.sh`` (no
probes, position embeddings, reversed edges, dropout 0.2): hidden 32, 4 PNA layers
(aggregators mean, min, max, std; scalers identity, amplification; edge-modulated
messages; edge updates between layers; graph-mode LayerNorm and SiLU), Fourier features
of 128 frequencies with sigma 3, per-layer MNIST statistics, "cat" readout of the output
neuron: 92,010 parameters in both. :func:`from_reference_state_dict` maps the
reference's ``state_dict`` onto it. Correspondence (reference -> ours):

* ``construct_graph.proj_bias.0.b`` / ``proj_weight.0.b`` -> ``embed.node_b`` /
  ``embed.edge_b`` (same layout); ``proj_bias.1`` / ``proj_weight.1`` ->
  ``embed.node_proj`` / ``embed.edge_proj``; ``proj_node_in`` / ``proj_edge_in`` ->
  ``node_in`` / ``edge_in``; the rows of ``pos_embed`` (one per input neuron, per hidden
  layer, per output neuron) -> ``embed.input_position`` / ``hidden_position`` /
  ``output_position``.
* ``gnn.convs.i``: ``pre_nns.0.0`` (on ``[x_i, x_j]``) -> ``pre_target`` (first column
  half, and the bias) + ``pre_source`` (second half); ``post_nns.0.0`` -> ``post``;
  ``edge_encoder``, ``lin`` and the degree buffers ``aggr_module.avg_deg_*`` as named.
* ``gnn.norms.i`` -> ``norms.i``; ``gnn.edge_update.i`` (``lin_e``, ``lin_s``, ``lin_t``,
  ``lin1``) -> ``edge_updates.i`` (``lin_e``, ``lin_s``, ``lin_t``, ``out``);
  ``proj_out`` -> ``head``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from neural_graphs.encoders.gnn import NGGNN
from neural_graphs.encoders.reference.common import (
    MNIST_LAYER_LAYOUT,
    MNIST_STATS,
    check_state_dict,
    strip_prefixes,
)

__all__ = ["REFERENCE_NGGNN_KWARGS", "from_reference_state_dict", "map_reference_state_dict",
           "reference_degree_histogram", "reference_nggnn_kwargs", "reference_shapes"]


def reference_degree_histogram(layer_layout: Sequence[int] = MNIST_LAYER_LAYOUT
                               ) -> Tensor:
    """The ``deg`` histogram ``GNNForClassification`` builds its PNA scalers with: each
    layer's neurons at the in-degree of the forward edges (the size of the layer before),
    reversed edges left out even when messages run along them."""
    extended = [0, *layer_layout]
    deg = torch.zeros(max(extended) + 1, dtype=torch.long)
    for index in range(len(extended) - 1):
        deg[extended[index]] += extended[index + 1]
    return deg


def reference_nggnn_kwargs(layer_layout: Sequence[int] = MNIST_LAYER_LAYOUT,
                           layer_stats: Mapping[str, Sequence[float]] | None = MNIST_STATS,
                           hidden: int = 32, num_layers: int = 4, rff_dim: int = 128,
                           rff_sigma: float = 3.0, reverse_edges: bool = True,
                           dropout: float = 0.2) -> dict[str, Any]:
    """:class:`NGGNN` keyword arguments of the reference configuration for networks of
    ``layer_layout`` (pna.yaml + mnist_cls_pna.sh by default; the arguments are the
    reference's ``d_hid``, ``num_layers``, ``sin_emb_dim``, ``inp_factor``,
    ``rev_edge_features``, ``dropout`` and ``stats``)."""
    return {
        "hidden": hidden, "num_layers": num_layers, "readout": "cat", "head_hidden": hidden,
        "rff_dim": rff_dim, "rff_sigma": rff_sigma, "num_probes": 0,
        "max_layers": len(layer_layout), "update_edges": True,
        "deg": reference_degree_histogram(layer_layout),
        "aggregators": ("mean", "min", "max", "std"),
        "scalers": ("identity", "amplification"), "kernel_shape": (1,),
        "features": "reference", "reverse_edges": reverse_edges,
        "layer_stats": None if layer_stats is None else
        {k: list(v) for k, v in layer_stats.items()},
        "norm": "batch", "dropout": dropout, "edge_update_bias": True, "residual": False,
    }


#: ``NGGNN(10, **REFERENCE_NGGNN_KWARGS)`` computes the reference's INR PNA model
REFERENCE_NGGNN_KWARGS: dict[str, Any] = reference_nggnn_kwargs()


def reference_shapes(hidden: int = 32, num_layers: int = 4, out_dim: int = 10,
                     rff_dim: int = 128, reverse_edges: bool = True,
                     layer_layout: Sequence[int] = MNIST_LAYER_LAYOUT
                     ) -> dict[str, tuple[int, ...]]:
    """The keys and shapes of the reference ``state_dict`` (``GNNForClassification``,
    PNA backbone of the INR config without probes)."""
    c = hidden
    rows = layer_layout[0] + len(layer_layout) - 2 + layer_layout[-1]
    shapes: dict[str, tuple[int, ...]] = {
        "construct_graph.pos_embed": (rows, c),
        "construct_graph.proj_weight.0.b": (rff_dim, 3 if reverse_edges else 1),
        "construct_graph.proj_weight.1.weight": (c, 2 * rff_dim),
        "construct_graph.proj_weight.1.bias": (c,),
        "construct_graph.proj_bias.0.b": (rff_dim, 1),
        "construct_graph.proj_bias.1.weight": (c, 2 * rff_dim),
        "construct_graph.proj_bias.1.bias": (c,),
    }
    for name in ("proj_node_in", "proj_edge_in"):
        shapes[f"construct_graph.{name}.weight"] = (c, c)
        shapes[f"construct_graph.{name}.bias"] = (c,)
    head_in = layer_layout[-1] * c
    for index, (fan_in, fan_out) in zip((0, 2, 4), ((head_in, c), (c, c), (c, out_dim))):
        shapes[f"proj_out.{index}.weight"] = (fan_out, fan_in)
        shapes[f"proj_out.{index}.bias"] = (fan_out,)
    for i in range(num_layers):
        p = f"gnn.convs.{i}."
        shapes.update({
            p + "aggr_module.avg_deg_lin": (1,), p + "aggr_module.avg_deg_log": (1,),
            p + "edge_encoder.weight": (2 * c, c), p + "edge_encoder.bias": (2 * c,),
            p + "pre_nns.0.0.weight": (c, 2 * c), p + "pre_nns.0.0.bias": (c,),
            p + "post_nns.0.0.weight": (c, 9 * c), p + "post_nns.0.0.bias": (c,),
            p + "lin.weight": (c, c), p + "lin.bias": (c,)})
    for i in range(num_layers - 1):
        shapes[f"gnn.norms.{i}.weight"] = (c,)
        shapes[f"gnn.norms.{i}.bias"] = (c,)
        for name in ("lin_e", "lin_s", "lin_t", "lin1"):
            shapes[f"gnn.edge_update.{i}.{name}.weight"] = (c, c)
            shapes[f"gnn.edge_update.{i}.{name}.bias"] = (c,)
    return shapes


def _what(layer_layout: Sequence[int]) -> str:
    return (f"the reference GNNForClassification (INR PNA config, layer_layout "
            f"{list(layer_layout)})")


def _infer(state: Mapping[str, Tensor]) -> dict[str, int | bool]:
    """hidden, num_layers, out_dim, rff_dim and reverse_edges read off a reference
    ``state_dict`` (defaults of the INR config where a key is absent; the full check
    follows)."""
    def dim(key: str, axis: int, default: int) -> int:
        value = state.get(key)
        return int(value.shape[axis]) if isinstance(value, Tensor) and \
            value.dim() > axis else default

    layers = sum(1 for k in state if k.startswith("gnn.convs.") and k.endswith(".lin.weight"))
    return {"hidden": dim("construct_graph.proj_node_in.weight", 0, 32),
            "num_layers": layers or 4,
            "out_dim": dim("proj_out.4.weight", 0, 10),
            "rff_dim": dim("construct_graph.proj_bias.0.b", 0, 128),
            "reverse_edges": dim("construct_graph.proj_weight.0.b", 1, 3) == 3}


def map_reference_state_dict(state_dict: Mapping[str, Tensor], encoder: NGGNN,
                             layer_layout: Sequence[int] = MNIST_LAYER_LAYOUT
                             ) -> NGGNN:
    """Load the reference ``state_dict`` into ``encoder`` (an :class:`NGGNN` with
    ``features="reference"`` and ``edge_update_bias=True`` of the same sizes) and return
    it; ``ValueError`` naming the key and shapes if ``state_dict`` is not the reference's
    for networks of ``layer_layout``."""
    state = strip_prefixes(state_dict)
    sizes = _infer(state)
    check_state_dict(state, reference_shapes(layer_layout=layer_layout, **sizes),
                     _what(layer_layout))
    if encoder.feature_kind != "reference":
        raise ValueError("map_reference_state_dict needs an NGGNN with "
                         "features='reference'")
    n_in, n_hidden = layer_layout[0], len(layer_layout) - 2
    pos = state["construct_graph.pos_embed"]
    mapped: dict[str, Tensor] = {
        "embed.input_position.weight": pos[:n_in],
        "embed.hidden_position.weight": pos[n_in:n_in + n_hidden],
        "embed.output_position.weight": pos[n_in + n_hidden:],
        "embed.node_b": state["construct_graph.proj_bias.0.b"],
        "embed.edge_b": state["construct_graph.proj_weight.0.b"],
    }
    renames = {"construct_graph.proj_bias.1.": "embed.node_proj.",
               "construct_graph.proj_weight.1.": "embed.edge_proj.",
               "construct_graph.proj_node_in.": "node_in.",
               "construct_graph.proj_edge_in.": "edge_in.", "proj_out.": "head.",
               "gnn.norms.": "norms.", "gnn.edge_update.": "edge_updates.",
               "gnn.convs.": "convs."}
    c = int(sizes["hidden"])
    for key, value in state.items():
        if key.startswith("construct_graph.") and key.split(".")[1] in (
                "pos_embed", "proj_bias", "proj_weight") and ".1." not in key:
            continue
        new = next(new + key[len(old):] for old, new in renames.items()
                   if key.startswith(old))
        if new.startswith("convs.") and ".pre_nns.0.0." in new:
            base = new.split(".pre_nns")[0]
            if new.endswith("weight"):
                mapped[f"{base}.pre_target.weight"] = value[:, :c]
                mapped[f"{base}.pre_source.weight"] = value[:, c:]
            else:
                mapped[f"{base}.pre_target.bias"] = value
            continue
        new = new.replace(".post_nns.0.0.", ".post.").replace(".lin1.", ".out.")
        mapped[new] = value
    own = encoder.state_dict()
    for key in own:  # what the reference holds outside its state_dict (or not at all)
        if key not in mapped:
            mapped[key] = own[key]
    mapped["degree_calibrated"] = torch.tensor(True)
    mapped = {k: v.detach().clone() for k, v in mapped.items()}
    encoder.load_state_dict(mapped)  # materializes the lazy tables (in float32)
    dtype = pos.dtype
    if dtype != next(encoder.parameters()).dtype:
        encoder.to(dtype).load_state_dict(mapped)
    return encoder


def from_reference_state_dict(state_dict: Mapping[str, Tensor],
                              layer_layout: Sequence[int] = MNIST_LAYER_LAYOUT,
                              layer_stats: Mapping[str, Sequence[float]] | None = MNIST_STATS,
                              dropout: float = 0.2, **overrides: Any) -> NGGNN:
    """Our :class:`NGGNN` in the reference configuration holding the parameters of a
    reference ``GNNForClassification`` ``state_dict`` (sizes read off it).

    Args:
        state_dict: the reference model's ``state_dict`` (``module.`` / ``_orig_mod.``
            prefixes allowed).
        layer_layout: neurons per layer of the networks the reference was built for.
        layer_stats: its graph constructor's ``stats`` (not in its ``state_dict``;
            default the MNIST config's; None: no normalization).
        dropout: its backbone's dropout (0.2 in mnist_cls_pna.sh; training only).
        **overrides: other :class:`NGGNN` arguments (e.g. ``norm="graph"``).

    Raises:
        ValueError: naming the expected key and shape and what arrived, if
            ``state_dict`` is not the reference's.
    """
    state = strip_prefixes(state_dict)
    sizes = _infer(state)
    check_state_dict(state, reference_shapes(layer_layout=layer_layout, **sizes),
                     _what(layer_layout))
    kwargs = reference_nggnn_kwargs(
        layer_layout, layer_stats, hidden=int(sizes["hidden"]),
        num_layers=int(sizes["num_layers"]), rff_dim=int(sizes["rff_dim"]),
        reverse_edges=bool(sizes["reverse_edges"]), dropout=dropout)
    kwargs.update(overrides)
    return map_reference_state_dict(state, NGGNN(int(sizes["out_dim"]), **kwargs),
                                    layer_layout)
