"""Fit one SIREN per MNIST, Fashion-MNIST or CIFAR-10 image: the INR sets of the neural-graphs work.

``python -m MNIST_INR_Fit --recipe published|fast``: a SIREN 2-32-32-1 (omega_0 = 30,
output + 0.5) per image, fitted by Adam to the MSE against the pixels (in [0, 1]) on the
28x28 grid of ``neural_graphs.inr.make_coordinates`` (x along the columns, y along the
rows, both ``linspace(-1, 1, 28)``), many INRs per optimizer step
(``neural_graphs.inr_fit.fit_sirens``). Recipes:

- ``published``: the reference initialisation (``SIREN(first_layer_init="reference")``),
  Adam lr 1e-3, 2,000 steps: the per-parameter statistics of the published set;
- ``fast``: the SIREN paper's first layer (``first_layer_init="siren"``), Adam lr 1e-3,
  300 steps: a far higher PSNR in a fraction of the time (another weight distribution).

Images: ``--dataset mnist`` (default) reads ``DATA_DIR/MNIST/raw``, ``--dataset
fashion-mnist`` reads ``DATA_DIR/FashionMNIST/raw`` (``DATA_DIR``: ``--data-dir``; the
``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`` files of either, torchvision's layout,
md5-checked and downloaded when absent and the folder is writable:
``utils.images.load_idx_dataset``). Both have 60,000 training and 10,000 test images, so
``--mnist-source`` means the same for both; a Fashion-MNIST set records
``"dataset": "fashion-mnist"`` in its configuration (an MNIST set records none) and the
INR jobs find its images in ``FashionMNIST/raw``. ``--dataset cifar10`` reads
``DATA_DIR/cifar-10-batches-py`` (or extracts ``DATA_DIR/cifar-10-python.tar.gz``,
md5-checked, downloaded when absent and the folder is writable) and fits SIRENs 2-32-32-3
on the 32x32 grid, one output per colour channel (the sets of the dynamic-neural-graph
paper); its 50,000 training images give ``--mnist-source train`` 45,000 / 5,000 /
10,000.

Output in ``--out``: ``fit_config.json``, shards ``shard_NNNNN.pt`` (stacked parameters in
SIREN state_dict names, labels, image indices, split names, PSNR) each with a
``shard_NNNNN.json`` holding its sha256, ``manifest.json`` and ``renders.png``. A killed
run continues where it stopped; ``torchrun --nproc_per_node=N -m MNIST_INR_Fit ...``
shares the shards between processes. ``--reuse DIR`` takes every INR a finished set fitted
the same way already holds (an INR depends only on the configuration, its image and its
seed), so ``--copies K --reuse <the set without copies>`` fits only the copies. Read the set with
``neural_graphs.inr_fit.load_inr_set(out)``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

import numpy as np
import torch

from neural_graphs.inr_fit import (
    RECIPES,
    SPLITS,
    FitConfig,
    StoreError,
    images_digest,
    limit_counts,
    run_fit,
    stratified_limit,
    stratified_split,
)
from utils.cli import (
    CPU_THREADS_HELP,
    HelpFormatter,
    checked_device,
    default_device,
    non_negative_int,
    positive_float,
    positive_int,
    set_cpu_threads,
)
from utils.images import IDX_DATASETS, load_cifar10, load_idx_dataset
from utils.memory import allocator_setting, keep_freed_memory
from utils.torchrun import torchrun_place

TEST_SPLIT_SIZES = {"train": 7000, "val": 1000, "test": 2000}
TRAIN_SOURCE_VAL = 5000
#: the images of each --dataset: (name in messages, training images, SIREN outputs); every
#: one has 10,000 test images
DATASETS: dict[str, tuple[str, int, int]] = {
    **{name: (title, 60000, 1) for name, (title, _) in IDX_DATASETS.items()},
    "cifar10": ("CIFAR-10", 50000, 3),
}


def split_sizes(dataset: str, source: str) -> dict[str, int]:
    """The split sizes of ``--mnist-source source`` of ``--dataset dataset``."""
    if source == "test-split":
        return dict(TEST_SPLIT_SIZES)
    return {"train": DATASETS[dataset][1] - TRAIN_SOURCE_VAL, "val": TRAIN_SOURCE_VAL,
            "test": 10000}


# the split sizes of each --mnist-source of MNIST (and Fashion-MNIST)
SOURCE_SPLIT_SIZES = {source: split_sizes("mnist", source) for source in ("test-split", "train")}


def smallest_limit(sizes: dict[str, int]) -> int:
    """The smallest ``--limit`` that leaves every split of ``sizes`` at least one image."""
    return next(n for n in range(len(sizes), sum(sizes.values()) + 1)
                if min(limit_counts(sizes, n).values()) >= 1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m MNIST_INR_Fit", description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter)
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="published",
                        help="published: reference init, 2,000 Adam steps; fast: SIREN "
                             "first-layer init, 300 steps")
    parser.add_argument("--dataset", choices=tuple(DATASETS), default="mnist",
                        help="the images: mnist reads DATA_DIR/MNIST/raw, fashion-mnist "
                             "DATA_DIR/FashionMNIST/raw, cifar10 (SIRENs with 3 outputs on "
                             "32x32) DATA_DIR/cifar-10-batches-py")
    parser.add_argument("--data-dir", default="data",
                        help="folder holding MNIST/raw/*.gz, FashionMNIST/raw/*.gz or "
                             "cifar-10-batches-py (utils.images layout)")
    parser.add_argument("--mnist-source", choices=tuple(SOURCE_SPLIT_SIZES), default="train",
                        help="train: the training images (60k; CIFAR-10 50k) less 5k "
                             "for validation (stratified) plus the 10k test images as "
                             "test; test-split: only the 10k test "
                             "images, split 7,000/1,000/2,000 stratified by label (either "
                             "--dataset)")
    parser.add_argument("--steps", type=non_negative_int, default=None,
                        help="Adam steps per INR (default: the recipe's)")
    parser.add_argument("--lr", type=positive_float, default=None,
                        help="Adam learning rate (default: the recipe's, 1e-3)")
    parser.add_argument("--limit", type=positive_int, default=None,
                        help="fit a stratified subset of this many images, in the split "
                             "proportions (quick trials); every split must get an image "
                             "(default: every image)")
    parser.add_argument("--copies", type=non_negative_int, default=0,
                        help="extra INRs per training image, from other initialisations")
    parser.add_argument("--reuse", default=None, metavar="DIR",
                        help="a finished INR set fitted the same way (other --copies or "
                             "--limit allowed): take every INR it holds instead of fitting "
                             "it again, e.g. to add --copies to a set (default: fit all)")
    parser.add_argument("--out", default=None,
                        help="output folder (default: data/<dataset>_inrs_<recipe>, e.g. "
                             "data/mnist_inrs_published, data/fashion_mnist_inrs_fast)")
    parser.add_argument("--device", default=default_device(),
                        help="torch device; under torchrun, CUDA processes take "
                             "cuda:LOCAL_RANK")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seeds the split and every INR's initialisation")
    parser.add_argument("--batch-inrs", type=positive_int, default=64,
                        help="INRs fitted together in one optimizer group")
    parser.add_argument("--shard-size", type=positive_int, default=512,
                        help="INRs per shard file (the unit a killed run redoes)")
    parser.add_argument("--stop-psnr", type=positive_float, default=None,
                        help="per-INR early stop: an INR whose PSNR (dB) reaches this stops "
                             "(default: every INR takes every step)")
    parser.add_argument("--check-every", type=positive_int, default=25,
                        help="steps between early-stopping checks and progress updates")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="precision of the fit (the shards keep it)")
    parser.add_argument("--threads", type=positive_int, default=None, help=CPU_THREADS_HELP)
    return parser


def parse_args(parser: argparse.ArgumentParser,
               argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, with the checks that need several flags at once (parser errors,
    exit 2): a ``--limit`` that leaves a split empty, a ``--device`` torch cannot use."""
    args = parser.parse_args(argv)
    if args.limit is not None:
        sizes = split_sizes(args.dataset, args.mnist_source)
        total = sum(sizes.values())
        if args.limit > total:
            parser.error(f"--limit {args.limit}: --mnist-source {args.mnist_source} has "
                         f"{total} images")
        counts = limit_counts(sizes, args.limit)
        empty = [name for name in SPLITS if counts.get(name, 0) == 0]
        if empty:
            parser.error(f"--limit {args.limit} leaves split(s) {', '.join(empty)} without an "
                         f"image ({', '.join(f'{k} {v}' for k, v in counts.items())}); with "
                         f"--mnist-source {args.mnist_source} the smallest limit is "
                         f"{smallest_limit(sizes)}")
    args.device = checked_device(parser, args.device)
    return args


