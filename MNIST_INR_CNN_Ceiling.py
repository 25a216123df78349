"""A ceiling for the INR classifiers: a small CNN trained on the INRs' rendered images.

``python -m MNIST_INR_CNN_Ceiling --inr-dir DIR`` renders every INR of a set written by
``python -m MNIST_INR_Fit`` on its grid (28x28 grey; a CIFAR-10 set 32x32 in colour): the
images the weight-space encoders see only through the weights. It trains
:class:`SmallCNN` on the ``train`` renders, picks the epoch with the best ``val`` accuracy
and reports its ``test`` accuracy: the last record of
``LOG_DIR/MNIST_INR_CNN_Ceiling_cnn_seed<k>.jsonl`` has ``"final": true`` and ``test_acc``
(percent). Same loop, optimizer recipe and flags as ``MNIST_INR_Classification_Train``
(side name ``cnn``); ``python -m utils.summarize`` tabulates it beside the encoders.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from jobs.encoder_jobs import (
    RECIPE_DEFAULTS,
    load_or_refuse,
    recipe_arguments,
    recipe_optimizer,
    run_job,
    split_loaders_of,
    with_recipe,
)
from jobs.inr_jobs import inr_dir_argument
from neural_graphs.inr import render
from neural_graphs.inr_data import check_inr_dir
from utils.cli import positive_int, probability
from utils.tasks import classification
from utils.Train_Test import JobConfig, SideFlag

SCRIPT = "MNIST_INR_CNN_Ceiling"
DEFAULT_EPOCHS = 30


class SmallCNN(nn.Module):
    r"""Two 3x3 convolutions (ReLU, 2x2 max pooling) and a linear classifier:
    ``Conv(in, c) -> Pool -> Conv(c, 2c) -> Pool -> Dropout -> Linear(2c (S/4)^2, classes)``.

    Args:
        channels (int): channels of the first convolution.
        num_classes (int): output size.
        dropout (float): dropout before the classifier.
        in_channels (int): image channels (1 grey, 3 colour).
        image_size (int): height and width :math:`S` of the square images.

    Shapes:
        - input: :math:`(B, \text{in\_channels}, S, S)` (default :math:`(B, 1, 28, 28)`)
        - output: :math:`(B, \text{num\_classes})`
    """

    def __init__(self, channels: int = 16, num_classes: int = 10, dropout: float = 0.2,
                 in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        side = image_size // 4
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout),
                                        nn.Linear(2 * channels * side * side, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def rendered_splits(inr_dir: str, chunk: int = 1024) -> dict[str, TensorDataset]:
    """``(render [C, H, W], label)`` datasets of the ``train``, ``val`` and ``test`` INRs,
    rendered on the fit's grid (``[1, 28, 28]`` for MNIST) with its ``omega_0`` and output
    offset."""
    from neural_graphs.inr_fit import fit_image_shape, load_inr_set

    manifest = check_inr_dir(inr_dir)
    config = manifest.get("config", {})
    height, width, _ = fit_image_shape(config)
    params, labels, splits, _ = load_inr_set(inr_dir)
    count = labels.shape[0]
    with torch.no_grad():
        images = torch.cat([
            render({k: v[start:start + chunk].float() for k, v in params.items()},
                   (height, width), omega_0=config.get("omega_0", 30.0),
                   out_offset=config.get("out_offset", 0.5))
            for start in range(0, count, chunk)])
    images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)
    out = {}
    for name in ("train", "val", "test"):
        chosen = torch.tensor([s == name for s in splits])
        out[name] = TensorDataset(images[chosen], labels[chosen].long())
    return out


_RENDERS: dict[str, dict[str, TensorDataset]] = {}


def _renders(inr_dir: str) -> dict[str, TensorDataset]:
    if inr_dir not in _RENDERS:
        _RENDERS.clear()
        _RENDERS[inr_dir] = rendered_splits(inr_dir)
    return _RENDERS[inr_dir]


def ceiling_loaders(args: argparse.Namespace, seed: int,
                    distributed: bool) -> tuple[DataLoader | None, ...]:
    """``(train, val, test)`` loaders of the rendered splits."""
    return split_loaders_of(_renders(args.inr_dir), args, seed, distributed)


def build_cnn(args: argparse.Namespace, seed: int, side: str) -> nn.Module:
    """The :class:`SmallCNN` of the flags, for the channels and size of the set's renders."""
    channels, size, _ = _renders(args.inr_dir)["train"].tensors[0].shape[1:]
    return SmallCNN(args.channels, 10, args.dropout, in_channels=channels, image_size=size)


def ceiling_arguments(parser: argparse.ArgumentParser) -> None:
    """The job's own flags: the INR set, the CNN's size and dropout, the recipe."""
    inr_dir_argument(parser)
    parser.add_argument("--channels", type=positive_int, default=16,
                        help="channels of the first convolution (the second has twice)")
    parser.add_argument("--dropout", type=probability, default=0.2,
                        help="dropout before the linear classifier, in [0, 1)")
    recipe_arguments(parser)


def configure(args: argparse.Namespace) -> JobConfig:
    """Render the INR set once (a folder that is not a readable set is refused), then the
    optimizer of the recipe flags."""
    load_or_refuse("--inr-dir", lambda: _renders(args.inr_dir))
    return with_recipe(JOB, args)


JOB = JobConfig(
    script=SCRIPT, title="small CNN on INR renders", epochs=DEFAULT_EPOCHS,
    batch_size=128, lr=1e-3, optimizer=recipe_optimizer(RECIPE_DEFAULTS),
    build_model=build_cnn, loaders=ceiling_loaders,
    sides=SideFlag("--encoder", ("cnn",), default="cnn", help="the classifier (only 'cnn')"),
    task=classification(), seeds=(0, 1, 2),
    description="Train a small CNN on the rendered INRs of --inr-dir (the ceiling of the "
    "weight-space classifiers); the final record carries test_acc (percent).",
    extra_arguments=ceiling_arguments,
    resume_keys=("inr_dir", "channels", "dropout", "weight_decay", "warmup_steps", "lr_schedule",
                 "max_grad_norm"),
    labels={"dataset": "mnist_inr"}, configure=configure, reads_data_dir=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Train the CNN (the command line parsed once); returns the exit status."""
    return run_job(JOB, argv)


if __name__ == "__main__":
    sys.exit(main())
