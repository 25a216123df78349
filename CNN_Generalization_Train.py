"""Predict a network's test accuracy from its weights: a weight-space encoder reads the
neural graph of each network of a zoo (CNNs or ViTs) and regresses the accuracy it reached
on images it never saw.

``python -m CNN_Generalization_Train --zoo-dir DIR --encoder ngnn`` trains the encoder
(``statnn``, ``nfn``, ``ngnn``, ``ngt``, ``dng``, or ``all`` one after the other) on the
members of a zoo written by ``python -m CNN_Zoo_Generate`` (every checkpoint of a network
is a member; :mod:`neural_graphs.zoo_data` converts them to neural graphs once and caches
them in the zoo folder). Networks are split 80/10/10 into train / validation / test, every
checkpoint of a network in the split of its network (``--split-seed``, the same split for
every training seed and encoder). The encoder's scalar output goes through a sigmoid:
``--loss bce`` (default) is binary cross-entropy against the accuracy in [0, 1], ``--loss
mse`` the squared error of the sigmoid. The epoch with the best validation Kendall tau is
kept; the last record of ``LOG_DIR/<run>.jsonl`` has ``"final": true`` with its
``kendall_tau`` (:func:`scipy.stats.kendalltau`), ``r2`` and ``test_mse`` over the whole
test split, and ``kendall_tau_same_epoch``: the mean tau among the members of each
checkpoint epoch (:func:`utils.tasks.grouped_kendall_tau`), the ordering that the time in
training alone does not give. Logs, atomic checkpoints, ``--resume``, ``torchrun`` / DDP
and progress are the shared loop of :mod:`utils.Train_Test`; ``python -m utils.summarize``
tabulates the runs.

Recipe (SPEC 4.2, the DNG paper's CNN accuracy prediction): Adam lr 1e-3, batch 128 (32 on
a wild zoo: :func:`jobs.zoo_jobs.zoo_batch_size`), BCE on a sigmoid output, random Fourier
features of scale 1; the training networks get the neural-graphs reference's noise (0.1 of
each layer's std) and weight dropout (0.01),
``--weight-noise`` / ``--weight-dropout`` (:mod:`neural_graphs.weight_noise`). Widths,
layers and epochs default per encoder (:data:`ENCODER_DEFAULTS`), smaller than the papers'
(NG-GNN 256 wide there) so that one run on a zoo of 1,000 networks x 4 checkpoints takes
minutes on a 2-core CPU.
Runs of different zoos share run names (``<script>_<encoder>_seed<k>``): give each zoo its
own ``--log-dir`` and ``--checkpoint-dir``.

The official DNG's CNN Wild Park recipe (``predict_park.py``) regularises more: dropout on
DNG's node states and in its output MLP (``--node-dropout 0.2 --dropout 0.2``) and AdamW
with weight decay, AMSGrad and gradient clipping (``--weight-decay 5e-4 --amsgrad
--max-grad-norm 10``); all off by default.

``--probes N`` (default 32): the graph encoders run N learned probe images through every
CNN of a batch, and each channel's mean activation on them joins its node features
(:class:`~neural_graphs.encoders.probes.ProbeFeatures`; ViTs get none); on the small zoo
they lift every graph encoder's tau above StatNN's.

``--sign-flip P`` and ``--neuron-scale R`` augment the training networks with rescalings
of their hidden neurons that keep each network's function, and so its accuracy
(:mod:`neural_graphs.neuron_symmetry`): a fresh draw per network, epoch and seed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.optim import Adam
from torch.utils.data import DataLoader
from torch_geometric.data import Batch, Data
from torch_geometric.utils import degree

from jobs.encoder_jobs import (
    load_or_refuse,
    per_encoder,
    reverse_edges_argument,
    run_job,
    split_loaders_of,
)
from jobs.zoo_jobs import (
    UNPROBED_FAMILIES,
    ZOO_BATCH_SIZE,
    ZOO_ENCODER_DEFAULTS,
    ZOO_ENCODERS,
    ZOO_FAMILY_BATCH_SIZES,
    make_zoo_encoder,
    zoo_batch_size,
    zoo_probes,
)
from neural_graphs.encoders.build import GRAPH_ENCODER_NAMES
from neural_graphs.neuron_symmetry import NeuronSymmetryAugment
from neural_graphs.weight_noise import WeightNoiseAugment
from neural_graphs.zoo_data import AugmentedGraphs, ZooGraphs, load_zoo_graphs, manifest_checksum
from utils.cli import (
    at_least_one,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
    unit_probability,
)
from utils.optim import LR_SCHEDULES, WarmupClipAdamW
from utils.tasks import scalar_regression
from utils.Train_Test import JobConfig, JobRefused, SideFlag, SideUnavailable, build_parser

SCRIPT = "CNN_Generalization_Train"
#: The neural-graphs reference's augmentation of its CNN zoos (``noise_scale``, ``drop_rate``
#: of ``NFNZooDataset``). On the small zoo it lets DNG train past its 15th epoch (tau 0.831
#: at 32 epochs against 0.809 unaugmented, seed 0) and leaves StatNN where it was (0.854
#: against 0.853).
WEIGHT_NOISE, WEIGHT_DROPOUT = 0.1, 0.01
BATCH_SIZE_HELP = ("batch size per process (default: " + ", ".join(
    f"{size} on a {family} zoo" for family, size in ZOO_FAMILY_BATCH_SIZES.items())
    + f", {ZOO_BATCH_SIZE} on the others)")
ENCODER_NAMES = ZOO_ENCODERS
EVERY = "all"
DEFAULT_ENCODER = "ngnn"
LOSSES = ("bce", "mse", "bce_rank")


#: Default sizes and epochs per encoder (shared with the zoo benchmark: jobs.zoo_jobs).
ENCODER_DEFAULTS = ZOO_ENCODER_DEFAULTS


# --------------------------------------------------------------------------- model


class AccuracyPredictor(nn.Module):
    r"""An encoder with one output per graph, read as an accuracy.

    .. math::
        \hat a = \sigma(\text{encoder}(G))

    With ``squash`` the module returns :math:`\hat a`; without it the logit
    :math:`\text{encoder}(G)` (the BCE task applies the sigmoid itself, in a numerically
    stable loss).

    Args:
        encoder (nn.Module): maps a batch of neural graphs to ``[G, 1]``.
        squash (bool): apply the sigmoid here.

    Shapes:
        - input: a :class:`~torch_geometric.data.Batch` of ``G`` neural graphs
        - output: :math:`(G,)`
    """

    def __init__(self, encoder: nn.Module, squash: bool) -> None:
        super().__init__()
        self.encoder = encoder
        self.squash = squash

    def forward(self, graphs: Batch) -> Tensor:
        out = self.encoder(graphs)
        if out.dim() != 2 or out.shape[1] != 1:
            raise ValueError(f"the encoder must return [G, 1], got {tuple(out.shape)}")
        out = out[:, 0]
        return torch.sigmoid(out) if self.squash else out


def encoder_settings(args: argparse.Namespace, side: str) -> tuple[int, int, int]:
    """``(hidden, layers, rff_dim)`` of ``side`` from the flags and :data:`ENCODER_DEFAULTS`."""
    defaults = ENCODER_DEFAULTS[side]
    hidden = defaults.hidden if args.hidden is None else args.hidden
    layers = defaults.layers if args.layers is None else args.layers
    rff_dim = defaults.rff_dim if args.rff_dim is None else args.rff_dim
    if hidden < 1 or layers < 1 or rff_dim < 1:
        raise SystemExit(f"error: --hidden, --layers and --rff-dim must be at least 1, got "
                         f"{hidden}, {layers}, {rff_dim}")
    return hidden, layers, rff_dim


make_encoder = make_zoo_encoder


# --------------------------------------------------------------------------- data


@dataclass
class ZooSplits:
    """A zoo's graphs split by network, and what building an encoder needs from them."""

    zoo: ZooGraphs
    train: list[Data]
    val: list[Data]
    test: list[Data]
    deg: Tensor  # in-degree histogram of the training graphs
    deg_both_ways: Tensor  # the same with the reversed edges too: in- plus out-degree
    statistics_attached: bool = False

    def attach_statistics(self, encoder: nn.Module) -> None:
        """Store StatNN's statistics in every graph of the splits, once (about 6 s on the
        small zoo): every seed and encoder built on these splits reads the same ones."""
        if not self.statistics_attached:
            encoder.attach_features(self.train + self.val + self.test)
            self.statistics_attached = True

    def example(self, count: int) -> Batch:
        """The first ``count`` training graphs, and the first training graph of another
        architecture when those share one: a batch that builds an encoder's lazy parts
        and shows whether it reads the zoo's architectures together."""
        graphs = list(self.train[:max(1, count)])
        kinds = {int(g.architecture) for g in graphs}
        if len(kinds) == 1:
            other = next((g for g in self.train if int(g.architecture) not in kinds), None)
            if other is not None:
                graphs.append(other)
        return Batch.from_data_list(graphs)


