"""ResNet-18 as in torchvision (7x7/2 stem, 3x3/2 max pool, BasicBlocks 2-2-2-2)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from models.common import check_input, model_main
from modules.convert import to_gnn

INPUT_SHAPE = (3, 32, 32)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and an identity (or 1x1) shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18CIFAR100(nn.Module):
    """torchvision's resnet18 layout and state_dict keys, with a 100-class fc."""

    def __init__(self, num_classes: int = 100) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        planes, in_planes, stages = [64, 128, 256, 512], 64, []
        for i, p in enumerate(planes):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(in_planes, p, stride), BasicBlock(p, p)))
            in_planes = p
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, INPUT_SHAPE)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))


def ResNet18AsGNNCIFAR100(num_classes: int = 100) -> nn.Module:  # noqa: N802
    """The message-passing twin of :class:`ResNet18CIFAR100`."""
    return to_gnn(ResNet18CIFAR100(num_classes), copy_model=False)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m models.CIFAR100_ResNet18``: parameter counts and the equivalence check."""
    return model_main("CIFAR100_ResNet18", ResNet18CIFAR100, ResNet18AsGNNCIFAR100,
                      INPUT_SHAPE, 2000, 250, argv=argv)
