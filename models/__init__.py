"""The five networks of the original release, each as a standard network and its twin.

A twin is the standard network passed through :func:`modules.to_gnn`, so the two are
always the same function with the same state_dict keys.

The networks are defined in :mod:`models.mnist_mlp`, :mod:`models.cwru_1dcnn`,
:mod:`models.cifar100_vgg`, :mod:`models.cifar100_resnet18` and :mod:`models.cifar100_vit`.
The original release's file names (``models.MNIST_MLP``, ...) re-export them and are the
commands ``python -m models.<File>``; the package does not import them, so runpy runs each
once, as ``__main__``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from models.cifar100_resnet18 import ResNet18AsGNNCIFAR100, ResNet18CIFAR100
from models.cifar100_vgg import VGG11CIFAR100, VGG11AsGNNCIFAR100
from models.cifar100_vit import ViTAsGNNCIFAR100, ViTCIFAR100
from models.cwru_1dcnn import CNN1DCWRU, CNN1DCWRUAsGNN
from models.mnist_mlp import MLPMNIST, MLPAsGNNMNIST


@dataclass(frozen=True)
class ModelSpec:
    """A model pair and the shape of one input sample."""

    name: str
    standard: Callable[[], nn.Module]
    twin: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    num_classes: int


#: registry key -> the model pair, its input shape and number of classes
MODELS: dict[str, ModelSpec] = {
    "mlp": ModelSpec("MNIST MLP", MLPMNIST, MLPAsGNNMNIST, (1, 28, 28), 10),
    "cwru": ModelSpec("CWRU 1D-CNN", CNN1DCWRU, CNN1DCWRUAsGNN, (1, 2048), 10),
    "vgg11": ModelSpec("CIFAR-100 VGG11", VGG11CIFAR100, VGG11AsGNNCIFAR100, (3, 32, 32), 100),
    "resnet18": ModelSpec("CIFAR-100 ResNet-18", ResNet18CIFAR100, ResNet18AsGNNCIFAR100,
                          (3, 32, 32), 100),
    "vit": ModelSpec("CIFAR-100 ViT", ViTCIFAR100, ViTAsGNNCIFAR100, (3, 32, 32), 100),
}

__all__ = [
    "MODELS",
    "CNN1DCWRU",
    "CNN1DCWRUAsGNN",
    "MLPAsGNNMNIST",
    "MLPMNIST",
    "ModelSpec",
    "ResNet18AsGNNCIFAR100",
    "ResNet18CIFAR100",
    "VGG11AsGNNCIFAR100",
    "VGG11CIFAR100",
    "ViTAsGNNCIFAR100",
    "ViTCIFAR100",
]
