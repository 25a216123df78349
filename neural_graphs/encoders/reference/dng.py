"""The official DNG classifier (dddiowww/DNG, ``dng_models.DNG_Classifier``) mapped onto
:class:`~neural_graphs.encoders.DNGEncoder`.

The reference is the model of ``experiments/inr_classification/classify_encoder.py`` with
its defaults for the MNIST INRs (``--ds mnist``): ``DynamicNeuralGNN`` with 128 Fourier
frequencies of scale 3, a GRU, one pass (``rnn_layer=1``), embedding 128, no dropout, and
the classifier ``Linear(128, 128), ReLU, Dropout(0.5), Linear(128, 128), ReLU,
Dropout(0.5), Linear(128, 10)`` on the flattened states of the last layer's neurons.
:data:`REFERENCE_KWARGS` is our configuration computing the same function;
:func:`from_reference_state_dict` maps a reference ``state_dict`` onto it.

What each reference piece becomes (``i`` the layer, ``0 .. L-1``):

* ``fourier_layer.b`` ``[1, F]``: ``edge_rff.frequencies`` and ``node_rff.frequencies``
  (one transform for weights and biases). The reference's features are
  :math:`[\\sin, \\cos]`, ours :math:`[\\cos, \\sin]`: the two column halves of every
  Linear reading them are swapped.
* ``input_init_node`` ``[n_in, D]``: ``input_state.weight`` (input neurons' states).
* ``edge_lin_0_i``, ``node_lin_0_i``, ``input_lin_0_i``, ``norm_0_i``: ``edge_proj.i``,
  ``source_proj.i`` (with bias), ``node_proj.i``, ``norm.i``.
* ``rnn_0`` (its own ``GRUCell``: ``input_map``, ``hidden_map``, gates r, z, n; shared by
  all layers): ``gru`` (``torch.nn.GRUCell``, the same gates and formula).
* ``classifier.0``, ``.3``, ``.6``: the Linear layers of ``head``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from neural_graphs.encoders.dng import DNGEncoder
from neural_graphs.encoders.reference.common import (
    check_state_dict,
    fail,
    shape_of,
    strip_prefixes,
)

__all__ = ["REFERENCE_KWARGS", "from_reference_state_dict", "reference_kwargs"]

#: ``DNGEncoder(10, **REFERENCE_KWARGS)`` computes the official DNG classifier of the MNIST
#: INRs (2-32-32-1 SIRENs: three layers) in eval mode.
REFERENCE_KWARGS: dict = {
    "hidden": 128, "head_hidden": 128, "rff_dim": 128, "rff_sigma": 3.0, "readout": "cat",
    "kernel_shape": (1,), "num_layers": 3, "node_features": "bias", "message_mlp": False,
    "edge_types": False, "source_bias": True, "dropout": 0.0, "head_dropout": 0.5,
}

_HEAD_LINEARS = (0, 3, 6)  # classifier.{0,3,6}: Linear, ReLU, Dropout, Linear, ...


def reference_kwargs(num_layers: int = 3, hidden: int = 128, rff_dim: int = 128,
                     cls_dim: int = 128, drop: float = 0.0, cls_drop: float = 0.5,
                     rff_sigma: float = 3.0) -> dict:
    """:data:`REFERENCE_KWARGS` for another reference size (``emb_dim``, ``fourier_dim``,
    ``cls_dim``, ``drop``, ``cls_drop``, ``fourier_scale``) or depth of network."""
    return {**REFERENCE_KWARGS, "hidden": hidden, "head_hidden": cls_dim, "rff_dim": rff_dim,
            "rff_sigma": rff_sigma, "num_layers": num_layers, "dropout": drop,
            "head_dropout": cls_drop}


_WHAT = "a dddiowww/DNG DNG_Classifier (GRU, rnn_layer=1, no pe/ae) that this mapping reads"


def _expected_shapes(state_dict: Mapping[str, Tensor]) -> dict[str, tuple[int, ...]]:
    """Every key of the reference ``state_dict`` with its shape, sized from the four keys
    that carry the sizes (``ValueError`` naming the first that is missing or odd)."""
    if "fourier_layer.b" in state_dict:
        fail(_WHAT, "expected keys 'encoder.*' and 'classifier.*', got a bare "
                    "DynamicNeuralGNN state_dict (keys without 'encoder.'): map its "
                    "DNG_Classifier's")
    sizes = {}
    for key, dims in (("encoder.fourier_layer.b", 2), ("encoder.input_init_node", 2),
                      ("classifier.0.weight", 2), ("classifier.6.weight", 2)):
        value = state_dict.get(key)
        if not isinstance(value, Tensor) or value.dim() != dims:
            hint = " (the encoder without its classifier? map the DNG_Classifier's)" \
                if key.startswith("classifier") and "encoder.fourier_layer.b" in state_dict \
                else ""
            fail(_WHAT, f"expected key '{key}' holding a {dims}-d tensor, got "
                        f"{shape_of(value)}{hint}")
        sizes[key] = tuple(value.shape)
    if sizes["encoder.fourier_layer.b"][0] != 1:
        fail(_WHAT, f"expected 'encoder.fourier_layer.b' of shape [1, fourier_dim], got "
                    f"{list(sizes['encoder.fourier_layer.b'])}")
    feats = 2 * sizes["encoder.fourier_layer.b"][1]
    n_in, hidden = sizes["encoder.input_init_node"]
    cls_dim, readout = sizes["classifier.0.weight"]
    classes = sizes["classifier.6.weight"][0]
    layers = sorted(int(m.group(1)) for key in state_dict
                    if (m := re.fullmatch(r"encoder\.edge_lin_0_(\d+)\.weight", key)))
    if not layers or layers != list(range(len(layers))):
        fail(_WHAT, f"expected keys 'encoder.edge_lin_0_0.weight' .. "
                    f"'encoder.edge_lin_0_<L-1>.weight', got layers {layers}")
    shapes: dict[str, tuple[int, ...]] = {
        "encoder.fourier_layer.b": (1, feats // 2), "encoder.input_init_node": (n_in, hidden),
        "encoder.rnn_0.input_map.weight": (3 * hidden, hidden),
        "encoder.rnn_0.input_map.bias": (3 * hidden,),
        "encoder.rnn_0.hidden_map.weight": (3 * hidden, hidden),
        "encoder.rnn_0.hidden_map.bias": (3 * hidden,),
        "classifier.0.weight": (cls_dim, readout), "classifier.0.bias": (cls_dim,),
        "classifier.3.weight": (cls_dim, cls_dim), "classifier.3.bias": (cls_dim,),
        "classifier.6.weight": (classes, cls_dim), "classifier.6.bias": (classes,),
    }
    for i in layers:
        for name, width in (("norm", None), ("node_lin", hidden), ("edge_lin", feats),
                            ("input_lin", feats)):
            shapes[f"encoder.{name}_0_{i}.weight"] = (hidden,) if width is None \
                else (hidden, width)
            shapes[f"encoder.{name}_0_{i}.bias"] = (hidden,)
    return shapes


_UNMAPPED = (("rnn_1", "rnn_layer > 1 (a second pass, which the reference runs only when "
                        "emb_dim = 2 * fourier_dim)"),
             (r"_[1-9]\d*_\d+\.", "rnn_layer > 1"),
             (r"rnn_0\.(input|hidden)_lin\.", "rnn_mode='rnn' (not the GRU)"),
             ("pos_emb", "positional_embedding=True (an ablation)"),
             ("act_emb", "activation_embedding=True (an ablation)"))


def _swap_halves(weight: Tensor) -> Tensor:
    """Columns ``[sin | cos]`` of the reference as ours, ``[cos | sin]``."""
    half = weight.shape[1] // 2
    return torch.cat([weight[:, half:], weight[:, :half]], dim=1)


def from_reference_state_dict(state_dict: Mapping[str, Tensor], *, drop: float = 0.0,
                              cls_drop: float = 0.5, fourier_scale: float = 3.0
                              ) -> DNGEncoder:
    """A :class:`~neural_graphs.encoders.DNGEncoder` computing the reference
    ``DNG_Classifier`` whose ``state_dict`` is given (eval mode: the same logits on the
    same networks; ``encoder.features`` gives the reference encoder's output).

    Sizes (embedding, Fourier frequencies, layers, input neurons, classifier width and
    classes) are read from the ``state_dict``; ``drop``, ``cls_drop`` and
    ``fourier_scale`` (the reference's constructor arguments, not stored) only set the
    training-mode dropout and the documented ``rff_sigma``.

    Raises ``ValueError`` naming the key and shape expected and what arrived when the
    ``state_dict`` is not that of the reference (GRU, ``rnn_layer=1``, no ablations).
    """
    state_dict = strip_prefixes(state_dict)
    shapes = _expected_shapes(state_dict)
    check_state_dict(state_dict, shapes, _WHAT, _UNMAPPED)
    sd = {key: value.detach() for key, value in state_dict.items()}
    hidden = shapes["encoder.input_init_node"][1]
    layers = sum(1 for key in shapes if key.startswith("encoder.edge_lin_0_")) // 2
    readout_width, classes = shapes["classifier.0.weight"][1], shapes["classifier.6.weight"][0]
    if readout_width % hidden:
        fail(_WHAT, f"expected 'classifier.0.weight' of shape [cls_dim, n_out * {hidden}], "
                    f"got {list(shapes['classifier.0.weight'])}")
    kwargs = reference_kwargs(num_layers=layers, hidden=hidden,
                              rff_dim=shapes["encoder.fourier_layer.b"][1],
                              cls_dim=shapes["classifier.0.weight"][0], drop=drop,
                              cls_drop=cls_drop, rff_sigma=fourier_scale)
    frequencies = sd["encoder.fourier_layer.b"]
    encoder = DNGEncoder(classes, **kwargs).to(frequencies.dtype)
    ours = {"kernels.grid": torch.tensor([1]), "node_rff.frequencies": frequencies,
            "edge_rff.frequencies": frequencies,
            "input_state.weight": sd["encoder.input_init_node"],
            "gru.weight_ih": sd["encoder.rnn_0.input_map.weight"],
            "gru.bias_ih": sd["encoder.rnn_0.input_map.bias"],
            "gru.weight_hh": sd["encoder.rnn_0.hidden_map.weight"],
            "gru.bias_hh": sd["encoder.rnn_0.hidden_map.bias"]}
    for i in range(layers):
        ref = f"encoder.{{}}_0_{i}.{{}}"
        ours[f"node_proj.{i}.weight"] = _swap_halves(sd[ref.format("input_lin", "weight")])
        ours[f"node_proj.{i}.bias"] = sd[ref.format("input_lin", "bias")]
        ours[f"edge_proj.{i}.weight"] = _swap_halves(sd[ref.format("edge_lin", "weight")])
        ours[f"edge_proj.{i}.bias"] = sd[ref.format("edge_lin", "bias")]
        for mine, theirs in (("source_proj", "node_lin"), ("norm", "norm")):
            for what in ("weight", "bias"):
                ours[f"{mine}.{i}.{what}"] = sd[ref.format(theirs, what)]
    linears = [i for i, module in enumerate(encoder.head) if isinstance(module, nn.Linear)]
    for mine, theirs in zip(linears, _HEAD_LINEARS):
        for what in ("weight", "bias"):
            ours[f"head.{mine}.{what}"] = sd[f"classifier.{theirs}.{what}"]
    encoder.load_state_dict(ours)
    return encoder