class ZooCache:
    """The splits of ``--zoo-dir``, read once per (folder, manifest, split seed)."""

    def __init__(self) -> None:
        self._cache: dict[tuple, ZooSplits] = {}

    def get(self, args: argparse.Namespace) -> ZooSplits:
        """The splits; a folder that is not a readable zoo is refused with the reason
        (:class:`~utils.Train_Test.JobRefused` naming ``--zoo-dir``)."""
        return load_or_refuse("--zoo-dir", lambda: self._read(args))

    def _read(self, args: argparse.Namespace) -> ZooSplits:
        key = (str(Path(args.zoo_dir).resolve()), manifest_checksum(args.zoo_dir),
               args.split_seed, args.train_networks, args.graph_cache)
        if key not in self._cache:
            self._cache.clear()
            zoo = load_zoo_graphs(args.zoo_dir, cache=args.graph_cache)
            train, val, test = load_or_refuse("--train-networks", lambda: zoo.split(
                args.split_seed, train_networks=args.train_networks))
            into = torch.cat([degree(g.edge_index[1], g.num_nodes, dtype=torch.long)
                              for g in train])
            out = torch.cat([degree(g.edge_index[0], g.num_nodes, dtype=torch.long)
                             for g in train])
            self._cache[key] = ZooSplits(zoo, train, val, test, torch.bincount(into),
                                         torch.bincount(into + out))
        return self._cache[key]


