"""What the MNIST INR jobs share (``MNIST_INR_Classification_Train``,
``MNIST_INR_Dilation_Train``, ``MNIST_INR_CNN_Ceiling``): the encoders' default sizes and
epochs, their flags, the INR set's splits read once, and their loaders.

Epochs sized so that one default run on 7,000 training INRs costs at most 45 minutes on
two free cores, on one thread (``python -m benchmarks.encoders --sizes job``: CPU seconds
of one forward + backward on a 128-INR batch, flatmlp 0.009, statnn 0.024, nfn 0.20,
ngnn 0.66, dng 0.54 (0.25 measured on 2026-12-05, once probe features were projected
per layer slot rather than per neuron), ngt 1.33 compiled and in chunks of graphs (2.9
before both); an epoch is 55 such steps plus the forward passes over the 1,000 validation
INRs, the test adds 2,000 more), at most the reference recipe's 200.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn
from torch_geometric.data import Batch

from jobs.encoder_jobs import EncoderDefaults, encoder_side, load_or_refuse, per_encoder
from neural_graphs.encoders.build import GRAPH_ENCODER_NAMES
from neural_graphs.inr_data import INRAugment, INRGraphDataset, check_inr_dir, load_inr_splits
from neural_graphs.inr_fit import require_grey
from utils.cli import non_negative_int, positive_int, unit_probability

__all__ = [
    "INR_CLASSIFICATION_DEFAULTS",
    "INR_ENCODER_DEFAULTS",
    "SPLITS",
    "INRSplits",
    "encoder_arguments",
    "encoder_settings",
    "first_graphs",
    "grey_inr_manifest",
    "inr_dir_argument",
    "inr_fit_config",
    "inr_manifest",
    "make_encoder",
    "sign_flip_argument",
]

INR_ENCODER_DEFAULTS: dict[str, EncoderDefaults] = {
    "flatmlp": EncoderDefaults(hidden=256, layers=2, epochs=200),
    "statnn": EncoderDefaults(hidden=256, layers=2, epochs=200),
    "nfn": EncoderDefaults(hidden=32, layers=3, epochs=200),
    "ngnn": EncoderDefaults(hidden=32, layers=4, epochs=60, probes=64),
    "ngt": EncoderDefaults(hidden=32, layers=2, epochs=24, probes=64),
    "dng": EncoderDefaults(hidden=64, layers=1, epochs=70, probes=64),
}
#: the classification job's defaults (read by its script and by ``benchmarks.encoders
#: --sizes job``): the shared ones, except more probes for the graph encoders: 128 for NG-GNN
#: and NG-T, 256 for DNG (three seeds each, README: NG-GNN 93.25% against 89.80% with 64,
#: NG-T 92.12% against 88.92%, DNG 95.17% with 256 against 94.40% with 128 and 91.88% with
#: 64, each at about the same epoch time)
_CLASSIFICATION_PROBES = {"ngnn": 128, "ngt": 128, "dng": 256}
INR_CLASSIFICATION_DEFAULTS: dict[str, EncoderDefaults] = {
    **INR_ENCODER_DEFAULTS,
    **{side: dataclasses.replace(INR_ENCODER_DEFAULTS[side], probes=probes)
       for side, probes in _CLASSIFICATION_PROBES.items()}}


# --------------------------------------------------------------------------- flags


def inr_dir_argument(parser: argparse.ArgumentParser) -> None:
    """``--inr-dir``, the INR set a job reads."""
    parser.add_argument("--inr-dir", required=True,
                        help="a finished INR set: the --out folder of python -m MNIST_INR_Fit")


# What --hidden and --layers mean for each encoder.
_WIDTH = {"flatmlp": "MLP width", "statnn": "MLP width", "nfn": "channels", "ngnn": "hidden",
          "ngt": "node dim", "dng": "embedding"}
_LAYERS = {"flatmlp": "MLP layers", "statnn": "MLP layers", "nfn": "NFN layers",
           "ngnn": "message-passing layers", "ngt": "attention layers",
           "dng": "ignored, one step per network layer"}


def encoder_arguments(parser: argparse.ArgumentParser,
                      defaults: Mapping[str, EncoderDefaults]) -> None:
    """``--inr-dir`` and the size flags of the encoders in ``defaults`` (the ones the job
    offers; the help names theirs only)."""
    inr_dir_argument(parser)
    graph = [name for name in defaults if name in GRAPH_ENCODER_NAMES]
    width = ", ".join(f"{name}: {_WIDTH[name]}" for name in defaults)
    layers = ", ".join(f"{name}: {_LAYERS[name]}" for name in defaults)
    parser.add_argument("--hidden", type=positive_int, default=None,
                        help=f"main width of the encoder ({width}); default "
                        + per_encoder(defaults, "hidden"))
    parser.add_argument("--layers", type=positive_int, default=None,
                        help=f"layers of the encoder ({layers}); default "
                        + per_encoder(defaults, "layers"))
    parser.add_argument("--probes", type=non_negative_int, default=None, metavar="K",
                        help=f"probe inputs of the graph encoders ({', '.join(graph)}); "
                        "default " + per_encoder(defaults, "probes", graph)
                        + ", 0 for the others (which have none)")


def sign_flip_argument(parser: argparse.ArgumentParser) -> None:
    """``--sign-flip P``: the augmentation of training INRs that keeps their function."""
    parser.add_argument("--sign-flip", type=unit_probability, default=0.0, metavar="P",
                        help="negate each hidden neuron of a training INR with probability P "
                        "(its incoming weights, bias and outgoing weights: the same function, "
                        "as the sine is odd, but other weights), in [0, 1]")


def encoder_settings(args: argparse.Namespace, side: str,
                     defaults: Mapping[str, EncoderDefaults]) -> tuple[int, int, int]:
    """``(hidden, layers, probes)`` of ``side`` from the flags and ``defaults`` (the job's
    own table, which :func:`encoder_arguments` was given)."""
    own = defaults[side]
    hidden = own.hidden if args.hidden is None else args.hidden
    layers = own.layers if args.layers is None else args.layers
    probes = own.probes if args.probes is None else args.probes
    if hidden < 1 or layers < 1 or probes < 0:
        raise SystemExit(f"error: --hidden and --layers must be at least 1 and --probes "
                         f"non-negative, got {hidden}, {layers}, {probes}")
    if probes and side not in GRAPH_ENCODER_NAMES:
        raise SystemExit(f"error: --probes {probes}: the {side} encoder has no probe "
                         f"features (only {', '.join(GRAPH_ENCODER_NAMES)} do)")
    return hidden, layers, probes


def make_encoder(side: str, out_dim: int, hidden: int, layers: int, probes: int,
                 reverse_edges: bool = False) -> nn.Module:
    """The encoder ``side`` with output size ``out_dim``
    (:func:`jobs.encoder_jobs.encoder_side`; ``reverse_edges`` for ``ngnn`` only)."""
    return encoder_side(side, out_dim, hidden=hidden, layers=layers, probes=probes,
                        reverse_edges=reverse_edges)


def first_graphs(dataset: INRGraphDataset, count: int) -> Batch:
    """The first ``count`` INRs of ``dataset`` as one batch, never augmented."""
    count = min(count, len(dataset))
    plain = INRGraphDataset({k: v[:count] for k, v in dataset.params.items()},
                            dataset.labels[:count])
    return Batch.from_data_list([plain[i] for i in range(count)])


# --------------------------------------------------------------------------- data


def inr_manifest(inr_dir: str) -> dict[str, Any]:
    """The manifest of the INR set in ``inr_dir``; a folder that is not a finished INR set
    is refused (:class:`~utils.Train_Test.JobRefused` naming ``--inr-dir``)."""
    return load_or_refuse("--inr-dir", lambda: check_inr_dir(inr_dir))


def inr_fit_config(inr_dir: str) -> dict[str, Any]:
    """The fit's configuration recorded in the manifest of ``inr_dir`` (``omega_0``,
    ``out_offset``, the image set; see :class:`neural_graphs.inr_fit.FitConfig`)."""
    return inr_manifest(inr_dir).get("config", {})


def grey_inr_manifest(inr_dir: str, job: str) -> dict[str, Any]:
    """:func:`inr_manifest`, a set of colour images (CIFAR-10) refused too: ``job``
    compares renders with grey images."""
    manifest = inr_manifest(inr_dir)
    load_or_refuse("--inr-dir", lambda: require_grey(manifest.get("config", {}), job))
    return manifest


class INRSplits:
    """The datasets of ``--inr-dir``: the set is read once per (folder, targets); each
    (augmentation, seed) gets its own view of the training split, sharing its tensors."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._splits: dict[str, INRGraphDataset] = {}

    def get(self, inr_dir: str, augment: INRAugment | None, seed: int,
            targets: Callable[[dict[str, Any]], Tensor] | None = None
            ) -> dict[str, INRGraphDataset]:
        """The ``train``, ``val`` and ``test`` datasets, the training split augmented by
        ``augment`` (None: not at all); ``targets(manifest)``, when given, the per-INR
        targets. Raises what reading the set raises (a
        :class:`utils.store.StoreError` for a damaged set)."""
        key = (inr_dir, targets)
        if key != self._key:
            self._key, self._splits = None, {}
            manifest = check_inr_dir(inr_dir)
            self._splits = load_inr_splits(
                inr_dir, None, 0, None if targets is None else targets(manifest), manifest)
            self._key = key
        # The seed and augmentation only drive the training split's augmentation stream.
        train = copy.copy(self._splits["train"])
        train.augment = augment or INRAugment()
        train.seed = seed
        return {**self._splits, "train": train}

    def check(self, inr_dir: str, augment: INRAugment | None, seed: int,
              targets: Callable[[dict[str, Any]], Tensor] | None = None
              ) -> dict[str, INRGraphDataset]:
        """:meth:`get`, a set that cannot be read refused with the reason
        (:class:`~utils.Train_Test.JobRefused` naming ``--inr-dir``): for a job's
        ``configure``, before any run starts."""
        return load_or_refuse("--inr-dir", lambda: self.get(inr_dir, augment, seed, targets))


SPLITS = INRSplits()
