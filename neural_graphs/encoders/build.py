"""Every encoder by its short name, at the sizes the training jobs expose.

The jobs (``MNIST_INR_Classification_Train``, ``MNIST_INR_Dilation_Train``,
``CNN_Generalization_Train``) name encoders ``flatmlp``, ``statnn``, ``nfn``, ``ngnn``,
``ngt`` and ``dng`` and size each by one width and one depth; :func:`build_encoder` maps
those to the constructors (NG-T's widths follow its node width as in the reference)
through the registry :data:`ENCODER_BUILDERS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from neural_graphs.encoders.baselines import NFN, FlatMLP, StatNN
from neural_graphs.encoders.dng import DNGEncoder
from neural_graphs.encoders.gnn import NGGNN
from neural_graphs.encoders.transformer import NGTransformer
from neural_graphs.encoders.with_statistics import WithStatistics

__all__ = ["ENCODER_BUILDERS", "ENCODER_NAMES", "GRAPH_ENCODER_NAMES", "build_encoder"]

#: A builder: ``(out_dim, hidden, layers, probes, deg, options) -> encoder``, ``options``
#: the keyword arguments of :func:`build_encoder` its encoder takes beyond the sizes.
Builder = Callable[[int, int, int, int, "Tensor | None", dict[str, Any]], nn.Module]


def _flatmlp(out_dim: int, hidden: int, layers: int, probes: int, deg: Tensor | None,
             options: dict[str, Any]) -> nn.Module:
    return FlatMLP(out_dim, hidden=hidden, num_layers=layers)


def _statnn(out_dim: int, hidden: int, layers: int, probes: int, deg: Tensor | None,
            options: dict[str, Any]) -> nn.Module:
    return StatNN(out_dim, hidden=hidden, num_layers=layers)


def _nfn(out_dim: int, hidden: int, layers: int, probes: int, deg: Tensor | None,
         options: dict[str, Any]) -> nn.Module:
    return NFN(out_dim, mode="hnp", channels=hidden, num_layers=layers)


def _ngnn(out_dim: int, hidden: int, layers: int, probes: int, deg: Tensor | None,
          options: dict[str, Any]) -> nn.Module:
    return NGGNN(out_dim, hidden=hidden, num_layers=layers, num_probes=probes, deg=deg,
                 **options)


def _ngt(out_dim: int, hidden: int, layers: int, probes: int, deg: Tensor | None,
         options: dict[str, Any]) -> nn.Module:
    return NGTransformer(
        out_dim, node_dim=hidden, edge_dim=max(hidden // 2, 1), num_layers=layers,
        heads=4, attn_dim=4 * max(hidden // 4, 1), node_hidden=2 * hidden,
        edge_hidden=hidden, head_hidden=2 * hidden, num_probes=probes, **options)


def _dng(out_dim: int, hidden: int, layers: int, probes: int, deg: Tensor | None,
         options: dict[str, Any]) -> nn.Module:
    return DNGEncoder(out_dim, hidden=hidden, num_probes=probes, **options)


#: Short name -> builder, in the order the jobs list them.
ENCODER_BUILDERS: dict[str, Builder] = {
    "flatmlp": _flatmlp, "statnn": _statnn, "nfn": _nfn, "ngnn": _ngnn, "ngt": _ngt,
    "dng": _dng,
}
ENCODER_NAMES = tuple(ENCODER_BUILDERS)
#: The encoders that read the graph itself (and offer probe features).
GRAPH_ENCODER_NAMES = ("ngnn", "ngt", "dng")


def build_encoder(name: str, out_dim: int, hidden: int, layers: int, probes: int = 0,
                  rff_dim: int | None = None, rff_sigma: float | None = None,
                  deg: Tensor | None = None, reverse_edges: bool = False,
                  append_stats: bool = False, node_dropout: float = 0.0,
                  probe_shape: Sequence[int] | None = None) -> nn.Module:
    """The encoder ``name`` (of :data:`ENCODER_NAMES`) with output size ``out_dim``.

    Args:
        name (str): short name.
        out_dim (int): output size.
        hidden (int): main width (NG-GNN hidden, NG-T node width, DNG embedding, NFN
            channels, FlatMLP / StatNN MLP width).
        layers (int): message-passing, attention, NFN or MLP layers (DNG takes one step per
            network layer and ignores it).
        probes (int): probe inputs (graph encoders only).
        probe_shape (tuple, optional): ``(C, *S)`` of the learned probe images
            convolutional networks read (with ``probes``; None: they get none).
        rff_dim (int, optional), rff_sigma (float, optional): Fourier features of weights
            and biases (graph encoders); None keeps the encoder's default.
        deg (Tensor, optional): in-degree histogram for NG-GNN's PNA scalers.
        reverse_edges (bool): NG-GNN also passes messages along the reversed edges.
        append_stats (bool): a graph encoder's embedding (``hidden`` wide) and StatNN's
            statistics go into one MLP of StatNN's size (:class:`WithStatistics`).
        node_dropout (float): DNG's dropout on its node states after each step (the
            official DNG's ``drop``); in [0, 1).

    Raises:
        ValueError: unknown name, or probes, reversed edges or node dropout asked of an
            encoder without them, or ``append_stats`` asked of an encoder that is not a
            graph encoder, or ``node_dropout`` outside [0, 1), or ``probe_shape`` without
            ``probes``.
        ImportError: ``nfn`` without the ``nfn`` package.
    """
    builder = ENCODER_BUILDERS.get(name)
    if builder is None:
        raise ValueError(f"unknown encoder {name!r}; expected one of {ENCODER_NAMES}")
    if probes and name not in GRAPH_ENCODER_NAMES:
        raise ValueError(f"the {name} encoder has no probe features (only "
                         f"{', '.join(GRAPH_ENCODER_NAMES)} do), got probes={probes}")
    if reverse_edges and name != "ngnn":
        raise ValueError(f"reverse_edges is an option of the ngnn encoder only, got {name!r}")
    if append_stats and name not in GRAPH_ENCODER_NAMES:
        raise ValueError(f"append_stats is an option of the graph encoders "
                         f"({', '.join(GRAPH_ENCODER_NAMES)}), got {name!r}")
    if probe_shape is not None and not probes:
        raise ValueError(f"probe_shape {tuple(probe_shape)} needs probes > 0")
    if not 0 <= node_dropout < 1:
        raise ValueError(f"node_dropout must be in [0, 1), got {node_dropout}")
    if node_dropout and name != "dng":
        raise ValueError(f"node_dropout is an option of the dng encoder only, got {name!r}")
    options: dict[str, Any] = {k: v for k, v in (("rff_dim", rff_dim), ("rff_sigma", rff_sigma))
                               if v is not None}
    if reverse_edges:
        options["reverse_edges"] = True
    if node_dropout:
        options["dropout"] = node_dropout
    if probe_shape is not None:
        options["probe_shape"] = tuple(probe_shape)
    if append_stats:
        return WithStatistics(builder(hidden, hidden, layers, probes, deg, options), out_dim)
    return builder(out_dim, hidden, layers, probes, deg, options)
