"""Generate a zoo of small CNNs or ViTs trained on real images (python -m CNN_Zoo_Generate --help).

Many networks with sampled hyper-parameters train at once (``neural_graphs.zoo``); each
is recorded at several epochs with its accuracy on its training images and on images it
never saw. Default data: the MNIST test set, first 5,000 images to train the zoo, last
5,000 to measure it. Resumable (finished shards are kept); ``torchrun
--nproc_per_node=N -m CNN_Zoo_Generate ...`` splits the groups across processes.

    python -m CNN_Zoo_Generate --family small --num 1000 --out runs/zoo_small \\
        --data-dir ../shared/data
    python -m CNN_Zoo_Generate --family vit --num 112 --out runs/zoo_vit \\
        --data-dir ../shared/data
    python -m CNN_Zoo_Generate --describe runs/zoo_small

``--describe DIR`` prints a zoo's test accuracies per checkpoint epoch (histogram,
percentiles, the fraction within 2 points of chance) and draws them in DIR/describe.png.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from neural_graphs.zoo import (
    DATASETS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    FAMILIES,
    StoreError,
    ZooConfig,
    generate_zoo,
    load_data,
)
from neural_graphs.zoo_describe import (
    PNG_NAME,
    describe_zoo,
    format_description,
    plot_description,
)
from utils.cli import (
    CPU_THREADS_HELP,
    HelpFormatter,
    checked_device,
    non_negative_int,
    positive_int,
    set_cpu_threads,
)
from utils.memory import keep_freed_memory


def _epochs(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated epochs such as 1,2,4,8, got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(
            f"expected non-negative epochs such as 1,2,4,8, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m CNN_Zoo_Generate", description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter,
        epilog="Many processes: torchrun --nproc_per_node=N -m CNN_Zoo_Generate --networks "
        "1000 ... (each process takes whole groups, one thread each on CPU)")
    parser.add_argument("--family", choices=FAMILIES, default="small",
                        help="small: 3 conv layers of 16 channels, 3x3, stride 2 (Small CNN "
                        "Zoo); wild: 2-5 conv layers, 4-32 channels, kernels 3/5/7, residual "
                        "connections, BatchNorm, six activations; vit: SimpleViT (patch 4, "
                        "dim 32, depth 2, 4 heads, MLP 64) differing only by seed, Adam 1e-3, "
                        "random crops (the dynamic-neural-graph paper's ViT zoo)")
    parser.add_argument("--num", "--networks", dest="num", type=positive_int, default=1000,
                        help="number of networks (each with one member per checkpoint epoch); "
                        "under torchrun spell it --networks (torchrun takes --num for its "
                        "own --numa-binding)")
    parser.add_argument("--out", help="output folder (created; resumed if it holds a zoo of "
                        "the same configuration); required unless --describe")
    parser.add_argument("--describe", metavar="DIR", help="instead of training: print the "
                        "zoo in DIR's test accuracies per checkpoint epoch (histogram, p10 / "
                        "median / p90, the fraction within 2 points of chance), draw them in "
                        f"DIR/{PNG_NAME}, and exit; needs no other flag")
    parser.add_argument("--data-dir", default="data", help="folder with MNIST/raw/t10k-*.gz, "
                        "cifar-10-batches-py/ or cifar-100-python/")
    parser.add_argument("--dataset", choices=DATASETS, default="mnist",
                        help="mnist: halves of the MNIST test set; cifar10-gs / cifar100-gs: "
                        "CIFAR train / test sets in grey")
    parser.add_argument("--download", action="store_true",
                        help="download MNIST / CIFAR-100 when absent (CIFAR-10 must be "
                        "extracted by hand)")
    parser.add_argument("--train-images", type=positive_int, default=None,
                        help="keep the first N training images (default all: 5,000 for mnist)")
    parser.add_argument("--test-images", type=positive_int, default=None,
                        help="keep the first N measurement images (default all)")
    small, wild, vit = (",".join(map(str, DEFAULT_EPOCHS[f])) for f in FAMILIES)
    parser.add_argument("--epochs", type=_epochs, default=None,
                        help="checkpoint epochs, comma-separated; 0 is the untrained network "
                        f"(default: small {small}, the Small CNN Zoo's 0,1,2,3,20,40,60,80,86 "
                        f"of 86 epochs scaled to 12; wild {wild}; vit {vit}, the official "
                        "ViT zoo's stop epochs)")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="training images per step, per network (default: "
                        + ", ".join(f"{f} {DEFAULT_BATCH_SIZE[f]}" for f in FAMILIES) + ")")
    parser.add_argument("--group-size", type=positive_int, default=None,
                        help="networks per group, the unit of a shard and of torchrun's split "
                        "(default 16, the fastest on CPU, larger on a GPU; vit 8): small, at "
                        "most so many per train fraction and activation, trained at once; "
                        "wild, hyper-parameter draws per architecture, trained at once; vit, "
                        "seeds trained one after the other")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seed of the whole zoo")
    parser.add_argument("--device", default=None, help="torch device (default cuda:LOCAL_RANK "
                        "when CUDA is available, else cpu)")
    parser.add_argument("--threads", type=positive_int, default=None, help=CPU_THREADS_HELP)
    return parser


def describe(folder: str) -> int:
    """``--describe``: print the zoo's summary and write its PNG; 2 when not a zoo."""
    try:
        desc = describe_zoo(folder)
    except (FileNotFoundError, StoreError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_description(desc))
    if not any(row["members"] for row in desc["epochs"]):
        print(f"(no members yet: {PNG_NAME} not written)")
        return 0
    try:
        path = plot_description(desc, f"{folder}/{PNG_NAME}")
    except OSError as err:
        print(f"error: cannot write {folder}/{PNG_NAME}: {err}", file=sys.stderr)
        return 2
    print(f"histograms: {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.describe is not None:
        return describe(args.describe)
    if args.out is None:
        parser.error("the following arguments are required: --out (or --describe DIR)")
    device = checked_device(parser, args.device) if args.device is not None else None
    if device is None and torch.cuda.is_available():
        device = torch.device("cuda")
    set_cpu_threads(args.threads, device)
    keep_freed_memory()
    try:
        config = ZooConfig(family=args.family, num=args.num, seed=args.seed,
                           dataset=args.dataset, train_images=args.train_images,
                           test_images=args.test_images, epochs=args.epochs,
                           batch_size=args.batch_size, group_size=args.group_size)
    except ValueError as err:
        parser.error(str(err))
    try:
        data = load_data(args.dataset, args.data_dir, args.train_images, args.test_images,
                         download=args.download)
    except (FileNotFoundError, RuntimeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        manifest = generate_zoo(config, data, args.out, device=args.device)
    except StoreError as err:  # another configuration in --out, or a damaged zoo there
        print(f"error: {err}", file=sys.stderr)
        return 2
    final = manifest.get("test_acc_final_epoch")
    if manifest.get("complete") and final:
        print(f"{args.out}: {manifest['networks']} networks, {manifest['members']} members, "
              f"{manifest['diverged']} diverged; final-epoch test accuracy p10 "
              f"{final['p10']:.3f}, median {final['median']:.3f}, p90 {final['p90']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
