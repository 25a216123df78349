"""The reference NG-T (``RelationalTransformer`` of mkofinas/neural-graphs,
``nn/relational_transformer.py`` with ``nn/graph_constructor.py``) as our
:class:`~neural_graphs.encoders.NGTransformer`.

:data:`REFERENCE_KWARGS` is the configuration of ours that computes the reference's
function in the configuration of its notebook ``notebooks/mnist-inr-classification.ipynb``
(node 64, edge 32, attention 128, 4 layers, 8 heads, Fourier features of 128 frequencies with
sigma 1, per-layer MNIST statistics, position embeddings, "cat" readout of the output
neuron, no probes, no CLS token; the same as
``experiments/inr_classification/configs/model/rtransformer.yaml`` with ``data=mnist``):
376,586 parameters in both. :func:`from_reference_state_dict` maps the reference's
``state_dict`` onto it. Correspondence (reference -> ours):

* ``construct_graph.proj_bias.0.b`` / ``proj_weight.0.b`` ``[R, 1]`` -> the Fourier
  frequencies ``embed.node_b`` / ``embed.edge_b`` (same layout; the embedding is NG-GNN's
  too, :class:`~neural_graphs.encoders.embeddings.ConstructorEmbedding`);
  ``proj_bias.1`` / ``proj_weight.1`` -> ``embed.node_proj`` / ``embed.edge_proj``;
  ``proj_node_in`` / ``proj_edge_in`` -> ``node_in`` / ``edge_in``; the rows of
  ``pos_embed`` (one per input neuron, per hidden layer, per output neuron) ->
  ``embed.input_position`` / ``hidden_position`` / ``output_position``.
* ``self_attn.qkv_node`` / ``qkv_edge``: the reference splits heads first and then
  q, k, v (and the value's additive and multiplicative edge terms), ours the other way
  round: rows permuted; its additive value term -> ``attention.edge_v``.
* ``edge_mlp0.lin0_e`` (on ``[e_ij, e_ji]``) -> ``edge_pair`` + ``edge_reverse`` (its two
  column halves); ``lin0_s`` / ``lin0_t`` / ``lin1`` -> ``edge_source`` / ``edge_target``
  / ``edge_out``; ``edge_mlp1`` -> ``edge_mlp``; ``eln0`` / ``eln1`` -> ``edge_norm0`` /
  ``edge_norm1``; ``lin0`` -> ``attn_out``; ``node_ln*`` -> ``node_norm*``; ``proj_out``
  -> ``head``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from neural_graphs.encoders.reference.common import (
    MNIST_LAYER_LAYOUT,
    MNIST_STATS,
    check_state_dict,
    strip_prefixes,
)
from neural_graphs.encoders.transformer import NGTransformer

__all__ = ["REFERENCE_KWARGS", "from_reference_state_dict", "reference_shapes"]

#: ``NGTransformer(10, **REFERENCE_KWARGS)`` computes the notebook's ``RelationalTransformer``
REFERENCE_KWARGS: dict[str, Any] = {
    "node_dim": 64, "edge_dim": 32, "num_layers": 4, "heads": 8,
    "attn_dim": 128, "node_hidden": 128, "edge_hidden": 64, "head_hidden": 128,
    "readout": "cat", "rff_dim": 128, "rff_sigma": 1.0, "num_probes": 0,
    "max_layers": len(MNIST_LAYER_LAYOUT), "update_edges": True, "modulate_v": True,
    "embedding": "reference", "input_stats": MNIST_STATS, "attn_scale": "total",
    "edge_node_bias": True,
}


def _size(config: Mapping[str, Any], key: str) -> int:
    return int(config.get(key, {"out_dim": 10, **REFERENCE_KWARGS}[key]))


def reference_shapes(config: Mapping[str, Any] = REFERENCE_KWARGS,
                     layer_layout: Sequence[int] = MNIST_LAYER_LAYOUT
                     ) -> dict[str, tuple[int, ...]]:
    """The keys and shapes of the reference ``state_dict`` for our ``config``
    (:class:`NGTransformer` keyword arguments, ``out_dim`` 10 unless given) and the
    networks' ``layer_layout`` (neurons per layer)."""
    dn, de = _size(config, "node_dim"), _size(config, "edge_dim")
    da, rff = _size(config, "attn_dim"), _size(config, "rff_dim")
    hn, he = _size(config, "node_hidden"), _size(config, "edge_hidden")
    ho, out = _size(config, "head_hidden"), _size(config, "out_dim")
    layers = _size(config, "num_layers")
    modulate = bool(config.get("modulate_v", True))
    update = bool(config.get("update_edges", True))
    n_pos = layer_layout[0] + len(layer_layout) - 2 + layer_layout[-1]
    shapes: dict[str, tuple[int, ...]] = {"construct_graph.pos_embed": (n_pos, dn)}
    for name, width in (("proj_weight", de), ("proj_bias", dn)):
        shapes[f"construct_graph.{name}.0.b"] = (rff, 1)
        shapes[f"construct_graph.{name}.1.weight"] = (width, 2 * rff)
        shapes[f"construct_graph.{name}.1.bias"] = (width,)
    for name, width in (("proj_node_in", dn), ("proj_edge_in", de)):
        shapes[f"construct_graph.{name}.weight"] = (width, width)
        shapes[f"construct_graph.{name}.bias"] = (width,)
    for i in range(layers):
        p = f"layers.{i}."
        shapes |= {p + "self_attn.qkv_node.weight": (3 * da, dn),
                   p + "self_attn.qkv_edge.weight": ((4 if modulate else 3) * da, de),
                   p + "self_attn.proj_out.weight": (dn, da),
                   p + "self_attn.proj_out.bias": (dn,),
                   p + "lin0.weight": (dn, dn), p + "lin0.bias": (dn,),
                   p + "node_mlp.0.weight": (hn, dn), p + "node_mlp.2.weight": (dn, hn),
                   p + "node_mlp.2.bias": (dn,)}
        for norm in ("node_ln0", "node_ln1"):
            shapes |= {p + f"{norm}.weight": (dn,), p + f"{norm}.bias": (dn,)}
        if update and i < layers - 1:
            e = p + "edge_updates."
            shapes |= {e + "edge_mlp0.lin0_e.weight": (he, 2 * de),
                       e + "edge_mlp0.lin0_e.bias": (he,),
                       e + "edge_mlp0.lin0_s.weight": (he, dn),
                       e + "edge_mlp0.lin0_s.bias": (he,),
                       e + "edge_mlp0.lin0_t.weight": (he, dn),
                       e + "edge_mlp0.lin0_t.bias": (he,),
                       e + "edge_mlp0.lin1.weight": (de, he), e + "edge_mlp0.lin1.bias": (de,),
                       e + "edge_mlp1.0.weight": (he, de), e + "edge_mlp1.2.weight": (de, he),
                       e + "edge_mlp1.2.bias": (de,)}
            for norm in ("eln0", "eln1"):
                shapes |= {e + f"{norm}.weight": (de,), e + f"{norm}.bias": (de,)}
    shapes |= {"proj_out.0.weight": (ho, layer_layout[-1] * dn), "proj_out.0.bias": (ho,),
               "proj_out.2.weight": (out, ho), "proj_out.2.bias": (out,)}
    return shapes