SPLITS = ZooCache()


def zoo_loaders(args: argparse.Namespace, seed: int,
                distributed: bool) -> tuple[DataLoader | None, ...]:
    """``(train, val, test)`` loaders of the zoo's neural graphs (split by network)."""
    data = SPLITS.get(args)
    augments = [a for a in (NeuronSymmetryAugment(sign_flip=args.sign_flip,
                                                  max_scale=args.neuron_scale),
                            WeightNoiseAugment(noise=args.weight_noise,
                                               dropout=args.weight_dropout)) if a.active]
    train = AugmentedGraphs(data.train, augments, seed) if augments else data.train
    return split_loaders_of({"train": train, "val": data.val, "test": data.test}, args,
                            seed, distributed)


def probe_images(args: argparse.Namespace, zoo: ZooGraphs, side: str) -> dict:
    """``probes`` and ``probe_shape`` of ``side`` for :func:`make_zoo_encoder`: ``--probes``
    (or the encoder's default) learned images of the zoo's image shape; none for StatNN and
    NFN. A ViT zoo, or one that does not record its image shape, gets none by default and
    is refused with the flag (:func:`configure`)."""
    count = zoo_probes(side, zoo.family, args.probes)
    if not count or zoo.image_shape is None:
        return {}
    return {"probes": count, "probe_shape": zoo.image_shape}


def build_predictor(args: argparse.Namespace, seed: int, side: str) -> nn.Module:
    """The encoder ``side`` as an :class:`AccuracyPredictor`, its lazy parts built on the
    zoo's first training graphs. An encoder that cannot read the zoo (NFN: one
    architecture only) raises :class:`~utils.Train_Test.SideUnavailable`."""
    hidden, layers, rff_dim = encoder_settings(args, side)
    data = SPLITS.get(args)
    encoder = make_encoder(side, hidden, layers, rff_dim, args.rff_sigma,
                           deg=data.deg_both_ways if args.reverse_edges else data.deg,
                           reverse_edges=args.reverse_edges,
                           append_stats=args.append_stats, dropout=args.dropout,
                           node_dropout=args.node_dropout,
                           **probe_images(args, data.zoo, side))
    if hasattr(encoder, "attach_features"):  # StatNN's statistics: the graphs never change
        data.attach_statistics(encoder)
    model = AccuracyPredictor(encoder, squash=args.loss == "mse")
    model.eval()
    try:
        with torch.no_grad():
            model(data.example(args.batch_size))
    except ValueError as err:
        raise SideUnavailable(
            f"{side} cannot read the zoo {args.zoo_dir} ({data.zoo.family} family, "
            f"{data.zoo.architectures} architectures): {err}") from err
    return model.train()


# --------------------------------------------------------------------------- flags


