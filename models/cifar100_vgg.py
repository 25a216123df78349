"""VGG11 (configuration A) with BatchNorm for 32x32 CIFAR-100 images."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from models.common import check_input, model_main
from modules.convert import to_gnn

INPUT_SHAPE = (3, 32, 32)
CONFIG_A = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG11CIFAR100(nn.Module):
    """3x3 convolutions (padding 1) with BatchNorm and ReLU, five 2x2 max pools, then a
    512-4096-4096-100 classifier with ReLU and Dropout (torchvision's module names)."""

    def __init__(self, num_classes: int = 100, dropout: float = 0.5) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for v in CONFIG_A:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1),
                           nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                channels = v
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(512, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, INPUT_SHAPE)
        return self.classifier(self.flatten(self.features(x)))


def VGG11AsGNNCIFAR100(num_classes: int = 100,  # noqa: N802 (named like the original)
                       dropout: float = 0.5) -> nn.Module:
    """The message-passing twin of :class:`VGG11CIFAR100`."""
    return to_gnn(VGG11CIFAR100(num_classes, dropout), copy_model=False)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m models.CIFAR100_VGG``: parameter counts and the equivalence check."""
    return model_main("CIFAR100_VGG", VGG11CIFAR100, VGG11AsGNNCIFAR100, INPUT_SHAPE, 1000, 100,
                      argv=argv)