def _what(config: Mapping[str, Any], layer_layout: Sequence[int]) -> str:
    return (f"the reference RelationalTransformer (node {_size(config, 'node_dim')}, edge "
            f"{_size(config, 'edge_dim')}, {_size(config, 'num_layers')} layers, no CLS "
            f"token or probes, 'cat' readout) for networks of layout {list(layer_layout)}")


def _heads_first(weight: Tensor, heads: int, parts: int) -> list[Tensor]:
    """The reference's ``[heads * parts * d, C]`` rows (heads split first) as ``parts``
    tensors of ``[heads * d, C]`` rows (ours: head-major inside each part)."""
    split = weight.reshape(heads, parts, -1, weight.shape[-1])
    return [split[:, p].reshape(-1, weight.shape[-1]) for p in range(parts)]


def from_reference_state_dict(state_dict: Mapping[str, Tensor],
                              layer_layout: Sequence[int] = MNIST_LAYER_LAYOUT,
                              **config: Any) -> NGTransformer:
    """An :class:`~neural_graphs.encoders.NGTransformer` computing the function of the
    reference ``RelationalTransformer`` whose ``state_dict`` is given.

    Args:
        state_dict: the reference model's ``state_dict()`` (``module.`` /
            ``_orig_mod.`` prefixes allowed).
        layer_layout: neurons per layer of the networks it reads (its ``layer_layout``;
            needed to split ``pos_embed``; ``max_layers`` is its length).
        **config: keyword arguments of :class:`NGTransformer` overriding
            :data:`REFERENCE_KWARGS` (e.g. ``input_stats=None`` for a reference built
            without ``stats``); the sizes must match the state_dict. ``out_dim`` is read
            from it.

    Raises:
        ValueError: naming the first key missing, unexpected or of the wrong shape.
    """
    state_dict = strip_prefixes(state_dict)
    head = state_dict.get("proj_out.2.weight")
    config = {"out_dim": head.shape[0] if isinstance(head, Tensor) and head.dim() else 10,
              **REFERENCE_KWARGS, "max_layers": len(layer_layout), **config}
    check_state_dict(state_dict, reference_shapes(config, layer_layout),
                     _what(config, layer_layout))
    heads, layers = _size(config, "heads"), _size(config, "num_layers")
    de = _size(config, "edge_dim")
    sd = {key: value.detach().clone() for key, value in state_dict.items()}
    ours: dict[str, Tensor] = {}
    g = "construct_graph."
    ours["embed.node_b"] = sd[g + "proj_bias.0.b"]
    ours["embed.edge_b"] = sd[g + "proj_weight.0.b"]
    for ref, our in (("proj_bias.1", "embed.node_proj"), ("proj_weight.1", "embed.edge_proj"),
                     ("proj_node_in", "node_in"), ("proj_edge_in", "edge_in")):
        for kind in ("weight", "bias"):
            ours[f"{our}.{kind}"] = sd[f"{g}{ref}.{kind}"]
    n_in, n_out = layer_layout[0], layer_layout[-1]
    pos = sd[g + "pos_embed"]
    ours["embed.input_position.weight"] = pos[:n_in]
    ours["embed.hidden_position.weight"] = pos[n_in:pos.shape[0] - n_out]
    ours["embed.output_position.weight"] = pos[pos.shape[0] - n_out:]
    renames = {"self_attn.proj_out": "attention.out", "lin0": "attn_out",
               "node_ln0": "node_norm0", "node_ln1": "node_norm1",
               "edge_updates.edge_mlp0.lin0_s": "edge_source",
               "edge_updates.edge_mlp0.lin0_t": "edge_target",
               "edge_updates.edge_mlp0.lin1": "edge_out",
               "edge_updates.edge_mlp1.0": "edge_mlp.0", "edge_updates.edge_mlp1.2": "edge_mlp.2",
               "edge_updates.eln0": "edge_norm0", "edge_updates.eln1": "edge_norm1",
               "node_mlp.0": "node_mlp.0", "node_mlp.2": "node_mlp.2"}
    for i in range(layers):
        r, o = f"layers.{i}.", f"layers.{i}."
        for ref, our in renames.items():
            for kind in ("weight", "bias"):
                if r + f"{ref}.{kind}" in sd:
                    ours[o + f"{our}.{kind}"] = sd[r + f"{ref}.{kind}"]
        ours[o + "attention.node_qkv.weight"] = torch.cat(
            _heads_first(sd[r + "self_attn.qkv_node.weight"], heads, 3))
        edge = sd[r + "self_attn.qkv_edge.weight"]
        parts = _heads_first(edge, heads, edge.shape[0] // _size(config, "attn_dim"))
        # reference parts: q, k, additive v (, multiplicative v); ours: q, k (, mult.) + add.
        ours[o + "attention.edge_qk.weight"] = torch.cat([parts[0], parts[1], *parts[3:]])
        ours[o + "attention.edge_v.weight"] = parts[2]
        lin0_e = r + "edge_updates.edge_mlp0.lin0_e."
        if lin0_e + "weight" in sd:
            ours[o + "edge_pair.weight"] = sd[lin0_e + "weight"][:, :de]
            ours[o + "edge_reverse.weight"] = sd[lin0_e + "weight"][:, de:]
            ours[o + "edge_pair.bias"] = sd[lin0_e + "bias"]
    for ref, our in (("proj_out.0", "head.0"), ("proj_out.2", "head.2")):
        for kind in ("weight", "bias"):
            ours[f"{our}.{kind}"] = sd[f"{ref}.{kind}"]
    dtype = next(iter(state_dict.values())).dtype
    model = NGTransformer(**config).to(dtype)
    base = model.state_dict()
    left = sorted(set(base) - set(ours) - {"kernels.grid"})
    if left or set(ours) - set(base):
        raise RuntimeError(f"reference mapping out of date with NGTransformer: unmapped "
                           f"{left}, unknown {sorted(set(ours) - set(base))}")
    model.load_state_dict({**base, **ours})
    return model
