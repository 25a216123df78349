"""What the zoo jobs share (``CNN_Generalization_Train``, ``benchmarks.zoo_encoders``): the
encoders' default sizes and epochs on a model zoo, and how each is built.

Sized for minutes per run on 2 CPU cores. Measured CPU seconds of one forward+backward
pass of a batch of 128 small-zoo graphs (59 neurons, 688 edges with 3x3 kernels), one
thread: statnn 0.17, ngnn 0.93, ngt 2.5, dng 2.4 (dng with 128 frequencies: 6.4). On the
small zoo of 1,000 networks x 8 checkpoints (6,400 training members, 50 batches an
epoch) a default run took statnn 2.0, dng 3.4-4.0, ngnn 9.6-11.3, ngt 7.4-11.3 minutes
of wall time (one run at a time; the longest include short profiling beside them).

Since 2026-12-07 the graph encoders read 32 learned probe images by default (``probes``;
``CNN_Generalization_Train --probes``): on the small zoo they lifted DNG's Kendall tau
from 0.829 +- 0.022 to 0.866 +- 0.006, NG-GNN's to 0.867 +- 0.005 and NG-T's to
0.853 +- 0.006 (3 seeds each; StatNN 0.841 +- 0.002), for 1.7 times DNG's step (1.60
against 0.91 s of CPU a batch of 128, one thread).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from jobs.encoder_jobs import (
    REFERENCE_BATCH_SIZE,
    EncoderDefaults,
    add_output_dropout,
    encoder_side,
)
from neural_graphs.encoders.build import GRAPH_ENCODER_NAMES

__all__ = ["UNPROBED_FAMILIES", "ZOO_BATCH_SIZE", "ZOO_ENCODERS", "ZOO_ENCODER_DEFAULTS",
           "ZOO_FAMILY_BATCH_SIZES", "make_zoo_encoder", "zoo_batch_size", "zoo_probes"]

ZOO_ENCODERS = ("statnn", "nfn", "ngnn", "ngt", "dng")
ZOO_ENCODER_DEFAULTS: dict[str, EncoderDefaults] = {
    "statnn": EncoderDefaults(hidden=256, layers=2, epochs=100),
    "nfn": EncoderDefaults(hidden=32, layers=3, epochs=40),
    "ngnn": EncoderDefaults(hidden=32, layers=4, epochs=20, probes=32),
    "ngt": EncoderDefaults(hidden=32, layers=2, epochs=8, probes=32),
    "dng": EncoderDefaults(hidden=64, layers=1, epochs=8, rff_dim=32, probes=32),
}
#: Zoo families whose networks the probe images cannot run through (attention layers).
UNPROBED_FAMILIES = ("vit",)
#: The batch of a zoo job when none is given: the paper's 128, but 32 on a wild zoo, whose
#: 3,200 training members make only 25 steps an epoch at 128. With four times the steps
#: DNG (seeds 0, 1) and NG-GNN (seed 0) ranked the held-out wild networks better, by
#: 0.007-0.011 in Kendall tau, in 0.8 times the time (README, CNN accuracy prediction).
ZOO_BATCH_SIZE = REFERENCE_BATCH_SIZE
ZOO_FAMILY_BATCH_SIZES: dict[str, int] = {"wild": 32}


def zoo_batch_size(family: str) -> int:
    """The default batch per process on a ``family`` zoo (:data:`ZOO_FAMILY_BATCH_SIZES`,
    else :data:`ZOO_BATCH_SIZE`)."""
    return ZOO_FAMILY_BATCH_SIZES.get(family, ZOO_BATCH_SIZE)


def zoo_probes(side: str, family: str, probes: int | None = None) -> int:
    """How many probe images ``side`` reads on a ``family`` zoo: ``probes``, or the
    encoder's default when it is None; none for StatNN and NFN (which read no activations)
    and on a family of :data:`UNPROBED_FAMILIES`."""
    count = ZOO_ENCODER_DEFAULTS[side].probes if probes is None else probes
    return 0 if side not in GRAPH_ENCODER_NAMES or family in UNPROBED_FAMILIES else count


def make_zoo_encoder(side: str, hidden: int, layers: int, rff_dim: int,
                     rff_sigma: float, deg: Tensor | None = None,
                     reverse_edges: bool = False, append_stats: bool = False,
                     dropout: float = 0.0, node_dropout: float = 0.0, probes: int = 0,
                     probe_shape: Sequence[int] | None = None) -> nn.Module:
    """The encoder ``side`` of :data:`ZOO_ENCODERS` with one output
    (:func:`jobs.encoder_jobs.encoder_side`).

    ``deg``: the in-degree histogram of the training graphs along the edges NG-GNN's
    messages run on (its PNA scalers); ``reverse_edges``: NG-GNN's messages also run along
    the reversed edges; ``append_stats``: a graph encoder's head also reads StatNN's
    statistics (:class:`~neural_graphs.encoders.with_statistics.WithStatistics`; the other
    encoders ignore it); ``dropout``: after each ReLU of the output MLP
    (:func:`~jobs.encoder_jobs.add_output_dropout`); ``node_dropout``: DNG's dropout on its
    node states after each step (the other encoders ignore it); ``probes``: learned probe
    images of ``probe_shape`` ``(C, H, W)`` that the graph encoders run through every
    network (:class:`~neural_graphs.encoders.probes.ProbeFeatures`; StatNN and NFN ignore
    them)."""
    if probes and probe_shape is None:
        raise ValueError(f"probes={probes} needs the probe images' probe_shape (C, H, W)")
    probe_images = {"probe_shape": tuple(probe_shape)} if probes else {}
    if side not in GRAPH_ENCODER_NAMES:
        encoder = encoder_side(side, 1, hidden=hidden, layers=layers)
    else:
        ngnn = side == "ngnn"
        encoder = encoder_side(side, 1, hidden=hidden, layers=layers, rff_dim=rff_dim,
                               rff_sigma=rff_sigma, deg=deg if ngnn else None,
                               reverse_edges=ngnn and reverse_edges, append_stats=append_stats,
                               node_dropout=node_dropout if side == "dng" else 0.0,
                               probes=probes, **probe_images)
    return add_output_dropout(encoder, dropout)
