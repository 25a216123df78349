"""The published encoders' parameters mapped onto ours.

One module per reference implementation; each maps that reference's ``state_dict`` onto
the configuration of our encoder that computes the same function (tested against the
reference's own outputs, ``tests/fixtures/reference``). What they share (the MNIST INR
statistics and layout, the check of a reference ``state_dict``) is in
:mod:`~neural_graphs.encoders.reference.common`; :func:`build_reference_encoder` builds
each encoder, freshly initialised, in its reference configuration for a training job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from neural_graphs.encoders.dng import DNGEncoder
from neural_graphs.encoders.gnn import NGGNN
from neural_graphs.encoders.reference.dng import reference_kwargs
from neural_graphs.encoders.reference.ngnn import reference_nggnn_kwargs
from neural_graphs.encoders.reference.ngt import REFERENCE_KWARGS as NGT_REFERENCE_KWARGS
from neural_graphs.encoders.transformer import NGTransformer

__all__ = ["REFERENCE_ENCODER_NAMES", "build_reference_encoder"]

#: the encoders with a reference configuration
REFERENCE_ENCODER_NAMES = ("ngnn", "ngt", "dng")


def build_reference_encoder(name: str, out_dim: int, layer_layout: Sequence[int],
                            layer_stats: Mapping[str, Sequence[float]] | None) -> nn.Module:
    """The encoder ``name`` in the configuration that computes its reference's function,
    freshly initialised, for networks of ``layer_layout`` (neurons per layer).

    ``ngnn``: ``GNNForClassification`` with the INR PNA configuration of
    ``mnist_cls_pna.sh``; ``ngt``: the ``RelationalTransformer`` of the MNIST notebook;
    ``dng``: the official ``DynamicNeuralGNN`` with its classifier. ``layer_stats`` (one
    number per layer of weights, the references' ``stats``) standardise the weights and
    biases of NG-GNN and NG-T, as their configurations do; DNG reads them raw.

    Raises:
        ValueError: ``name`` has no reference configuration, or ``layer_stats`` do not
            give one number per layer of weights.
    """
    if name not in REFERENCE_ENCODER_NAMES:
        raise ValueError(f"no reference configuration for the encoder '{name}'; there is one "
                         f"for {', '.join(REFERENCE_ENCODER_NAMES)}")
    layers = len(layer_layout) - 1
    if layer_stats is not None and any(len(v) != layers for v in layer_stats.values()):
        raise ValueError(f"layer_stats need one number per layer of weights ({layers} for "
                         f"the layout {tuple(layer_layout)}), got "
                         f"{ {k: len(v) for k, v in layer_stats.items()} }")
    if name == "ngnn":
        return NGGNN(out_dim, **reference_nggnn_kwargs(layer_layout, layer_stats))
    if name == "ngt":
        return NGTransformer(out_dim, **{**NGT_REFERENCE_KWARGS, "max_layers": len(layer_layout),
                                         "input_stats": layer_stats})
    return DNGEncoder(out_dim, **reference_kwargs(num_layers=layers))
