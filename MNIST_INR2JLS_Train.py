"""Learn an image space from INR weights, then classify in it: INR2JLS and INR-INR
(SPEC 4.4, the official DNG code's two pipelines), on MNIST, Fashion-MNIST or CIFAR-10
INRs (colour: the decoder draws three channels).

``python -m MNIST_INR2JLS_Train --inr-dir DIR`` trains on a set written by
``python -m MNIST_INR_Fit`` (its extra fits per training image, ``--copies``, are more
training INRs sharing their image's label and image), in two stages, each a run of the
training loop (logs, jsonl, atomic checkpoints, ``--resume``, ``torchrun``, ``--seeds``):

* ``--model jls`` (INR2JLS), stage ``autoencoder``: encoder, latent generator and
  convolutional decoder reproduce the target image in six views (original, horizontal and
  vertical flip, rotations by +90, -90 and 180 degrees) from the INR's weights alone, MSE
  on images scaled to [-1, 1] (:class:`~neural_graphs.jls.JLSAutoencoder`). Its last
  record carries ``test_mse`` and ``baseline_mse`` (predicting the mean training image in
  every view). Stage ``classifier``: the encoder and latent generator of the autoencoder's
  best checkpoint frozen, a CNN head classifies each view's latent map and the six views'
  logits are summed; the last record carries ``test_acc`` and ``test_acc_<view>``.
* ``--model inr2inr``: stage ``autoencoder`` decodes a whole SIREN (every weight and bias)
  from a latent vector, trained by rendering it against the target (plus ``--weight-loss``
  times the weight MSE); records carry ``test_psnr``. Stage ``classifier``: an MLP on the
  frozen latent; records carry ``test_acc``.

``--stage both`` (default) runs the autoencoder, then the classifier, for each seed. Runs
are named ``MNIST_INR2JLS_Train_<side>_seed<k>`` with side ``<encoder>-autoencoder`` and
``<encoder>-classifier`` (INR-INR: ``<encoder>-inr2inr-autoencoder`` / ``-classifier``);
each autoencoder run also draws ``LOG_DIR/<run>.png``: the first test INRs' targets,
renders and decoded views. The target is the original image (``--target original``, read
from ``--data-dir``, by default the folder the fit read, and checked against the set's
image digest) or the INR's own render (``--target render``).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torch_geometric.data import Batch

from jobs.encoder_jobs import (
    RECIPE_DEFAULTS,
    load_or_refuse,
    materialize,
    per_encoder,
    recipe_arguments,
    recipe_optimizer,
    run_job,
    split_loaders_of,
)
from jobs.inr_jobs import (
    INR_ENCODER_DEFAULTS,
    SPLITS,
    encoder_arguments,
    encoder_settings,
    first_graphs,
    inr_fit_config,
    inr_manifest,
    make_encoder,
)
from neural_graphs.inr import render
from neural_graphs.inr_data import inr_set_images
from neural_graphs.jls import (
    INR2INR,
    VIEW_NAMES,
    ConvDecoder,
    JLSAutoencoder,
    JLSClassifier,
    LatentGenerator,
    LatentMLP,
    SirenDecoder,
    ViewClassifier,
    graph_features,
    image_rows,
    inr2inr_task,
    reconstruction_task,
    view_classification_task,
)
from neural_graphs.jls.inr2inr import batch_layout, graph_parameters, siren_parameters
from utils.checkpoints import Checkpoints, validated_weights
from utils.cli import non_negative_float, positive_int
from utils.torchrun import torchrun_place
from utils.Train_Test import JobConfig, JobRefused, SideFlag, SideUnavailable, run_name

SCRIPT = "MNIST_INR2JLS_Train"
JLS_ENCODERS = ("dng", "ngnn", "ngt")
MODELS = ("jls", "inr2inr")
STAGES = ("autoencoder", "classifier")
#: Autoencoder epochs per encoder (--epochs), the encoders at the classification job's
#: sizes, and the classifier's: both stages within the issue's 45 minutes on two free
#: cores for 7,000 training INRs. CPU seconds of one INR2JLS training step on 64 INRs at
#: the default sizes, one thread: dng 0.44, ngnn 0.65, ngt 1.5 (INR-INR 0.3, 0.5, 1.4); an
#: epoch is 110 such steps plus validation. Measured on the published-recipe set (two
#: threads): a dng autoencoder epoch 22 s, a classifier epoch 11 s (the frozen encoder's
#: forward pass); 16 + 10 epochs reached 87.7% (the classifier still rising). Default
#: runs, seed 0: ngnn 38 s an autoencoder epoch and 13.5 s a classifier epoch; ngt (its
#: layers compiled, in chunks of graphs) 80 s and 27 s, so 20 + 30 epochs take about 40
#: minutes (12 + 30 took 38.7 with other jobs beside it).
ENCODER_DEFAULTS = {"dng": replace(INR_ENCODER_DEFAULTS["dng"], epochs=60),
                    "ngnn": replace(INR_ENCODER_DEFAULTS["ngnn"], epochs=40),
                    "ngt": replace(INR_ENCODER_DEFAULTS["ngt"], epochs=20)}
CLASSIFIER_EPOCHS = 30
#: Sizes per model: ``--latent-dim``, ``--latent-size``, ``--latent-hidden``,
#: ``--decoder-hidden``, ``--classifier-hidden``. INR-INR's are the paper's; INR2JLS's
#: are cut for CPU time (the paper: 128, 49, 1024, 256, 256). INR2JLS's latent size
#: follows the images (``None``: a quarter of their side, squared; 49 for 28x28, 64 for
#: 32x32, as the paper).
MODEL_SIZES = {"jls": {"latent_dim": 32, "latent_size": None, "latent_hidden": 256,
                       "decoder_hidden": 64, "classifier_hidden": 64},
               "inr2inr": {"latent_dim": 256, "latent_size": 1, "latent_hidden": 1024,
                           "decoder_hidden": 512, "classifier_hidden": 256}}
NUM_CLASSES = 10
PICTURE_INRS = 8
#: What a classifier must share with the autoencoder checkpoint it reads.
SHAPE_KEYS = ("model", "encoder", "hidden", "layers", "probes", "dng_config", "latent_dim",
              "latent_size", "latent_hidden", "decoder_hidden")


class StageFailed(SideUnavailable):
    """A stage cannot be built (no or another autoencoder checkpoint): an error, never a
    skipped side."""

    skippable = False


def side_name(encoder: str, model: str, stage: str) -> str:
    """``dng-autoencoder``, ``dng-inr2inr-classifier``, ...: the run's side."""
    return f"{encoder}-{stage}" if model == "jls" else f"{encoder}-inr2inr-{stage}"