def _read_dataset(args: argparse.Namespace) -> tuple[np.ndarray, ...]:
    """``(test_images, test_labels, train_images, train_labels)`` of ``--dataset``; colour
    images channels last, ``[N, H, W, 3]``. With ``--mnist-source test-split`` an IDX set
    reads only its test files, and the training pair is None."""
    if args.dataset == "cifar10":
        train_x, train_y, test_x, test_y = load_cifar10(args.data_dir, download=True)
        return (test_x.transpose(0, 2, 3, 1), test_y, train_x.transpose(0, 2, 3, 1), train_y)
    title, folder = IDX_DATASETS[args.dataset]
    hint = (f"--dataset {args.dataset} --mnist-source {args.mnist_source} reads {title} from "
            f"{args.data_dir}/{folder}/raw.")
    if args.mnist_source == "train":
        hint += " With the test set only, use --mnist-source test-split."
    test = load_idx_dataset(args.dataset, args.data_dir, "t10k", hint=hint)
    if args.mnist_source == "test-split":
        return (*test, None, None)
    return (*test, *load_idx_dataset(args.dataset, args.data_dir, "train", hint=hint))


def load_images(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray,
                                                   dict[str, np.ndarray]]:
    """Images, labels and the split (image indices per split) of ``--mnist-source`` of
    ``--dataset``."""
    title = DATASETS[args.dataset][0]
    test_images, test_labels, train_images, train_labels = _read_dataset(args)
    if args.mnist_source == "test-split":
        images, labels = test_images, test_labels
        if len(labels) != sum(TEST_SPLIT_SIZES.values()):
            raise ValueError(f"the {title} test set has {len(labels)} images, expected "
                             f"{sum(TEST_SPLIT_SIZES.values())}")
        splits = stratified_split(labels, TEST_SPLIT_SIZES, args.seed)
    else:
        sizes = {"train": len(train_labels) - TRAIN_SOURCE_VAL, "val": TRAIN_SOURCE_VAL}
        splits = stratified_split(train_labels, sizes, args.seed)
        images = np.concatenate([train_images, test_images])
        labels = np.concatenate([train_labels, test_labels])
        splits["test"] = np.arange(len(train_labels), len(labels))
    if args.limit is not None:
        splits = stratified_limit(splits, args.limit)
    return images, labels, splits


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    recipe = RECIPES[args.recipe]
    steps = recipe["steps"] if args.steps is None else args.steps
    lr = recipe["lr"] if args.lr is None else args.lr
    set_cpu_threads(args.threads, args.device)
    keep_freed_memory()
    place = torchrun_place()
    rank, world_size = place.rank, place.world_size
    device = args.device
    if device.type == "cuda" and place.enabled:
        device = torch.device("cuda", place.local_rank)
    prefix = args.dataset.replace("-", "_")
    out = args.out or os.path.join("data", f"{prefix}_inrs_{args.recipe}")
    try:
        images, labels, splits = load_images(args)
    except (FileNotFoundError, RuntimeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    selected = np.sort(np.concatenate(list(splits.values())))
    config = FitConfig(recipe=args.recipe, first_layer_init=recipe["first_layer_init"],
                       steps=steps, lr=lr, seed=args.seed, source=args.mnist_source,
                       limit=args.limit, copies=args.copies, batch_inrs=args.batch_inrs,
                       shard_size=args.shard_size, stop_psnr=args.stop_psnr,
                       check_every=args.check_every, dtype=args.dtype,
                       images_sha256=images_digest(images[selected], labels[selected]),
                       dataset=args.dataset, out_features=DATASETS[args.dataset][2],
                       image_height=images.shape[1], image_width=images.shape[2])
    if rank == 0:
        sizes = ", ".join(f"{name} {len(part)}" for name, part in splits.items())
        print(f"{DATASETS[args.dataset][0]} INRs, recipe {args.recipe}: {steps} Adam "
              f"steps, lr {lr}, images "
              f"{sizes}, {args.copies} extra copies per training image, {world_size} "
              f"process(es) on {device}, {torch.get_num_threads()} thread(s) each, "
              f"{allocator_setting()} -> {out}",
              flush=True)
    start = time.perf_counter()
    try:
        manifest = run_fit(images, labels, splits, config, out, device, rank, world_size,
                           extra={"data_dir": str(args.data_dir), "reuse": args.reuse},
                           reuse=args.reuse)
    except (StoreError, FileNotFoundError) as err:
        # another configuration in --out or --reuse, a damaged set, no set in --reuse
        print(f"error: {err}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    if manifest is not None:
        summary = manifest["psnr_summary"]["all"]
        stats = manifest["statistics"]
        print(f"{manifest['count']} INRs in {out}: mean PSNR {summary['mean']:.2f} dB "
              f"(min {summary['min']:.2f}, median {summary['median']:.2f}, max "
              f"{summary['max']:.2f}); this process {seconds:.1f} s, all shards "
              f"{manifest['fit_seconds_total']:.1f} s"
              + (f", {manifest['reused_inrs']} INRs taken from {args.reuse}"
                 if manifest["reused_inrs"] else ""), flush=True)
        published = "published" if args.dataset == "mnist" else "published MNIST set"
        print(f"parameter std ({published}): " + ", ".join(
            f"{key} {value['std']:.4f} ({manifest['published_statistics'][key]['std']})"
            for key, value in stats.items()) + f"; output-bias mean "
            f"{stats['net.4.bias']['mean']:.4f} (-0.012)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
