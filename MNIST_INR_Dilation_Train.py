"""Edit MNIST INRs from their weights: an encoder predicts a change of every weight and
bias of a SIREN so that it draws its digit dilated.

``python -m MNIST_INR_Dilation_Train --inr-dir DIR --encoder ngnn`` trains
:class:`INREditor` on the ``train`` INRs of a set written by ``python -m MNIST_INR_Fit``:

.. math::
    \\theta' = \\theta + \\Delta(\\theta), \\qquad
    \\mathcal{L} = \\tfrac{1}{HW} \\lVert f_{\\theta'}(\\text{grid}) -
    \\text{dilate}_{3\\times 3}(\\text{image}) \\rVert^2

with :math:`f` the SIREN rendered on the 28x28 grid of the fit and the target the
original MNIST image (pixels / 255) under a 3x3 grey dilation (``cv2.dilate``, all-ones
kernel). The best checkpoint has the lowest validation MSE; the last record of
``LOG_DIR/<run>.jsonl`` has ``"final": true``, ``test_mse`` (the edited INRs) and
``identity_mse`` (the unedited INRs, :math:`\\Delta = 0`) on the ``test`` INRs.
``LOG_DIR/<run>.png`` shows the best editor's work on the first eight test INRs (unedited,
edited, dilated image).

Encoders: the graph encoders ``ngnn``, ``ngt`` and ``dng`` give node embeddings
:math:`h_i` (``encoder.node_embeddings``); the equivariant heads are
:math:`\\Delta b_i = \\text{MLP}_n(h_i)` per non-input neuron and
:math:`\\Delta w_{ij} = \\text{MLP}_e([h_j, h_i, \\gamma(w_{ij})])` per edge
:math:`j \\to i` (:math:`\\gamma` random Fourier features of the weight), so permuting hidden
neurons permutes the edit the same way. ``flatmlp`` predicts the flat parameter vector
(not equivariant). NG-GNN's messages also run along the reversed edges
(``--reverse-edges``, the default here), so a neuron's state hears the layers after it.
Each SIREN layer's weight and bias changes are multiplied by learnable scales of their own
(``--delta-scale``, starting at 0.01 as the reference's ``out_scale``).
The heads' last layers start at zero: before training the edited INR is the INR and the
MSE is ``identity_mse``. The training recipe and flags are those of
``MNIST_INR_Classification_Train`` (:mod:`jobs.inr_jobs`). Augmentations of the training
INRs are those that keep the target exact: ``--sign-flip`` (the same function, other
weights) and ``--dihedral`` (the grid's rotations by 90 degrees and reflections, applied to
the INR's first layer and to its dilated image alike, which commutes with the symmetric
3x3 dilation); rotations by other angles and translations would move the image off the
pixel grid, where its dilation is not known.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parameter import is_lazy
from torch.utils.data import DataLoader
from torch_geometric.data import Batch

from jobs.encoder_jobs import (
    RECIPE_DEFAULTS,
    load_or_refuse,
    materialize,
    recipe_arguments,
    recipe_optimizer,
    reverse_edges_argument,
    run_job,
    split_loaders_of,
    with_recipe,
)
from jobs.inr_jobs import (
    INR_ENCODER_DEFAULTS,
    SPLITS,
    encoder_arguments,
    encoder_settings,
    first_graphs,
    grey_inr_manifest,
    inr_fit_config,
    make_encoder,
    sign_flip_argument,
)
from neural_graphs.inr import render
from neural_graphs.inr_data import INRAugment, graph_features_to_stacked, inr_set_images
from utils.atomic import atomic_write
from utils.cli import non_negative_float, positive_int, unit_probability
from utils.memory import CHUNK_BYTES, graphs_per_chunk
from utils.tasks import Task
from utils.Train_Test import JobConfig, SideFlag, SideUnavailable

SCRIPT = "MNIST_INR_Dilation_Train"
EDIT_ENCODERS = ("flatmlp", "ngnn", "ngt", "dng")
#: The classification job's encoders and sizes; NG-T trains 40 epochs here (24 there):
#: its dilation epochs took 48-73 s on two free cores (40.4 minutes for 40) and its
#: validation MSE still fell from epoch 24 (0.0312) to 40 (0.0293). DNG edits at embedding
#: 128 for 40 epochs with a moving average of its weights (:data:`EMA_DECAY`): it reaches
#: the plateau of embedding 64 in a third of the epochs, and the average sits below the
#: weights that wander on it (seed 0: test MSE 0.0304 at 64 for 70 epochs, 0.0301 with the
#: average, 0.0302 at 128 without it; 40-49 s an epoch, 30 minutes). NG-GNN passes
#: messages along the reversed edges too (:data:`REVERSE_EDGES`), which costs 1.5 times
#: its step and learns in 40 epochs what it could not in 60 (seed 0: test MSE 0.0286
#: against 0.0316; 50 s an epoch, 34 minutes).
ENCODER_DEFAULTS = {side: INR_ENCODER_DEFAULTS[side] for side in EDIT_ENCODERS}
ENCODER_DEFAULTS["ngnn"] = dataclasses.replace(ENCODER_DEFAULTS["ngnn"], epochs=40)
ENCODER_DEFAULTS["ngt"] = dataclasses.replace(ENCODER_DEFAULTS["ngt"], epochs=40)
ENCODER_DEFAULTS["dng"] = dataclasses.replace(ENCODER_DEFAULTS["dng"], hidden=128, epochs=40)
#: ``--ema-decay`` per encoder: DNG's and NG-GNN's editors are validated and tested as the
#: moving average of their weights over about 500 optimizer steps (9 epochs of 7,000 INRs).
EMA_DECAY = {"flatmlp": 0.0, "ngnn": 0.998, "ngt": 0.0, "dng": 0.998}
#: ``--reverse-edges`` by default: the edit of a weight depends on what the layers after it
#: do with its neuron, which NG-GNN's forward messages alone never tell that neuron (NG-T
#: attends to every neuron; DNG's steps run forward only too, and have no reversed pass).
REVERSE_EDGES = True
DILATION_KERNEL = np.ones((3, 3), np.uint8)
MAX_SIREN_LAYERS = 16
#: Start of the learnable per-layer scales of the edit (``--delta-scale``): DNG, seed 0,
#: 20 epochs, validation MSE 0.0314 with them against 0.0331 without.
DELTA_SCALE = 0.01


def dilated_targets(images: np.ndarray) -> Tensor:
    """``cv2.dilate`` of each uint8 image with a 3x3 all-ones kernel, as floats in [0, 1].

    Shapes:
        - images: :math:`(n, H, W)` uint8
        - output: :math:`(n, H, W)` float32
    """
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 [n, H, W], got {images.dtype} {images.shape}")
    dilated = np.stack([cv2.dilate(image, DILATION_KERNEL) for image in images])
    return torch.from_numpy(dilated).float() / 255.0


def _zero_last(mlp: nn.Sequential) -> nn.Sequential:
    last = mlp[-1]
    assert isinstance(last, nn.Linear)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return mlp


def _graph_size(batch: Batch) -> tuple[int, int, list[int]]:
    """Nodes and edges per graph and the layer layout, checking that every graph of the
    batch is the same SIREN architecture in template order (no permutation)."""
    layouts = batch.layer_layout if isinstance(batch.layer_layout[0], list) else \
        [batch.layer_layout]
    layout = list(layouts[0])
    if any(list(other) != layout for other in layouts):
        raise ValueError("INREditor needs graphs of one architecture in a batch")
    graphs = batch.num_graphs
    if batch.num_nodes % graphs or batch.edge_index.shape[1] % graphs:
        raise ValueError("INREditor needs graphs of one architecture in a batch")
    return batch.num_nodes // graphs, batch.edge_index.shape[1] // graphs, layout


class INREditor(nn.Module):
    r"""Predicts :math:`\Delta` for every weight and bias of each SIREN of a batch of its
    neural graphs and renders the edited SIRENs.

    Args:
        side (str): ``"ngnn"``, ``"ngt"``, ``"dng"`` (equivariant heads on node
            embeddings) or ``"flatmlp"`` (the flat parameter vector).
        hidden, layers, probes: the encoder's size (``make_encoder``).
        size (tuple): rendered image size.
        omega_0, out_offset: the SIRENs' sine frequency and output offset.
        head_hidden (int): width of the edit heads.
        rff_dim (int): Fourier frequencies of the weight in the edge head.
        delta_scale (float, optional): if given, each SIREN layer's weight and bias
            changes are multiplied by a learnable scale of their own starting at this
            value (the reference ``GNNParams``' ``out_scale``, 0.01 there), so the edit of
            every layer finds its own size; ``None`` (default) leaves the heads' outputs
            as they are.
        reverse_edges (bool): ``ngnn`` also passes messages from each neuron back to the
            neurons that feed it, so the state of a neuron, and the edit of its weights,
            hears what the layers after it do with it.

    Shapes:
        - input: a :class:`~torch_geometric.data.Batch` of ``G`` SIREN graphs of one
          architecture in template order
        - output: :math:`(G, H, W)`, the edited SIRENs' renders
    """

    #: Largest tensor of one chunk of edges in :meth:`edge_deltas` on CPU.
    CHUNK_BYTES = CHUNK_BYTES

    def __init__(self, side: str, hidden: int, layers: int, probes: int,
                 size: tuple[int, int] = (28, 28), omega_0: float = 30.0,
                 out_offset: float = 0.5, head_hidden: int = 64, rff_dim: int = 32,
                 delta_scale: float | None = None, reverse_edges: bool = False) -> None:
        super().__init__()
        if side not in EDIT_ENCODERS:
            raise SideUnavailable(f"the {side} encoder gives no per-weight output; editing "
                                  f"supports {', '.join(EDIT_ENCODERS)}")
        if delta_scale is not None and not (math.isfinite(delta_scale) and delta_scale > 0):
            raise ValueError(f"delta_scale must be a positive finite number or None, got "
                             f"{delta_scale}")
        self.side, self.size = side, size
        # One weight and one bias scale per SIREN layer (MAX_SIREN_LAYERS at most).
        self.weight_scale = self.bias_scale = None
        if delta_scale is not None:
            self.weight_scale = nn.Parameter(torch.full((MAX_SIREN_LAYERS,), delta_scale))
            self.bias_scale = nn.Parameter(torch.full((MAX_SIREN_LAYERS,), delta_scale))
        self.omega_0, self.out_offset = float(omega_0), float(out_offset)
        self.flat = side == "flatmlp"
        self.head_hidden, self.rff_dim = head_hidden, rff_dim
        if self.flat:
            # Output width (the parameter count) is known at the first batch.
            self.encoder: nn.Module | None = None
            self.hidden, self.layers = hidden, layers
            return
        from neural_graphs.encoders import FourierFeatures

        encoder = make_encoder(side, 1, hidden, layers, probes, reverse_edges)
        if not callable(getattr(encoder, "node_embeddings", None)):
            raise SideUnavailable(f"{type(encoder).__name__} gives no node embeddings")
        self.encoder = encoder
        self.weight_features = FourierFeatures(rff_dim, 3.0, in_features=1)
        self.node_head = _zero_last(nn.Sequential(nn.LazyLinear(head_hidden), nn.SiLU(),
                                                  nn.Linear(head_hidden, 1)))
        self.edge_head = _zero_last(nn.Sequential(nn.LazyLinear(head_hidden), nn.SiLU(),
                                                  nn.Linear(head_hidden, 1)))

    def deltas(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """``(delta_x [N], delta_edge [E])``: the change of every bias (zero on input
        neurons) and weight of the batch, in the batch's node and edge order."""
        nodes, edges, _ = _graph_size(batch)
        graphs = batch.num_graphs
        not_input = (batch.node_type != 0).to(batch.x.dtype)
        if self.flat:
            if self.encoder is None:
                from neural_graphs.encoders import FlatMLP

                flat = FlatMLP(nodes + edges, hidden=self.hidden, num_layers=self.layers)
                _zero_last(flat.mlp)
                self.encoder = flat.to(batch.x.device)
            vector = self.encoder(batch)  # weights by (target, source), then biases
            src, dst = batch.edge_index
            order = torch.argsort(dst * batch.num_nodes + src)
            delta_edge = torch.empty(graphs * edges, dtype=vector.dtype, device=vector.device)
            delta_edge = delta_edge.index_copy(0, order, vector[:, :edges].reshape(-1))
            return vector[:, edges:].reshape(-1) * not_input, delta_edge
        if any(is_lazy(p) for p in self.encoder.parameters()):
            # One whole pass sizes every lazy part, the encoder's own (unused, never given a
            # gradient) output MLP included, before the optimizer sees the parameters.
            self.encoder(batch)
        h = self.encoder.node_embeddings(batch).states
        delta_x = self.node_head(h)[:, 0] * not_input
        return delta_x, self.edge_deltas(h, batch)

    def edge_deltas(self, h: Tensor, batch: Batch) -> Tensor:
        r"""The edge head on every edge :math:`(j \to i)` of weight :math:`w`,
        :math:`\text{MLP}([h_j \Vert h_i \Vert \gamma(w)])`, ``[E]``: its first layer
        split by input, :math:`W_s h_j + W_t h_i + W_w \gamma(w) + b`, with the node parts
        projected once per neuron rather than per edge, and the edges taken in chunks whose
        tensors stay within :attr:`CHUNK_BYTES` on CPU (128 SIRENs: 143,360 edges,
        whose ``[E, 2 hidden + 2 rff]`` inputs were mapped afresh and faulted in at every
        step)."""
        src, dst = batch.edge_index
        first, rest = self.edge_head[0], self.edge_head[1:]
        features = self.weight_features(batch.edge_attr[:, :1])  # [E, 2 rff]
        if is_lazy(first.weight):
            first(torch.cat([h[:1], h[:1], features[:1]], -1))  # sizes its weight
        width = h.shape[-1]
        w_source, w_target, w_weight = first.weight.split(
            [width, width, features.shape[-1]], dim=1)
        from_source = h @ w_source.T
        from_target = torch.addmm(first.bias, h, w_target.T)
        rows = graphs_per_chunk(max(first.out_features, features.shape[-1])
                                * h.element_size(), len(src), h.device.type,
                                self.CHUNK_BYTES)
        return torch.cat([rest(from_source[src[e:e + rows]] + from_target[dst[e:e + rows]]
                               + features[e:e + rows] @ w_weight.T)[:, 0]
                          for e in range(0, len(src), rows)])

    def edited_params(self, batch: Batch) -> dict[str, Tensor]:
        """The edited SIRENs' stacked parameters."""
        nodes, edges, layout = _graph_size(batch)
        if self.weight_scale is not None and len(layout) - 1 > MAX_SIREN_LAYERS:
            raise ValueError(f"delta_scale supports SIRENs of at most {MAX_SIREN_LAYERS} "
                             f"layers, got layout {layout}")
        delta_x, delta_edge = self.deltas(batch)
        deltas = graph_features_to_stacked(delta_x.view(batch.num_graphs, nodes),
                                           delta_edge.view(batch.num_graphs, edges), layout)
        params = original_params(batch)
        for index in range(len(layout) - 1):
            for kind, scale in (("weight", self.weight_scale), ("bias", self.bias_scale)):
                name = f"net.{2 * index}.{kind}"
                delta = deltas[name] if scale is None else scale[index] * deltas[name]
                params[name] = params[name] + delta
        return params

    def render(self, params: dict[str, Tensor]) -> Tensor:
        return render(params, self.size, omega_0=self.omega_0, out_offset=self.out_offset)

    def forward(self, batch: Batch) -> Tensor:
        return self.render(self.edited_params(batch))


def original_params(batch: Batch) -> dict[str, Tensor]:
    """The unedited SIRENs' stacked parameters of a batch."""
    nodes, edges, layout = _graph_size(batch)
    return graph_features_to_stacked(batch.x[:, 0].view(batch.num_graphs, nodes),
                                     batch.edge_attr[:, 0].view(batch.num_graphs, edges),
                                     layout)


def _pixel_mse(image: Tensor, batch: Batch) -> Tensor:
    target = batch.target.to(image.dtype)
    if image.shape != target.shape:
        raise ValueError(f"render {tuple(image.shape)} and target {tuple(target.shape)} differ")
    return ((image - target) ** 2).flatten(1).mean(1)


class _IdentityMSE:
    """``collect``: the unedited INRs' MSE against the target, rendered like the edits."""

    def __init__(self, omega_0: float, out_offset: float) -> None:
        self.omega_0, self.out_offset = omega_0, out_offset

    def __call__(self, output: Tensor, batch: Batch) -> dict[str, Tensor]:
        with torch.no_grad():
            plain = render(original_params(batch), tuple(output.shape[1:]),
                           omega_0=self.omega_0, out_offset=self.out_offset)
            return {"identity": _pixel_mse(plain, batch).double()}


# --------------------------------------------------------------------------- picture

#: Test INRs shown in ``LOG_DIR/<run>.png``.
FIGURE_INRS = 8


def plot_edits(unedited: Tensor, edited: Tensor, target: Tensor, path: str | Path,
               title: str = "") -> Path:
    """One column per INR, three rows: the unedited INR's render, the edited INR's render
    and the dilated image it should draw, written as a PNG at ``path`` (atomically).

    Shapes:
        - unedited, edited, target: :math:`(n, H, W)`, pixels in [0, 1]
    """
    if not unedited.shape == edited.shape == target.shape or unedited.ndim != 3:
        raise ValueError(f"plot_edits needs three [n, H, W] stacks of one shape, got "
                         f"{tuple(unedited.shape)}, {tuple(edited.shape)}, "
                         f"{tuple(target.shape)}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = (("unedited", unedited), ("edited", edited), ("dilated image", target))
    count = unedited.shape[0]
    fig, axes = plt.subplots(3, count, figsize=(1.2 * count, 3.9), squeeze=False)
    for row, (name, images) in enumerate(rows):
        for column in range(count):
            axis = axes[row][column]
            axis.imshow(images[column].detach().cpu().clamp(0, 1).numpy(), cmap="gray",
                        vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
        axes[row][0].set_ylabel(name)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return Path(path)


def picture_edits(model: nn.Module, loader: DataLoader, path: Path) -> None:
    """:attr:`utils.tasks.Task.picture` of the dilation task: the editor's work on the first
    :data:`FIGURE_INRS` INRs of ``loader`` (:func:`plot_edits`)."""
    batch = next(iter(loader)).to(next(model.parameters()).device)
    edited = model(batch)[:FIGURE_INRS].cpu()
    unedited = model.render(original_params(batch))[:FIGURE_INRS].cpu()
    target = batch.target[:FIGURE_INRS].cpu().to(edited.dtype)
    mse = float(((edited - target) ** 2).mean())
    plot_edits(unedited, edited, target, path,
               f"{path.stem}: first {len(edited)} test INRs, MSE {mse:.4f}")


def _dilation_metrics(values: dict[str, Tensor]) -> dict[str, float]:
    return {"mse": float(values["loss"].mean()),
            "identity_mse": float(values["identity"].mean())}


def dilation_task(omega_0: float = 30.0, out_offset: float = 0.5) -> Task:
    r"""Per-INR loss :math:`\frac{1}{HW}\lVert \hat I - \text{dilate}(I) \rVert^2`; metrics
    ``mse`` (edited) and ``identity_mse`` (unedited); the lowest validation ``mse`` is best;
    the final record carries ``test_mse`` and ``identity_mse``."""
    return Task(loss=_pixel_mse, collect=_IdentityMSE(omega_0, out_offset),
                metrics=_dilation_metrics, best_metric="mse", higher_is_better=False,
                test_metrics={"test_mse": "mse", "identity_mse": "identity_mse"},
                picture=picture_edits)


# --------------------------------------------------------------------------- job


class _DilatedTargets:
    """``manifest -> [n, 28, 28]`` dilated images of the INRs' MNIST images; one object per
    MNIST folder, so the dataset cache recognises it."""

    def __init__(self, mnist_dir: str | None) -> None:
        self.mnist_dir = mnist_dir

    def __call__(self, manifest: dict[str, Any]) -> Tensor:
        return dilated_targets(inr_set_images(manifest, self.mnist_dir))


_TARGETS: dict[str | None, _DilatedTargets] = {}


def training_augment(args: argparse.Namespace) -> INRAugment:
    """The augmentation of the training INRs: ``--sign-flip`` and ``--dihedral``."""
    return INRAugment(sign_flip=args.sign_flip, dihedral=args.dihedral)


def _splits(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    targets = _TARGETS.setdefault(args.mnist_dir, _DilatedTargets(args.mnist_dir))
    return SPLITS.get(args.inr_dir, training_augment(args), seed, targets)


def dilation_loaders(args: argparse.Namespace, seed: int,
                     distributed: bool) -> tuple[DataLoader | None, ...]:
    """``(train, val, test)`` loaders of the INR set's splits with dilated targets."""
    return split_loaders_of(_splits(args, seed), args, seed, distributed)


def build_editor(args: argparse.Namespace, seed: int, side: str) -> nn.Module:
    """An :class:`INREditor` of ``side`` for the set's SIRENs, its lazy parts built on the
    first training INRs."""
    hidden, layers, probes = encoder_settings(args, side, ENCODER_DEFAULTS)
    config = inr_fit_config(args.inr_dir)
    editor = INREditor(side, hidden, layers, probes, omega_0=config.get("omega_0", 30.0),
                       out_offset=config.get("out_offset", 0.5), head_hidden=args.head_hidden,
                       delta_scale=args.delta_scale or None,
                       reverse_edges=side == "ngnn" and args.reverse_edges)
    train = _splits(args, seed)["train"]
    return materialize(editor, first_graphs(train, args.batch_size))


def dilation_arguments(parser: argparse.ArgumentParser) -> None:
    """The job's own flags: the INR set, the editing encoders' sizes, the recipe, the edit
    heads and the MNIST folder."""
    encoder_arguments(parser, ENCODER_DEFAULTS)
    recipe_arguments(parser)
    parser.add_argument("--head-hidden", type=positive_int, default=64,
                        help="width of the node and edge edit heads")
    parser.add_argument("--delta-scale", type=non_negative_float, default=DELTA_SCALE,
                        metavar="S", help="multiply each SIREN layer's weight and bias "
                        "changes by a learnable scale starting at S, the reference's "
                        f"out_scale (default {DELTA_SCALE}); 0: no scales")
    reverse_edges_argument(parser, default=REVERSE_EDGES)
    sign_flip_argument(parser)
    parser.add_argument("--dihedral", type=unit_probability, default=0.0, metavar="P",
                        help="with probability P map a training INR and its dilated image by "
                        "one of the grid's other seven symmetries (rotations by 90 degrees, "
                        "reflections), in [0, 1]")
    parser.add_argument("--mnist-dir", default=None,
                        help="folder holding MNIST/raw (default: the --data-dir the INR set "
                        "was fitted from, recorded in its manifest)")


def configure(args: argparse.Namespace) -> JobConfig:
    """Read the INR set and its dilated MNIST targets once (refused with the reason when
    either cannot be read), then the task of the set's rendering and the recipe's
    optimizer."""
    config = grey_inr_manifest(args.inr_dir, SCRIPT).get("config", {})
    load_or_refuse("--inr-dir", lambda: _splits(args, args.seeds[0]))
    return with_recipe(JOB, args).replace(
        task=dilation_task(config.get("omega_0", 30.0), config.get("out_offset", 0.5)))


JOB = JobConfig(
    script=SCRIPT, title="MNIST INR dilation editor",
    epochs={side: ENCODER_DEFAULTS[side].epochs for side in EDIT_ENCODERS},
    batch_size=128, lr=1e-3, optimizer=recipe_optimizer(RECIPE_DEFAULTS),
    build_model=build_editor, loaders=dilation_loaders,
    sides=SideFlag("--encoder", EDIT_ENCODERS, default="ngnn", every="all", noun="encoder",
                   help="weight-space encoder, or 'all' for each in turn (each with its "
                   "default epochs unless --epochs is given)"),
    task=dilation_task(), seeds=(0, 1, 2),
    description="Edit each INR of --inr-dir so that it draws its digit dilated (3x3); "
    "the final record carries test_mse and identity_mse.",
    extra_arguments=dilation_arguments,
    resume_keys=("inr_dir", "hidden", "layers", "probes", "head_hidden", "delta_scale",
                 "reverse_edges", "sign_flip", "dihedral", "weight_decay", "warmup_steps",
                 "lr_schedule", "max_grad_norm"),
    labels={"dataset": "mnist_inr_dilation"}, configure=configure, reads_data_dir=False,
    ema_decay=EMA_DECAY)


def main(argv: Sequence[str] | None = None) -> int:
    """Train the chosen editors (the command line parsed once); returns the exit status."""
    return run_job(JOB, argv)


if __name__ == "__main__":
    sys.exit(main())