# --------------------------------------------------------------------------- data


class _Targets:
    """``manifest ->`` target images in [0, 1] in the set's order, ``[n, H, W]`` grey or
    ``[n, H, W, C]`` colour (as rendered): the original images (``original``) or the INRs'
    renders (``render``). One object per
    (kind, set, folder), so the set cache recognises it; the result is kept."""

    def __init__(self, kind: str, inr_dir: str, data_dir: str | None) -> None:
        self.kind, self.inr_dir, self.data_dir = kind, inr_dir, data_dir
        self._images: Tensor | None = None

    def __call__(self, manifest: dict[str, Any]) -> Tensor:
        if self._images is None:
            self._images = self._read(manifest)
        return self._images

    def _read(self, manifest: dict[str, Any]) -> Tensor:
        if self.kind == "render":
            from neural_graphs.inr_fit import load_inr_set

            params = load_inr_set(self.inr_dir, manifest)[0]
            config = manifest.get("config", {})
            return render(params, omega_0=config.get("omega_0", 30.0),
                          out_offset=config.get("out_offset", 0.5)).clamp(0, 1)
        try:
            images = inr_set_images(manifest, self.data_dir)
        except RuntimeError as err:  # a file with the wrong checksum
            raise ValueError(str(err)) from None
        except (ValueError, OSError) as err:
            raise type(err)(f"{str(err).rstrip('. ')}; --target render trains on the "
                            "INRs' own renders instead") from None
        return torch.from_numpy(np.ascontiguousarray(images)).float() / 255.0


_TARGETS: dict[tuple[str, str, str | None], _Targets] = {}