def zoo_arguments(parser: argparse.ArgumentParser) -> None:
    """The job's own flags: the zoo, the split, the loss and the encoder's size."""
    parser.add_argument("--zoo-dir", required=True,
                        help="a finished zoo: the --out folder of python -m CNN_Zoo_Generate")
    parser.add_argument("--loss", choices=LOSSES, default="bce",
                        help="bce: binary cross-entropy of the sigmoid output against the "
                        "test accuracy; mse: squared error of the sigmoid output; bce_rank: "
                        "bce plus a pairwise logistic ranking loss within each batch, each "
                        "pair weighted by its accuracy gap (utils.tasks.pairwise_rank_loss)")
    parser.add_argument("--split-seed", type=non_negative_int, default=0,
                        help="seed of the 80/10/10 split by network (the same for every "
                        "training seed)")
    parser.add_argument("--train-networks", type=positive_int, default=None, metavar="N",
                        help="train on the first N training networks of the split only (all "
                        "their checkpoints), validation and test unchanged: a learning "
                        "curve over the zoo's size, each N's networks among a larger N's "
                        "(default: all, 80%% of the zoo)")
    parser.add_argument("--hidden", type=positive_int, default=None,
                        help="main width of the encoder (ngnn: hidden, ngt: node dim, dng: "
                        "embedding, nfn: channels, statnn: MLP width); default "
                        + per_encoder(ENCODER_DEFAULTS, "hidden"))
    parser.add_argument("--layers", type=positive_int, default=None,
                        help="layers of the encoder (message-passing, attention, NFN or MLP "
                        "layers; dng has one step per network layer and ignores it); default "
                        + per_encoder(ENCODER_DEFAULTS, "layers"))
    parser.add_argument("--rff-dim", type=positive_int, default=None,
                        help="Fourier frequencies of weights and biases (graph encoders); "
                        "default " + per_encoder(ENCODER_DEFAULTS, "rff_dim",
                                                 GRAPH_ENCODER_NAMES))
    parser.add_argument("--rff-sigma", type=positive_float, default=1.0,
                        help="standard deviation of those frequencies (1 for CNNs, SPEC 4.2)")
    reverse_edges_argument(parser)
    parser.add_argument("--append-stats", action="store_true",
                        help="a graph encoder (ngnn, ngt, dng) gives a graph embedding of "
                        "--hidden features, and one MLP of StatNN's size reads it together "
                        "with StatNN's per-layer statistics, as the NFN reference's "
                        "append_stats (statnn and nfn ignore the flag)")
    parser.add_argument("--dropout", type=probability, default=0.0, metavar="P",
                        help="dropout after each ReLU of the encoder's output MLP (the "
                        "official DNG's head_drop: 0.2 in its CNN Wild Park script) "
                        "(default: %(default)s)")
    parser.add_argument("--node-dropout", type=probability, default=0.0, metavar="P",
                        help="dng: dropout on the node states after each step (the official "
                        "DNG's drop: 0.2 in its CNN Wild Park script); the other encoders "
                        "ignore it (default: %(default)s)")
    parser.add_argument("--probes", type=non_negative_int, default=None, metavar="N",
                        help="graph encoders run N learned probe images through every CNN "
                        "of the zoo, and each channel's mean activation on them joins its "
                        "node features (neural_graphs.encoders.probes; ViTs get none; "
                        "statnn and nfn ignore it); default "
                        + per_encoder(ENCODER_DEFAULTS, "probes", GRAPH_ENCODER_NAMES))
    parser.add_argument("--sign-flip", type=unit_probability, default=0.0, metavar="P",
                        help="negate each hidden neuron of a training network whose "
                        "activation is odd (tanh) with probability P: its incoming weights, "
                        "bias and outgoing weights together, the same function; in [0, 1]")
    parser.add_argument("--neuron-scale", type=at_least_one, default=1.0, metavar="R",
                        help="scale each hidden neuron of a training network whose "
                        "activation is positively homogeneous (relu) by a factor "
                        "log-uniform in [1/R, R]: incoming weights and bias times it, "
                        "outgoing weights divided by it, the same function (1: off)")
    parser.add_argument("--weight-noise", type=non_negative_float, default=WEIGHT_NOISE,
                        metavar="S",
                        help="add Gaussian noise of S times each layer's standard deviation to "
                        "the weights and biases of every training network, a fresh draw per "
                        "epoch: the neural-graphs reference's zoo augmentation; it changes "
                        "the function a little (0: off) (default: %(default)s)")
    parser.add_argument("--weight-dropout", type=probability, default=WEIGHT_DROPOUT,
                        metavar="P",
                        help="zero each weight and bias of a training network with "
                        "probability P and divide the others by 1-P (the reference's "
                        "setting; 0: off) (default: %(default)s)")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant",
                        help="learning rate over the run: held (Adam, the DNG paper's "
                        "recipe) or a cosine down to zero at the run's last step "
                        "(through utils.optim.WarmupClipAdamW: Adam's update unless "
                        "--weight-decay, --amsgrad or --max-grad-norm ask for more)")
    parser.add_argument("--weight-decay", type=non_negative_float, default=0.0,
                        help="decoupled weight decay (AdamW; the official DNG's CNN Wild Park "
                        "script: 5e-4); 0 keeps Adam (default: %(default)s)")
    parser.add_argument("--amsgrad", action="store_true",
                        help="the AMSGrad variant of Adam (the official DNG's CNN Wild Park "
                        "script)")
    parser.add_argument("--max-grad-norm", type=non_negative_float, default=0.0,
                        help="clip each step's gradient norm to this (the official DNG's CNN "
                        "Wild Park script: 10); 0: no clipping (default: %(default)s)")
    parser.add_argument("--no-graph-cache", dest="graph_cache", action="store_false",
                        help="neither read nor write the neural-graph cache in --zoo-dir "
                        "(for a read-only zoo folder)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch CPU threads (default: torch's choice)")