def _targets(args: argparse.Namespace) -> _Targets:
    key = (args.target, args.inr_dir, args.data_dir)
    return _TARGETS.setdefault(key, _Targets(*key))


def _splits(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    return SPLITS.get(args.inr_dir, None, seed, _targets(args))


def jls_loaders(args: argparse.Namespace, seed: int,
                distributed: bool) -> tuple[DataLoader | None, ...]:
    """``(train, val, test)`` loaders of the set's splits with their target images."""
    return split_loaders_of(_splits(args, seed), args, seed, distributed)


# --------------------------------------------------------------------------- models


def _feature_encoder(args: argparse.Namespace, layers_of_inr: int) -> nn.Module:
    """The encoder whose graph features the latent generator reads (its output MLP
    removed)."""
    if args.dng_config == "official":
        from neural_graphs.encoders import DNGEncoder
        from neural_graphs.encoders.reference.dng import reference_kwargs

        encoder = DNGEncoder(1, **reference_kwargs(num_layers=layers_of_inr, hidden=args.hidden))
    else:
        encoder = make_encoder(args.encoder, 1, args.hidden, args.layers, args.probes)
    encoder.head = nn.Identity()
    return encoder


def build_autoencoder(args: argparse.Namespace, seed: int) -> nn.Module:
    """Stage 1 of ``--model``: a :class:`~neural_graphs.jls.JLSAutoencoder` or an
    :class:`~neural_graphs.jls.INR2INR`, sized on the first training INRs."""
    train = _splits(args, seed)["train"]
    example = first_graphs(train, args.batch_size)
    layout = batch_layout(example)
    encoder = materialize(_feature_encoder(args, len(layout) - 1), example)
    with torch.no_grad():
        width = graph_features(encoder.eval(), example).shape[1]
    encoder.train()
    jls = args.model == "jls"
    latent = LatentGenerator(width, args.latent_dim, args.latent_size, 6 if jls else 1,
                             args.latent_hidden)
    if jls:
        channels = 1 if train.targets.dim() == 3 else train.targets.shape[3]
        return JLSAutoencoder(encoder, latent, ConvDecoder(args.latent_dim, channels,
                                                           args.decoder_hidden))
    weights, biases = train.edge_attr[..., 0], train.x[:, layout[0]:, 0]
    decoder = SirenDecoder(latent.views * args.latent_size * args.latent_dim,
                           weights.shape[1], biases.shape[1], args.decoder_hidden)
    decoder.set_statistics(weights, biases)
    config = inr_fit_config(args.inr_dir)
    return INR2INR(encoder, latent, decoder, layout, tuple(train.targets.shape[1:3]),
                   omega_0=config.get("omega_0", 30.0), out_offset=config.get("out_offset", 0.5))


def autoencoder_checkpoint(args: argparse.Namespace, seed: int) -> Path:
    """``--autoencoder-checkpoint``, or the best checkpoint of this seed's autoencoder run
    in ``--checkpoint-dir``."""
    if args.autoencoder_checkpoint:
        return Path(args.autoencoder_checkpoint)
    side = side_name(args.encoder, args.model, "autoencoder")
    return Checkpoints(Path(args.checkpoint_dir), run_name(SCRIPT, side, seed)).best


def read_autoencoder(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """The autoencoder checkpoint the classifier of ``seed`` starts from; ``ValueError``
    saying why when it is absent, unreadable or of another configuration."""
    path = autoencoder_checkpoint(args, seed)
    if not path.is_file():
        raise ValueError(f"{path} does not exist: train the autoencoder first (--stage "
                         "autoencoder or both, same --checkpoint-dir), or name its _best.pt "
                         "with --autoencoder-checkpoint")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        saved, model = checkpoint["config"], validated_weights(checkpoint)
    except Exception as err:  # noqa: BLE001 -- any unreadable file gets the same answer
        raise ValueError(f"{path} is not a checkpoint of this job: {err!r}") from None
    for key in SHAPE_KEYS:
        if saved.get(key) != getattr(args, key):
            flag = "--" + key.replace("_", "-")
            raise ValueError(f"{path} was trained with {flag} {saved.get(key)!r}, this "
                             f"command gives {getattr(args, key)!r}: the classifier must "
                             "read the autoencoder it was built for")
    return {"path": path, "model": model}


def build_model(args: argparse.Namespace, seed: int, side: str) -> nn.Module:
    """The model of a run: the autoencoder, or the classifier on the frozen encoder and
    latent generator of the autoencoder's best checkpoint."""
    if not side.endswith("-classifier"):
        return build_autoencoder(args, seed)
    try:
        checkpoint = read_autoencoder(args, seed)
    except ValueError as err:
        raise StageFailed(str(err)) from None
    autoencoder = build_autoencoder(args, seed)
    autoencoder.load_state_dict(checkpoint["model"])
    if args.model == "jls":
        head: nn.Module = ViewClassifier(args.latent_dim, NUM_CLASSES, args.classifier_hidden)
    else:
        head = LatentMLP(autoencoder.latent.views * args.latent_size * args.latent_dim,
                         NUM_CLASSES, args.classifier_hidden)
    return JLSClassifier(autoencoder.encoder, autoencoder.latent, head)


# --------------------------------------------------------------------------- pictures


def write_pictures(args: argparse.Namespace) -> list[Path]:
    """``LOG_DIR/<run>.png`` of each seed's autoencoder run that has a best checkpoint: the
    first test INRs' targets, own renders and decoded views (INR-INR: decoded SIREN)."""
    if args.stage == "classifier":
        return []
    config = inr_fit_config(args.inr_dir)
    side = side_name(args.encoder, args.model, "autoencoder")
    written = []
    for seed in args.seeds:
        name = run_name(SCRIPT, side, seed)
        checkpoints = Checkpoints(Path(args.checkpoint_dir), name)
        if not checkpoints.best.is_file():
            continue
        model = build_autoencoder(args, seed)
        model.load_state_dict(checkpoints.load_best_model())
        test = _splits(args, seed)["test"]
        batch = Batch.from_data_list([test[i] for i in range(min(PICTURE_INRS, len(test)))])
        weights, biases = graph_parameters(batch)
        layout = batch_layout(batch)
        own = siren_parameters(weights, biases, layout)
        renders = render(own, tuple(batch.target.shape[1:3]),
                         omega_0=config.get("omega_0", 30.0),
                         out_offset=config.get("out_offset", 0.5))
        with torch.no_grad():
            out = model.eval()(batch)
        rows = [("target", batch.target), ("INR render", renders)]
        if args.model == "jls":
            # Decoded views [B, 6, C, H, W] drawn as rendered: [B, H, W] or [B, H, W, C].
            views = out.movedim(2, -1) if out.shape[2] > 1 else out[:, :, 0]
            rows += [(f"dec {view}", (views[:, v] + 1) / 2) for v, view in enumerate(VIEW_NAMES)]
        else:
            rows.append(("decoded INR", out.image))
        written.append(image_rows(rows, Path(args.log_dir) / f"{name}.png",
                                  title=f"{name}: best checkpoint, first test INRs, "
                                  f"target {args.target}"))
    return written


# --------------------------------------------------------------------------- flags


def jls_arguments(parser: argparse.ArgumentParser) -> None:
    """The job's own flags."""
    encoder_arguments(parser, ENCODER_DEFAULTS)
    recipe_arguments(parser)
    sizes = MODEL_SIZES
    parser.add_argument("--model", choices=MODELS, default="jls",
                        help="jls: INR2JLS (six-view image decoder, CNN on the latent maps); "
                        "inr2inr: INR-INR (SIREN decoder, MLP on the latent)")
    parser.add_argument("--stage", choices=(*STAGES, "both"), default="both",
                        help="autoencoder, classifier (on the frozen autoencoder), or both "
                        "in that order")
    parser.add_argument("--target", choices=("original", "render"), default="original",
                        help="what the autoencoder reproduces: the original image, or the "
                        "INR's own render (for sets whose originals are absent)")
    parser.add_argument("--data-dir", "--mnist-dir", dest="data_dir", default=None,
                        help="folder holding the set's images for --target original "
                        "(MNIST/raw, FashionMNIST/raw or cifar-10-batches-py; default: the "
                        "--data-dir the INR set was fitted from, recorded in its manifest)")
    parser.add_argument("--dng-config", choices=("project", "official"), default="project",
                        help="--encoder dng only. project: this repository's DNGEncoder "
                        "(graph features, probes); official: the official code's "
                        "DynamicNeuralGNN (bias features, per-layer weights, no probes; "
                        "neural_graphs.encoders.reference.dng)")

    def sized(flag: str, key: str, what: str) -> None:
        jls_default = sizes["jls"][key] or "(H/4)^2 for HxH images"
        parser.add_argument(flag, type=positive_int, default=None,
                            help=f"{what}; default per model: jls {jls_default}, "
                            f"inr2inr {sizes['inr2inr'][key]}")

    sized("--latent-dim", "latent_dim", "channels of each latent map (INR-INR: of the latent)")
    sized("--latent-size", "latent_size", "latent positions per view, a square (49: 7x7 maps "
          "for 28x28 images, 64 for 32x32)")
    sized("--latent-hidden", "latent_hidden", "width of the latent generator's token MLP")
    sized("--decoder-hidden", "decoder_hidden", "jls: channels between the two transposed "
          "convolutions; inr2inr: width of the weight and bias MLPs")
    sized("--classifier-hidden", "classifier_hidden", "jls: the CNN head's channels and MLP "
          "width; inr2inr: the MLP's width")
    parser.add_argument("--classifier-epochs", type=positive_int, default=None,
                        help=f"epochs of the classifier stage (default: --epochs when given, "
                        f"else {CLASSIFIER_EPOCHS}); --epochs alone sets both stages, by "
                        "default the autoencoder's " + per_encoder(ENCODER_DEFAULTS, "epochs"))
    parser.add_argument("--classifier-weight-decay", type=non_negative_float, default=0.1,
                        help="AdamW weight decay of the classifier stage (the paper's 0.1; "
                        "--weight-decay is the autoencoder's)")
    parser.add_argument("--autoencoder-checkpoint", default=None, metavar="PATH",
                        help="the autoencoder the classifier freezes (default: the best "
                        "checkpoint of the seed's autoencoder run in --checkpoint-dir)")
    parser.add_argument("--weight-loss", type=non_negative_float, default=0.0,
                        help="inr2inr: weight of the MSE between decoded and input weights "
                        "and biases, added to the render MSE")


# --------------------------------------------------------------------------- job


def _resolve(args: argparse.Namespace) -> None:
    """Defaults that depend on other flags, written into ``args`` (so the logs, the
    checkpoints' configs and ``--resume`` see the values used)."""
    if args.dng_config == "official":
        if args.encoder != "dng":
            raise JobRefused(f"--dng-config official: needs --encoder dng, got "
                             f"{args.encoder}")
        if args.probes:
            raise JobRefused("--dng-config official: the official encoder reads biases "
                             f"only and has no probe features, got --probes {args.probes}")
        args.probes = 0
    args.hidden, args.layers, args.probes = encoder_settings(args, args.encoder,
                                                             ENCODER_DEFAULTS)
    for key, value in MODEL_SIZES[args.model].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.latent_size is not None and math.isqrt(args.latent_size) ** 2 != args.latent_size:
        raise JobRefused(f"--latent-size must be a square number (49 = 7x7), got "
                         f"{args.latent_size}")
    if args.weight_loss and args.model != "inr2inr":
        raise JobRefused("--weight-loss: only --model inr2inr decodes weights")


def configure(args: argparse.Namespace, done: dict[str, Any] | None = None) -> JobConfig:
    """Check the flags, read the INR set and its targets once (refused with the reason
    when either cannot be read), then the job of the chosen stages: one side per stage,
    each with its task, optimizer and epochs."""
    _resolve(args)
    manifest = inr_manifest(args.inr_dir)
    if args.target == "original":
        load_or_refuse("--target original", lambda: _targets(args)(manifest))
    splits = load_or_refuse("--inr-dir", lambda: _splits(args, args.seeds[0]))
    height, width = splits["train"].targets.shape[1:3]
    if args.latent_size is None:
        args.latent_size = (height // 4) ** 2
    side = math.isqrt(args.latent_size)
    if args.model == "jls" and (height, width) != (4 * side,) * 2:
        raise JobRefused(f"--latent-size {args.latent_size}: the decoder draws {4 * side}x"
                         f"{4 * side}-pixel images, the targets are {height}x{width}"
                         + (f" (--latent-size {(height // 4) ** 2} fits them)"
                            if height == width and height % 4 == 0 else
                            " (INR2JLS needs square images whose side is a multiple of 4)"))
    stages = STAGES if args.stage == "both" else (args.stage,)
    sides = tuple(side_name(args.encoder, args.model, stage) for stage in stages)
    if stages == ("classifier",):
        for seed in args.seeds:
            load_or_refuse("--autoencoder-checkpoint", lambda s=seed: read_autoencoder(args, s))
    config = manifest.get("config", {})
    first = (ENCODER_DEFAULTS[args.encoder].epochs if args.epochs is None else args.epochs)
    last = args.classifier_epochs or args.epochs or CLASSIFIER_EPOCHS
    # Per-stage epochs come from the mapping: the loop reads it when --epochs is None.
    args.epochs = None
    if args.model == "jls":
        stage_one = reconstruction_task(splits["train"].targets.mean(0))
        views = VIEW_NAMES
    else:
        stage_one = inr2inr_task(args.weight_loss, config.get("omega_0", 30.0),
                                 config.get("out_offset", 0.5))
        views = ("latent",)
    by_stage = {"autoencoder": (first, stage_one, recipe_optimizer(args)),
                "classifier": (last, view_classification_task(views), recipe_optimizer(
                    argparse.Namespace(**{**vars(args),
                                          "weight_decay": args.classifier_weight_decay})))}
    chosen = {side: by_stage[stage] for side, stage in zip(sides, stages)}
    if done is not None:
        done["args"] = args
    # The loop trains every side of the flag's `every` choice: here the stages of the
    # encoder given, in order.
    return JOB.replace(
        sides=SideFlag("--encoder", sides, default=sides[0], every=args.encoder,
                       noun="stage"),
        epochs={side: value[0] for side, value in chosen.items()},
        task={side: value[1] for side, value in chosen.items()},
        optimizer={side: value[2] for side, value in chosen.items()})


JOB = JobConfig(
    script=SCRIPT, title="INR2JLS / INR-INR",
    epochs={side: ENCODER_DEFAULTS[side].epochs for side in JLS_ENCODERS},
    batch_size=64, lr=1e-3, optimizer=recipe_optimizer(RECIPE_DEFAULTS),
    build_model=build_model, loaders=jls_loaders,
    sides=SideFlag("--encoder", JLS_ENCODERS, default="dng", noun="encoder",
                   help="weight-space encoder whose graph features (the readout before its "
                   "output MLP) the latent generator reads"),
    task=view_classification_task(VIEW_NAMES), seeds=(0,),
    description="Learn a joint latent space of the INRs of --inr-dir from their weights "
    "(INR2JLS: six views of the image; --model inr2inr: a decoded SIREN), then classify "
    "from it with encoder and latent frozen. Each stage is its own run, side "
    "<encoder>-autoencoder and <encoder>-classifier (inr2inr: <encoder>-inr2inr-...); "
    "--epochs gives both stages' epochs (default: the autoencoder's per encoder below, the "
    f"classifier's {CLASSIFIER_EPOCHS}).",
    extra_arguments=jls_arguments,
    resume_keys=("inr_dir", "model", "target", "hidden", "layers", "probes", "dng_config",
                 "latent_dim", "latent_size", "latent_hidden", "decoder_hidden",
                 "classifier_hidden", "weight_decay", "classifier_weight_decay",
                 "warmup_steps", "lr_schedule", "max_grad_norm", "weight_loss"),
    labels={"dataset": "mnist_inr_jls"}, configure=configure, reads_data_dir=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Train the chosen stages (the command line parsed once), then draw each autoencoder
    run's picture; returns the exit status."""
    done: dict[str, Any] = {}
    status = run_job(JOB.replace(configure=partial(configure, done=done)), argv)
    if status == 0 and "args" in done and torchrun_place().rank == 0:
        for path in write_pictures(done["args"]):
            print(f"wrote {path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