def configure(args: argparse.Namespace) -> JobConfig:
    """Set ``--threads``, convert the zoo (or read its cache) once, refused with the reason
    when it cannot be read (or, with ``--probes``, does not record its image shape); then
    the zoo family's batch size unless ``--batch-size`` is given, and the task of
    ``--loss``."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    data = SPLITS.get(args)
    if args.probes and data.zoo.image_shape is None:
        raise JobRefused(f"--probes: the zoo {args.zoo_dir} does not record its image shape")
    if args.probes and data.zoo.family in UNPROBED_FAMILIES:
        raise JobRefused(f"--probes: the networks of a {data.zoo.family} zoo get no probe "
                         "images (only convolutional networks do); leave --probes out or "
                         "give 0")
    if args.batch_size is None:
        args.batch_size = zoo_batch_size(data.zoo.family)
    job = JOB.replace(task=scalar_regression(args.loss, group="epoch"))
    if (args.lr_schedule != "constant" or args.weight_decay or args.amsgrad
            or args.max_grad_norm):  # AdamW without decay, amsgrad or clipping is Adam
        job = job.replace(optimizer=partial(
            WarmupClipAdamW, weight_decay=args.weight_decay, amsgrad=args.amsgrad,
            max_grad_norm=args.max_grad_norm or None, lr_schedule=args.lr_schedule))
    return job


# --------------------------------------------------------------------------- job


JOB = JobConfig(
    script=SCRIPT, title="CNN accuracy predictor",
    epochs={side: ENCODER_DEFAULTS[side].epochs for side in ENCODER_NAMES},
    batch_size=None, batch_size_help=BATCH_SIZE_HELP, lr=1e-3, optimizer=Adam,
    build_model=build_predictor, loaders=zoo_loaders,
    sides=SideFlag("--encoder", ENCODER_NAMES, default=DEFAULT_ENCODER, every=EVERY,
                   noun="encoder",
                   help="weight-space encoder, or 'all' for each in turn (each with its "
                   "default epochs unless --epochs is given)"),
    task=scalar_regression("bce", group="epoch"), seeds=(0, 1, 2),
    description="Predict the test accuracy of each network of --zoo-dir from its "
    "weights; the final record carries kendall_tau, r2 and test_mse over the held-out "
    "networks, and kendall_tau_same_epoch: the mean tau within each checkpoint epoch.",
    extra_arguments=zoo_arguments,
    resume_keys=("zoo_dir", "loss", "split_seed", "train_networks", "hidden", "layers",
                 "rff_dim", "rff_sigma", "reverse_edges", "append_stats", "sign_flip",
                 "neuron_scale", "weight_noise", "weight_dropout", "lr_schedule", "dropout",
                 "node_dropout", "weight_decay", "amsgrad", "max_grad_norm", "probes"),
    labels={"dataset": "cnn_zoo"}, configure=configure, reads_data_dir=False)


# --------------------------------------------------------------------------- entry point


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    """The full command line, as the loop reads it (``epochs`` None when not given)."""
    return build_parser(JOB).parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Train each chosen encoder through :func:`utils.Train_Test.main` (the command line
    parsed once; each encoder with its own default epochs). The zoo is converted (or read
    from its cache) first; an encoder that cannot read it is skipped with a note under
    ``--encoder all`` and an error (exit status 2) when asked for alone. Returns the exit
    status."""
    return run_job(JOB, argv)


if __name__ == "__main__":
    sys.exit(main())
